// client: connects to a TCP server, sends MESSAGE and waits for as many bytes back (what
// an echo server returns), with a deadline on the connect and one on the reply.
//
//   client ADDRESS MESSAGE [TIMEOUT_MS]     default timeout 2000 ms for each step
//
// Prints "reply: <bytes>" and exits 0; a step that misses its deadline exits 3, any other
// failure (refused, reset, closed early) exits 1.
#include <ringpoll/ringpoll.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

using namespace ringpoll;

constexpr int kExitTimeout = 3;

template <class P>
Task<int> talk(const SocketAddress& at, const std::string& message, int64_t timeout_ns) {
  Scheduler<P>& sched = Engine<P>::current()->sched();
  std::unique_ptr<TcpStream<P>> conn;
  // Fails with kConnectTimeout ("connect timed out ...", timeout() is true) when the
  // handshake has not completed within timeout_ns.
  if (const Status st = co_await TcpStream<P>::connect(sched, at, timeout_ns, &conn); !st.ok()) {
    std::fprintf(stderr, "client: connect %s: %s\n", at.to_string().c_str(), st.message());
    co_return st.timeout() ? kExitTimeout : 1;
  }
  int rc = 0;
  std::string reply(message.size(), '\0');
  // write() returns when every byte is written (or fails); read_exact() when the buffer is
  // full. The read deadline is absolute: it bounds the wait for the whole reply.
  IoResult r = co_await conn->write(message);  // a std::string_view overload
  if (r.ok()) {
    (void)conn->set_read_deadline(mono_now_ns() + timeout_ns);
    r = co_await conn->read_exact(std::as_writable_bytes(std::span(reply)));
  }
  if (r.ok()) {
    std::printf("reply: %s\n", reply.c_str());
  } else {
    std::fprintf(stderr, "client: after %zu bytes: %s\n", r.n, r.err.message());
    rc = r.err.timeout() ? kExitTimeout : 1;
  }
  (void)co_await conn->close();  // a stream must be closed on its own shard, by a task
  co_return rc;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: client ADDRESS MESSAGE [TIMEOUT_MS]\n");
    return 2;
  }
  SocketAddress at;
  std::string why;
  if (!parse_address(argv[1], &at, &why).ok()) {
    std::fprintf(stderr, "client: %s\n", why.c_str());
    return 2;
  }
  const std::string message = argv[2];
  const int64_t timeout_ns = (argc > 3 ? std::strtol(argv[3], nullptr, 10) : 2000) * 1'000'000;
  return with_backend(process_backend(), [&]<class P>() {
    EngineOptions opt;
    opt.shards = 1;   // a client needs one shard
    opt.pin = false;  // and no dedicated CPU
    Engine<P> engine(opt);
    if (const Status st = engine.start(); !st.ok()) {
      std::fprintf(stderr, "client: engine: %s\n", st.message());
      return 1;
    }
    int rc = 1;
    // run_task: start a task on a shard from this (non-engine) thread and wait for it.
    Engine<P>::run_task(engine.shard(0),
                        [&]() -> Task<void> { rc = co_await talk<P>(at, message, timeout_ns); });
    return rc;  // ~Engine stops and joins the shard
  });
}
