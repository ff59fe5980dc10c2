#pragma once
// ProxyServer<P>: ringpoll-proxy's engine-side half. Listeners (one TcpServer each, a
// listener per shard by SO_REUSEPORT) hand every client to a handler coroutine on the
// shard that accepted it:
//
//   1. pick an upstream from the listener's pool and connect, within the connect
//      timeout; a failed connect counts against that upstream's health and the next
//      upstream is tried (up to max_attempts) — nothing has been read from the client yet,
//      so a retry loses nothing. When every attempt fails the client is closed at once;
//   2. optionally write a PROXY protocol header to the upstream;
//   3. relay: two pumps, one per direction, each with its own fixed buffer. A pump reads
//      only after its previous chunk was fully written, so a slow receiver stops the
//      reading from the sender (TCP flow control carries the backpressure back) and the
//      proxy never holds more than 2 × buffer_bytes per connection. An end of stream on
//      one side becomes shutdown(SHUT_WR) on the other (half-close carried through); the
//      connection ends when both directions have ended. A reset, or nothing moving either
//      way for the idle timeout (a read deadline on the wheel, re-armed from the last
//      activity of either direction), aborts both sides. With `splice` on a readiness
//      backend the bytes go socket → pipe → socket without entering user space.
//
// Configuration generations: reload() builds new pools for new connections; established
// ones keep the generation they started with (a shared_ptr) and drain on it.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "apps/proxy/metrics.h"
#include "apps/proxy/pool.h"
#include "apps/proxy/proxy_protocol.h"
#include "apps/proxy/settings.h"
#include "apps/proxy/udp.h"
#include "engine/engine.h"
#include "engine/net.h"
#include "engine/server.h"

namespace ringpoll::proxy {

template <PollerBackend P>
class ProxyServer {
 public:
  ProxyServer(Engine<P>& e, ProxySettings s) : e_(e), metrics_(e.size()) {
    current_ = make_generation(std::move(s));
  }
  // A started proxy that was not shut down is shut down here with no drain (listeners
  // close, connections are aborted, health checks and admin requests end) before its
  // memory goes. That needs the engine running; destroyed after Engine::stop() without
  // shutdown(), the proxy's tasks would be left parked on the shards pointing at freed
  // memory, so that stops the process with a message saying so instead.
  ~ProxyServer() {
    if (!started_ || shut_down_) return;
    detail::require_running_for_teardown(e_, "ProxyServer");
    (void)shutdown(0);
  }
  ProxyServer(const ProxyServer&) = delete;
  ProxyServer& operator=(const ProxyServer&) = delete;

  // UDP listeners on a packet path (DPDK, AF_XDP: apps/proxy/udp_bypass.h) instead of
  // kernel sockets: starts one in *out, or returns the error (with *why) after stopping
  // what it started. Set before start(); unset, UDP listeners use the kernel path.
  using UdpPathStart =
      std::function<Status(Engine<P>&, Metrics&, UdpPickFn, const ListenerSettings&,
                           const ProxySettings&, std::unique_ptr<UdpService>*, std::string*)>;
  void set_udp_path(UdpPathStart f) { udp_path_ = std::move(f); }

  // Starts the listeners and the active health checks. From a thread outside the engine,
  // after the engine started. Errors name the listener and the failed step.
  Status start(std::string* why) {
    started_ = true;  // a failed start may have started some listeners: shutdown() ends them
    auto gen = generation();
    for (size_t i = 0; i < gen->s.listeners.size(); ++i) {
      const ListenerSettings& l = gen->s.listeners[i];
      if (l.udp) {
        UdpPickFn pick = [this, i] { return udp_pick(i); };
        std::unique_ptr<UdpService> u;
        std::string w;
        Status st;
        if (udp_path_) {
          st = udp_path_(e_, metrics_, std::move(pick), l, gen->s, &u, &w);
        } else {
          auto k = std::make_unique<UdpListener<P>>(e_, metrics_, std::move(pick));
          st = k->start(l.listen, gen->s.reuseport, &w);
          if (!st.ok()) k->shutdown(1'000'000'000);
          u = std::move(k);
        }
        if (!st.ok()) {
          if (why) *why = "listener '" + l.name + "' (udp): " + (w.empty() ? st.message() : w);
          return st;
        }
        udp_.push_back(std::move(u));
        servers_.push_back(nullptr);
        continue;
      }
      typename TcpServer<P>::Options o;
      o.listen.reuseport = gen->s.reuseport;
      o.listen.allow_shared_port = gen->s.allow_shared_port;
      o.listen.backlog = gen->s.backlog;
      o.nodelay = gen->s.nodelay;
      auto srv = std::make_unique<TcpServer<P>>(e_, o);
      std::string w;
      const Status st = srv->start(
          l.listen, [this, i](TcpStream<P>& c) { return handle(c, i); }, &w);
      if (!st.ok()) {
        if (why) *why = "listener '" + l.name + "': " + (w.empty() ? st.message() : w);
        return st;
      }
      servers_.push_back(std::move(srv));
      udp_.push_back(nullptr);
    }
    start_checkers(gen);
    return Status();
  }

  // The bound address of listener i (the real port when 0 was asked for).
  SocketAddress address(size_t i) const {
    return servers_.at(i) ? servers_[i]->address() : udp_.at(i)->address();
  }
  size_t listeners() const { return servers_.size(); }

  // Serves Prometheus text at GET /metrics (and "ok" at GET /healthz): a TcpServer
  // listening on shard 0 only, so shutdown() ends its requests like any connection's.
  Status start_admin(const SocketAddress& at, std::string* why) {
    started_ = true;
    typename TcpServer<P>::Options o;
    o.listen.reuseport = false;
    o.shard = 0;
    admin_ = std::make_unique<TcpServer<P>>(e_, o);
    const Status st = admin_->start(
        at, [this](TcpStream<P>& c) { return admin_conn(c); }, why);
    if (st.ok()) admin_address_ = admin_->address();
    return st;
  }
  SocketAddress admin_address() const { return admin_address_; }

  // New settings for new connections. The listeners must stay the same (names and
  // addresses); changing them needs a restart, and the reload is refused saying so.
  bool reload(ProxySettings s, std::string* why) {
    auto old = generation();
    if (s.listeners.size() != old->s.listeners.size()) {
      *why = "the number of listeners changed (" + std::to_string(old->s.listeners.size()) +
             " -> " + std::to_string(s.listeners.size()) + "); listeners change on restart only";
      return false;
    }
    for (size_t i = 0; i < s.listeners.size(); ++i) {
      const auto& a = old->s.listeners[i];
      const auto& b = s.listeners[i];
      // The same address as configured, or as bound (a configured port 0 got a real one).
      const std::string to = b.listen.to_string();
      const bool same_addr =
          a.listen.to_string() == to || (i < servers_.size() && address(i).to_string() == to);
      if (a.name != b.name || !same_addr || a.udp != b.udp) {
        *why = "listener '" + a.name + "' (" + a.listen.to_string() + ") changed to '" + b.name +
               "' (" + b.listen.to_string() + "); listeners change on restart only";
        return false;
      }
    }
    const ProxySettings& o = old->s;
    const bool has_udp =
        std::any_of(udp_.begin(), udp_.end(), [](const auto& u) { return u != nullptr; });
    if (has_udp && (s.udp_path != o.udp_path || s.udp_port_base != o.udp_port_base ||
                    s.udp_port_count != o.udp_port_count)) {
      *why = std::string(
                 "packet.path, packet.udp_port_base and packet.udp_port_count change on "
                 "restart only (UDP listeners run on ") +
             packet::to_string(o.udp_path) + ")";
      return false;
    }
    auto gen = make_generation(std::move(s));
    {
      std::lock_guard<std::mutex> l(mu_);
      current_ = gen;
    }
    old->retired.store(true);
    start_checkers(gen);
    reloads_.fetch_add(1);
    return true;
  }

  // Stops accepting, lets connections finish within drain_ns, then aborts what remains.
  // Returns the number aborted.
  // Returns once the proxy's own tasks (health checks, admin requests) have ended too, so
  // the proxy may be destroyed after it while the engine runs on.
  size_t shutdown(int64_t drain_ns) {
    shut_down_ = true;
    stopping_.store(true);
    generation()->retired.store(true);
    if (admin_) (void)admin_->shutdown(0);  // open admin requests are aborted
    const int64_t end = mono_now_ns() + drain_ns;
    size_t aborted = 0;
    for (auto& s : servers_) {
      if (!s) continue;
      const int64_t left = end - mono_now_ns();
      aborted += s->shutdown(left > 0 ? left : 0);
    }
    // UDP flows have no stream to finish: they end at once.
    for (auto& u : udp_) {
      if (u) (void)u->shutdown(1'000'000'000);
    }
    // A health check ends at its next probe or within a sleep slice; a probe ends by its
    // own timeout.
    const int64_t checkers_end = mono_now_ns() + max_check_timeout_ns_.load() + kSec;
    while (checkers_.load() > 0 && mono_now_ns() < checkers_end)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (checkers_.load() > 0)
      std::fprintf(stderr, "ringpoll-proxy: shutdown: %d health checks still probing\n",
                   checkers_.load());
    return aborted;
  }

  Metrics& metrics() noexcept { return metrics_; }
  uint64_t reloads() const noexcept { return reloads_.load(); }
  // The pools of the current generation (for the admin page and tests).
  std::vector<const Pool*> pools() const {
    auto gen = generation();
    std::vector<const Pool*> v;
    for (auto& p : gen->pools) v.push_back(p.get());
    return v;
  }

 private:
  struct Generation {
    ProxySettings s;
    std::vector<std::unique_ptr<Pool>> pools;
    std::vector<Pool*> by_listener;
    std::atomic<bool> retired{false};
  };

  static std::shared_ptr<Generation> make_generation(ProxySettings s) {
    auto g = std::make_shared<Generation>();
    g->s = std::move(s);
    for (const PoolSettings& p : g->s.pools) g->pools.push_back(std::make_unique<Pool>(p));
    for (const ListenerSettings& l : g->s.listeners) {
      const int k = pool_index(g->s, l.pool);
      g->by_listener.push_back(k >= 0 ? g->pools[static_cast<size_t>(k)].get() : nullptr);
    }
    return g;
  }
  std::shared_ptr<Generation> generation() const {
    std::lock_guard<std::mutex> l(mu_);
    return current_;
  }

  // What a new UDP flow of listener li uses: the current generation's pool.
  UdpPick udp_pick(size_t li) const {
    auto gen = generation();
    UdpPick p;
    p.pool = gen->by_listener[li];
    p.idle_ns = gen->s.udp_idle_ns;
    p.max_flows = gen->s.udp_max_flows;
    p.hold = std::move(gen);
    return p;
  }

  // ---- one client connection ----

  // Lets the handler wait for the pump it spawned.
  struct Joiner {
    Scheduler<P>* sched = nullptr;
    TaskNode node{};
    bool done = false;
    bool waiting = false;
    void finish() noexcept {
      done = true;
      if (waiting) sched->make_ready(&node);
    }
    struct Awaiter {
      Joiner* j;
      bool await_ready() const noexcept { return j->done; }
      void await_suspend(std::coroutine_handle<> h) noexcept {
        j->node.handle = h;
        j->waiting = true;
      }
      void await_resume() const noexcept {}
    };
    Awaiter wait() noexcept { return Awaiter{this}; }
  };

  struct Relay {
    TcpStream<P>* client = nullptr;
    TcpStream<P>* upstream = nullptr;
    ShardMetrics* m = nullptr;
    int64_t idle_ns = 0;
    int64_t last_activity = 0;
    bool failed = false;
    void fail(ProxyError e) {
      if (failed) return;
      m->error(e);
      end();
    }
    // Ends both directions. Alone (no error counted): one side was closed from outside
    // the relay (the server's shutdown aborts the client), so the other ends as well.
    void end() {
      if (failed) return;
      failed = true;
      client->poll_fd().abort();
      upstream->poll_fd().abort();
    }
  };

  // Keeps a connection counted active for as long as its handler runs.
  struct ActiveCount {
    ShardMetrics* m;
    explicit ActiveCount(ShardMetrics* mm) : m(mm) {
      m->active.store(m->active.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    ~ActiveCount() {
      m->active.store(m->active.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    }
    ActiveCount(const ActiveCount&) = delete;
    ActiveCount& operator=(const ActiveCount&) = delete;
  };

  Task<void> handle(TcpStream<P>& client, size_t li) {
    auto* shard = Engine<P>::current();
    Scheduler<P>& sched = shard->sched();
    ShardMetrics& m = metrics_.shard(static_cast<size_t>(shard->id()));
    std::shared_ptr<Generation> gen = generation();
    m.add(m.accepted);
    ActiveCount active(&m);
    const ProxySettings& s = gen->s;
    if (s.max_connections > 0 &&
        metrics_.total_active() > static_cast<int64_t>(s.max_connections)) {
      m.error(ProxyError::kLimit);
      co_return;
    }
    if (s.keepalive) (void)client.set_keepalive(true);
    Pool* pool = gen->by_listener[li];
    std::unique_ptr<TcpStream<P>> up;
    Upstream* u = nullptr;
    std::vector<const Upstream*> tried;
    const size_t attempts =
        std::min(static_cast<size_t>(std::max(s.max_attempts, 1)), pool->size());
    for (size_t a = 0; a < attempts && !u; ++a) {
      Upstream* cand = pool->acquire(mono_now_ns(), tried);
      const Status st =
          co_await TcpStream<P>::connect(sched, cand->address(), s.connect_timeout_ns, &up);
      if (st.ok()) {
        pool->connect_succeeded(cand);
        u = cand;
        break;
      }
      m.error(st.timeout() ? ProxyError::kConnectTimeout : ProxyError::kConnectFailed);
      pool->connect_failed(cand, mono_now_ns());
      pool->release(cand);
      tried.push_back(cand);
    }
    if (!u) {
      m.error(ProxyError::kNoUpstream);
      co_return;  // the server closes the client
    }
    if (s.nodelay) (void)up->set_nodelay(true);
    if (s.keepalive) (void)up->set_keepalive(true);
    bool ok = true;
    if (const int pp = s.listeners[li].proxy_protocol; pp != 0) {
      ok = co_await send_proxy_header(client, *up, pp);
      if (!ok) m.error(ProxyError::kReset);
    }
    if (ok) co_await relay(sched, client, *up, m, s);
    (void)co_await up->close();
    pool->release(u);
  }

  static Task<bool> send_proxy_header(TcpStream<P>& client, TcpStream<P>& up, int version) {
    sockaddr_storage src{}, dst{};
    socklen_t sl = sizeof src, dl = sizeof dst;
    if (getpeername(client.fd(), reinterpret_cast<sockaddr*>(&src), &sl) < 0) src = {};
    if (getsockname(client.fd(), reinterpret_cast<sockaddr*>(&dst), &dl) < 0) dst = {};
    uint8_t hdr[kProxyHeaderMaxBytes];
    const size_t n = version == 1
                         ? write_proxy_v1(src, dst, reinterpret_cast<char*>(hdr), sizeof hdr)
                         : write_proxy_v2(src, dst, hdr, sizeof hdr);
    if (n == 0) co_return false;
    const IoResult w = co_await up.write(std::as_bytes(std::span<const uint8_t>(hdr, n)));
    co_return w.ok();
  }

  // How a pump moves one chunk. Copy: read into the pump's buffer, write it all out.
  struct CopyMover {
    std::span<std::byte> buf;
    size_t cap() const { return buf.size(); }
    auto in(TcpStream<P>* src) { return src->read(buf); }
    auto out(TcpStream<P>* dst, size_t n) { return dst->write(buf.first(n)); }
  };

  // Splice (readiness backends): socket → the pump's pipe → socket, the bytes staying in
  // the kernel. The pipe never holds more than one chunk: it is emptied before the next
  // read, so neither splice can block on it.
  struct SpliceMover {
    int rd = -1, wr = -1;  // the pipe's two ends
    size_t chunk = 0;
    size_t cap() const { return chunk; }
    Task<IoResult> in(TcpStream<P>* src) {
      const int pw = wr;
      const size_t len = chunk;
      IoResult r = co_await src->poll_fd().ready_op(Mode::kRead, [pw, len](int fd) {
        return ::splice(fd, nullptr, pw, nullptr, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      });
      if (r.ok() && r.n == 0) r.err = Errc::kEof;
      co_return r;
    }
    Task<IoResult> out(TcpStream<P>* dst, size_t n) {
      size_t done = 0;
      const int pr = rd;
      while (done < n) {
        const size_t left = n - done;
        const IoResult w = co_await dst->poll_fd().ready_op(Mode::kWrite, [pr, left](int fd) {
          // No SPLICE_F_MORE: like MSG_MORE it corks the socket, and a small reply then
          // waits for the cork timer (measured: 120 requests/s, p50 416 ms).
          return ::splice(pr, nullptr, fd, nullptr, left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        });
        done += w.n;
        if (!w.ok()) co_return IoResult{done, w.err};
      }
      co_return IoResult{done, Status()};
    }
  };

  // Two pipes (one per direction) sized to the relay buffer; false when the process is
  // out of descriptors (the caller then copies).
  static bool open_pipes(int (&p)[2][2], size_t cap) {
    for (int i = 0; i < 2; ++i) {
      if (pipe2(p[i], O_NONBLOCK | O_CLOEXEC) < 0) {
        if (i == 1) close_pipes(p, 1);
        return false;
      }
      (void)fcntl(p[i][1], F_SETPIPE_SZ, static_cast<int>(cap));
    }
    return true;
  }
  static void close_pipes(int (&p)[2][2], int n = 2) {
    for (int i = 0; i < n; ++i) {
      ::close(p[i][0]);
      ::close(p[i][1]);
    }
  }

  Task<void> relay(Scheduler<P>& sched, TcpStream<P>& client, TcpStream<P>& up, ShardMetrics& m,
                   const ProxySettings& s) {
    const size_t cap = std::max<size_t>(s.buffer_bytes, 512);
    Relay r;
    r.client = &client;
    r.upstream = &up;
    r.m = &m;
    r.idle_ns = s.idle_timeout_ns;
    r.last_activity = mono_now_ns();
    Joiner j;
    j.sched = &sched;
    // upstream → client in its own task; client → upstream here.
    if constexpr (!P::kCompletion) {
      int p[2][2];
      if (s.splice && open_pipes(p, cap)) {
        sched.spawn(pump(&r, &up, &client, SpliceMover{p[1][0], p[1][1], cap}, false, &j));
        co_await pump(&r, &client, &up, SpliceMover{p[0][0], p[0][1], cap}, true, nullptr);
        co_await j.wait();
        close_pipes(p);
        co_return;
      }
    }
    std::unique_ptr<std::byte[]> mem(new std::byte[2 * cap]);
    sched.spawn(pump(&r, &up, &client, CopyMover{{mem.get() + cap, cap}}, false, &j));
    co_await pump(&r, &client, &up, CopyMover{{mem.get(), cap}}, true, nullptr);
    co_await j.wait();
  }

  template <class Mover>
  static Task<void> pump(Relay* r, TcpStream<P>* src, TcpStream<P>* dst, Mover mv, bool upward,
                         Joiner* j) {
    ShardMetrics& m = *r->m;
    for (;;) {
      if (r->idle_ns > 0) (void)src->set_read_deadline(r->last_activity + r->idle_ns);
      const IoResult rd = co_await mv.in(src);
      if (!rd.ok()) {
        if (rd.err.is(Errc::kEof)) {
          (void)dst->shutdown_write();  // half-close, carried through
        } else if (rd.err.timeout()) {
          // The deadline counts from this direction's last arming; the other direction
          // may have moved since.
          if (mono_now_ns() < r->last_activity + r->idle_ns) continue;
          r->fail(ProxyError::kIdleTimeout);
        } else if (rd.err.closed()) {
          r->end();
        } else {
          r->fail(ProxyError::kReset);
        }
        break;
      }
      const int64_t t0 = mono_now_ns();
      if (r->idle_ns > 0) (void)dst->set_write_deadline(t0 + r->idle_ns);
      const IoResult wr = co_await mv.out(dst, rd.n);
      const int64_t t1 = mono_now_ns();
      if (!wr.ok()) {
        if (wr.err.timeout()) {
          r->fail(ProxyError::kIdleTimeout);  // the receiver took nothing for idle_ns
        } else if (wr.err.closed()) {
          r->end();
        } else {
          r->fail(ProxyError::kReset);
        }
        break;
      }
      r->last_activity = t1;
      m.relay_latency(t1 - t0);
      m.add(upward ? m.bytes_up : m.bytes_down, rd.n);
    }
    if (j) j->finish();
  }

  // ---- active health checks (shard 0) ----

  void start_checkers(const std::shared_ptr<Generation>& gen) {
    for (auto& p : gen->pools) {
      if (p->settings().check_interval_ns <= 0) continue;
      auto* start = new CheckStart{this, gen, p.get()};
      checkers_.fetch_add(1);
      const int64_t to = p->settings().check_timeout_ns;  // how long shutdown may wait
      int64_t seen = max_check_timeout_ns_.load();
      while (seen < to && !max_check_timeout_ns_.compare_exchange_weak(seen, to)) {
      }
      const bool posted = e_.shard(0).try_post(ShardJob{[](void* arg) {
                                                          auto* c = static_cast<CheckStart*>(arg);
                                                          Engine<P>::current()->sched().spawn(
                                                              c->self->checker(c->gen, c->pool));
                                                          delete c;
                                                        },
                                                        start});
      if (!posted) {
        std::fprintf(stderr,
                     "ringpoll-proxy: pool '%s': shard 0's inbox is full; active "
                     "health checks not started\n",
                     p->settings().name.c_str());
        delete start;
        checkers_.fetch_sub(1);
      }
    }
  }
  struct CheckStart {
    ProxyServer* self;
    std::shared_ptr<Generation> gen;
    Pool* pool;
  };

  Task<void> checker(std::shared_ptr<Generation> gen, Pool* pool) {
    Scheduler<P>& sched = Engine<P>::current()->sched();
    const PoolSettings& ps = pool->settings();
    while (!gen->retired.load() && !stopping_.load()) {
      for (size_t i = 0; i < pool->size() && !gen->retired.load(); ++i) {
        Upstream& u = pool->at(i);
        std::unique_ptr<TcpStream<P>> c;
        const Status st =
            co_await TcpStream<P>::connect(sched, u.address(), ps.check_timeout_ns, &c);
        if (st.ok()) (void)co_await c->close();
        pool->probe_result(&u, st.ok(), mono_now_ns());
      }
      // The interval in slices, so that a reload or shutdown ends this within one.
      const int64_t next = mono_now_ns() + ps.check_interval_ns;
      for (int64_t now = mono_now_ns(); now < next && !gen->retired.load() && !stopping_.load();
           now = mono_now_ns())
        co_await sched.sleep_for(std::min(next - now, kCheckSliceNs));
    }
    checkers_.fetch_sub(
        1);  // not in a destructor: a frame destroyed unfinished must not touch this
  }

  // ---- admin endpoint (shard 0) ----

  // One admin request; the server closes the stream when this returns.
  Task<void> admin_conn(TcpStream<P>& c) {
    (void)c.set_deadline(mono_now_ns() + 5'000'000'000);
    std::string req;
    char buf[2048];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
      const IoResult r = co_await c.read(std::as_writable_bytes(std::span<char>(buf)));
      if (!r.ok()) break;
      req.append(buf, r.n);
    }
    std::string status = "200 OK", type = "text/plain; version=0.0.4", body;
    if (req.rfind("GET /metrics ", 0) == 0 || req.rfind("GET /metrics?", 0) == 0) {
      body = metrics_.render(pools(), mono_now_ns());
      body += co_await backend_metrics();
    } else if (req.rfind("GET /healthz ", 0) == 0) {
      body = "ok\n";
      type = "text/plain";
    } else if (req.find("\r\n\r\n") == std::string::npos) {
      status = req.size() >= 8192 ? "431 Request Header Fields Too Large" : "400 Bad Request";
      body = status + "\n";
      type = "text/plain";
    } else {
      status = "404 Not Found";
      body = "try GET /metrics\n";
      type = "text/plain";
    }
    std::string resp = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                       "\r\nContent-Length: " + std::to_string(body.size()) +
                       "\r\nConnection: close\r\n\r\n" + body;
    (void)co_await c.write(std::as_bytes(std::span<const char>(resp.data(), resp.size())));
  }

  // The io_uring completion backend's own counters, per shard (read on each shard): how
  // often the provided-buffer ring ran dry (raise io_uring.buf_count when this climbs
  // under load), the re-arms, the buffers free now, the zero-copy sends. Other backends
  // have none.
  Task<std::string> backend_metrics() {
    std::string out;
    if constexpr (requires(P & b) { b.counters().nobufs; }) {
      out +=
          "# HELP ringpoll_uring_recv_nobufs_total Multishot recvs ended because the provided "
          "buffer ring ran dry (ENOBUFS); nothing is lost, the recv is re-armed.\n"
          "# TYPE ringpoll_uring_recv_nobufs_total counter\n"
          "# HELP ringpoll_uring_recv_rearms_total Multishot recvs re-armed.\n"
          "# TYPE ringpoll_uring_recv_rearms_total counter\n"
          "# HELP ringpoll_uring_buffers_free Provided receive buffers free now.\n"
          "# TYPE ringpoll_uring_buffers_free gauge\n"
          "# HELP ringpoll_uring_buffers_held Provided receive buffers holding data a "
          "connection has not read yet.\n"
          "# TYPE ringpoll_uring_buffers_held gauge\n"
          "# HELP ringpoll_uring_conns_at_bound Connections holding io_uring.buf_per_conn "
          "buffers unread now: their recv is off until their application reads.\n"
          "# TYPE ringpoll_uring_conns_at_bound gauge\n"
          "# HELP ringpoll_uring_bound_pauses_total Times a connection reached "
          "io_uring.buf_per_conn.\n"
          "# TYPE ringpoll_uring_bound_pauses_total counter\n"
          "# HELP ringpoll_uring_starved_reads_total Reads received straight into the "
          "application's buffer while the buffer ring was dry.\n"
          "# TYPE ringpoll_uring_starved_reads_total counter\n"
          "# HELP ringpoll_uring_zc_sends_total Sends made with send_zc.\n"
          "# TYPE ringpoll_uring_zc_sends_total counter\n";
      for (size_t i = 0; i < e_.size(); ++i) {
        const auto c = co_await Engine<P>::submit_to(
            e_.shard(i), [] { return Engine<P>::current()->sched().backend().counters(); });
        const std::string l = "{shard=\"" + std::to_string(i) + "\"} ";
        out += "ringpoll_uring_recv_nobufs_total" + l + std::to_string(c.nobufs) + "\n";
        out += "ringpoll_uring_recv_rearms_total" + l + std::to_string(c.recv_rearms) + "\n";
        out += "ringpoll_uring_buffers_free" + l + std::to_string(c.buffers_free) + "\n";
        out += "ringpoll_uring_buffers_held" + l + std::to_string(c.buffers_held) + "\n";
        out += "ringpoll_uring_conns_at_bound" + l + std::to_string(c.conns_at_bound) + "\n";
        out += "ringpoll_uring_bound_pauses_total" + l + std::to_string(c.bound_pauses) + "\n";
        out += "ringpoll_uring_starved_reads_total" + l + std::to_string(c.starved_reads) + "\n";
        out += "ringpoll_uring_zc_sends_total" + l + std::to_string(c.zc_sends) + "\n";
      }
    }
    co_return out;
  }

  Engine<P>& e_;
  Metrics metrics_;
  mutable std::mutex mu_;
  std::shared_ptr<Generation> current_;
  std::vector<std::unique_ptr<TcpServer<P>>> servers_;  // by listener; null: a UDP one
  std::vector<std::unique_ptr<UdpService>> udp_;        // by listener; null: a TCP one
  UdpPathStart udp_path_;
  std::unique_ptr<TcpServer<P>> admin_;  // shard 0 only
  SocketAddress admin_address_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> reloads_{0};
  // Active health checks still running; shutdown() waits for them, at most the longest
  // probe timeout (and a sleep slice).
  std::atomic<int> checkers_{0};
  std::atomic<int64_t> max_check_timeout_ns_{0};
  bool started_ = false;    // start() or start_admin() ran (controlling thread)
  bool shut_down_ = false;  // shutdown() ran
  static constexpr int64_t kCheckSliceNs = 100'000'000;
  static constexpr int64_t kSec = 1'000'000'000;
};

}  // namespace ringpoll::proxy
