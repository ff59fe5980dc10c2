// The load generator on the engine (generator.h).
//
// A run has three phases, all bounded in time:
//   connect   every connection task connects (TcpStream::connect: PollFd's connect with a
//             write deadline; at most kConnectPhaseLimitNs), then waits at its shard's
//             start gate; the main thread waits until every shard has tried them all
//   load      from t_start: warm-up until t_measure, then measured until t_end; a broken
//             connection is counted and re-established (with back-off) until t_end
//   teardown  every connection task ends at t_end (its deadlines never reach past it);
//             shards not finished kShutdownGraceNs later are stopped, and their tasks are
//             destroyed with the engine (their streams close on the way).
//
// Per connection, one coroutine alternates: queue every request it may send (closed loop:
// up to --pipeline in flight; open loop: also only those whose intended time has come),
// write them in one write, then read answers. Its read deadline is the earliest of: the
// oldest request's timeout, t_end, and (open loop with room in the pipeline) the next
// intended send time — so one coroutine serves both directions without a timer of its
// own. Latency is recorded when an answer completes within [t_measure, t_end), measured
// from the intended send time (open loop, corrected) or the actual send time.
//
// Everything a shard records (counters, histogram, first error) is written by that
// shard's thread only and read by the main thread after Engine::join; the progress
// counters are the only values read while the run goes on.
#include "apps/load/generator.h"

#include <netinet/in.h>
#include <sys/socket.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <sys/resource.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <latch>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "apps/load/histogram.h"
#include "apps/load/http_response.h"
#include "apps/load/schedule.h"
#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/net.h"
#ifndef _WIN32  // no OpenSSL in the Windows build: --tls is refused there (options.cc)
#include "tls/tls_stream.h"
#endif

namespace ringpoll::load {
namespace {

// The connect phase may not stretch a run: connections not up by then are retried
// during the load phase (and counted).
constexpr int64_t kConnectPhaseLimitNs = 2'000'000'000;
// After t_end, how long shards get to close their connections before they are stopped.
constexpr int64_t kShutdownGraceNs = 2'000'000'000;
// Reconnect back-off after a failed connect: doubles from min to max, so a server that is
// down is probed a few times a second instead of in a tight loop.
constexpr int64_t kReconnectMinNs = 10'000'000;
constexpr int64_t kReconnectMaxNs = 500'000'000;
// Readiness backends: one read takes up to this much, into a buffer the shard's
// connections share (the syscall runs when the reader resumes, so nobody else is using it).
constexpr size_t kSharedRecvBytes = 64 * 1024;
// Completion backends may fill a read's buffer while its task is parked (single-shot
// recv), so each connection has its own, smaller one.
constexpr size_t kConnRecvBytes = 16 * 1024;
// Echo payloads are windows of a byte pattern with this period (a prime), starting at
// (request number mod period): an answer shifted by even one byte, or another request's
// answer, does not match.
constexpr size_t kPatternPeriod = 251;
// Open loop: level-0 tick of the shards' timer wheels. Sleeps end late by up to one tick,
// and that lateness is charged to the server by the correction, so it must be far below
// the latencies measured; closed loop keeps the engine's default.
constexpr int64_t kOpenLoopTickNs = 100'000;
// Descriptors beyond the connections: the shards' pollers, stdio, the JSON file.
constexpr uint64_t kSpareFds = 64;

#ifdef _WIN32
// The Windows build has no OpenSSL: --tls is refused by the option parser, so no context
// of this type is ever made and every connection is plain TCP.
struct NoTlsContext {};
using TlsContextType = NoTlsContext;
template <class P>
using TlsStreamPtr = std::nullptr_t;
#else
using TlsContextType = tls::TlsContext;
template <class P>
using TlsStreamPtr = std::unique_ptr<tls::TlsStream<P>>;  // --tls: the stream (it owns its TCP)
#endif

// Shared by the main thread and the shards; written before the start gates open.
struct RunClock {
  int64_t start = 0;    // the load starts (open-loop schedules start here)
  int64_t measure = 0;  // end of warm-up
  int64_t end = 0;      // end of the measured window
};

// Read by the main thread once a second; each is written by its shard only.
struct ShardProgress {
  std::atomic<uint64_t> answered{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<bool> finished{false};
};

void bump(std::atomic<uint64_t>& a) noexcept {
  a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // one writer
}

// Where the connection tasks of a shard wait between the connect and the load phase. On
// the shard's thread only; opened once.
class StartGate {
 public:
  struct Awaiter {
    StartGate* gate;
    TaskNode node{};
    bool await_ready() const noexcept { return gate->open_; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      node.handle = h;
      gate->waiting_.push_back(&node);
    }
    void await_resume() const noexcept {}
  };
  Awaiter wait() noexcept { return Awaiter{this}; }
  template <class S>
  void open(S& sched) noexcept {
    open_ = true;
    sched.make_ready(waiting_);
  }

 private:
  bool open_ = false;
  TaskList waiting_;
};

// One client shard's part of the run: its connections' tasks and what they record.
// Constructed on the main thread; from begin() on, used by the shard's thread only (and
// read by the main thread after the shard has joined).
template <PollerBackend P>
class LoadShard {
 public:
  LoadShard(const LoadOptions& opt, const RunClock* clock, std::vector<int> conn_indices,
            const TlsContextType* tls_ctx)
      : opt_(opt),
        clock_(clock),
        tls_ctx_(tls_ctx),
        timeout_ns_(static_cast<int64_t>(opt.timeout_s * 1e9)),
        indices_(std::move(conn_indices)) {
    if (opt_.mode == LoadMode::kEcho) {
      pattern_.resize(static_cast<size_t>(opt_.size) + kPatternPeriod);
      for (size_t i = 0; i < pattern_.size(); ++i) {
        pattern_[i] = static_cast<std::byte>(i % kPatternPeriod);
      }
    } else {
      const std::string req = "GET /plaintext HTTP/1.1\r\nHost: " + opt_.target_text + "\r\n\r\n";
      http_request_.resize(req.size());
      std::memcpy(http_request_.data(), req.data(), req.size());
    }
    if constexpr (!P::kCompletion) rx_.resize(kSharedRecvBytes);
    std::memcpy(&target_.ss, &opt_.target, sizeof opt_.target);
    target_.len = sizeof opt_.target;
    if (tls_ctx_) {
      // SNI and the verify name: --tls-sni, else the --target host.
      tls_name_ = opt_.tls_sni;
      if (tls_name_.empty()) tls_name_ = opt_.target_text.substr(0, opt_.target_text.rfind(':'));
    }
  }
  LoadShard(const LoadShard&) = delete;
  LoadShard& operator=(const LoadShard&) = delete;

  // On the shard's thread (Engine on_start): spawns the connection tasks. `connected` is
  // counted down once each of them has tried its first connect.
  void begin(Scheduler<P>& s, std::latch* connected) {
    sched_ = &s;
    connected_ = connected;
    pending_connects_ = indices_.size();
    live_ = indices_.size();
    if (indices_.empty()) {
      connected_->count_down();
      progress.finished.store(true);
      return;
    }
    const int64_t connect_deadline = mono_now_ns() + std::min(timeout_ns_, kConnectPhaseLimitNs);
    for (const int g : indices_) sched_->spawn(connection(g, connect_deadline));
  }
  // On the shard's thread, after the main thread has set the clock: the load starts.
  void start_load() { gate_.open(*sched_); }

  const LoadCounters& counters() const noexcept { return counters_; }
  const LatencyHistogram& latency() const noexcept { return hist_; }
  const std::string& first_error() const noexcept { return first_error_; }

  ShardProgress progress;

 private:
  struct Pending {
    int64_t intended;  // open loop: from the schedule; closed loop: the send time
    int64_t sent;
    uint32_t pattern_off;
  };
  // A connection's state; lives in its task's frame.
  struct Conn {
    int index = 0;  // among all connections of the run
    std::unique_ptr<TcpStream<P>> stream;
    TlsStreamPtr<P> tls{};  // --tls: the stream instead of `stream`
    bool connected_once = false;
    OpenLoopSchedule schedule;
    uint64_t next_k = 0;           // open loop: the next request of the schedule
    uint64_t seq = 0;              // requests sent (echo pattern offset)
    std::vector<Pending> pending;  // ring of in-flight requests, oldest at head
    size_t head = 0;
    size_t count = 0;
    size_t rx_off = 0;  // echo: bytes of the oldest answer received so far
    HttpResponseParser parser;
    std::vector<std::byte> out;
    std::vector<std::byte> rx;  // completion backends: this connection's read buffer
    int64_t read_deadline = 0;  // what the stream has now (-1: unknown, set it again)
    int64_t write_deadline = 0;

    bool up() const noexcept { return stream != nullptr || tls != nullptr; }
    Pending& oldest() noexcept { return pending[head]; }
    void push(const Pending& p) noexcept {
      pending[(head + count) % pending.size()] = p;
      ++count;
    }
    void pop() noexcept {
      head = (head + 1) % pending.size();
      --count;
    }
    void reset_stream() {
      head = count = rx_off = 0;
      parser = HttpResponseParser();
      read_deadline = write_deadline = 0;
    }
  };
  // kRenew: --tls-handshake-per-request, every answer in: reconnect, not an error.
  enum class End { kRunOver, kBroken, kRenew };

  bool open_loop() const noexcept { return opt_.open_loop(); }

  std::span<std::byte> rx_for(Conn* c) noexcept {
    if constexpr (P::kCompletion) {
      return std::span<std::byte>(c->rx);
    } else {
      return std::span<std::byte>(rx_);
    }
  }

  void note_error(uint64_t LoadCounters::*field, const std::string& what) {
    ++(counters_.*field);
    bump(progress.errors);
    if (first_error_.empty()) first_error_ = what;
  }
  void io_error(Status err, bool reading) {
    const int e = err.sys_errno();
    const char* dir = reading ? "read" : "write";
    if (err.is(Errc::kEof)) {
      note_error(&LoadCounters::eofs, "the server closed a connection with requests in flight");
    } else if (e == ECONNRESET || e == EPIPE || e == ECONNABORTED) {
      note_error(&LoadCounters::resets, std::string(dir) + ": " + err.message());
    } else {
      note_error(reading ? &LoadCounters::read_errors : &LoadCounters::write_errors,
                 std::string(dir) + ": " + err.message());
    }
  }

  // The whole life of one connection: connect, wait for the start, load until t_end.
  Task<void> connection(int index, int64_t connect_deadline) {
    Conn c;
    c.index = index;
    c.pending.resize(static_cast<size_t>(opt_.pipeline));
    if constexpr (P::kCompletion) c.rx.resize(kConnRecvBytes);
    const bool up = co_await connect(&c, connect_deadline);  // not in the `if`: see drive()
    if (up) c.connected_once = true;
    if (--pending_connects_ == 0) connected_->count_down();
    co_await gate_.wait();
    co_await drive(&c);
    if (--live_ == 0) progress.finished.store(true);
  }

  // A connect or handshake that timed out now was cut short by the end of the run (its
  // deadline was the run's end), not failed: a closed loop that opens a connection per
  // request always has some in flight then. (end is 0 before the run is timed.)
  bool cut_by_end() const noexcept { return clock_->end > 0 && mono_now_ns() >= clock_->end; }

  // Connects c through the engine (PollFd::connect, bounded by `deadline`); a failure is
  // counted and named.
  Task<bool> connect(Conn* c, int64_t deadline) {
    c->reset_stream();
    c->stream.reset();
    const int64_t limit = std::max<int64_t>(deadline - mono_now_ns(), 1);
    std::unique_ptr<TcpStream<P>> s;
    const Status st = co_await TcpStream<P>::connect(*sched_, target_, limit, &s);
    if (!st.ok() && st.timeout() && cut_by_end()) {
      ++counters_.unfinished_connects;
      co_return false;
    }
    if (!st.ok()) {
      note_error(&LoadCounters::connect_errors, std::string("connect: ") + st.message());
      co_return false;
    }
    (void)s->set_nodelay(true);
    if (!tls_ctx_) {
      c->stream = std::move(s);
      co_return true;
    }
#ifdef _WIN32
    co_return false;  // never here: the Windows build makes no TLS context
#else
    auto t = std::make_unique<tls::TlsStream<P>>();
    if (const Status a = t->attach(*sched_, std::move(s), *tls_ctx_, tls_name_); !a.ok()) {
      note_error(&LoadCounters::connect_errors, std::string("tls: ") + a.message());
      co_return false;
    }
    const tls::HandshakeError e = co_await t->handshake(deadline);
    if (e == tls::HandshakeError::kTimeout && cut_by_end()) {
      ++counters_.unfinished_connects;
      (void)co_await t->close();
      co_return false;
    }
    if (e != tls::HandshakeError::kNone) {
      note_error(&LoadCounters::connect_errors,
                 std::string("tls handshake: ") + tls::to_string(e) + ": " + t->error_detail());
      (void)co_await t->close();
      co_return false;
    }
    ++counters_.tls_handshakes;
    if (t->resumed()) ++counters_.tls_resumed;
    c->tls = std::move(t);
    co_return true;
#endif
  }

  Task<void> close_conn(Conn* c) {
    if (c->stream) {
      (void)co_await c->stream->close();
      c->stream.reset();
    }
#ifndef _WIN32
    if (c->tls) {
      (void)co_await c->tls->close();
      c->tls.reset();
    }
#endif
  }

  Task<void> drive(Conn* c) {
    if (open_loop())
      c->schedule = OpenLoopSchedule(clock_->start, opt_.rate, opt_.connections, c->index);
    int64_t backoff = kReconnectMinNs;
    for (;;) {
      const int64_t now = mono_now_ns();
      if (now >= clock_->end) break;
      if (!c->up()) {
        // (Awaited into a variable: GCC 12 miscompiles a co_await that is the whole
        // condition of an `if` — the coroutine never runs.)
        const bool up = co_await connect(c, std::min(now + timeout_ns_, clock_->end));
        if (!up) {
          co_await sched_->sleep_until(std::min(mono_now_ns() + backoff, clock_->end));
          backoff = std::min(2 * backoff, kReconnectMaxNs);
          continue;
        }
        backoff = kReconnectMinNs;
        if (c->connected_once) ++counters_.reconnects;
        c->connected_once = true;
      }
      End e;
#ifndef _WIN32
      if (c->tls) {
        e = co_await session(c, *c->tls);
      } else {
        e = co_await session(c, *c->stream);
      }
#else
      e = co_await session(c, *c->stream);
#endif
      co_await close_conn(c);
      if (e == End::kRunOver) break;
      if (e == End::kRenew) c->connected_once = false;  // the next connect is no reconnect
    }
    co_await close_conn(c);
  }

  void append_request(Conn* c, int64_t intended, int64_t now) {
    uint32_t off = 0;
    if (opt_.mode == LoadMode::kEcho) {
      off = static_cast<uint32_t>(c->seq % kPatternPeriod);
      const std::byte* p = pattern_.data() + off;
      c->out.insert(c->out.end(), p, p + opt_.size);
    } else {
      c->out.insert(c->out.end(), http_request_.begin(), http_request_.end());
    }
    ++c->seq;
    c->push(Pending{intended, now, off});
  }

  void complete(Conn* c, int64_t now) {
    const Pending p = c->oldest();
    c->pop();
    bump(progress.answered);
    if (now < clock_->measure || now >= clock_->end) return;
    ++counters_.requests;
    const int64_t from = open_loop() && opt_.co_correction ? p.intended : p.sent;
    hist_.record(static_cast<uint64_t>(std::max<int64_t>(now - from, 0)));
  }

  // Echo: the bytes must be, in order, the payloads of the requests in flight.
  bool consume_echo(Conn* c, const std::byte* p, size_t n, int64_t now) {
    const size_t m = static_cast<size_t>(opt_.size);
    while (n > 0) {
      if (c->count == 0) {
        note_error(&LoadCounters::protocol_errors, "echo: the server sent bytes nobody asked for");
        return false;
      }
      const size_t take = std::min(m - c->rx_off, n);
      if (std::memcmp(p, pattern_.data() + c->oldest().pattern_off + c->rx_off, take) != 0) {
        note_error(&LoadCounters::protocol_errors, "echo: the answer differs from the request");
        return false;
      }
      p += take;
      n -= take;
      c->rx_off += take;
      if (c->rx_off == m) {
        c->rx_off = 0;
        complete(c, now);
      }
    }
    return true;
  }

  // HTTP: each complete response answers the oldest request. *closing: the server said
  // it closes after this response.
  bool consume_http(Conn* c, const std::byte* data, size_t n, int64_t now, bool* closing) {
    const char* p = reinterpret_cast<const char*>(data);
    while (n > 0) {
      size_t used = 0;
      const auto res = c->parser.feed(p, n, &used);
      p += used;
      n -= used;
      if (res == HttpResponseParser::Result::kError) {
        note_error(&LoadCounters::protocol_errors,
                   std::string("http: ") + to_string(c->parser.error()));
        return false;
      }
      if (res == HttpResponseParser::Result::kNeedMore) break;
      if (c->count == 0) {
        note_error(&LoadCounters::protocol_errors, "http: a response nobody asked for");
        return false;
      }
      const int status = c->parser.status();
      if (status < 200 || status >= 400) {
        note_error(&LoadCounters::http_status_errors, "http: status " + std::to_string(status));
      }
      complete(c, now);
      if (!c->parser.keep_alive()) {
        *closing = true;
        if (n > 0) {
          note_error(&LoadCounters::protocol_errors, "http: bytes after Connection: close");
          return false;
        }
        return true;
      }
    }
    return true;
  }

  // One connection's requests and answers, over a TcpStream or a TlsStream.
  template <class Stream>
  Task<End> session(Conn* c, Stream& stream) {
    const size_t depth = static_cast<size_t>(opt_.pipeline);
    for (;;) {
      int64_t now = mono_now_ns();
      if (now >= clock_->end) {
        counters_.unfinished += c->count;
        co_return End::kRunOver;
      }
      // Queue everything that may go now, and send it in one write.
      c->out.clear();
      while (c->count < depth) {
        int64_t intended = now;
        if (open_loop()) {
          intended = c->schedule.at(c->next_k);
          if (intended > now || intended >= clock_->end) break;
          ++c->next_k;
        }
        append_request(c, intended, now);
      }
      if (!c->out.empty()) {
        const int64_t dl = std::min(c->oldest().sent + timeout_ns_, clock_->end);
        if (dl != c->write_deadline || dl != c->read_deadline) {
          (void)stream.set_deadline(dl);
          c->write_deadline = c->read_deadline = dl;
        }
        const IoResult w = co_await stream.write(std::span<const std::byte>(c->out));
        if (!w.ok()) {
          now = mono_now_ns();
          if (w.err.timeout() && now >= clock_->end) {
            counters_.unfinished += c->count;
            co_return End::kRunOver;
          }
          if (w.err.timeout()) {
            note_error(&LoadCounters::timeouts, "a request could not be sent within --timeout");
          } else {
            io_error(w.err, false);
          }
          co_return End::kBroken;
        }
      }
      if (c->count == 0) {  // open loop: nothing due yet
        co_await sched_->sleep_until(std::min(c->schedule.at(c->next_k), clock_->end));
        continue;
      }
      // Read answers until the oldest request's timeout, the end, or the next send.
      int64_t dl = std::min(c->oldest().sent + timeout_ns_, clock_->end);
      if (open_loop() && c->count < depth) dl = std::min(dl, c->schedule.at(c->next_k));
      if (dl != c->read_deadline) {
        (void)stream.set_read_deadline(dl);
        c->read_deadline = dl;
      }
      const std::span<std::byte> rx = rx_for(c);
      const IoResult r = co_await stream.read(rx);
      now = mono_now_ns();
      if (!r.ok()) {
        if (r.err.timeout()) {
          c->read_deadline = -1;  // expired: must be set again
          if (now >= clock_->end) {
            counters_.unfinished += c->count;
            co_return End::kRunOver;
          }
          if (now >= c->oldest().sent + timeout_ns_) {
            note_error(&LoadCounters::timeouts, "a request was not answered within --timeout");
            co_return End::kBroken;
          }
          continue;  // the next intended send time has come
        }
        io_error(r.err, true);
        co_return End::kBroken;
      }
      bool closing = false;
      const bool ok = opt_.mode == LoadMode::kEcho ? consume_echo(c, rx.data(), r.n, now)
                                                   : consume_http(c, rx.data(), r.n, now, &closing);
      if (!ok) co_return End::kBroken;
      if (opt_.tls_handshake_per_request && c->count == 0 && !closing) co_return End::kRenew;
      if (closing) {
        if (c->count > 0) {
          note_error(&LoadCounters::eofs, "http: Connection: close with requests in flight");
        } else {
          ++counters_.server_closes;
        }
        co_return End::kBroken;
      }
    }
  }

  const LoadOptions& opt_;
  const RunClock* clock_;
  const TlsContextType* tls_ctx_;  // --tls; shared by the shards (OpenSSL's is thread-safe)
  std::string tls_name_;
  const int64_t timeout_ns_;
  const std::vector<int> indices_;
  SocketAddress target_;
  Scheduler<P>* sched_ = nullptr;
  std::latch* connected_ = nullptr;
  size_t pending_connects_ = 0;  // connection tasks still in their first connect
  size_t live_ = 0;              // connection tasks not yet ended
  StartGate gate_;
  std::vector<std::byte> pattern_;
  std::vector<std::byte> http_request_;
  std::vector<std::byte> rx_;  // readiness backends: the shared read buffer
  LoadCounters counters_;
  LatencyHistogram hist_;
  std::string first_error_;
};

// CPU seconds (user, sys) of the whole process so far.
#ifdef _WIN32
void process_cpu(double* user_s, double* sys_s) {
  FILETIME created, exited, kernel, user;
  *user_s = *sys_s = 0;
  if (!GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user)) return;
  auto secs = [](const FILETIME& f) {  // 100 ns units
    return static_cast<double>((uint64_t{f.dwHighDateTime} << 32) | f.dwLowDateTime) / 1e7;
  };
  *user_s = secs(user);
  *sys_s = secs(kernel);
}

// Windows bounds sockets by memory, not by a descriptor limit: nothing to raise.
bool ensure_fd_limit(int, std::string*) {
  return true;
}
#else
void process_cpu(double* user_s, double* sys_s) {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  *user_s =
      static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6;
  *sys_s = static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) / 1e6;
}

// Raises the soft descriptor limit far enough for the connections, if the hard limit
// allows; false when it does not.
bool ensure_fd_limit(int connections, std::string* why) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return true;  // cannot tell: let connects fail
  const rlim_t want = static_cast<rlim_t>(connections) + kSpareFds;
  if (rl.rlim_cur >= want) return true;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
    *why = "--connections: " + std::to_string(connections) +
           " needs more descriptors than the hard limit (" + std::to_string(rl.rlim_max) + ")";
    return false;
  }
  rl.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    *why = "cannot raise RLIMIT_NOFILE to " + std::to_string(want);
    return false;
  }
  return true;
}
#endif

}  // namespace

template <PollerBackend P>
LoadReport run_load_on(const LoadOptions& opt,
                       const std::function<void(const ProgressSample&)>& progress) {
  LoadReport rep;
  rep.options = opt;
  rep.backend = P::kName;
  RunClock clock;
  const int k = opt.shards;
  // Declared before the engine: the tasks the engine may still hold at its destruction
  // (shards stopped after the grace) refer to them.
  std::unique_ptr<TlsContextType> tls_ctx;
#ifndef _WIN32
  if (opt.tls) {
    std::string why;
    tls_ctx = tls::TlsContext::client(tls_client_options(opt), &why);
    if (!tls_ctx) {
      rep.failure = "tls: " + why;
      return rep;
    }
  }
#endif
  std::vector<std::unique_ptr<LoadShard<P>>> shards;
  for (int s = 0; s < k; ++s) {
    std::vector<int> mine;
    for (int g = s; g < opt.connections; g += k) mine.push_back(g);
    shards.push_back(std::make_unique<LoadShard<P>>(opt, &clock, std::move(mine), tls_ctx.get()));
  }
  std::latch connected(k);
  EngineOptions eo;
  eo.shards = k;
  if (opt.open_loop()) eo.sched.tick_ns = kOpenLoopTickNs;
  Engine<P> engine(eo);
  if (Status st = engine.start([&shards, &connected](typename Engine<P>::Shard& sh) {
        shards[static_cast<size_t>(sh.id())]->begin(sh.sched(), &connected);
      });
      !st.ok()) {
    rep.failure = std::string("backend ") + P::kName + " failed to start: " + st.message();
    engine.stop();
    engine.join();
    return rep;
  }
  connected.wait();
  clock.start = mono_now_ns();
  clock.measure = clock.start + static_cast<int64_t>(opt.warmup_s * 1e9);
  clock.end = clock.measure + static_cast<int64_t>(opt.duration_s * 1e9);
  for (int s = 0; s < k; ++s) {
    LoadShard<P>* ls = shards[static_cast<size_t>(s)].get();
    auto& target = engine.shard(static_cast<size_t>(s));
    // The inbox is empty at this point, so the post cannot be refused; were it, the call
    // waits for the shard instead.
    if (!Engine<P>::post(target, [ls] { ls->start_load(); }))
      (void)Engine<P>::try_call(target, [ls] { ls->start_load(); });
  }

  // Progress once a second; CPU sampled at the edges of the measured window.
  double u0 = 0, s0 = 0, u1 = 0, s1 = 0;
  bool sampled0 = false;
  uint64_t last_answered = 0;
  int64_t last_t = clock.start;
  auto totals = [&shards](uint64_t* answered, uint64_t* errors) {
    *answered = *errors = 0;
    for (auto& sh : shards) {
      *answered += sh->progress.answered.load(std::memory_order_relaxed);
      *errors += sh->progress.errors.load(std::memory_order_relaxed);
    }
  };
  for (int64_t tick = clock.start + 1'000'000'000;;) {
    const int64_t wake =
        std::min(tick, sampled0 ? clock.end : std::max(clock.measure, clock.start));
    for (int64_t now = mono_now_ns(); now < wake; now = mono_now_ns()) {
      const int64_t d = wake - now;
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<int64_t>(d, 50'000'000)));
    }
    const int64_t now = mono_now_ns();
    if (!sampled0 && now >= clock.measure) {
      process_cpu(&u0, &s0);
      sampled0 = true;
    }
    if (now >= clock.end) {
      process_cpu(&u1, &s1);
      break;
    }
    if (now >= tick) {
      uint64_t answered = 0, errors = 0;
      totals(&answered, &errors);
      if (progress) {
        ProgressSample ps;
        ps.elapsed_s = static_cast<double>(now - clock.start) / 1e9;
        ps.warming_up = now < clock.measure;
        ps.interval_rps = static_cast<double>(answered - last_answered) * 1e9 /
                          static_cast<double>(std::max<int64_t>(now - last_t, 1));
        ps.answered = answered;
        ps.errors = errors;
        progress(ps);
      }
      last_answered = answered;
      last_t = now;
      tick += 1'000'000'000;
    }
  }
  // Teardown: each connection task ends by itself at t_end; the engine stops after the
  // last one, or after a grace (a task still parked then is destroyed with the engine).
  const int64_t hard_stop = clock.end + kShutdownGraceNs;
  for (size_t i = 0; i < shards.size(); ++i) {
    while (!shards[i]->progress.finished.load() && mono_now_ns() < hard_stop) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!shards[i]->progress.finished.load()) {
      rep.warnings.push_back("shard " + std::to_string(i) +
                             " did not finish within the grace period and was stopped");
    }
  }
  engine.stop();
  engine.join();

  // Merged after the join: each shard's records were written by its thread alone.
  rep.measured_s = static_cast<double>(clock.end - clock.measure) / 1e9;
  rep.cpu_user_s = u1 - u0;
  rep.cpu_sys_s = s1 - s0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const LoadShard<P>& sh = *shards[i];
    rep.counters.add(sh.counters());
    rep.latency.merge(sh.latency());
    if (rep.first_error.empty()) rep.first_error = sh.first_error();
    rep.shards.push_back(ShardSummary{engine.shard(i).cpu(), sh.counters().requests});
  }
  return rep;
}

#ifdef _WIN32
template LoadReport run_load_on<IocpPoller>(const LoadOptions&,
                                            const std::function<void(const ProgressSample&)>&);
#else
template LoadReport run_load_on<EpollPoller>(const LoadOptions&,
                                             const std::function<void(const ProgressSample&)>&);
template LoadReport run_load_on<UringPoller>(const LoadOptions&,
                                             const std::function<void(const ProgressSample&)>&);
template LoadReport run_load_on<UringCompletionPoller>(
    const LoadOptions&, const std::function<void(const ProgressSample&)>&);
#endif

LoadReport run_load(const LoadOptions& opt,
                    const std::function<void(const ProgressSample&)>& progress) {
  std::string why;
  if (!ensure_fd_limit(opt.connections, &why)) {
    LoadReport rep;
    rep.options = opt;
    rep.failure = why;
    return rep;
  }
  const BackendSelection& sel = process_backend(opt.backend);
  if (!sel.ok()) {
    LoadReport rep;
    rep.options = opt;
    rep.failure = sel.log_line();
    return rep;
  }
  return with_backend(sel, [&]<class P>() { return run_load_on<P>(opt, progress); });
}

}  // namespace ringpoll::load
