#pragma once
// The system-call halves of PollFd's operations (engine/poll_fd.h), shared by both ways
// of running them: a readiness backend's FdOp (engine/readiness_op.h) tries a step's
// system call and waits on the PollDesc when it would block; a completion backend
// (engine/completion_ops.h) uses a step only for a descriptor it cannot poll (S12) and
// for the result types.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>

#include <sys/uio.h>

#include "../poller/errors.h"
#include "../poller/poll_desc.h"

namespace ringpoll {

struct IoResult {
  size_t n = 0;  // bytes transferred (a timed-out write may report bytes already written)
  Status err;
  bool ok() const noexcept { return err.ok(); }
};

struct AcceptResult {
  int fd = -1;  // non-blocking, close-on-exec
  Status err;
};

namespace detail {
// accept4(fd, nullptr, nullptr, flags), through a seam tests use to inject ECONNABORTED
// (S31; poller/internal/test_seams.h).
int accept_connection(int fd, int flags) noexcept;
}  // namespace detail

// The system-call halves of the operations. attempt() makes the call (EINTR retried
// inside) and returns true when the operation has its result, false on EAGAIN; fail()
// ends it with a poll error (timeout, close) or an errno, keeping partial progress;
// result() reads it. Each step keeps its result in as few bytes as it can: it lives in
// the caller's frame for as long as the operation waits (an idle connection's read).
namespace fdop {
struct Read {
  using Result = IoResult;
  std::span<std::byte> buf;  // cut down to the bytes read
  Status err;
  bool short_read = false;  // fewer bytes came than asked for: the socket is drained
  // A zero-byte read returns at once: read(2) would answer 0, which looks like EOF (S31).
  bool early() const noexcept { return buf.empty(); }
  bool attempt(int fd) noexcept {
    for (;;) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n > 0) {
        short_read = static_cast<size_t>(n) < buf.size();
        buf = buf.first(static_cast<size_t>(n));
      } else if (n == 0) {
        fail(Errc::kEof);
      } else if (errno == EINTR) {
        continue;
      } else if (errno == EAGAIN) {
        return false;
      } else {
        fail(Status::from_errno(errno));
      }
      return true;
    }
  }
  void fail(Status e) noexcept {
    buf = {};
    err = e;
  }
  // After an attempt that returned true: the read emptied the socket (FdOp's short-read
  // rule, engine/readiness_op.h).
  bool drained() const noexcept { return short_read; }
  Result result() const noexcept { return IoResult{buf.size(), err}; }
};

// Writes all of buf: n counts what the kernel accepted, also when an error stops it.
struct Write {
  using Result = IoResult;
  std::span<const std::byte> buf;
  size_t done = 0;
  Status err;
  bool early() const noexcept { return false; }
  bool attempt(int fd) noexcept {
    while (done < buf.size()) {
      ssize_t n = ::send(fd, buf.data() + done, buf.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == ENOTSOCK) n = ::write(fd, buf.data() + done, buf.size() - done);
      if (n >= 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return false;
      fail(Status::from_errno(errno));
      return true;
    }
    return true;
  }
  void fail(Status e) noexcept { err = e; }
  Result result() const noexcept { return IoResult{done, err}; }
};

// Accepts one connection; a connection aborted before accept is skipped (S31).
struct Accept {
  using Result = AcceptResult;
  AcceptResult r;
  bool early() const noexcept { return false; }
  bool attempt(int fd) noexcept {
    for (;;) {
      const int c = detail::accept_connection(fd, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c >= 0) {
        r = AcceptResult{c, Status()};
        return true;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN) return false;
      fail(Status::from_errno(errno));
      return true;
    }
  }
  void fail(Status e) noexcept { r = AcceptResult{-1, e}; }
  Result result() const noexcept { return r; }
};

// Runs call() — a byte count, or -1 with errno — retrying EINTR. False on EAGAIN;
// otherwise true with *r set.
template <class F>
bool count_call(F&& call, IoResult& r) {
  for (;;) {
    const ssize_t n = call();
    if (n >= 0) {
      r = IoResult{static_cast<size_t>(n), Status()};
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      return false;
    } else {
      r = IoResult{0, Status::from_errno(errno)};
    }
    return true;
  }
}

// One sendmsg/recvmsg: a datagram, or part of a stream write. For a datagram the message
// and its one buffer live here (own_iov); *namelen gets the sender's address length.
struct Msg {
  using Result = IoResult;
  Mode mode;
  iovec iov;
  msghdr msg;
  socklen_t* namelen = nullptr;
  bool own_iov = true;
  IoResult r{};
  static Msg one(Mode m, void* data, size_t len, void* name, socklen_t namelen,
                 socklen_t* namelen_out) noexcept {
    Msg x{m, iovec{data, len}, msghdr{}, namelen_out, true, {}};
    x.msg.msg_name = name;
    x.msg.msg_namelen = namelen;
    return x;
  }
  // The header, pointing at the buffer where it is now (a Msg may have been moved).
  msghdr* header() noexcept {
    if (own_iov) {
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
    }
    return &msg;
  }
  bool early() const noexcept { return false; }
  bool attempt(int fd) noexcept {
    msghdr* h = header();
    const bool done = count_call(
        [&] { return mode == Mode::kRead ? ::recvmsg(fd, h, 0) : ::sendmsg(fd, h, MSG_NOSIGNAL); },
        r);
    if (done && r.ok() && namelen) *namelen = msg.msg_namelen;
    return done;
  }
  void fail(Status e) noexcept { r = IoResult{0, e}; }
  Result result() const noexcept { return r; }
};

// Waits until a read would not block (data, the end of the stream, or an error), reading
// nothing: a one-byte MSG_PEEK. It lets a relay take its buffer only once data is there.
struct WaitReadable {
  using Result = IoResult;
  Status err;
  bool early() const noexcept { return false; }
  bool attempt(int fd) noexcept {
    for (;;) {
      char c;
      if (::recv(fd, &c, 1, MSG_PEEK) >= 0) return true;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      fail(Status::from_errno(errno));
      return true;
    }
  }
  void fail(Status e) noexcept { err = e; }
  Result result() const noexcept { return IoResult{0, err}; }
};

// Any non-blocking call on the descriptor returning a byte count or -1 with errno. A read
// whose op can tell a short count (op.drained(n): n bytes said the socket is empty) lets
// FdOp park the next read at once, as fdop::Read does.
template <class F>
struct Call {
  using Result = IoResult;
  F op;
  IoResult r{};
  bool early() const noexcept { return false; }
  bool attempt(int fd) {
    return count_call([&] { return op(fd); }, r);
  }
  bool drained() const noexcept {
    if constexpr (requires(const F& f) { f.drained(size_t{}); }) {
      return r.ok() && r.n > 0 && op.drained(r.n);
    } else {
      return false;
    }
  }
  void fail(Status e) noexcept { r = IoResult{0, e}; }
  Result result() const noexcept { return r; }
};
}  // namespace fdop

}  // namespace ringpoll
