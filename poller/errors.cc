#include "poller/errors.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringpoll {

namespace {
// The text of an errno value. The Windows C runtime knows only the classic ones (up to
// ERANGE); the socket errors the IOCP backend maps Winsock's to (EADDRINUSE, ECONNRESET,
// ...) are POSIX supplements it calls "Unknown error", so they are named here.
const char* errno_text(int e) noexcept {
#ifdef _WIN32
  switch (e) {
    case EADDRINUSE:
      return "Address already in use";
    case EADDRNOTAVAIL:
      return "Cannot assign requested address";
    case EAFNOSUPPORT:
      return "Address family not supported by protocol";
    case ECANCELED:
      return "Operation canceled";
    case ECONNABORTED:
      return "Software caused connection abort";
    case ECONNREFUSED:
      return "Connection refused";
    case ECONNRESET:
      return "Connection reset by peer";
    case EHOSTUNREACH:
      return "No route to host";
    case EISCONN:
      return "Transport endpoint is already connected";
    case EMSGSIZE:
      return "Message too long";
    case ENETUNREACH:
      return "Network is unreachable";
    case ENOBUFS:
      return "No buffer space available";
    case ENOTCONN:
      return "Transport endpoint is not connected";
    case ENOTSOCK:
      return "Socket operation on non-socket";
    case EOPNOTSUPP:
      return "Operation not supported";
    case ETIMEDOUT:
      return "Connection timed out";
    case EWOULDBLOCK:
      return "Resource temporarily unavailable";
    default:
      break;
  }
#endif
  return std::strerror(e);
}
}  // namespace

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
  return errno_text(code_);  // an errno value
}

void fatal(const char* what) noexcept {
  std::fprintf(stderr, "ringpoll: fatal: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

void fatal(const char* what, int err) noexcept {
  std::fprintf(stderr, "ringpoll: fatal: %s: %s (errno %d)\n", what, errno_text(err), err);
  std::fflush(stderr);
  std::abort();
}

}  // namespace ringpoll
