#pragma once
// TcpServer<P>: a listener per shard (SO_REUSEPORT) feeding a handler coroutine per
// connection, with the two things every server needs and gets wrong:
//   - EMFILE/ENFILE/ENOBUFS/ENOMEM on accept: the acceptor backs off (5 ms doubling to
//     1 s) and keeps serving the connections it has; it never spins;
//   - graceful shutdown: stop accepting, let in-flight connections finish within the
//     drain deadline, then abort what remains (their operations fail with kClosed);
//     stopping loses no connection the kernel completed: io_uring's multishot accept is
//     cancelled and what it took is served (stop_listening() also serves the backlog);
//   - admission limits per listener and per client address (Options::limits,
//     engine/accept_limits.h): a connection over one is reset at accept and counted.
// And shutdown_on_signals(): SIGINT/SIGTERM start a graceful shutdown; a second signal
// stops at once. On Windows the console's Ctrl-C (SIGINT), Ctrl-Break, close, logoff and
// shutdown events (SIGTERM) take the same path (SetConsoleCtrlHandler).
//
// Windows has no SO_REUSEPORT (kHasReusePort): there the server listens on one shard (the
// first it serves on) and hands each accepted connection to its shards in turn, through
// their inboxes; the connection is then the target shard's as on Linux.
#include <fcntl.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "accept_limits.h"
#include "engine.h"
#include "net.h"

namespace ringpoll {

namespace detail {
// After EMFILE: " (RLIMIT_NOFILE N: raise it, or limit the listener)"; empty where the
// limit cannot be read (and on Windows, which has none for sockets).
std::string fd_limit_hint();

// For the destructor of a server that was not shut down: its teardown goes through the
// shards, so the engine must still run. After Engine::stop() its tasks would be left
// parked on the shards pointing at the freed server, so this stops the process, saying so.
template <class E>
void require_running_for_teardown(const E& e, const char* what) {
  if (e.running()) return;
  std::fprintf(stderr,
               "ringpoll: %s destroyed after its engine stopped, without shutdown(); call "
               "shutdown() before Engine::stop()\n",
               what);
  std::abort();
}
}  // namespace detail

// What a connection handler may want besides its stream (the second parameter of a
// TcpServer::ContextHandler): the shard it runs on, the peer's address, and whether the
// server is shutting down. 16 bytes; take it by value.
template <PollerBackend P>
class ConnContext {
 public:
  ConnContext(typename Engine<P>::Shard& shard, int fd, const std::atomic<bool>* draining)
      : shard_(&shard), fd_(fd), draining_(draining) {}
  // The shard running the handler: its scheduler (sleep_for, spawn, connect), its id.
  typename Engine<P>::Shard& shard() const noexcept { return *shard_; }
  Scheduler<P>& sched() const noexcept { return shard_->sched(); }
  // The connected peer (getpeername; an empty address once the descriptor is closed).
  SocketAddress peer() const {
    SocketAddress a;
    a.len = sizeof a.ss;
    if (getpeername(fd_, reinterpret_cast<sockaddr*>(&a.ss), &a.len) < 0) a = SocketAddress{};
    return a;
  }
  // True once TcpServer::shutdown() has begun: stop taking new requests, finish the one
  // in progress. Past the drain deadline the stream is aborted and its operations fail
  // with kClosed ("descriptor closed ... aborted by a server shutdown").
  bool draining() const noexcept { return draining_->load(std::memory_order_relaxed); }

 private:
  typename Engine<P>::Shard* shard_;
  int fd_;
  const std::atomic<bool>* draining_;
};

template <PollerBackend P>
class TcpServer {
 public:
  // Runs once per accepted connection, as a task on the shard that accepted it. The
  // stream belongs to the server: it is closed when the handler's task ends, so the
  // handler must not keep it (or hand it to another task) beyond that.
  using Handler = std::function<Task<void>(TcpStream<P>&)>;
  // The same with the connection's context (shard, peer, draining) as well.
  using ContextHandler = std::function<Task<void>(TcpStream<P>&, ConnContext<P>)>;
  struct Options {
    ListenOptions listen;
    bool nodelay = true;
    int64_t accept_backoff_min_ns = 5'000'000;      // first pause after EMFILE
    int64_t accept_backoff_max_ns = 1'000'000'000;  // longest pause
    int shard = -1;       // listen on this shard only (e.g. an admin endpoint); -1: on every shard
    AcceptLimits limits;  // admission limits (set_limits changes them while running)
    // Runs on the accepting shard for each connection refused by a limit (after it was
    // reset and counted): a program's own metrics.
    std::function<void(Refusal)> on_refuse;
    // Listening sockets handed over by another process (engine/handover.h): start()
    // adopts these instead of binding, and owns them from then on. Each shard takes one
    // (shards beyond their number share one; sockets beyond the shards' number are taken
    // as extra listeners, round robin), so every socket of the old SO_REUSEPORT group
    // keeps being accepted from.
    std::vector<int> inherit_fds;
  };

  // The engine must outlive the server. Nothing listens until start().
  explicit TcpServer(Engine<P>& e, Options o = {}) : e_(e), opt_(o), shards_(e.size()) {
    limits_.set(opt_.limits);
    for (auto& s : shards_) {
      s = std::make_unique<PerShard>();
      s->clients = clients_;
    }
  }
  // A started server that was not shut down is shut down here with no drain: the
  // listeners close and open connections are aborted (their handlers see kClosed) before
  // the server's memory goes. After Engine::stop() that is shutdown()'s stopped-engine
  // path: the server's state is handed to the stopped shards and freed with the engine.
  ~TcpServer() {
    if (!started_ || shut_down_) return;
    (void)shutdown(0);
  }
  TcpServer(const TcpServer&) = delete;
  TcpServer& operator=(const TcpServer&) = delete;

  // Listens on `at` from every shard. From a thread outside the engine, after start().
  // With SO_REUSEPORT (the default) a port another socket already listens on is refused
  // (EADDRINUSE, *why says so) unless Options::listen.allow_shared_port.
  Status start(const SocketAddress& at, Handler h, std::string* why = nullptr) {
    return start(
        at, [h = std::move(h)](TcpStream<P>& s, ConnContext<P>) { return h(s); }, why);
  }
  // start() for a handler that takes the connection's ConnContext too.
  Status start(const SocketAddress& at, ContextHandler h, std::string* why = nullptr) {
    std::vector<int> inherited = std::move(opt_.inherit_fds);
    opt_.inherit_fds.clear();
    if (!inherited.empty()) return start_inherited(std::move(inherited), std::move(h), why);
    if (opt_.listen.reuseport && !opt_.listen.allow_shared_port && kHasReusePort) {
      // The probe races with a process binding the port right after it; it is a guard
      // against the forgotten instance, not a lock.
      if (Status st = detail::check_port_unshared(at, why); !st.ok()) return st;
    }
    handler_ = std::move(h);
    SocketAddress addr = at;
    [[maybe_unused]] bool listening = false;  // without SO_REUSEPORT: the one listener is up
    for (size_t i = 0; i < shards_.size(); ++i) {
      if (opt_.shard >= 0 && static_cast<size_t>(opt_.shard) != i) continue;
      PerShard* ps = shards_[i].get();
      if constexpr (!kHasReusePort) {
        // One listener, on the first shard; the others take the connections it hands them.
        if (listening) {
          Engine<P>::call(e_.shard(i), [ps] { ps->sched = &Engine<P>::current()->sched(); });
          continue;
        }
        listening = true;
      }
      std::string w;
      const Status st = Engine<P>::call(e_.shard(i), [&] {
        auto& sched = Engine<P>::current()->sched();
        ps->sched = &sched;
        auto l = std::make_unique<TcpListener<P>>();
        ListenOptions lo = opt_.listen;
        if constexpr (!kHasReusePort) lo.reuseport = false;
        Status s = l->listen(sched, addr, lo, &w);
        if (!s.ok()) return s;
        addr = l->local_address();  // port 0: every shard takes the same port
        started_ = true;  // from the first accept loop on: a failed start still needs shutdown
        ++ps->accept_loops;
        sched.spawn(accept_loop(ps, &sched, l.get()));
        ps->listeners.push_back(std::move(l));
        return Status();
      });
      if (!st.ok()) {
        if (why) *why = w;
        return st;
      }
    }
    address_ = addr;
    return Status();
  }
  // The address listened on, with the kernel's port when start() was given port 0.
  SocketAddress address() const { return address_; }
  // The listening sockets (the server's still), for handing over to a new process. From a
  // thread outside the engine, after start().
  std::vector<int> listening_fds() const {
    std::vector<int> v;
    for (auto& s : shards_) {
      if (!s || !s->sched) continue;
      for (auto& l : s->listeners) v.push_back(l->fd());
    }
    return v;
  }

  // Serves a connection another process handed over (an upgrade's predecessor,
  // engine/handover.h) as if this server had accepted it, with handler h instead of the
  // server's own: on the next of its shards in turn, counted in live(), drained and
  // aborted by shutdown() with the others (no admission limit: it was admitted there).
  // From a thread outside the engine, after start() and before shutdown(). False when no
  // shard could take it (fd closed then).
  bool adopt_connection(int fd, ContextHandler h) {
    for (size_t k = 0; k < shards_.size() && !shut_down_; ++k) {
      const size_t i = next_adopt_++ % shards_.size();
      PerShard* ps = shards_[i].get();
      if (!ps->sched) continue;
      const std::optional<bool> ok = Engine<P>::try_call(
          e_.shard(i), [&] { return spawn_conn(ps, ps->sched, fd, nullptr, h); });
      if (ok) return *ok;
    }
    ::close(fd);
    return false;
  }

  // Counters, readable from any thread: open connections, connections accepted by each
  // shard (the SO_REUSEPORT balance), failed accepts. A shard whose state went with a
  // stopped engine (see shutdown) counts 0.
  size_t live() const {
    size_t n = 0;
    for (auto& s : shards_) n += s ? s->live.load() : 0;
    return n;
  }
  std::vector<uint64_t> accepted_per_shard() const {
    std::vector<uint64_t> v;
    for (auto& s : shards_) v.push_back(s ? s->accepted.load() : 0);
    return v;
  }
  uint64_t accept_errors() const {
    uint64_t n = 0;
    for (auto& s : shards_) n += s ? s->accept_errors.load() : 0;
    return n;
  }
  // Connections refused at accept for reason r (Options::limits), every shard.
  uint64_t refused(Refusal r) const {
    uint64_t n = 0;
    for (auto& s : shards_)
      n += s ? s->refused[static_cast<size_t>(r)].load(std::memory_order_relaxed) : 0;
    return n;
  }
  // New admission limits, from the next accept on (any thread; connections already open
  // stay). Limits turned on while running count only the connections accepted after.
  void set_limits(const AcceptLimits& l) noexcept { limits_.set(l); }
  AcceptLimits limits() const noexcept { return limits_.get(); }

  // Stops listening but leaves the connections running (a listener a reload removes):
  // each shard's listener hands what was queued — what io_uring's multishot accept had
  // taken, then the kernel's backlog — to the handler as usual, then closes, so a client
  // that completed its connect before this is served. Connections keep running until
  // they end or shutdown() drains them. From a thread outside the engine, after start();
  // once (later calls, and shutdown() after it, find the listeners closed).
  void stop_listening() {
    if (shut_down_ || stopped_listening_) return;
    stopped_listening_ = true;
    const int64_t wait = opt_.accept_backoff_max_ns + 1'000'000'000;
    for (size_t i = 0; i < shards_.size(); ++i) {
      PerShard* ps = shards_[i].get();
      if (!ps->sched) continue;
      (void)Engine<P>::try_run_task(e_.shard(i),
                                    [this, ps, wait] { return close_listener(ps, wait, true); });
    }
  }

  // From a thread outside the engine. Returns the number of connections aborted at the
  // deadline (0 when everything drained). Once, or again (then it returns 0 at once).
  //
  // When the engine stops before or during the shutdown (Engine::stop() — e.g. a second
  // signal's handler), the shards can no longer close anything: shutdown() then returns
  // promptly (it never waits on a stopped shard) with the open connections counted as
  // aborted, and the server's listeners, connections and their tasks stay with the
  // stopped shards, closed and freed when the engine is destroyed.
  size_t shutdown(int64_t drain_ns) {
    if (shut_down_) return 0;
    shut_down_ = true;
    draining_.store(true, std::memory_order_relaxed);
    for (size_t i = 0; i < shards_.size(); ++i) {
      PerShard* ps = shards_[i].get();
      if (!ps->sched) continue;  // never listened there
      const int64_t wait = opt_.accept_backoff_max_ns + 1'000'000'000;
      if (!Engine<P>::try_run_task(e_.shard(i),
                                   [this, ps, wait] { return close_listener(ps, wait, false); }))
        return hand_over_to_stopped_engine();
    }
    const int64_t end = mono_now_ns() + drain_ns;
    while (live() > 0 && mono_now_ns() < end && shards_serving())
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (!shards_serving()) return hand_over_to_stopped_engine();
    size_t aborted = 0;
    if (live() > 0) {
      for (size_t i = 0; i < shards_.size(); ++i) {
        PerShard* ps = shards_[i].get();
        if (!ps->sched) continue;
        std::optional<size_t> n = Engine<P>::try_call(e_.shard(i), [ps] {
          size_t n = 0;
          ps->sched->for_each_root([&](typename Scheduler<P>::Root* r) {
            if (r->done != &conn_done || static_cast<Conn*>(r)->ps != ps) return;
            static_cast<Conn*>(r)->stream.poll_fd().abort();
            ++n;
          });
          return n;
        });
        if (!n) return hand_over_to_stopped_engine();
        aborted += *n;
      }
      // Aborted handlers see kClosed on their next operation and return.
      const int64_t hard = mono_now_ns() + 5'000'000'000;
      while (live() > 0 && mono_now_ns() < hard && shards_serving())
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      if (!shards_serving()) return aborted + hand_over_to_stopped_engine();
    }
    return aborted;
  }

 private:
  // Accepts in a row before the accept loop yields to the shard's other tasks.
  static constexpr int kAcceptsPerYield = 16;
  struct PerShard;
  // One per connection: the handler task's root bookkeeping (no wrapper coroutine: when
  // the handler returns, conn_done closes and frees this record; the shard's root list is
  // also the server's list of its connections) and the stream. 80 bytes.
  struct Conn : Scheduler<P>::Root {
    TcpStream<P> stream;
    PerShard* ps = nullptr;
    ClientTable::Entry* client = nullptr;  // its client address's count (per-client limits)
  };
  struct PerShard {
    Scheduler<P>* sched = nullptr;
    std::vector<std::unique_ptr<TcpListener<P>>> listeners;  // one, unless handed extras
    std::atomic<size_t> live{0};
    size_t accept_loops = 0;  // accept loops still running (the shard's thread only)
    std::atomic<uint64_t> accepted{0};
    std::atomic<uint64_t> accept_errors{0};
    std::array<std::atomic<uint64_t>, static_cast<size_t>(Refusal::kCount)> refused{};
    TokenBucket rate;  // this shard's share of the listener's max_rate (shard thread)
    std::shared_ptr<ClientTable> clients;
  };

  // Every shard this server listens on still runs its loop (false once Engine::stop()
  // has reached one of them).
  bool shards_serving() const {
    for (size_t i = 0; i < shards_.size(); ++i)
      if (shards_[i] && shards_[i]->sched && !e_.shard(i).serving()) return false;
    return true;
  }

  // shutdown() when the engine has stopped: waits until no shard thread runs any more,
  // then gives each shard's state to a root task on that (stopped) shard's scheduler. The
  // scheduler's destructor destroys every parked frame first (the accept loop's, the
  // handlers', which point into the state) and only then ends the keeper, which frees the
  // state: the listeners and connections close with the engine, never before their tasks.
  // Touching a scheduler from this thread is safe once its shard no longer serves: the
  // shard's thread does nothing after it clears serving() (release; read with acquire).
  // Returns the connections still open.
  size_t hand_over_to_stopped_engine() {
    const size_t open = live();
    for (size_t i = 0; i < shards_.size(); ++i) {
      if (!shards_[i]->sched) continue;
      while (e_.shard(i).serving()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    for (auto& sp : shards_) {
      if (!sp->sched) continue;
      auto* k = new Keeper;
      k->ps.reset(sp.release());
      k->done = &Keeper::ended;
      Scheduler<P>* sched = k->ps->sched;
      sched->spawn(Keeper::never_runs(), k);
    }
    return open;
  }
  struct Keeper : Scheduler<P>::Root {
    std::unique_ptr<PerShard> ps;
    static Task<void> never_runs() { co_return; }
    static void ended(detail::DoneHook* h, std::coroutine_handle<> frame) noexcept {
      auto* k = static_cast<Keeper*>(h);
      if (frame) k->ps->sched->finish_root(k, frame);
      delete k;
    }
  };

  // Stops accepting without losing a connection, then closes the listeners. Where the
  // backend took connections ahead of accept (io_uring's multishot accept), the accept
  // loops hand each of them to a handler, as any other, until accept reports kClosed;
  // this waits for that (at most wait_ns: an acceptor may be pausing after EMFILE), so
  // a connection the kernel completed is served, never reset by the close. Readiness
  // backends leave what is queued in the kernel: a process that shares the socket (an
  // upgrade's successor, engine/handover.h) accepts it. With `backlog` (stop_listening:
  // nobody else will) the kernel's queue is accepted and served too before the close.
  Task<void> close_listener(PerShard* ps, int64_t wait_ns, bool backlog) {
    bool drain = false;
    for (auto& l : ps->listeners) drain |= l->poll_fd().stop_accepting();
    const int64_t end = mono_now_ns() + wait_ns;
    while (drain && ps->accept_loops > 0 && mono_now_ns() < end)
      co_await ps->sched->sleep_for(1'000'000);
    // A stopped multishot accept also takes the backlog on shutdown: io_uring's accept waits
    // exclusively, so a connection whose wake-up went to the request being cancelled wakes
    // no other waiter on a shared socket (an upgrade's successor) and would sit in the
    // queue until the next connection came (seen: one client in two runs waited 3 s).
    for (auto& l : ps->listeners) {
      if ((backlog || drain) && l->poll_fd().is_open()) take_backlog(ps, l->fd());
      (void)co_await l->close();
    }
    // An acceptor pausing after EMFILE wakes later, finds its listener closed and ends:
    // wait for that too, so that nothing of this server is touched once this returns.
    while (ps->accept_loops > 0 && mono_now_ns() < end) co_await ps->sched->sleep_for(1'000'000);
  }
  // Accepts what the kernel queued on a listener that is about to close, without waiting.
  // On the shard's thread, with no accept of the backend's own in flight that could take
  // the same connections ahead (a stopped multishot accept; a readiness accept loop only
  // runs between awaits; a single-shot io_uring accept that wins is served by its loop).
  // The file flags belong to the socket's open file description, which an upgrade's
  // successor shares: they are put back as they were (a completion-mode successor needs
  // the socket blocking, and checks that it is).
  void take_backlog(PerShard* ps, int fd) {
    const int fl = fcntl(fd, F_GETFL);  // completion backends keep it blocking
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return;
    for (;;) {
      const int c = detail::accept_connection(fd, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c >= 0) {
        serve(ps, ps->sched, c);
      } else if (errno != ECONNABORTED && errno != EINTR) {
        break;  // EAGAIN: the queue is empty (another error: nothing more can be taken)
      }
    }
    if (!(fl & O_NONBLOCK)) (void)fcntl(fd, F_SETFL, fl);
  }

  // start() with sockets handed over (Options::inherit_fds): no bind, no port check. Linux
  // only (SCM_RIGHTS): refused on Windows, saying so.
  Status start_inherited(std::vector<int> fds, ContextHandler h, std::string* why) {
    if constexpr (!kHasListenerHandover) {
      for (int fd : fds) detail::close_socket(fd);
      if (why) *why = "listening sockets handed over by another process: Linux only (SCM_RIGHTS)";
      return Status::from_errno(EOPNOTSUPP);
    }
    handler_ = std::move(h);
    std::vector<size_t> serving;  // the shards that listen
    for (size_t i = 0; i < shards_.size(); ++i)
      if (opt_.shard < 0 || static_cast<size_t>(opt_.shard) == i) serving.push_back(i);
    const size_t n = fds.size(), m = serving.size();
    std::vector<bool> taken(n, false);
    Status result;
    for (size_t k = 0; k < m && result.ok(); ++k) {
      PerShard* ps = shards_[serving[k]].get();
      // This shard's sockets: its own (or a shared copy), then every m-th of the rest.
      std::vector<int> mine;
      mine.push_back(k < n ? fds[k] : ::dup(fds[k % n]));
      for (size_t j = k + m; j < n; j += m) mine.push_back(fds[j]);
      std::string w;
      result = Engine<P>::call(e_.shard(serving[k]), [&] {
        auto& sched = Engine<P>::current()->sched();
        ps->sched = &sched;
        for (size_t x = 0; x < mine.size(); ++x) {
          auto l = std::make_unique<TcpListener<P>>();
          Status s = mine[x] < 0 ? Status::from_errno(EMFILE) : l->adopt(sched, mine[x], &w);
          if (!s.ok()) {  // this one and the rest of this shard's are closed here
            for (size_t y = x; y < mine.size(); ++y)
              if (mine[y] >= 0) ::close(mine[y]);
            return s;
          }
          started_ = true;
          ++ps->accept_loops;
          sched.spawn(accept_loop(ps, &sched, l.get()));
          ps->listeners.push_back(std::move(l));
        }
        return Status();
      });
      for (size_t j = k; j < n; j += m) taken[j] = true;
      if (!result.ok() && why) *why = "handed-over listener: " + w;
    }
    // What was not adopted (a failure part-way) is closed here; the rest the listeners own.
    if (!result.ok()) {
      for (size_t j = 0; j < n; ++j)
        if (!taken[j]) ::close(fds[j]);
      return result;
    }
    address_ = shards_[serving[0]]->listeners[0]->local_address();
    return Status();
  }

  Task<void> accept_loop(PerShard* ps, Scheduler<P>* sched, TcpListener<P>* listener) {
    struct Count {  // also when the scheduler destroys this frame at teardown
      size_t& n;
      ~Count() { --n; }
    } count{ps->accept_loops};
    int64_t backoff = 0;
    int in_a_row = 0;
    for (;;) {
      // A flood keeps the queue full, so every accept completes at once and the loop
      // never parks: it yields after kAcceptsPerYield, and the shard's other tasks (and
      // its poll) get their turn (DESIGN.md "Fairness").
      if (++in_a_row == kAcceptsPerYield) {
        in_a_row = 0;
        co_await sched->yield();
      }
      AcceptResult a = co_await listener->accept();
      if (a.err.closed()) break;  // shutdown
      if (!a.err.ok()) {
        ps->accept_errors.fetch_add(1);
        const int e = a.err.sys_errno();
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
          // Out of descriptors or memory: pause instead of spinning on a listener that
          // stays readable; existing connections keep being served meanwhile.
          backoff = backoff == 0 ? opt_.accept_backoff_min_ns
                                 : std::min(backoff * 2, opt_.accept_backoff_max_ns);
          const std::string hint = e == EMFILE ? detail::fd_limit_hint() : std::string();
          std::fprintf(stderr, "ringpoll: accept: %s%s; pausing %lld ms\n", a.err.message(),
                       hint.c_str(), static_cast<long long>(backoff / 1'000'000));
          co_await sched->sleep_for(backoff);
        }
        continue;
      }
      backoff = 0;
      if constexpr (kHasReusePort) {
        serve(ps, sched, a.fd);
      } else {
        hand_to_next_shard(ps, sched, a.fd);
      }
    }
  }

  // Without SO_REUSEPORT (Windows): the one accepting shard gives its connections to the
  // shards this server runs on in turn. A connection on its way counts as live on its
  // target until the target has taken it, so shutdown() waits for it, and it is served on
  // the accepting shard when the target's inbox is full.
  void hand_to_next_shard(PerShard* ps, Scheduler<P>* sched, int fd) {
    size_t t = next_shard_++ % shards_.size();
    for (size_t k = 0; k < shards_.size() && !shards_[t]->sched; ++k) t = (t + 1) % shards_.size();
    PerShard* target = shards_[t].get();
    if (target == ps || !target->sched) return serve(ps, sched, fd);
    target->live.fetch_add(1);
    const bool posted = Engine<P>::post(e_.shard(t), [this, target, fd] {
      serve(target, target->sched, fd);
      target->live.fetch_sub(1);
    });
    if (posted) return;
    target->live.fetch_sub(1);
    serve(ps, sched, fd);
  }

  // An accepted connection: admitted (or refused by a limit) and handed to the handler's
  // task on this shard.
  void serve(PerShard* ps, Scheduler<P>* sched, int fd) {
    ClientTable::Entry* client = nullptr;
    if (const auto refusal = admit(ps, fd, &client)) {
      refuse(ps, fd, *refusal);
      return;
    }
    if (spawn_conn(ps, sched, fd, client, handler_)) ps->accepted.fetch_add(1);
  }
  // The connection's record and the handler's task (false: fd could not be adopted; closed).
  bool spawn_conn(PerShard* ps, Scheduler<P>* sched, int fd, ClientTable::Entry* client,
                  const ContextHandler& h) {
    auto* c = new Conn();
    c->client = client;
    if (!c->stream.adopt(*sched, fd).ok()) {
      detail::close_socket(fd);
      if (client) ps->clients->release(client);
      delete c;
      return false;
    }
    if (opt_.nodelay) (void)c->stream.set_nodelay(true);
    ps->live.fetch_add(1);
    c->ps = ps;
    c->done = &conn_done;
    sched->spawn(h(c->stream, ConnContext<P>(*Engine<P>::current(), fd, &draining_)), c);
    return true;
  }

  // Checks a new connection against the limits: the reason to refuse it, or nothing (then
  // *client is its client address's entry when per-client limits are on). Client limits
  // first, so that a client over its own limit spends none of the listener's rate.
  std::optional<Refusal> admit(PerShard* ps, int fd, ClientTable::Entry** client) {
    const AcceptLimits l = limits_.get();
    const int64_t now = mono_now_ns();
    if (l.per_client()) {
      SocketAddress peer;
      peer.len = sizeof peer.ss;
      if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer.ss), &peer.len) != 0) {
        // The client reset (or closed) it before the accept: admitting it uncounted would
        // let a flood of connect-and-reset pass every per-client limit, each one costing
        // a handler (a proxy's upstream connect) for a peer that is not there.
        return Refusal::kGone;
      }
      Refusal why{};
      *client = ps->clients->admit(peer, l.max_per_client, l.max_client_rate, now, &why);
      if (!*client) return why;
    }
    std::optional<Refusal> why;
    if (l.max_connections > 0 && live() >= l.max_connections) {
      why = Refusal::kConnections;
    } else if (l.max_rate > 0 && !ps->rate.take(rate_share(l.max_rate), now)) {
      why = Refusal::kRate;
    }
    if (why && *client) {
      ps->clients->release(*client);
      *client = nullptr;
    }
    return why;
  }
  // A shard's share of the listener's rate: even between the shards it listens on.
  uint32_t rate_share(uint32_t rate) const noexcept {
    const uint32_t n = opt_.shard >= 0 ? 1 : static_cast<uint32_t>(shards_.size());
    return std::max<uint32_t>(1, (rate + n - 1) / n);
  }
  // Counts a refused connection, then resets it (no TIME_WAIT for a flood to fill): a
  // client that sees the reset finds it counted.
  void refuse(PerShard* ps, int fd, Refusal r) {
    auto& n = ps->refused[static_cast<size_t>(r)];
    n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (opt_.on_refuse) opt_.on_refuse(r);
    const linger lg{1, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    detail::close_socket(fd);
  }

  // The handler's task ended (frame set), or the scheduler destroyed it unfinished at
  // teardown (frame empty; the server may be gone then, so only the record is freed).
  static void conn_done(detail::DoneHook* h, std::coroutine_handle<> frame) noexcept {
    Conn* c = static_cast<Conn*>(h);
    if (!frame) {
      delete c;
      return;
    }
    PerShard* ps = c->ps;
    ps->sched->finish_root(c, frame);
    ps->live.fetch_sub(1);
    if (c->client) ps->clients->release(std::exchange(c->client, nullptr));
    if (c->stream.poll_fd().in_flight() == 0) {
      c->stream.poll_fd().abort();  // nothing in flight: closes the descriptor now
      delete c;
    } else {
      // Another task still has an operation on this stream: close() waits for it.
      ps->sched->spawn(close_later(c));
    }
  }
  static Task<void> close_later(Conn* c) {
    (void)co_await c->stream.close();
    delete c;
  }

  Engine<P>& e_;
  Options opt_;
  ContextHandler handler_;
  std::atomic<bool> draining_{false};  // shutdown() has begun (ConnContext::draining)
  SharedLimits limits_;
  std::shared_ptr<ClientTable> clients_ = std::make_shared<ClientTable>();
  std::vector<std::unique_ptr<PerShard>> shards_;
  SocketAddress address_;
  bool started_ = false;            // an accept loop was spawned (controlling thread only)
  bool shut_down_ = false;          // shutdown() ran
  bool stopped_listening_ = false;  // stop_listening() ran
  size_t next_adopt_ = 0;           // adopt_connection's next shard (its calling thread)
  size_t next_shard_ = 0;           // without SO_REUSEPORT: the next shard a connection goes to
};

// Blocks SIGINT and SIGTERM in the calling thread (call it before Engine::start so the
// shards inherit the mask) and starts a thread that waits for them: the first calls
// graceful(), a second calls immediate() (as wait_stop_signals below). Returns the thread (detached
// by the caller or joined after a signal). With `reload`, SIGHUP is blocked too and each one calls
// reload() on that thread, for as long as no stop signal has arrived.
std::thread shutdown_on_signals(std::function<void()> graceful, std::function<void()> immediate,
                                std::function<void()> reload = {});

// The two halves of shutdown_on_signals, for programs that wait on their main thread:
// block the signals before the engine's threads start (they inherit the mask), then wait.
// wait_stop_signals runs graceful() on a thread of its own at the first signal and returns
// once graceful() has returned. A second signal runs immediate() (Engine::stop() is a good
// choice: TcpServer::shutdown then returns promptly); if graceful() has still not returned
// 5 s after that, or at a third signal, it ends the process itself (_Exit(143)), so no
// pair of handlers can leave the process deaf to signals. On return the stop signals are
// unblocked in the calling thread: a later SIGINT/SIGTERM ends the process.
// With `upgrade`, SIGUSR2 (blocked by block_stop_signals(..., true)) calls upgrade() on the
// waiting thread, as SIGHUP calls reload(); a stop signal that arrives meanwhile waits
// until it returns.
//
// Windows: the console's control events stand for the signals (Ctrl-C is SIGINT;
// Ctrl-Break, closing the console, logoff and shutdown are SIGTERM; a close is held until
// the graceful stop returns, at most 4.5 s, as Windows ends the process when its handler
// returns). Reload, for want of SIGHUP, is the named event reload_event_name(pid), which
// block_stop_signals(true) creates: any process of the session may SetEvent it. There is
// no binary upgrade (block_stop_signals(..., true) says so).
void block_stop_signals(bool with_reload, bool with_upgrade = false);
#ifdef _WIN32
// "Local\ringpoll-reload-<pid>": the event that makes process <pid> reload.
std::string reload_event_name(unsigned long pid);
// Sets that event of process `pid` (what `kill -HUP pid` is on Linux); false with *why
// when there is none (no such process, or one that takes no reload) or it cannot be set.
bool signal_reload(unsigned long pid, std::string* why);
namespace detail {
// Test seam: runs the console control handler for `type` (CTRL_C_EVENT ...) as Windows
// would on its own thread; returns what the handler returned (TRUE: handled).
bool deliver_console_event(unsigned long type);
}  // namespace detail
#endif
void wait_stop_signals(const std::function<void()>& graceful,
                       const std::function<void()>& immediate,
                       const std::function<void()>& reload = {},
                       const std::function<void()>& upgrade = {});

}  // namespace ringpoll
