// echo_server: the smallest useful ringpoll program. Every connection gets back what it
// sends, on one shard per CPU, until SIGINT/SIGTERM (a second signal stops at once).
//
//   echo_server [ADDRESS]        default 127.0.0.1:7000; port 0 picks a free port
#include <ringpoll/ringpoll.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace ringpoll;

// One coroutine per connection. TcpServer owns the stream and closes it when this returns.
template <class P>
Task<void> echo(TcpStream<P>& conn) {
  std::array<std::byte, 4096> buf;
  for (;;) {
    const IoResult r = co_await conn.read(buf);  // suspends this task, not the shard
    if (!r.ok()) co_return;                      // kEof when the client closes, or an error
    // Awaited into a local, never as the whole `if` condition (GCC 12 pitfall, task.h).
    const IoResult w = co_await conn.write(std::span(buf.data(), r.n));  // all r.n bytes
    if (!w.ok()) co_return;
  }
}

int main(int argc, char** argv) {
  SocketAddress at;
  std::string why;
  if (!parse_address(argc > 1 ? argv[1] : "127.0.0.1:7000", &at, &why).ok()) {
    std::fprintf(stderr, "echo_server: %s\n", why.c_str());
    return 2;
  }
  // Block SIGINT/SIGTERM before the shard threads start: they inherit the mask, and the
  // main thread takes the signals in wait_stop_signals below.
  block_stop_signals(/*with_reload=*/false);
  // io_uring when this machine can run it, else epoll; one line on stderr says which.
  return with_backend(process_backend(), [&]<class P>() {
    Engine<P> engine;  // one shard per CPU this process may run on (taskset, cpuset)
    if (const Status st = engine.start(); !st.ok()) {
      std::fprintf(stderr, "echo_server: engine: %s\n", st.message());
      return 1;
    }
    TcpServer<P> server(engine);  // a SO_REUSEPORT listener on every shard
    if (!server.start(at, echo<P>, &why).ok()) {
      std::fprintf(stderr, "echo_server: %s\n", why.c_str());
      return 1;
    }
    std::printf("echo_server: listening on %s\n", server.address().to_string().c_str());
    std::fflush(stdout);
    wait_stop_signals(
        [&] {
          server.shutdown(/*drain_ns=*/1'000'000'000);  // finish in-flight work, up to 1 s
          engine.stop();
        },
        [&] { engine.stop(); });  // second signal: shutdown() returns at once
    engine.join();
    return 0;
  });
}
