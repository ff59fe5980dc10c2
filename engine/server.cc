#include "engine/server.h"

#include <atomic>
#include <ctime>

namespace ringpoll {

namespace {
sigset_t stop_set(bool with_reload) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (with_reload) sigaddset(&set, SIGHUP);
  return set;
}
}  // namespace

void block_stop_signals(bool with_reload) {
  const sigset_t set = stop_set(with_reload);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void wait_stop_signals(const std::function<void()>& graceful,
                       const std::function<void()>& immediate,
                       const std::function<void()>& reload) {
  const sigset_t waited = stop_set(static_cast<bool>(reload));
  const sigset_t stops = stop_set(false);
  int sig = 0;
  for (;;) {
    if (sigwait(&waited, &sig) != 0) return;
    if (sig != SIGHUP) break;
    std::fprintf(stderr, "ringpoll: SIGHUP: reloading\n");
    reload();
  }
  std::fprintf(stderr, "ringpoll: %s: stopping gracefully (send it again to stop at once)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  std::atomic<bool> finished{false};
  std::thread g([&] {
    graceful();
    finished.store(true);
  });
  // Until the graceful stop ends, a second signal stops at once.
  const timespec tick{0, 50'000'000};
  while (!finished.load()) {
    if (sigtimedwait(&stops, nullptr, &tick) > 0) {
      std::fprintf(stderr, "ringpoll: second signal: stopping now\n");
      immediate();
      break;
    }
  }
  g.join();
}

std::thread shutdown_on_signals(std::function<void()> graceful, std::function<void()> immediate,
                                std::function<void()> reload) {
  block_stop_signals(static_cast<bool>(reload));
  return std::thread(
      [graceful = std::move(graceful), immediate = std::move(immediate),
       reload = std::move(reload)] { wait_stop_signals(graceful, immediate, reload); });
}

}  // namespace ringpoll
