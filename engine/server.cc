#include "engine/server.h"

#include <atomic>
#include <cstdlib>
#include <ctime>

#include "engine/clock.h"

#ifdef _WIN32
#include <windows.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#else
#include <sys/resource.h>
#endif

namespace ringpoll {

namespace {
// How long the graceful stop may still run after the second signal's handler returned.
constexpr int64_t kAfterImmediateNs = 5'000'000'000;
// The exit status when wait_stop_signals ends the process itself (128 + SIGTERM, what a
// shell reports for a process that SIGTERM killed).
constexpr int kExitStopTimedOut = 128 + SIGTERM;
// How often the waiting thread looks for a second stop while the graceful stop runs.
constexpr int64_t kStopPollNs = 50'000'000;

// What the waiting thread was woken by.
struct StopEvent {
  enum Kind { kNone, kStop, kReload, kUpgrade } kind = kNone;
  const char* name = "";  // "SIGINT", "Ctrl-C", ... for the log lines
};

#ifdef _WIN32
// Windows: the console's control events stand for the stop signals. SetConsoleCtrlHandler
// runs the handler on a thread Windows starts for each event; it queues the event for the
// waiting thread. Ctrl-C and Ctrl-Break return at once. For a console close, logoff or
// shutdown Windows ends the process as soon as the handler returns (and in any case a few
// seconds later), so the handler holds it until the graceful stop has finished, bounded
// by kCloseHoldMs. Reload: the named event of reload_event_name(), set by any process of
// the session (docs/windows.md), since Windows has no SIGHUP.
constexpr DWORD kCloseHoldMs = 4'500;

struct ConsoleEvents {
  std::mutex mu;
  std::condition_variable cv;       // the waiting thread: an event was queued
  std::condition_variable done_cv;  // held close handlers: the graceful stop finished
  std::deque<DWORD> queue;
  bool finished = false;
  HANDLE reload = nullptr;  // the named reload event, when reload is wanted
};
ConsoleEvents& console() {
  static ConsoleEvents* c = new ConsoleEvents();  // lives for the process: handlers may run late
  return *c;
}

const char* console_event_name(DWORD type) {
  switch (type) {
    case CTRL_C_EVENT:
      return "Ctrl-C";
    case CTRL_BREAK_EVENT:
      return "Ctrl-Break";
    case CTRL_CLOSE_EVENT:
      return "console close";
    case CTRL_LOGOFF_EVENT:
      return "logoff";
    default:
      return "system shutdown";
  }
}

BOOL WINAPI on_console_event(DWORD type) {
  ConsoleEvents& c = console();
  std::unique_lock<std::mutex> l(c.mu);
  c.queue.push_back(type);
  c.cv.notify_all();
  if (type == CTRL_C_EVENT || type == CTRL_BREAK_EVENT) return TRUE;
  c.done_cv.wait_for(l, std::chrono::milliseconds(kCloseHoldMs), [&] { return c.finished; });
  return TRUE;
}

StopEvent next_event(bool with_reload, int64_t timeout_ns) {
  ConsoleEvents& c = console();
  const int64_t end = timeout_ns < 0 ? -1 : mono_now_ns() + timeout_ns;
  std::unique_lock<std::mutex> l(c.mu);
  for (;;) {
    if (!c.queue.empty()) {
      const DWORD type = c.queue.front();
      c.queue.pop_front();
      return StopEvent{StopEvent::kStop, console_event_name(type)};
    }
    if (with_reload && c.reload && WaitForSingleObject(c.reload, 0) == WAIT_OBJECT_0)
      return StopEvent{StopEvent::kReload, "reload event"};
    const int64_t now = mono_now_ns();
    if (end >= 0 && now >= end) return StopEvent{};
    // The reload event is a kernel object the condition variable cannot wait on: look at
    // it every kStopPollNs (a reload is not urgent to the millisecond).
    int64_t wait = kStopPollNs;
    if (end >= 0 && end - now < wait) wait = end - now;
    c.cv.wait_for(l, std::chrono::nanoseconds(wait));
  }
}

void stop_events_done() {
  ConsoleEvents& c = console();
  {
    std::lock_guard<std::mutex> l(c.mu);
    c.finished = true;
  }
  c.done_cv.notify_all();
  // From here a control event takes its default action again (the process ends).
  SetConsoleCtrlHandler(on_console_event, FALSE);
}
#else
sigset_t stop_set(bool with_reload, bool with_upgrade = false) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (with_reload) sigaddset(&set, SIGHUP);
  if (with_upgrade) sigaddset(&set, SIGUSR2);
  return set;
}

StopEvent as_event(int sig) {
  switch (sig) {
    case SIGHUP:
      return StopEvent{StopEvent::kReload, "SIGHUP"};
    case SIGUSR2:
      return StopEvent{StopEvent::kUpgrade, "SIGUSR2"};
    case SIGINT:
      return StopEvent{StopEvent::kStop, "SIGINT"};
    default:
      return StopEvent{StopEvent::kStop, "SIGTERM"};
  }
}

// Forever (timeout_ns < 0) for any of the signals asked for; else at most timeout_ns for
// a stop signal only.
StopEvent next_event(bool with_reload, bool with_upgrade, int64_t timeout_ns) {
  if (timeout_ns < 0) {
    const sigset_t waited = stop_set(with_reload, with_upgrade);
    int sig = 0;
    if (sigwait(&waited, &sig) != 0) return StopEvent{};
    return as_event(sig);
  }
  const sigset_t stops = stop_set(false);
  const timespec tick{0, static_cast<long>(timeout_ns)};
  const int s = sigtimedwait(&stops, nullptr, &tick);
  return s > 0 ? as_event(s) : StopEvent{};
}

void stop_events_done() {
  // From here a stop signal is the default action again (the process ends): a program
  // that hangs in its own teardown after this is not left ignoring SIGTERM.
  const sigset_t stops = stop_set(false);
  pthread_sigmask(SIG_UNBLOCK, &stops, nullptr);
}
#endif
}  // namespace

namespace detail {
std::string fd_limit_hint() {
#ifndef _WIN32
  if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0)
    return " (RLIMIT_NOFILE " + std::to_string(static_cast<unsigned long long>(rl.rlim_cur)) +
           ": raise it, or limit the listener)";
#endif
  return std::string();
}
}  // namespace detail

#ifdef _WIN32
std::string reload_event_name(unsigned long pid) {
  return "Local\\ringpoll-reload-" + std::to_string(pid);
}

bool signal_reload(unsigned long pid, std::string* why) {
  const std::string name = reload_event_name(pid);
  HANDLE h = OpenEventA(EVENT_MODIFY_STATE, FALSE, name.c_str());
  if (!h) {
    const DWORD e = GetLastError();
    if (why)
      *why = e == ERROR_FILE_NOT_FOUND
                 ? "no event " + name + ": no process " + std::to_string(pid) +
                       " of this session waits for a reload"
                 : "cannot open " + name + " (Windows error " + std::to_string(e) + ")";
    return false;
  }
  const bool ok = SetEvent(h) != 0;
  if (!ok && why)
    *why = "cannot set " + name + " (Windows error " + std::to_string(GetLastError()) + ")";
  CloseHandle(h);
  return ok;
}

void block_stop_signals(bool with_reload, bool with_upgrade) {
  ConsoleEvents& c = console();
  if (with_reload && !c.reload) {
    // Auto-reset: one SetEvent, one reload.
    c.reload =
        CreateEventA(nullptr, FALSE, FALSE, reload_event_name(GetCurrentProcessId()).c_str());
    if (!c.reload)
      std::fprintf(stderr, "ringpoll: cannot create the reload event %s (Windows error %lu)\n",
                   reload_event_name(GetCurrentProcessId()).c_str(), GetLastError());
  }
  {
    std::lock_guard<std::mutex> l(c.mu);
    c.finished = false;
  }
  if (with_upgrade)
    std::fprintf(stderr,
                 "ringpoll: a binary upgrade hands sockets over with SCM_RIGHTS: "
                 "Linux only, not on Windows\n");
  SetConsoleCtrlHandler(on_console_event, TRUE);
}

namespace detail {
bool deliver_console_event(unsigned long type) {
  return on_console_event(static_cast<DWORD>(type)) == TRUE;
}
}  // namespace detail
#else
void block_stop_signals(bool with_reload, bool with_upgrade) {
  const sigset_t set = stop_set(with_reload, with_upgrade);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}
#endif

void wait_stop_signals(const std::function<void()>& graceful,
                       const std::function<void()>& immediate, const std::function<void()>& reload,
                       const std::function<void()>& upgrade) {
#ifdef _WIN32
  auto wait_next = [&](int64_t timeout_ns) {
    return next_event(static_cast<bool>(reload), timeout_ns);
  };
  (void)upgrade;  // no binary upgrade on Windows (block_stop_signals said so)
#else
  auto wait_next = [&](int64_t timeout_ns) {
    return next_event(static_cast<bool>(reload), static_cast<bool>(upgrade), timeout_ns);
  };
#endif
  StopEvent ev;
  for (;;) {
    ev = wait_next(-1);
    if (ev.kind == StopEvent::kNone) return;
    if (ev.kind == StopEvent::kReload) {
      std::fprintf(stderr, "ringpoll: %s: reloading\n", ev.name);
      reload();
    } else if (ev.kind == StopEvent::kUpgrade) {
      std::fprintf(stderr, "ringpoll: %s: upgrading\n", ev.name);
      upgrade();
    } else {
      break;
    }
  }
  std::fprintf(stderr, "ringpoll: %s: stopping gracefully (send it again to stop at once)\n",
               ev.name);
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
  int64_t give_up = -1;
  while (!finished.load()) {
    const bool got = wait_next(kStopPollNs).kind == StopEvent::kStop;
    if (got && give_up < 0) {
      std::fprintf(stderr, "ringpoll: second signal: stopping now\n");
      immediate();
      give_up = mono_now_ns() + kAfterImmediateNs;
    } else if (got || (give_up >= 0 && mono_now_ns() >= give_up)) {
      std::fprintf(stderr, got ? "ringpoll: third signal: exiting without waiting for the graceful "
                                 "stop\n"
                               : "ringpoll: the graceful stop did not return within 5 s of the "
                                 "second signal's handler; exiting\n");
      std::fflush(stderr);
      std::_Exit(kExitStopTimedOut);
    }
  }
  g.join();
  stop_events_done();
}

std::thread shutdown_on_signals(std::function<void()> graceful, std::function<void()> immediate,
                                std::function<void()> reload) {
  block_stop_signals(static_cast<bool>(reload));
  return std::thread(
      [graceful = std::move(graceful), immediate = std::move(immediate),
       reload = std::move(reload)] { wait_stop_signals(graceful, immediate, reload); });
}

}  // namespace ringpoll
