// tcp_proxy: an L4 proxy with an idle deadline. Each client connection gets its own
// connection to UPSTREAM (connect timeout 2 s); bytes are copied both ways, a half-close
// is passed on, and a connection with no traffic either way for IDLE_MS is closed.
//
//   tcp_proxy LISTEN UPSTREAM [IDLE_MS]     e.g. tcp_proxy 127.0.0.1:0 127.0.0.1:7000 5000
//
// UPSTREAM is an address literal; resolve() in <ringpoll/engine/net.h> takes host names.
// apps/ringpoll-proxy is the full proxy (pools, health checks, reload, metrics).
#include <ringpoll/ringpoll.h>

#include "serve_until_stopped.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

using namespace ringpoll;

constexpr int64_t kConnectTimeoutNs = 2'000'000'000;

// The state both directions of one proxied connection share. Both run on the connection's
// shard (a task never changes shard), so plain fields need no atomics.
template <class P>
struct Session {
  Session(TcpStream<P>* c, TcpStream<P>* u, int64_t idle)
      : client(c), upstream(u), idle_ns(idle), last_active(mono_now_ns()) {}
  TcpStream<P>* client;
  TcpStream<P>* upstream;
  int64_t idle_ns;
  int64_t last_active;  // CLOCK_MONOTONIC ns of the last byte either way
  bool over = false;    // idle or failed: both directions stop
  // Lets the handler wait for the direction it spawned (see relay's end).
  TaskNode waiter;
  bool spawned_done = false;
  bool waiting = false;

  // Ends the session: expired deadlines wake the other direction's pending read or write
  // with kTimeout, and it sees `over`.
  void end() {
    over = true;
    (void)client->set_deadline(1);  // any absolute time in the past means "expired"
    (void)upstream->set_deadline(1);
  }
};

// Copies `from` to `to` until end of stream (then half-closes `to`), an error or idleness.
template <class P>
Task<void> relay(Session<P>* s, TcpStream<P>* from, TcpStream<P>* to) {
  char buf[16384];
  for (;;) {
    // One deadline for both directions: traffic either way pushes it later. Pushing a
    // deadline later is one store in the shard's timer wheel, cheap enough per read.
    (void)from->set_read_deadline(s->last_active + s->idle_ns);
    const IoResult r = co_await from->read(std::as_writable_bytes(std::span(buf)));
    if (r.err.timeout() && !s->over && mono_now_ns() < s->last_active + s->idle_ns) {
      continue;  // the other direction moved bytes meanwhile: not idle
    }
    if (r.err.is(Errc::kEof)) {
      (void)to->shutdown_write();  // pass the half-close on; the other way may go on
      co_return;
    }
    if (!r.ok() || s->over) break;  // idle, reset, or the other direction failed
    s->last_active = mono_now_ns();
    const IoResult w = co_await to->write(std::as_bytes(std::span(buf, r.n)));
    if (!w.ok()) break;
  }
  s->end();
}

// The upstream-to-client direction, run as a task of its own; it tells the handler when
// it is done so the handler can close the upstream connection.
template <class P>
Task<void> relay_back(Session<P>* s, Scheduler<P>* sched) {
  co_await relay(s, s->upstream, s->client);
  s->spawned_done = true;
  if (s->waiting) sched->make_ready(&s->waiter);
}

// Parks the handler until relay_back has finished.
template <class P>
struct WaitSpawned {
  Session<P>* s;
  bool await_ready() const noexcept { return s->spawned_done; }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    s->waiter.handle = h;
    s->waiting = true;
  }
  void await_resume() const noexcept {}
};

template <class P>
Task<void> proxy(TcpStream<P>& client, const SocketAddress& upstream_at, int64_t idle_ns) {
  Scheduler<P>& sched = Engine<P>::current()->sched();  // this connection's shard
  std::unique_ptr<TcpStream<P>> upstream;
  const Status st =
      co_await TcpStream<P>::connect(sched, upstream_at, kConnectTimeoutNs, &upstream);
  if (!st.ok()) {
    std::fprintf(stderr, "tcp_proxy: connect %s: %s\n", upstream_at.to_string().c_str(),
                 st.message());
    co_return;  // TcpServer closes the client
  }
  (void)upstream->set_nodelay(true);
  Session<P> s(&client, upstream.get(), idle_ns);
  sched.spawn(relay_back(&s, &sched));
  co_await relay(&s, &client, upstream.get());
  co_await WaitSpawned<P>{&s};  // `s` lives in this frame: wait before leaving it
  (void)co_await upstream->close();
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tcp_proxy LISTEN UPSTREAM [IDLE_MS]\n");
    return 2;
  }
  SocketAddress at, upstream_at;
  std::string why;
  if (!parse_address(argv[1], &at, &why).ok() || !parse_address(argv[2], &upstream_at, &why).ok()) {
    std::fprintf(stderr, "tcp_proxy: %s\n", why.c_str());
    return 2;
  }
  const long idle_ms = argc > 3 ? std::strtol(argv[3], nullptr, 10) : 60'000;
  if (idle_ms <= 0) {
    std::fprintf(stderr, "tcp_proxy: IDLE_MS must be a positive number of milliseconds\n");
    return 2;
  }
  const int64_t idle_ns = idle_ms * 1'000'000;
  return examples::serve_until_stopped("tcp_proxy", at, {}, [&]<class P>(Engine<P>&) {
    return typename TcpServer<P>::Handler(
        [&](TcpStream<P>& c) { return proxy<P>(c, upstream_at, idle_ns); });
  });
}
