#include "engine/server.h"

#include <atomic>
#include <ctime>

namespace ringpoll {

std::thread shutdown_on_signals(std::function<void()> graceful, std::function<void()> immediate) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return std::thread([set, graceful = std::move(graceful), immediate = std::move(immediate)] {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) return;
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
      if (sigtimedwait(&set, nullptr, &tick) > 0) {
        std::fprintf(stderr, "ringpoll: second signal: stopping now\n");
        immediate();
        break;
      }
    }
    g.join();
  });
}

}  // namespace ringpoll
