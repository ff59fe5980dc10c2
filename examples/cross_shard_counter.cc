// cross_shard_counter: one counter owned by shard 0, incremented by connections served on
// every shard. Each line a client sends ("incr\n") is answered with "<value> <shard>\n":
// the counter after this increment and the shard that served the connection. Shard 0 is
// the only thread that touches the counter, so it needs no lock or atomic: other shards
// send it work with submit_to and wait for the answer.
//
//   cross_shard_counter [ADDRESS] [SHARDS]      default 127.0.0.1:7001, one shard per CPU
#include <ringpoll/ringpoll.h>

#include "serve_until_stopped.h"

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace ringpoll;

// Only ever read or written on shard 0.
uint64_t counter = 0;

template <class P>
Task<void> count(Engine<P>& engine, TcpStream<P>& conn) {
  const int here = Engine<P>::current()->id();
  char buf[1024];
  std::string out;
  for (;;) {
    const IoResult r = co_await conn.read(std::as_writable_bytes(std::span(buf)));
    if (!r.ok()) co_return;
    out.clear();
    for (size_t i = 0; i < r.n; ++i) {
      if (buf[i] != '\n') continue;
      // Runs the lambda on shard 0 and resumes here, on this connection's shard, with its
      // result. No allocation; when shard 0's inbox is full this task waits its turn.
      const uint64_t v = co_await Engine<P>::submit_to(engine.shard(0), [] { return ++counter; });
      out += std::to_string(v) + " " + std::to_string(here) + "\n";
    }
    if (out.empty()) continue;
    const IoResult w = co_await conn.write(std::as_bytes(std::span(out)));
    if (!w.ok()) co_return;
  }
}

int main(int argc, char** argv) {
  SocketAddress at;
  std::string why;
  if (!parse_address(argc > 1 ? argv[1] : "127.0.0.1:7001", &at, &why).ok()) {
    std::fprintf(stderr, "cross_shard_counter: %s\n", why.c_str());
    return 2;
  }
  EngineOptions opt;
  opt.shards = argc > 2 ? std::atoi(argv[2]) : 0;  // 0: one per CPU this process may use
  return examples::serve_until_stopped("cross_shard_counter", at, opt, []<class P>(Engine<P>& e) {
    return typename TcpServer<P>::Handler([&e](TcpStream<P>& c) { return count<P>(e, c); });
  });
}
