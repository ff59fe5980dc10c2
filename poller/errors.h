#pragma once
// Error values of the poller and the engine. Errors are values on the hot path (no
// exceptions); a broken invariant stops the process with a message naming it (fatal()).
#include <cerrno>
#include <cstdint>

namespace ringpoll {

// What netpollcheckerr reports for one direction of a PollDesc (Go's pollErr*).
enum class PollError : uint8_t {
  kNone = 0,
  kClosing = 1,      // the descriptor is being closed
  kTimeout = 2,      // the direction's deadline has expired
  kNotPollable = 3,  // the backend reported an error event with no other event (readers only)
};
const char* to_string(PollError e) noexcept;

// The engine's error codes. Values below kBase are errno values from the kernel; ringpoll's
// own conditions sit above, so one int carries both without ambiguity.
enum class Errc : int {
  kOk = 0,
  kBase = 100000,
  kClosed,       // use of a closed or closing descriptor (Go's ErrNetClosing)
  kTimeout,      // deadline exceeded (Go's ErrDeadlineExceeded); distinct from close and I/O errors
  kNotPollable,  // the kernel reported an error event on the descriptor
  kNoDeadline,   // the descriptor cannot be polled, so it cannot have a deadline (Go's
                 // ErrNoDeadline)
  kUnavailable,  // a backend is not available on this machine
  kInvalidArgument,
  kEof,             // the peer closed its side: a read found end of stream
  kConnectTimeout,  // a connect's timeout passed before the handshake completed; timeout()
                    // is true for it as for kTimeout
};

// The result of an operation: ok (code 0), an errno value from the kernel, or one of
// ringpoll's Errc conditions. Cheap to copy; message() names the error.
//
// Its bool is TRUE ON SUCCESS — the opposite of std::error_code, whose bool is true when
// there is an error: `if (st)` means "it worked". Prefer the explicit `st.ok()`.
class Status {
 public:
  constexpr Status() noexcept = default;
  constexpr Status(Errc e) noexcept : code_(static_cast<int>(e)) {}  // NOLINT: implicit by design
  static constexpr Status from_errno(int e) noexcept { return Status(e); }
  static Status from_poll(PollError e) noexcept;

  constexpr bool ok() const noexcept { return code_ == 0; }
  constexpr explicit operator bool() const noexcept { return ok(); }  // true: success
  constexpr int code() const noexcept { return code_; }
  constexpr bool is(Errc e) const noexcept { return code_ == static_cast<int>(e); }
  // A deadline passed: kTimeout (read/write/accept) or kConnectTimeout.
  constexpr bool timeout() const noexcept {
    return is(Errc::kTimeout) || is(Errc::kConnectTimeout);
  }
  constexpr bool closed() const noexcept { return is(Errc::kClosed); }
  // errno value for kernel errors, 0 otherwise.
  constexpr int sys_errno() const noexcept {
    return code_ > 0 && code_ < static_cast<int>(Errc::kBase) ? code_ : 0;
  }
  const char* message() const noexcept;
  friend constexpr bool operator==(Status a, Status b) noexcept { return a.code_ == b.code_; }

 private:
  constexpr explicit Status(int c) noexcept : code_(c) {}
  int code_ = 0;
};

// Stops the process: a broken invariant (Go's throw). Prints "ringpoll: fatal: <what>".
[[noreturn]] void fatal(const char* what) noexcept;
// The same after a failed system call: "ringpoll: fatal: <what>: <strerror(err)> (errno
// <err>)". Pass errno as the call left it.
[[noreturn]] void fatal(const char* what, int err) noexcept;

}  // namespace ringpoll
