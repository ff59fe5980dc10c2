#pragma once
// Starting an engine from a config: the one place the programs turn tuning::Config into a
// running Engine<P>. It picks the backend once for the process (engine.backend pinned or
// auto, io_uring.mode readiness or completion), logs one line saying which runs and why,
// hands every shard's backend its io_uring options before the ring is set up, starts the
// shards, and runs the program's body on the calling thread with the typed engine.
//
//   return app::run_engine("ringpoll-serve", cfg, [&]<class P>(Engine<P>& e) { ... });
#include <cstdio>
#include <string>
#include <type_traits>

#include "engine/backend.h"
#include "engine/engine.h"
#include "tuning/config.h"
#ifndef _WIN32
#include "uring/uring_completion.h"
#endif

namespace ringpoll::app {

// What the config asks of the engine, in the engine's own option structs.
struct LaunchSpec {
  BackendChoice backend = BackendChoice::kAuto;
  bool completion = true;  // io_uring.mode = "completion"
  EngineOptions engine;
  UringOptions uring;
  UringCompletionOptions completion_opts;
};

inline LaunchSpec launch_spec(const tuning::Config& cfg) {
  LaunchSpec s;
  s.backend = tuning::backend_choice(cfg);
  s.completion = cfg.io_uring.mode == tuning::UringMode::kCompletion;
  s.engine = tuning::engine_options(cfg);
  s.uring = tuning::uring_options(cfg);
  s.completion_opts = tuning::completion_options(cfg);
  return s;
}

// The backend's name as the programs print it ("io_uring-completion", "io_uring", "epoll").
template <class P>
const char* backend_name() {
  return P::kName;
}

template <class Body>
int run_engine(const char* program, const LaunchSpec& spec, Body&& body) {
  const BackendSelection& sel = process_backend(
      spec.backend, spec.completion ? IoUringMode::kCompletion : IoUringMode::kReadiness);
  if (!sel.ok()) {
    std::fprintf(stderr, "%s: cannot start: %s\n", program, sel.error.message());
    if (!sel.why.empty()) std::fprintf(stderr, "%s: %s\n", program, sel.why.c_str());
    return 1;
  }
  auto go = [&]<class P>() -> int {
    Engine<P> engine(spec.engine);
#ifndef _WIN32  // Windows: IOCP, which takes none of the io_uring options
    if constexpr (!std::is_same_v<P, EpollPoller>) {
      engine.set_backend_setup([&spec](P& b) {
        b.set_options(spec.uring);
        if constexpr (std::is_same_v<P, UringCompletionPoller>)
          b.set_completion_options(spec.completion_opts);
      });
    }
#endif
    const Status st = engine.start();
    if (!st.ok()) {
      std::fprintf(stderr, "%s: engine start failed (%s backend): %s\n", program, P::kName,
                   st.message());
      return 1;
    }
    return body.template operator()<P>(engine);
  };
  return with_backend(sel, go);  // sel.uring_mode: the config's, or RINGPOLL_BACKEND's
}

template <class Body>
int run_engine(const char* program, const tuning::Config& cfg, Body&& body) {
  return run_engine(program, launch_spec(cfg), std::forward<Body>(body));
}

}  // namespace ringpoll::app
