#include "engine/server.h"

#include <atomic>
#include <cstdlib>
#include <ctime>

#include "engine/clock.h"

namespace ringpoll {

namespace {
// How long the graceful stop may still run after the second signal's handler returned.
constexpr int64_t kAfterImmediateNs = 5'000'000'000;
// The exit status when wait_stop_signals ends the process itself (128 + SIGTERM, what a
// shell reports for a process that SIGTERM killed).
constexpr int kExitStopTimedOut = 128 + SIGTERM;

sigset_t stop_set(bool with_reload, bool with_upgrade = false) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (with_reload) sigaddset(&set, SIGHUP);
  if (with_upgrade) sigaddset(&set, SIGUSR2);
  return set;
}
}  // namespace

void block_stop_signals(bool with_reload, bool with_upgrade) {
  const sigset_t set = stop_set(with_reload, with_upgrade);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void wait_stop_signals(const std::function<void()>& graceful,
                       const std::function<void()>& immediate, const std::function<void()>& reload,
                       const std::function<void()>& upgrade) {
  const sigset_t waited = stop_set(static_cast<bool>(reload), static_cast<bool>(upgrade));
  const sigset_t stops = stop_set(false);
  int sig = 0;
  for (;;) {
    if (sigwait(&waited, &sig) != 0) return;
    if (sig == SIGHUP) {
      std::fprintf(stderr, "ringpoll: SIGHUP: reloading\n");
      reload();
    } else if (sig == SIGUSR2) {
      std::fprintf(stderr, "ringpoll: SIGUSR2: upgrading\n");
      upgrade();
    } else {
      break;
    }
  }
  std::fprintf(stderr, "ringpoll: %s: stopping gracefully (send it again to stop at once)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  std::atomic<bool> finished{false};
  std::thread g([&] {
    graceful();
    finished.store(true);
  });
  // Until the graceful stop ends, a second signal calls immediate(). After that the
  // graceful stop gets kAfterImmediateNs to return (with immediate = Engine::stop it
  // returns at once: TcpServer::shutdown does not wait on stopped shards); a third
  // signal, or a graceful stop still running then, ends the process here, so no handler
  // can leave it unkillable but by SIGKILL.
  const timespec tick{0, 50'000'000};
  int64_t give_up = -1;
  while (!finished.load()) {
    const int s = sigtimedwait(&stops, nullptr, &tick);
    if (s > 0 && give_up < 0) {
      std::fprintf(stderr, "ringpoll: second signal: stopping now\n");
      immediate();
      give_up = mono_now_ns() + kAfterImmediateNs;
    } else if (s > 0 || (give_up >= 0 && mono_now_ns() >= give_up)) {
      std::fprintf(stderr, s > 0
                               ? "ringpoll: third signal: exiting without waiting for the graceful "
                                 "stop\n"
                               : "ringpoll: the graceful stop did not return within 5 s of the "
                                 "second signal's handler; exiting\n");
      std::fflush(stderr);
      std::_Exit(kExitStopTimedOut);
    }
  }
  g.join();
  // From here a stop signal is the default action again (the process ends): a program
  // that hangs in its own teardown after this is not left ignoring SIGTERM.
  pthread_sigmask(SIG_UNBLOCK, &stops, nullptr);
}

std::thread shutdown_on_signals(std::function<void()> graceful, std::function<void()> immediate,
                                std::function<void()> reload) {
  block_stop_signals(static_cast<bool>(reload));
  return std::thread(
      [graceful = std::move(graceful), immediate = std::move(immediate),
       reload = std::move(reload)] { wait_stop_signals(graceful, immediate, reload); });
}

}  // namespace ringpoll
