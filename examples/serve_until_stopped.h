#pragma once
// The main() the server examples share, once: pick the backend, start the engine, serve
// `at` with a TcpServer, print "NAME: listening on ADDRESS", and on SIGINT/SIGTERM drain
// open connections for up to a second and return 0 (a second signal exits at once).
// echo_server.cc spells the same steps out one by one.
#include <ringpoll/ringpoll.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace examples {

// make_handler: a generic lambda `[&]<class P>(ringpoll::Engine<P>& engine)` returning the
// TcpServer<P>::Handler for the chosen backend P; it runs once, before listening.
template <class MakeHandler>
int serve_until_stopped(const char* name, const ringpoll::SocketAddress& at,
                        ringpoll::EngineOptions opt, MakeHandler make_handler) {
  using namespace ringpoll;
  block_stop_signals(/*with_reload=*/false);  // before the shard threads start
  return with_backend(process_backend(), [&]<class P>() {
    Engine<P> engine(opt);
    if (const Status st = engine.start(); !st.ok()) {
      std::fprintf(stderr, "%s: engine: %s\n", name, st.message());
      return 1;
    }
    TcpServer<P> server(engine);
    std::string why;
    if (!server.start(at, make_handler.template operator()<P>(engine), &why).ok()) {
      std::fprintf(stderr, "%s: %s\n", name, why.c_str());
      return 1;
    }
    std::printf("%s: listening on %s, %zu shards\n", name, server.address().to_string().c_str(),
                engine.size());
    std::fflush(stdout);
    wait_stop_signals(
        [&] {
          server.shutdown(/*drain_ns=*/1'000'000'000);
          engine.stop();
        },
        [&] { engine.stop(); });  // second signal: shutdown() returns at once
    engine.join();
    return 0;
  });
}

}  // namespace examples
