#include "engine/backend.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace ringpoll {

bool parse_backend_choice(std::string_view s, BackendChoice* out) {
  if (s == "auto") {
    *out = BackendChoice::kAuto;
  } else if (s == "io_uring" || s == "uring") {
    *out = BackendChoice::kIoUring;
  } else if (s == "epoll") {
    *out = BackendChoice::kEpoll;
  } else {
    return false;
  }
  return true;
}

const char* to_string(BackendChoice c) {
  switch (c) {
    case BackendChoice::kAuto:
      return "auto";
    case BackendChoice::kIoUring:
      return "io_uring";
    case BackendChoice::kEpoll:
      return "epoll";
  }
  return "?";
}

#ifdef _WIN32
const char* backend_name(const BackendSelection&) {
  return IocpPoller::kName;
}
#else
const char* backend_name(const BackendSelection& sel) {
  if (sel.chosen != BackendChoice::kIoUring) return EpollPoller::kName;
  return sel.uring_mode == IoUringMode::kCompletion ? UringCompletionPoller::kName
                                                    : UringPoller::kName;
}
#endif

const char* to_string(IoUringMode m) {
  return m == IoUringMode::kCompletion ? "completion" : "readiness";
}

std::string BackendSelection::log_line() const {
  if (!ok()) return "ringpoll: error: no backend: " + why;
#ifdef _WIN32
  return std::string("ringpoll: backend ") + IocpPoller::kName + ": " + why;
#endif
  std::string mode;
  if (chosen == BackendChoice::kIoUring)
    mode = std::string(" (") + to_string(uring_mode) + " mode)";
  return std::string("ringpoll: backend ") + to_string(chosen) + mode + ": " + why;
}

#ifdef _WIN32
BackendSelection select_backend(BackendChoice pinned, IoUringMode mode) {
  BackendSelection s;
  s.uring_mode = mode;
  s.chosen = BackendChoice::kAuto;  // IOCP: the one Windows backend
  if (pinned != BackendChoice::kAuto) {
    s.why = std::string(to_string(pinned)) +
            " is pinned by configuration, but it is a Linux backend; Windows runs iocp "
            "(engine.backend = \"auto\")";
    s.error = Errc::kInvalidArgument;
    return s;
  }
  const Availability a = IocpPoller::available();
  s.why = a.ok ? "the Windows backend; probe ok" : "iocp cannot start: " + a.why;
  if (!a.ok) s.error = Errc::kUnavailable;
  return s;
}
#else
BackendSelection select_backend(BackendChoice pinned, IoUringMode mode) {
  BackendSelection s;
  s.uring_mode = mode;
  if (pinned == BackendChoice::kEpoll) {
    const Availability e = EpollPoller::available();
    s.chosen = BackendChoice::kEpoll;
    s.why = e.ok ? "pinned by configuration" : "pinned by configuration, but " + e.why;
    if (!e.ok) s.error = Errc::kUnavailable;
    return s;
  }
  const Availability u = UringRing::probe();
  if (u.ok) {
    s.chosen = BackendChoice::kIoUring;
    s.why = pinned == BackendChoice::kIoUring ? "pinned by configuration; probe ok"
                                              : "first choice; probe ok";
    return s;
  }
  if (pinned == BackendChoice::kIoUring) {
    s.chosen = BackendChoice::kIoUring;
    s.why = "io_uring is pinned by configuration but cannot start: " + u.why;
    s.error = Errc::kUnavailable;
    return s;
  }
  const Availability e = EpollPoller::available();
  s.chosen = BackendChoice::kEpoll;
  s.why = "io_uring unavailable (" + u.why + "); falling back for the whole process";
  if (!e.ok) {
    s.why += "; and epoll failed too: " + e.why;
    s.error = Errc::kUnavailable;
  }
  return s;
}
#endif

namespace {
// RINGPOLL_BACKEND's value as a choice and a mode; false when it is not one we know.
bool parse_backend_env(std::string_view v, BackendChoice* c, IoUringMode* m) {
  if (v == "io_uring-completion") {
    *c = BackendChoice::kIoUring;
    *m = IoUringMode::kCompletion;
    return true;
  }
  if (v == "io_uring-readiness") {
    *c = BackendChoice::kIoUring;
    *m = IoUringMode::kReadiness;
    return true;
  }
  return parse_backend_choice(v, c);
}
}  // namespace

const BackendSelection& process_backend(BackendChoice pinned, IoUringMode mode) {
  static std::once_flag once;
  static BackendSelection sel;
  std::call_once(once, [&] {
    const char* env = std::getenv(kBackendEnv);
    if (env && *env) {
      if (!parse_backend_env(env, &pinned, &mode)) {
        sel.error = Errc::kInvalidArgument;
        sel.why = std::string(kBackendEnv) + "=\"" + env +
                  "\" is not one of auto, epoll, io_uring, io_uring-completion, "
                  "io_uring-readiness";
      } else {
        sel = select_backend(pinned, mode);
        sel.why += std::string(" (") + kBackendEnv + "=" + env + ")";
      }
    } else {
      sel = select_backend(pinned, mode);
    }
    std::fprintf(stderr, "%s\n", sel.log_line().c_str());
  });
  return sel;
}

namespace detail {
void unusable_backend_selection(const BackendSelection& sel) {
  std::fprintf(stderr, "%s\nringpoll: with_backend: no backend can run; exiting\n",
               sel.log_line().c_str());
  std::exit(EXIT_FAILURE);
}
}  // namespace detail

}  // namespace ringpoll
