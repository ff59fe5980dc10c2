#pragma once
// The load generator's engine: K client shards, each a thread with its own Scheduler<P>,
// driving its share of the connections, one coroutine per connection.
//
// A run has three phases, all bounded in time:
//   connect   every shard opens its connections (non-blocking connect, completed by
//             waiting for writability on the engine; at most kConnectPhaseLimitNs)
//   load      from t_start: warm-up until t_measure, then measured until t_end; a broken
//             connection is counted and re-established (with back-off) until t_end
//   teardown  every connection task stops at t_end (its deadlines never reach past it);
//             a shard that has not finished kShutdownGraceNs later is stopped.
//
// Per connection, one coroutine alternates: queue every request it may send (closed loop:
// up to --pipeline in flight; open loop: also only those whose intended time has come),
// write them in one write, then read answers. Its read deadline is the earliest of: the
// oldest request's timeout, t_end, and (open loop with room in the pipeline) the next
// intended send time — so one coroutine serves both directions without a timer of its
// own. Latency is recorded when an answer completes within [t_measure, t_end), measured
// from the intended send time (open loop, corrected) or the actual send time.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <latch>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "apps/load/histogram.h"
#include "apps/load/http_response.h"
#include "apps/load/options.h"
#include "apps/load/report.h"
#include "apps/load/schedule.h"
#include "engine/clock.h"
#include "engine/poll_fd.h"
#include "engine/scheduler.h"

namespace ringpoll::load {

// The connect phase may not stretch a run: connections not up by then are retried
// during the load phase (and counted).
inline constexpr int64_t kConnectPhaseLimitNs = 2'000'000'000;
// After t_end, how long shards get to close their connections before they are stopped.
inline constexpr int64_t kShutdownGraceNs = 2'000'000'000;
// Reconnect back-off after a failed connect: doubles from min to max, so a server that is
// down is probed a few times a second instead of in a tight loop.
inline constexpr int64_t kReconnectMinNs = 10'000'000;
inline constexpr int64_t kReconnectMaxNs = 500'000'000;
// One read takes up to this much; a shard shares one such buffer among its connections.
inline constexpr size_t kRecvBytes = 64 * 1024;
// Echo payloads are windows of a byte pattern with this period (a prime), starting at
// (request number mod period): an answer shifted by even one byte, or another request's
// answer, does not match.
inline constexpr size_t kPatternPeriod = 251;
// Open loop: level-0 tick of the scheduler's wheels. Sleeps end late by up to one tick,
// and that lateness is charged to the server by the correction, so it must be far below
// the latencies measured; closed loop keeps the engine's default.
inline constexpr int64_t kOpenLoopTickNs = 100'000;

// Shared by the main thread and the shards; written before the shards are released.
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

inline void bump(std::atomic<uint64_t>& a) noexcept {
  a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // one writer
}

template <PollerBackend P>
class LoadShard {
  // Reads land in a buffer the shard shares: only safe when the syscall runs on resume
  // (readiness backends), not when the kernel fills the buffer while the task is parked.
  static_assert(!P::kCompletion, "ringpoll-load shares one receive buffer per shard");

 public:
  LoadShard(const LoadOptions& opt, const RunClock* clock, std::vector<int> conn_indices)
      : opt_(opt), clock_(clock), timeout_ns_(static_cast<int64_t>(opt.timeout_s * 1e9)) {
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
    rx_.resize(kRecvBytes);
    for (const int g : conn_indices) {
      auto c = std::make_unique<Conn>();
      c->index = g;
      c->pending.resize(static_cast<size_t>(opt_.pipeline));
      conns_.push_back(std::move(c));
    }
  }
  LoadShard(const LoadShard&) = delete;
  LoadShard& operator=(const LoadShard&) = delete;

  ~LoadShard() {
    if (!sched_) return;
    if (sched_->live_tasks() > 0) {
      // Stopped with tasks parked on descriptors: their frames reference the connections
      // and the scheduler in an order we cannot unwind here. The process is about to
      // exit; leave both to it.
      (void)sched_.release();
      for (auto& c : conns_) (void)c.release();
      return;
    }
    conns_.clear();  // their PollFds (all closed by now) before the scheduler
  }

  // The shard thread: connect, wait for the start, load, tear down. `connected` is
  // counted down after the connect phase; the load starts when `go` opens.
  void run_thread(std::latch& connected, std::latch& go) {
    SchedulerOptions so;
    if (opt_.open_loop()) so.tick_ns = kOpenLoopTickNs;
    sched_ = std::make_unique<Scheduler<P>>(so);
    sched_ready_.store(sched_.get());
    if (Status st = sched_->start(); !st.ok()) {
      start_error_ = std::string("backend ") + P::kName + " failed to start: " + st.message();
      connected.count_down();
      progress.finished.store(true);
      return;
    }
    const int64_t connect_deadline = mono_now_ns() + std::min(timeout_ns_, kConnectPhaseLimitNs);
    for (auto& c : conns_) sched_->spawn(connect_once(c.get(), connect_deadline));
    sched_->run();
    connected.count_down();
    go.wait();
    for (auto& c : conns_) sched_->spawn(drive(c.get()));
    sched_->run();
    progress.finished.store(true);
  }

  // Any thread: stop a shard that overran its grace.
  void stop() {
    if (Scheduler<P>* s = sched_ready_.load()) s->stop();
  }

  const std::string& start_error() const noexcept { return start_error_; }
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
  struct Conn {
    int index = 0;  // among all connections of the run
    std::optional<PollFd<P>> fd;
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
    int64_t read_deadline = 0;  // what the PollFd has now (-1: unknown, set it again)
    int64_t write_deadline = 0;

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
  enum class End { kRunOver, kBroken };

  bool open_loop() const noexcept { return opt_.open_loop(); }

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

  // Opens c's socket and starts a non-blocking connect, completed by waiting for
  // writability on the engine (the socket's PollDesc) with a write deadline.
  Task<bool> connect(Conn* c, int64_t deadline) {
    c->reset_stream();
    c->fd.reset();
    c->fd.emplace();
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
      note_error(&LoadCounters::connect_errors, std::string("socket: ") + std::strerror(errno));
      co_return false;
    }
    const int one = 1;
    ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const int r = ::connect(s, reinterpret_cast<const sockaddr*>(&opt_.target), sizeof opt_.target);
    if (r < 0 && errno != EINPROGRESS) {
      note_error(&LoadCounters::connect_errors, std::string("connect: ") + std::strerror(errno));
      ::close(s);
      co_return false;
    }
    if (Status st = c->fd->open(*sched_, s); !st.ok()) {
      note_error(&LoadCounters::connect_errors, std::string("register: ") + st.message());
      if (!c->fd->is_open()) ::close(s);
      co_return false;
    }
    if (r == 0) co_return true;  // loopback may connect at once
    c->fd->set_write_deadline(deadline);
    for (;;) {
      const PollError e = co_await sched_->wait(c->fd->pd(), Mode::kWrite);
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        note_error(&LoadCounters::connect_errors, std::string("connect: ") + std::strerror(err));
        co_return false;
      }
      if (e == PollError::kTimeout) {
        note_error(&LoadCounters::connect_errors, "connect: timed out");
        co_return false;
      }
      if (e != PollError::kNone) {
        note_error(&LoadCounters::connect_errors, std::string("connect: ") + to_string(e));
        co_return false;
      }
      sockaddr_storage peer{};
      socklen_t plen = sizeof peer;
      if (::getpeername(s, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) break;
      // Woken before the handshake finished (a stale readiness): wait again.
    }
    c->fd->set_write_deadline(0);
    co_return true;
  }

  Task<void> close_conn(Conn* c) {
    if (c->fd && c->fd->is_open()) co_await c->fd->close();
  }

  Task<void> connect_once(Conn* c, int64_t deadline) {
    const bool up = co_await connect(c, deadline);  // not in the `if`: see drive()
    if (up) {
      c->connected_once = true;
    } else {
      co_await close_conn(c);
    }
  }

  Task<void> drive(Conn* c) {
    if (open_loop())
      c->schedule = OpenLoopSchedule(clock_->start, opt_.rate, opt_.connections, c->index);
    int64_t backoff = kReconnectMinNs;
    for (;;) {
      const int64_t now = mono_now_ns();
      if (now >= clock_->end) break;
      if (!c->fd || !c->fd->is_open()) {
        // (Awaited into a variable: GCC 12 miscompiles a co_await that is the whole
        // condition of an `if` — the coroutine never runs.)
        const bool up = co_await connect(c, std::min(now + timeout_ns_, clock_->end));
        if (!up) {
          co_await close_conn(c);
          co_await sched_->sleep_until(std::min(mono_now_ns() + backoff, clock_->end));
          backoff = std::min(2 * backoff, kReconnectMaxNs);
          continue;
        }
        backoff = kReconnectMinNs;
        if (c->connected_once) ++counters_.reconnects;
        c->connected_once = true;
      }
      const End e = co_await session(c);
      co_await close_conn(c);
      if (e == End::kRunOver) break;
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

  Task<End> session(Conn* c) {
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
          c->fd->set_deadline(dl);
          c->write_deadline = c->read_deadline = dl;
        }
        const IoResult w = co_await c->fd->write(std::span<const std::byte>(c->out));
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
        c->fd->set_read_deadline(dl);
        c->read_deadline = dl;
      }
      const IoResult r = co_await c->fd->read(std::span<std::byte>(rx_));
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
      const bool ok = opt_.mode == LoadMode::kEcho
                          ? consume_echo(c, rx_.data(), r.n, now)
                          : consume_http(c, rx_.data(), r.n, now, &closing);
      if (!ok) co_return End::kBroken;
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
  const int64_t timeout_ns_;
  std::unique_ptr<Scheduler<P>> sched_;
  std::atomic<Scheduler<P>*> sched_ready_{nullptr};
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<std::byte> pattern_;
  std::vector<std::byte> http_request_;
  std::vector<std::byte> rx_;
  LoadCounters counters_;
  LatencyHistogram hist_;
  std::string first_error_;
  std::string start_error_;
};

// CPU seconds (user, sys) of the whole process so far.
inline void process_cpu(double* user_s, double* sys_s) {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  *user_s =
      static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6;
  *sys_s = static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) / 1e6;
}

// Runs a load on backend P and returns what it measured. `progress` (may be empty) is
// called on this thread about once a second during the load phase.
template <PollerBackend P>
LoadReport run_load_on(const LoadOptions& opt,
                       const std::function<void(const ProgressSample&)>& progress = {}) {
  LoadReport rep;
  rep.options = opt;
  rep.backend = P::kName;
  RunClock clock;
  const int k = opt.shards;
  std::vector<std::unique_ptr<LoadShard<P>>> shards;
  for (int s = 0; s < k; ++s) {
    std::vector<int> mine;
    for (int g = s; g < opt.connections; g += k) mine.push_back(g);
    shards.push_back(std::make_unique<LoadShard<P>>(opt, &clock, std::move(mine)));
  }
  std::latch connected(k);
  std::latch go(1);
  std::vector<std::thread> threads;
  for (auto& sh : shards) {
    threads.emplace_back([&connected, &go, shard = sh.get()] { shard->run_thread(connected, go); });
  }
  connected.wait();
  for (auto& sh : shards) {
    if (!sh->start_error().empty() && rep.failure.empty()) rep.failure = sh->start_error();
  }
  clock.start = mono_now_ns();
  clock.measure = clock.start + static_cast<int64_t>(opt.warmup_s * 1e9);
  clock.end = clock.measure + static_cast<int64_t>(opt.duration_s * 1e9);
  if (!rep.failure.empty()) clock.measure = clock.end = clock.start;  // nothing to run
  go.count_down();

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
  // Teardown: each connection task ends by itself at t_end; stop laggards after a grace.
  const int64_t hard_stop = clock.end + kShutdownGraceNs;
  for (size_t i = 0; i < shards.size(); ++i) {
    while (!shards[i]->progress.finished.load() && mono_now_ns() < hard_stop) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!shards[i]->progress.finished.load()) {
      shards[i]->stop();
      rep.warnings.push_back("shard " + std::to_string(i) +
                             " did not finish within the grace period and was stopped");
    }
  }
  for (auto& t : threads) t.join();

  rep.measured_s = static_cast<double>(clock.end - clock.measure) / 1e9;
  rep.cpu_user_s = u1 - u0;
  rep.cpu_sys_s = s1 - s0;
  for (auto& sh : shards) {
    rep.counters.add(sh->counters());
    rep.latency.merge(sh->latency());
    if (rep.first_error.empty()) rep.first_error = sh->first_error();
  }
  return rep;
}

// Picks the backend (process_backend) and runs; report.failure is set when it cannot.
LoadReport run_load(const LoadOptions& opt,
                    const std::function<void(const ProgressSample&)>& progress = {});

}  // namespace ringpoll::load
