#pragma once
// PollFd<P>: a descriptor driven by a shard, in the spirit of Go's internal/poll.FD:
// read, write (all of it), accept, deadlines and close, with errors as values.
//
// Each operation: take a reference (fails with kClosed once closing), report a pending
// error or clear a stale "ready" before the first syscall (S02, S17), try the syscall,
// and on EAGAIN wait on the PollDesc and retry. close() evicts the waiters, waits until
// the operations in flight have left, and the last reference closes the fd (S22).
//
// A PollFd must not move while an operation is in flight (coroutines hold `this`).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include <sys/uio.h>

#include "scheduler.h"

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

// Per-descriptor state a completion backend keeps (multishot queues); empty otherwise.
template <class P, bool = P::kCompletion>
struct FdStateOf {
  struct type {};
};
template <class P>
struct FdStateOf<P, true> {
  using type = typename P::FdState;
};

// Test seam: the accept4 the sockets layer calls (tests inject ECONNABORTED, S31).
inline int (*g_accept4_fn)(int, sockaddr*, socklen_t*, int) = ::accept4;

template <PollerBackend P>
class PollFd {
 public:
  PollFd() = default;
  PollFd(const PollFd&) = delete;
  PollFd& operator=(const PollFd&) = delete;
  ~PollFd() {
    if (refs_ != 0) fatal("PollFd destroyed while an operation is in flight");
    if (state_ == State::kOpen || state_ == State::kClosing) destroy();
  }

  // Takes ownership of fd (made non-blocking) and registers it with the shard. A
  // descriptor the backend cannot poll (EPERM, e.g. a regular file) is still usable with
  // plain blocking syscalls, but takes no deadline (kNoDeadline, S12).
  Status open(Scheduler<P>& s, int fd) {
    if (state_ != State::kUnused) return Errc::kInvalidArgument;
    if (fd < 0) return Errc::kInvalidArgument;
    s_ = &s;
    fd_ = fd;
    const int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return Status::from_errno(errno);
    // Readiness backends need O_NONBLOCK (try the syscall, wait on EAGAIN). Completion
    // backends need it off: io_uring answers EAGAIN for a non-blocking file instead of
    // waiting for it internally.
    const int want = P::kCompletion ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK);
    if (want != fl && fcntl(fd, F_SETFL, want) < 0) return Status::from_errno(errno);
    int err = 0;
    pd_ = s.open(fd, &err);
    if (!pd_ && err != EPERM) {
      fd_ = -1;
      return Status::from_errno(err);
    }
    if constexpr (P::kCompletion) {
      if (pd_) s.backend().attach(pd_, &cst_, fd);
    }
    state_ = State::kOpen;
    return Status();
  }

  int fd() const noexcept { return fd_; }
  PollDesc* pd() const noexcept { return pd_; }
  bool pollable() const noexcept { return pd_ != nullptr; }
  bool is_open() const noexcept { return state_ == State::kOpen; }

  Task<IoResult> read(std::span<std::byte> buf) {
    Ref ref(this);
    if (!ref) co_return IoResult{0, Errc::kClosed};
    // A zero-byte read returns at once: read(2) would answer 0, which looks like EOF (S31).
    if (buf.empty()) co_return IoResult{0, Status()};
    if (pd_) {
      if (PollError e = pd_->reset(Mode::kRead); e != PollError::kNone) {
        co_return IoResult{0, Status::from_poll(e)};
      }
      if constexpr (P::kCompletion) co_return co_await read_completion(buf);
    }
    for (;;) {
      const ssize_t n = ::read(fd_, buf.data(), buf.size());
      if (n > 0) co_return IoResult{static_cast<size_t>(n), Status()};
      if (n == 0) co_return IoResult{0, Errc::kEof};
      if (errno == EINTR) continue;
      if (errno != EAGAIN || !pd_) co_return IoResult{0, Status::from_errno(errno)};
      if (PollError e = co_await s_->wait(pd_, Mode::kRead); e != PollError::kNone) {
        co_return IoResult{0, Status::from_poll(e)};
      }
    }
  }

  // Writes all of buf unless an error or the write deadline stops it; n counts what the
  // kernel accepted.
  Task<IoResult> write(std::span<const std::byte> buf) {
    Ref ref(this);
    if (!ref) co_return IoResult{0, Errc::kClosed};
    if (pd_) {
      if (PollError e = pd_->reset(Mode::kWrite); e != PollError::kNone) {
        co_return IoResult{0, Status::from_poll(e)};
      }
      if constexpr (P::kCompletion) co_return co_await write_completion(buf);
    }
    size_t done = 0;
    while (done < buf.size()) {
      const ssize_t n = ::send(fd_, buf.data() + done, buf.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == ENOTSOCK) {
        const ssize_t m = ::write(fd_, buf.data() + done, buf.size() - done);
        if (m >= 0) {
          done += static_cast<size_t>(m);
          continue;
        }
      } else if (n >= 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN || !pd_) co_return IoResult{done, Status::from_errno(errno)};
      if (PollError e = co_await s_->wait(pd_, Mode::kWrite); e != PollError::kNone) {
        co_return IoResult{done, Status::from_poll(e)};
      }
    }
    co_return IoResult{done, Status()};
  }

  // Accepts one connection; a connection aborted before accept is skipped (S31).
  Task<AcceptResult> accept() {
    Ref ref(this);
    if (!ref) co_return AcceptResult{-1, Errc::kClosed};
    if (pd_) {
      if (PollError e = pd_->reset(Mode::kRead); e != PollError::kNone) {
        co_return AcceptResult{-1, Status::from_poll(e)};
      }
      if constexpr (P::kCompletion) co_return co_await accept_completion();
    }
    for (;;) {
      const int c = g_accept4_fn(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c >= 0) co_return AcceptResult{c, Status()};
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN || !pd_) co_return AcceptResult{-1, Status::from_errno(errno)};
      if (PollError e = co_await s_->wait(pd_, Mode::kRead); e != PollError::kNone) {
        co_return AcceptResult{-1, Status::from_poll(e)};
      }
    }
  }

  // Connects a socket. The write deadline bounds the wait. On a refused or unreachable
  // peer the error is the kernel's (ECONNREFUSED, ...).
  Task<Status> connect(const sockaddr* sa, socklen_t len) {
    Ref ref(this);
    if (!ref) co_return Errc::kClosed;
    if (!pd_) co_return Status::from_errno(::connect(fd_, sa, len) < 0 ? errno : 0);
    if (PollError e = pd_->reset(Mode::kWrite); e != PollError::kNone) {
      co_return Status::from_poll(e);
    }
    if constexpr (P::kCompletion) {
      typename P::Op op{pd_, Mode::kWrite};
      s_->backend().submit_connect(&op, fd_, sa, len);
      PollError why = PollError::kNone;
      const int32_t res = co_await exec_io(&op, &why);
      co_return res == 0 ? Status() : op_status(res, why);
    } else {
      if (::connect(fd_, sa, len) == 0) co_return Status();
      if (errno != EINPROGRESS && errno != EINTR) co_return Status::from_errno(errno);
      for (;;) {
        if (PollError e = co_await s_->wait(pd_, Mode::kWrite); e != PollError::kNone) {
          co_return Status::from_poll(e);
        }
        int err = 0;
        socklen_t l = sizeof err;
        if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
          co_return Status::from_errno(errno);
        if (err == 0) {
          // Writable with no error: connected (a spurious wake would leave EINPROGRESS
          // state visible as ENOTCONN on getpeername).
          sockaddr_storage peer;
          socklen_t pl = sizeof peer;
          if (getpeername(fd_, reinterpret_cast<sockaddr*>(&peer), &pl) == 0) co_return Status();
          if (errno != ENOTCONN) co_return Status::from_errno(errno);
          continue;
        }
        co_return Status::from_errno(err);
      }
    }
  }

  // Datagram receive with the sender's address (UDP). n = the datagram's length.
  Task<IoResult> recv_from(std::span<std::byte> buf, sockaddr_storage* from, socklen_t* fromlen) {
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_name = from;
    msg.msg_namelen = sizeof(sockaddr_storage);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    IoResult r = co_await msg_op(Mode::kRead, &msg);
    if (fromlen) *fromlen = msg.msg_namelen;
    co_return r;
  }
  // Datagram send to `to` (UDP).
  Task<IoResult> send_to(std::span<const std::byte> buf, const sockaddr* to, socklen_t tolen) {
    iovec iov{const_cast<std::byte*>(buf.data()), buf.size()};
    msghdr msg{};
    msg.msg_name = const_cast<sockaddr*>(to);
    msg.msg_namelen = tolen;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    co_return co_await msg_op(Mode::kWrite, &msg);  // msg_op holds the operation's reference
  }
  // Writes every byte of every buffer (a stream socket), as write() does for one.
  Task<IoResult> writev(std::span<const iovec> bufs) {
    size_t total = 0;
    for (const iovec& v : bufs) total += v.iov_len;
    std::vector<iovec> rest(bufs.begin(), bufs.end());
    size_t done = 0;
    size_t first = 0;
    while (done < total) {
      msghdr msg{};
      msg.msg_iov = rest.data() + first;
      msg.msg_iovlen = rest.size() - first;
      IoResult r = co_await msg_op(Mode::kWrite, &msg);
      done += r.n;
      if (!r.ok()) co_return IoResult{done, r.err};
      for (size_t k = r.n; k > 0 && first < rest.size();) {
        const size_t take = std::min(k, rest[first].iov_len);
        rest[first].iov_base = static_cast<char*>(rest[first].iov_base) + take;
        rest[first].iov_len -= take;
        k -= take;
        if (rest[first].iov_len == 0) ++first;
      }
    }
    co_return IoResult{done, Status()};
  }
  // Readiness backends: runs `op` — a non-blocking system call on this descriptor that
  // returns a byte count, or -1 with errno (splice, sendfile, ...) — until it does not fail
  // with EAGAIN, waiting for `m` readiness in between, with deadlines and close handled as
  // for read and write. A completion backend has no readiness to wait for: kInvalidArgument.
  template <class F>
  Task<IoResult> ready_op(Mode m, F op) {
    if constexpr (P::kCompletion) {
      co_return IoResult{0, Errc::kInvalidArgument};
    } else {
      Ref ref(this);
      if (!ref) co_return IoResult{0, Errc::kClosed};
      if (pd_) {
        if (PollError e = pd_->reset(m); e != PollError::kNone) {
          co_return IoResult{0, Status::from_poll(e)};
        }
      }
      for (;;) {
        const ssize_t n = op(fd_);
        if (n >= 0) co_return IoResult{static_cast<size_t>(n), Status()};
        if (errno == EINTR) continue;
        if (errno != EAGAIN || !pd_) co_return IoResult{0, Status::from_errno(errno)};
        if (PollError e = co_await s_->wait(pd_, m); e != PollError::kNone) {
          co_return IoResult{0, Status::from_poll(e)};
        }
      }
    }
  }

  Status shutdown(int how) {
    if (state_ != State::kOpen) return Errc::kClosed;
    return ::shutdown(fd_, how) < 0 ? Status::from_errno(errno) : Status();
  }

  // Deadlines, absolute ns on CLOCK_MONOTONIC (0: none; at or before now: expired).
  Status set_deadline(int64_t abs) { return set_deadline_mode(abs, Mode::kReadWrite); }
  Status set_read_deadline(int64_t abs) { return set_deadline_mode(abs, Mode::kRead); }
  Status set_write_deadline(int64_t abs) { return set_deadline_mode(abs, Mode::kWrite); }

  // Starts a close without waiting (shutdown of connections still open at the drain
  // deadline): operations in flight wake with kClosed and the last one to leave closes the
  // fd. The owner's own close() then reports kClosed.
  void abort() {
    if (state_ != State::kOpen) return;
    state_ = State::kClosing;
    if (pd_) s_->evict(pd_);
    if (refs_ == 0) destroy();
  }

  // Closes: later operations fail with kClosed at once, waiting ones wake with kClosed,
  // and this returns after every operation in flight has left and the fd is closed.
  Task<Status> close() {
    if (state_ != State::kOpen) co_return Errc::kClosed;
    state_ = State::kClosing;
    if (pd_) s_->evict(pd_);
    if (refs_ > 0) co_await CloseAwaiter{this};
    if (state_ != State::kClosed) destroy();
    co_return Status();
  }

 private:
  enum class State : uint8_t { kUnused, kOpen, kClosing, kClosed };

  Status set_deadline_mode(int64_t abs, Mode m) {
    if (state_ == State::kClosing) return Status();  // closing: does nothing (S12)
    if (state_ != State::kOpen) return Errc::kClosed;
    if (!pd_) return Errc::kNoDeadline;
    s_->set_deadline_at(pd_, abs, m);
    return Status();
  }

  // One sendmsg/recvmsg (one datagram, or part of a stream write), on either kind of
  // backend, with deadlines and close handled as for read and write.
  Task<IoResult> msg_op(Mode m, msghdr* msg) {
    Ref ref(this);
    if (!ref) co_return IoResult{0, Errc::kClosed};
    if (pd_) {
      if (PollError e = pd_->reset(m); e != PollError::kNone) {
        co_return IoResult{0, Status::from_poll(e)};
      }
    }
    if constexpr (P::kCompletion) {
      if (pd_) {
        typename P::Op op{pd_, m};
        if (m == Mode::kRead) {
          s_->backend().submit_recvmsg(&op, fd_, msg);
        } else {
          s_->backend().submit_sendmsg(&op, fd_, msg);
        }
        PollError why = PollError::kNone;
        const int32_t res = co_await exec_io(&op, &why);
        if (res >= 0) co_return IoResult{static_cast<size_t>(res), Status()};
        co_return IoResult{0, op_status(res, why)};
      }
    }
    for (;;) {
      const ssize_t n =
          m == Mode::kRead ? ::recvmsg(fd_, msg, 0) : ::sendmsg(fd_, msg, MSG_NOSIGNAL);
      if (n >= 0) co_return IoResult{static_cast<size_t>(n), Status()};
      if (errno == EINTR) continue;
      if (errno != EAGAIN || !pd_) co_return IoResult{0, Status::from_errno(errno)};
      if (PollError e = co_await s_->wait(pd_, m); e != PollError::kNone) {
        co_return IoResult{0, Status::from_poll(e)};
      }
    }
  }

  // ---- completion backends ----
  // Go's execIO: the operation is submitted; wait for its completion. On timeout or close,
  // cancel it and wait for the completion, ignoring further timeout/close; an operation
  // that completed first is a success (S24), and the buffer is the caller's again only
  // after the completion was reaped (S23). *why gets the timeout/close that interrupted.
  template <class Op>
  Task<int32_t> exec_io(Op* op, PollError* why) {
    for (;;) {
      const PollError e = co_await s_->wait(pd_, op->mode);
      if (op->done) break;
      if (e == PollError::kNone) continue;  // woken without a completion (S09): wait on
      *why = e;
      s_->backend().cancel(op);
      while (!op->done) co_await s_->wait_io(pd_, op->mode);
      break;
    }
    co_return op->res;
  }
  static Status op_status(int32_t res, PollError why) {
    if (res == -ECANCELED && why != PollError::kNone) return Status::from_poll(why);
    return Status::from_errno(-res);
  }

  Task<IoResult> read_completion(std::span<std::byte> buf) {
    auto& b = s_->backend();
    if (b.multishot_recv()) {
      // Data already queued by the multishot recv; no caller buffer is ever in flight.
      b.arm_recv(&cst_);
      for (;;) {
        if (const size_t n = b.take_recv(&cst_, buf); n > 0) co_return IoResult{n, Status()};
        if (cst_.recv_err != 0) {
          const int32_t e = std::exchange(cst_.recv_err, 0);
          co_return IoResult{0, Status::from_errno(-e)};
        }
        if (cst_.eof) co_return IoResult{0, Errc::kEof};
        b.arm_recv(&cst_);
        if (PollError e = co_await s_->wait(pd_, Mode::kRead); e != PollError::kNone) {
          co_return IoResult{0, Status::from_poll(e)};
        }
      }
    }
    typename P::Op op{pd_, Mode::kRead};
    b.submit_recv(&op, fd_, buf.data(), buf.size());
    PollError why = PollError::kNone;
    const int32_t res = co_await exec_io(&op, &why);
    if (res > 0) co_return IoResult{static_cast<size_t>(res), Status()};
    if (res == 0) co_return IoResult{0, Errc::kEof};
    co_return IoResult{0, op_status(res, why)};
  }

  Task<IoResult> write_completion(std::span<const std::byte> buf) {
    size_t done = 0;
    while (done < buf.size()) {
      typename P::Op op{pd_, Mode::kWrite};
      s_->backend().submit_send(&op, fd_, buf.data() + done, buf.size() - done, cst_.zc_capable);
      PollError why = PollError::kNone;
      const int32_t res = co_await exec_io(&op, &why);
      if (res == -EOPNOTSUPP && op.zc && why == PollError::kNone) {
        cst_.zc_capable = false;  // this socket cannot send zero-copy: plain sends from now
        continue;
      }
      if (res < 0) co_return IoResult{done, op_status(res, why)};
      done += static_cast<size_t>(res);  // a short send: go round again
      if (why != PollError::kNone && done < buf.size()) {
        co_return IoResult{done, Status::from_poll(why)};
      }
      if (done < buf.size()) {
        if (PollError e = pd_->check_err(Mode::kWrite); e != PollError::kNone) {
          co_return IoResult{done, Status::from_poll(e)};
        }
      }
    }
    co_return IoResult{done, Status()};
  }

  Task<AcceptResult> accept_completion() {
    auto& b = s_->backend();
    if (b.multishot_accept()) {
      b.arm_accept(&cst_);
      for (;;) {
        if (const int c = b.take_accept(&cst_); c >= 0) co_return AcceptResult{c, Status()};
        if (cst_.accept_err != 0) {
          const int32_t e = std::exchange(cst_.accept_err, 0);
          b.arm_accept(&cst_);
          co_return AcceptResult{-1, Status::from_errno(-e)};
        }
        if (PollError e = co_await s_->wait(pd_, Mode::kRead); e != PollError::kNone) {
          co_return AcceptResult{-1, Status::from_poll(e)};
        }
      }
    }
    for (;;) {
      typename P::Op op{pd_, Mode::kRead};
      b.submit_accept(&op, fd_);
      PollError why = PollError::kNone;
      const int32_t res = co_await exec_io(&op, &why);
      if (res >= 0) co_return AcceptResult{res, Status()};
      if (res == -ECONNABORTED && why == PollError::kNone) continue;  // S31
      co_return AcceptResult{-1, op_status(res, why)};
    }
  }

  // An operation's reference (Go's fdMutex incref/decref, without the serialisation).
  class Ref {
   public:
    explicit Ref(PollFd* f) noexcept : f_(f->state_ == State::kOpen ? f : nullptr) {
      if (f_) ++f_->refs_;
    }
    ~Ref() {
      if (f_ && --f_->refs_ == 0 && f_->state_ == State::kClosing) f_->last_ref_gone();
    }
    explicit operator bool() const noexcept { return f_ != nullptr; }
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;

   private:
    PollFd* f_;
  };

  struct CloseAwaiter {
    PollFd* f;
    bool await_ready() const noexcept { return f->refs_ == 0; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      f->closer_.handle = h;
      f->closer_waiting_ = true;
    }
    void await_resume() const noexcept {}
  };

  void last_ref_gone() {
    destroy();
    if (closer_waiting_) {
      closer_waiting_ = false;
      s_->make_ready(&closer_);
    }
  }

  void destroy() {
    if (pd_) {
      if (state_ == State::kOpen) s_->evict(pd_);
      s_->close(pd_);
      pd_ = nullptr;
    }
#ifdef _WIN32
    if (fd_ >= 0) ::closesocket(static_cast<SOCKET>(static_cast<unsigned>(fd_)));  // iocp/
#else
    if (fd_ >= 0) ::close(fd_);
#endif
    fd_ = -1;
    state_ = State::kClosed;
  }

  Scheduler<P>* s_ = nullptr;
  PollDesc* pd_ = nullptr;
  int fd_ = -1;
  uint32_t refs_ = 0;
  State state_ = State::kUnused;
  bool closer_waiting_ = false;
  TaskNode closer_;
  [[no_unique_address]] typename FdStateOf<P>::type cst_;
};

}  // namespace ringpoll
