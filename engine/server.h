#pragma once
// TcpServer<P>: a listener per shard (SO_REUSEPORT) feeding a handler coroutine per
// connection, with the two things every server needs and gets wrong:
//   - EMFILE/ENFILE/ENOBUFS/ENOMEM on accept: the acceptor backs off (5 ms doubling to
//     1 s) and keeps serving the connections it has; it never spins;
//   - graceful shutdown: stop accepting, let in-flight connections finish within the
//     drain deadline, then abort what remains (their operations fail with kClosed).
// And shutdown_on_signals(): SIGINT/SIGTERM start a graceful shutdown; a second signal
// stops at once.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine.h"
#include "net.h"

namespace ringpoll {

namespace detail {
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

template <PollerBackend P>
class TcpServer {
 public:
  // Runs once per accepted connection, as a task on the shard that accepted it. The
  // stream belongs to the server: it is closed when the handler's task ends, so the
  // handler must not keep it (or hand it to another task) beyond that.
  using Handler = std::function<Task<void>(TcpStream<P>&)>;
  struct Options {
    ListenOptions listen;
    bool nodelay = true;
    int64_t accept_backoff_min_ns = 5'000'000;      // first pause after EMFILE
    int64_t accept_backoff_max_ns = 1'000'000'000;  // longest pause
    int shard = -1;  // listen on this shard only (e.g. an admin endpoint); -1: on every shard
  };

  // The engine must outlive the server. Nothing listens until start().
  explicit TcpServer(Engine<P>& e, Options o = {}) : e_(e), opt_(o), shards_(e.size()) {
    for (auto& s : shards_) s = std::make_unique<PerShard>();
  }
  // A started server that was not shut down is shut down here with no drain: the
  // listeners close and open connections are aborted (their handlers see kClosed) before
  // the server's memory goes. That goes through the shards, so the engine must still run:
  // a started server destroyed after Engine::stop() without shutdown() would leave its
  // tasks parked on the shards pointing at freed memory, and stops the process with a
  // message saying so instead.
  ~TcpServer() {
    if (!started_ || shut_down_) return;
    detail::require_running_for_teardown(e_, "TcpServer");
    (void)shutdown(0);
  }
  TcpServer(const TcpServer&) = delete;
  TcpServer& operator=(const TcpServer&) = delete;

  // Listens on `at` from every shard. From a thread outside the engine, after start().
  Status start(const SocketAddress& at, Handler h, std::string* why = nullptr) {
    handler_ = std::move(h);
    SocketAddress addr = at;
    for (size_t i = 0; i < shards_.size(); ++i) {
      if (opt_.shard >= 0 && static_cast<size_t>(opt_.shard) != i) continue;
      PerShard* ps = shards_[i].get();
      std::string w;
      const Status st = Engine<P>::call(e_.shard(i), [&] {
        auto& sched = Engine<P>::current()->sched();
        ps->sched = &sched;
        ps->listener = std::make_unique<TcpListener<P>>();
        Status s = ps->listener->listen(sched, addr, opt_.listen, &w);
        if (!s.ok()) return s;
        addr = ps->listener->local_address();  // port 0: every shard takes the same port
        started_ = true;  // from the first accept loop on: a failed start still needs shutdown
        sched.spawn(accept_loop(ps, &sched));
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

  // Counters, readable from any thread: open connections, connections accepted by each
  // shard (the SO_REUSEPORT balance), failed accepts.
  size_t live() const {
    size_t n = 0;
    for (auto& s : shards_) n += s->live.load();
    return n;
  }
  std::vector<uint64_t> accepted_per_shard() const {
    std::vector<uint64_t> v;
    for (auto& s : shards_) v.push_back(s->accepted.load());
    return v;
  }
  uint64_t accept_errors() const {
    uint64_t n = 0;
    for (auto& s : shards_) n += s->accept_errors.load();
    return n;
  }

  // From a thread outside the engine. Returns the number of connections aborted at the
  // deadline (0 when everything drained).
  size_t shutdown(int64_t drain_ns) {
    shut_down_ = true;
    for (size_t i = 0; i < shards_.size(); ++i) {
      PerShard* ps = shards_[i].get();
      if (!ps->sched) continue;  // never listened there
      Engine<P>::run_task(e_.shard(i), [ps] { return close_listener(ps); });
    }
    const int64_t end = mono_now_ns() + drain_ns;
    while (live() > 0 && mono_now_ns() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    size_t aborted = 0;
    if (live() > 0) {
      for (size_t i = 0; i < shards_.size(); ++i) {
        PerShard* ps = shards_[i].get();
        if (!ps->sched) continue;
        aborted += Engine<P>::call(e_.shard(i), [ps] {
          size_t n = 0;
          ps->sched->for_each_root([&](typename Scheduler<P>::Root* r) {
            if (r->done != &conn_done || static_cast<Conn*>(r)->ps != ps) return;
            static_cast<Conn*>(r)->stream.poll_fd().abort();
            ++n;
          });
          return n;
        });
      }
      // Aborted handlers see kClosed on their next operation and return.
      const int64_t hard = mono_now_ns() + 5'000'000'000;
      while (live() > 0 && mono_now_ns() < hard)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return aborted;
  }

 private:
  struct PerShard;
  // One per connection: the handler task's root bookkeeping (no wrapper coroutine: when
  // the handler returns, conn_done closes and frees this record; the shard's root list is
  // also the server's list of its connections) and the stream. 80 bytes.
  struct Conn : Scheduler<P>::Root {
    TcpStream<P> stream;
    PerShard* ps = nullptr;
  };
  struct PerShard {
    Scheduler<P>* sched = nullptr;
    std::unique_ptr<TcpListener<P>> listener;
    std::atomic<size_t> live{0};
    std::atomic<uint64_t> accepted{0};
    std::atomic<uint64_t> accept_errors{0};
  };

  static Task<void> close_listener(PerShard* ps) {
    if (ps->listener) (void)co_await ps->listener->close();
  }

  Task<void> accept_loop(PerShard* ps, Scheduler<P>* sched) {
    int64_t backoff = 0;
    for (;;) {
      AcceptResult a = co_await ps->listener->accept();
      if (a.err.closed()) break;  // shutdown
      if (!a.err.ok()) {
        ps->accept_errors.fetch_add(1);
        const int e = a.err.sys_errno();
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
          // Out of descriptors or memory: pause instead of spinning on a listener that
          // stays readable; existing connections keep being served meanwhile.
          backoff = backoff == 0 ? opt_.accept_backoff_min_ns
                                 : std::min(backoff * 2, opt_.accept_backoff_max_ns);
          std::fprintf(stderr, "ringpoll: accept: %s; pausing %lld ms\n", a.err.message(),
                       static_cast<long long>(backoff / 1'000'000));
          co_await sched->sleep_for(backoff);
        }
        continue;
      }
      backoff = 0;
      auto* c = new Conn();
      if (!c->stream.adopt(*sched, a.fd).ok()) {
        ::close(a.fd);
        delete c;
        continue;
      }
      if (opt_.nodelay) (void)c->stream.set_nodelay(true);
      ps->accepted.fetch_add(1);
      ps->live.fetch_add(1);
      c->ps = ps;
      c->done = &conn_done;
      sched->spawn(handler_(c->stream), c);
    }
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
  Handler handler_;
  std::vector<std::unique_ptr<PerShard>> shards_;
  SocketAddress address_;
  bool started_ = false;    // an accept loop was spawned (controlling thread only)
  bool shut_down_ = false;  // shutdown() ran
};

// Blocks SIGINT and SIGTERM in the calling thread (call it before Engine::start so the
// shards inherit the mask) and starts a thread that waits for them: the first calls
// graceful(), a second calls immediate(). Returns the thread (detached by the caller or
// joined after a signal). With `reload`, SIGHUP is blocked too and each one calls reload()
// on that thread, for as long as no stop signal has arrived.
std::thread shutdown_on_signals(std::function<void()> graceful, std::function<void()> immediate,
                                std::function<void()> reload = {});

// The two halves of shutdown_on_signals, for programs that wait on their main thread:
// block the signals before the engine's threads start (they inherit the mask), then wait.
// wait_stop_signals returns once the graceful stop has returned (or immediate ran).
void block_stop_signals(bool with_reload);
void wait_stop_signals(const std::function<void()>& graceful,
                       const std::function<void()>& immediate,
                       const std::function<void()>& reload = {});

}  // namespace ringpoll
