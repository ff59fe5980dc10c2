#include "engine/backend.h"

#include <cstdio>
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

std::string BackendSelection::log_line() const {
  if (!ok()) return "ringpoll: error: no backend: " + why;
  return std::string("ringpoll: backend ") + to_string(chosen) + ": " + why;
}

BackendSelection select_backend(BackendChoice pinned) {
  BackendSelection s;
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

const BackendSelection& process_backend(BackendChoice pinned) {
  static std::once_flag once;
  static BackendSelection sel;
  std::call_once(once, [&] {
    sel = select_backend(pinned);
    std::fprintf(stderr, "%s\n", sel.log_line().c_str());
  });
  return sel;
}

}  // namespace ringpoll
