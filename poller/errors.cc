#include "poller/errors.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringpoll {

const char* to_string(PollError e) noexcept {
  switch (e) {
    case PollError::kNone:
      return "no error";
    case PollError::kClosing:
      return "use of closed network connection";
    case PollError::kTimeout:
      return "i/o timeout";
    case PollError::kNotPollable:
      return "error event on descriptor";
  }
  return "unknown poll error";
}

Status Status::from_poll(PollError e) noexcept {
  switch (e) {
    case PollError::kNone:
      return Status();
    case PollError::kClosing:
      return Errc::kClosed;
    case PollError::kTimeout:
      return Errc::kTimeout;
    case PollError::kNotPollable:
      return Errc::kNotPollable;
  }
  return Errc::kInvalidArgument;
}

const char* Status::message() const noexcept {
  switch (static_cast<Errc>(code_)) {
    case Errc::kOk:
      return "ok";
    case Errc::kClosed:
      // Also what the handlers of connections aborted at a server's drain deadline see.
      return "descriptor closed (by this process, or aborted by a server shutdown)";
    case Errc::kTimeout:
      return "i/o timeout (read/write deadline exceeded)";
    case Errc::kConnectTimeout:
      return "connect timed out (no handshake before the connect timeout)";
    case Errc::kNotPollable:
      return "error event on descriptor";
    case Errc::kNoDeadline:
      return "descriptor cannot be polled, so it takes no deadline";
    case Errc::kUnavailable:
      return "backend not available";
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kEof:
      return "end of stream";
    case Errc::kBase:
      break;
  }
  return std::strerror(code_);  // an errno value
}

void fatal(const char* what) noexcept {
  std::fprintf(stderr, "ringpoll: fatal: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

void fatal(const char* what, int err) noexcept {
  std::fprintf(stderr, "ringpoll: fatal: %s: %s (errno %d)\n", what, std::strerror(err), err);
  std::fflush(stderr);
  std::abort();
}

}  // namespace ringpoll
