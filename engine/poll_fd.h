#pragma once
// PollFd<P>: a descriptor driven by a shard, in the spirit of Go's internal/poll.FD:
// read, write (all of it), accept, deadlines and close, with errors as values.
//
// Each operation: take a reference (fails with kClosed once closing), report a pending
// error or clear a stale "ready" before the first syscall (S02, S17), try the syscall,
// and on EAGAIN wait on the PollDesc and retry. close() evicts the waiters, waits until
// the operations in flight have left, and the last reference closes the fd (S22).
//
// On readiness backends (epoll, io_uring readiness, kqueue, ports, pollset) read, write,
// accept and the datagram calls are FdOp awaiters, not coroutines: the operation's state
// lives in the caller's frame and, between readiness waits, the shard drives it through
// its TaskNode's callback, so an operation allocates nothing and the caller is resumed
// once, with the result. On io_uring in completion mode, read (from the multishot recv's
// queue) and write (a send, cancelled and awaited on timeout or close) are frame-less too
// (FdOp<RingRead>, CompSend); the rarer completion paths and IOCP, whose operations carry
// an OVERLAPPED, keep coroutines (Task) for their submit/cancel/wait sequences.
//
// A PollFd must not move while an operation is in flight (operations hold `this`).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
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
class PollFd;

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
  // A zero-byte read returns at once: read(2) would answer 0, which looks like EOF (S31).
  bool early() const noexcept { return buf.empty(); }
  bool attempt(int fd) noexcept {
    for (;;) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n > 0) {
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
      const int c = g_accept4_fn(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
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

// Any non-blocking call on the descriptor returning a byte count or -1 with errno.
template <class F>
struct Call {
  using Result = IoResult;
  F op;
  IoResult r{};
  bool early() const noexcept { return false; }
  bool attempt(int fd) {
    return count_call([&] { return op(fd); }, r);
  }
  void fail(Status e) noexcept { r = IoResult{0, e}; }
  Result result() const noexcept { return r; }
};
// A read on a completion backend with a multishot recv: the data is already queued on the
// descriptor (FdState); take it, or arm the recv and wait for the completion to wake us.
template <class P>
struct RingRead {
  using Result = IoResult;
  std::span<std::byte> buf;  // cut down to the bytes read
  Status err;
  P* b;
  typename P::FdState* st;
  bool early() const noexcept { return buf.empty(); }
  bool attempt(int) noexcept {
    if (const size_t n = b->take_recv(st, buf); n > 0) {
      buf = buf.first(n);
    } else if (st->recv_err != 0) {
      fail(Status::from_errno(-std::exchange(st->recv_err, 0)));
    } else if (st->eof) {
      fail(Errc::kEof);
    } else {
      b->arm_recv(st);
      return false;
    }
    return true;
  }
  void fail(Status e) noexcept {
    buf = {};
    err = e;
  }
  Result result() const noexcept { return IoResult{buf.size(), err}; }
};
}  // namespace fdop

// An operation on a readiness backend with no coroutine frame of its own (Go's
// internal/poll loop: try the call, on EAGAIN wait on the PollDesc, try again). It holds
// the PollFd's reference from await_ready until it has a result; while it waits, its
// TaskNode is parked on the PollDesc with `run` set, so a wake (readiness, deadline,
// close) runs the next attempt on the shard, and the caller is resumed once, when done.
//
// Layout: the node parked on the PollDesc, then the step (its result), then the flags,
// which the compiler may place in the step's tail padding: an idle read is 56 bytes.
template <PollerBackend P, class Step>
class [[nodiscard("co_await it: an I/O operation that is not awaited never runs")]] FdOp
    : private TaskNode,
      private Step {
 public:
  using Result = typename Step::Result;
  FdOp(PollFd<P>* f, Mode m, Step step) noexcept : Step(std::move(step)), mode_(m), f_(f) {
    run = &FdOp::woken;
  }
  FdOp(const FdOp&) = delete;
  FdOp& operator=(const FdOp&) = delete;
  ~FdOp() {
    // the caller's frame is destroyed while waiting (scheduler teardown)
    if (parked_) f_->pd_->withdraw(mode_, node());
    if (holds_ref_) release();
  }

  bool await_ready() noexcept {
    if (f_->state_ != PollFd<P>::State::kOpen) {
      Step::fail(Errc::kClosed);
      return true;
    }
    ++f_->refs_;
    holds_ref_ = true;
    if (Step::early()) return release();
    if (PollDesc* pd = f_->pd_) {
      if (PollError e = pd->reset(mode_); e != PollError::kNone) {
        Step::fail(Status::from_poll(e));
        return release();
      }
    }
    return advance();
  }
  void await_suspend(std::coroutine_handle<> caller) noexcept { handle = caller; }
  Result await_resume() noexcept { return Step::result(); }

 private:
  // Attempts until the operation has a result (true, reference released) or is parked
  // on the PollDesc (false).
  bool advance() noexcept {
    PollDesc* pd = f_->pd_;
    for (;;) {
      if (Step::attempt(f_->fd_)) return release();
      if (!pd) {  // not pollable (S12): EAGAIN is the answer
        Step::fail(Status::from_errno(EAGAIN));
        return release();
      }
      PollError e = pd->check_err(mode_);
      if (e == PollError::kNone) {
        if constexpr (P::kLevelTriggered) f_->s_->backend().arm(pd, mode_);
        switch (pd->begin_wait(mode_)) {
          case PollDesc::Begin::kTookReady:
            continue;
          case PollDesc::Begin::kPark:
            if (pd->commit_park(mode_, node())) {
              parked_ = true;
              return false;
            }
            // readiness, timeout or close arrived between prepare and park (S15)
            [[fallthrough]];
          case PollDesc::Begin::kAbandon:
            e = pd->finish_wait(mode_) ? PollError::kNone : pd->check_err(mode_);
            break;
        }
      }
      if (e != PollError::kNone) {
        Step::fail(Status::from_poll(e));
        return release();
      }
      // woken with no error (readiness, or a deadline reset before we ran, S09): retry
    }
  }

  // The shard runs the parked node: readiness, a fired deadline or a close.
  static void woken(TaskNode* n) noexcept {
    FdOp* op = static_cast<FdOp*>(n);
    op->parked_ = false;
    PollDesc* pd = op->f_->pd_;
    const PollError e = pd->finish_wait(op->mode_) ? PollError::kNone : pd->check_err(op->mode_);
    if (e != PollError::kNone) {
      op->Step::fail(Status::from_poll(e));
      op->release();
    } else if (!op->advance()) {
      return;  // parked again
    }
    op->handle.resume();  // the caller; `op` may be gone after this
  }
  TaskNode* node() noexcept { return this; }
  bool release() noexcept {
    holds_ref_ = false;
    f_->release_ref();
    return true;
  }

  Mode mode_;
  bool parked_ = false;
  bool holds_ref_ = false;
  PollFd<P>* f_;
};

// A write on a completion backend with no coroutine frame of its own (Go's execIO, as a
// state machine): submit a send; park until its completion wakes us; a short send submits
// the rest. On timeout or close the send is cancelled and the completion awaited, ignoring
// further timeout/close; a send that completed first counts (S23/S24). The Op lives here,
// in the caller's frame, which does not end before the completion was reaped.
template <PollerBackend P>
class CompSend : private TaskNode {
 public:
  CompSend(PollFd<P>* f, std::span<const std::byte> buf) noexcept : f_(f), buf_(buf) {
    run = &CompSend::woken;
  }
  CompSend(const CompSend&) = delete;
  CompSend& operator=(const CompSend&) = delete;
  ~CompSend() {
    // the caller's frame is destroyed while waiting (scheduler teardown)
    if (parked_) f_->pd_->withdraw(Mode::kWrite, node());
    if (holds_ref_) release();
  }

  bool await_ready() noexcept {
    if (f_->state_ != PollFd<P>::State::kOpen) {
      err_ = Errc::kClosed;
      return true;
    }
    ++f_->refs_;
    holds_ref_ = true;
    if (buf_.empty()) return release();
    if (PollError e = f_->pd_->reset(Mode::kWrite); e != PollError::kNone) {
      err_ = Status::from_poll(e);
      return release();
    }
    submit();
    return advance();
  }
  void await_suspend(std::coroutine_handle<> caller) noexcept { handle = caller; }
  IoResult await_resume() noexcept { return IoResult{done_, err_}; }

 private:
  TaskNode* node() noexcept { return this; }
  bool release() noexcept {
    holds_ref_ = false;
    f_->release_ref();
    return true;
  }
  void submit() noexcept {
    op_ = typename P::Op{f_->pd_, Mode::kWrite};
    f_->s_->backend().submit_send(&op_, f_->fd_, buf_.data() + done_, buf_.size() - done_,
                                  f_->cst_.zc_capable);
  }
  void cancel(PollError why) noexcept {
    why_ = why;
    cancelling_ = true;
    f_->s_->backend().cancel(&op_);
  }
  // The send completed: true when the write has its result, false after submitting more.
  bool completed() noexcept {
    const int32_t res = op_.res;
    const PollError why = std::exchange(why_, PollError::kNone);
    cancelling_ = false;
    if (res == -EOPNOTSUPP && op_.zc && why == PollError::kNone) {
      f_->cst_.zc_capable = false;  // this socket cannot send zero-copy: plain sends from now
      submit();
      return false;
    }
    if (res < 0) {
      err_ = PollFd<P>::op_status(res, why);
      return true;
    }
    done_ += static_cast<size_t>(res);  // a short send: go round again
    if (done_ >= buf_.size()) return true;
    if (why != PollError::kNone) {
      err_ = Status::from_poll(why);
      return true;
    }
    if (PollError e = f_->pd_->check_err(Mode::kWrite); e != PollError::kNone) {
      err_ = Status::from_poll(e);
      return true;
    }
    submit();
    return false;
  }
  // Runs until the write has its result (true, reference released) or is parked (false).
  bool advance() noexcept {
    PollDesc* pd = f_->pd_;
    for (;;) {
      if (op_.done) {
        if (completed()) return release();
        continue;
      }
      if (cancelling_) {  // Go's netpollblock with waitio: only the completion ends this
        if (pd->begin_wait(Mode::kWrite) == PollDesc::Begin::kTookReady) continue;
        if (pd->commit_park(Mode::kWrite, node())) return park();
        pd->finish_wait(Mode::kWrite);
        continue;
      }
      PollError e = pd->check_err(Mode::kWrite);
      if (e == PollError::kNone) {
        switch (pd->begin_wait(Mode::kWrite)) {
          case PollDesc::Begin::kTookReady:
            continue;
          case PollDesc::Begin::kPark:
            if (pd->commit_park(Mode::kWrite, node())) return park();
            // the completion, a timeout or a close arrived between prepare and park (S15)
            [[fallthrough]];
          case PollDesc::Begin::kAbandon:
            e = pd->finish_wait(Mode::kWrite) ? PollError::kNone : pd->check_err(Mode::kWrite);
            break;
        }
      }
      if (e != PollError::kNone && !op_.done) cancel(e);
      // woken with no completion and no error (S09): wait on
    }
  }
  bool park() noexcept {
    parked_ = true;
    return false;
  }
  static void woken(TaskNode* n) noexcept {
    CompSend* op = static_cast<CompSend*>(n);
    op->parked_ = false;
    PollDesc* pd = op->f_->pd_;
    if (op->cancelling_) {
      pd->finish_wait(Mode::kWrite);
    } else {
      const PollError e =
          pd->finish_wait(Mode::kWrite) ? PollError::kNone : pd->check_err(Mode::kWrite);
      if (e != PollError::kNone && !op->op_.done) op->cancel(e);
    }
    if (!op->advance()) return;  // parked again
    op->handle.resume();         // the caller; `op` may be gone after this
  }

  PollFd<P>* f_;
  std::span<const std::byte> buf_;
  size_t done_ = 0;
  Status err_;
  typename P::Op op_{};
  PollError why_ = PollError::kNone;
  bool cancelling_ = false;
  bool parked_ = false;
  bool holds_ref_ = false;
};

// The awaitable of an operation on a completion backend: a frame-less awaiter (Fast) on
// the common path, or a coroutine (the rare paths: no PollDesc, single-shot requests).
template <class Fast, class R>
class [[nodiscard("co_await it: an I/O operation that is not awaited never runs")]] FastOrTask {
 public:
  template <class... A>
  explicit FastOrTask(std::in_place_t, A&&... a) {
    fast_.emplace(std::forward<A>(a)...);
  }
  explicit FastOrTask(Task<R> t) noexcept : slow_(std::move(t)) {}
  bool await_ready() noexcept { return fast_ ? fast_->await_ready() : false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) noexcept {
    if (!fast_) return slow_.await_suspend(h);
    fast_->await_suspend(h);
    return std::noop_coroutine();
  }
  R await_resume() noexcept { return fast_ ? fast_->await_resume() : slow_.await_resume(); }

 private:
  std::optional<Fast> fast_;
  Task<R> slow_;
};

// A completion backend whose Op is small enough to live in the caller's frame takes the
// frame-less paths (io_uring); IOCP's Op carries an OVERLAPPED and buffers, so it keeps
// the coroutines.
template <class P>
inline constexpr bool kFramelessCompletion = P::kCompletion && sizeof(typename P::Op) <= 32;

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
  // Operations in flight on this descriptor (references held).
  unsigned in_flight() const noexcept { return refs_; }

  // The operations return an awaitable: co_await it once, at once (it refers to `buf`).
  // Reads what is there (at least one byte), kEof at the end of the stream.
  auto read(std::span<std::byte> buf) { return start(fdop::Read{buf, {}}, Mode::kRead); }

  // Writes all of buf unless an error or the write deadline stops it; n counts what the
  // kernel accepted.
  auto write(std::span<const std::byte> buf) {
    return start(fdop::Write{buf, 0, {}}, Mode::kWrite);
  }

  // Accepts one connection; a connection aborted before accept is skipped (S31).
  auto accept() { return start(fdop::Accept{{}}, Mode::kRead); }

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
  auto recv_from(std::span<std::byte> buf, sockaddr_storage* from, socklen_t* fromlen) {
    return msg_op(fdop::Msg::one(Mode::kRead, buf.data(), buf.size(), from,
                                 sizeof(sockaddr_storage), fromlen));
  }
  // Datagram send to `to` (UDP).
  auto send_to(std::span<const std::byte> buf, const sockaddr* to, socklen_t tolen) {
    return msg_op(fdop::Msg::one(Mode::kWrite, const_cast<std::byte*>(buf.data()), buf.size(),
                                 const_cast<sockaddr*>(to), tolen, nullptr));
  }
  // Writes every byte of every buffer (a stream socket), as write() does for one.
  Task<IoResult> writev(std::span<const iovec> bufs) {
    size_t total = 0;
    for (const iovec& v : bufs) total += v.iov_len;
    std::vector<iovec> rest(bufs.begin(), bufs.end());
    size_t done = 0;
    size_t first = 0;
    while (done < total) {
      fdop::Msg m{Mode::kWrite, {}, {}, nullptr, false, {}};
      m.msg.msg_iov = rest.data() + first;
      m.msg.msg_iovlen = rest.size() - first;
      IoResult r = co_await msg_op(m);
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
  auto ready_op(Mode m, F op) {
    if constexpr (P::kCompletion) {
      return unsupported_op();
    } else {
      return FdOp<P, fdop::Call<F>>(this, m, fdop::Call<F>{std::move(op), {}});
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
    // Only an operation that waits holds a reference across a suspension, and waiting
    // needs a PollDesc: without one there is nothing in flight here.
    if (refs_ > 0 && !pd_) fatal("PollFd::close: operations in flight on an unpolled descriptor");
    if (refs_ > 0) co_await CloseAwaiter{this, {}};
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
  auto msg_op(fdop::Msg m) { return start(m, m.mode); }

  // An operation as the backend runs it: a frame-less FdOp on readiness backends, a
  // coroutine (submit, wait, cancel) on completion backends.
  template <class Step>
  auto start(Step st, Mode m) {
    if constexpr (!P::kCompletion) {
      return FdOp<P, Step>(this, m, std::move(st));
    } else if constexpr (kFramelessCompletion<P> && std::is_same_v<Step, fdop::Read>) {
      using Fast = FdOp<P, fdop::RingRead<P>>;
      auto& b = s_->backend();
      if (pd_ && b.multishot_recv()) {
        return FastOrTask<Fast, IoResult>(std::in_place, this, m,
                                          fdop::RingRead<P>{st.buf, {}, &b, &cst_});
      }
      return FastOrTask<Fast, IoResult>(completion_op(std::move(st), m));
    } else if constexpr (kFramelessCompletion<P> && std::is_same_v<Step, fdop::Write>) {
      if (pd_) return FastOrTask<CompSend<P>, IoResult>(std::in_place, this, st.buf);
      return FastOrTask<CompSend<P>, IoResult>(completion_op(std::move(st), m));
    } else {
      return completion_op(std::move(st), m);
    }
  }

  // ---- completion backends ----
  static Task<IoResult> unsupported_op() { co_return IoResult{0, Errc::kInvalidArgument}; }

  // An operation as a coroutine: take the reference, report a pending error (S02, S17),
  // then submit and wait (completion_body); a descriptor the ring cannot take (S12) gets
  // plain blocking calls.
  template <class Step>
  Task<typename Step::Result> completion_op(Step step, Mode m) {
    Ref ref(this);
    if (!ref) {
      step.fail(Errc::kClosed);
      co_return step.result();
    }
    if (step.early()) co_return step.result();
    if (!pd_) {
      if (!step.attempt(fd_)) step.fail(Status::from_errno(EAGAIN));
      co_return step.result();
    }
    if (PollError e = pd_->reset(m); e != PollError::kNone) {
      step.fail(Status::from_poll(e));
      co_return step.result();
    }
    co_return co_await completion_body(step);
  }
  Task<IoResult> completion_body(fdop::Read& st) { return read_completion(st.buf); }
  Task<IoResult> completion_body(fdop::Write& st) { return write_completion(st.buf); }
  Task<AcceptResult> completion_body(fdop::Accept&) { return accept_completion(); }
  Task<IoResult> completion_body(fdop::Msg& st) {
    typename P::Op op{pd_, st.mode};
    if (st.mode == Mode::kRead) {
      s_->backend().submit_recvmsg(&op, fd_, st.header());
    } else {
      s_->backend().submit_sendmsg(&op, fd_, st.header());
    }
    PollError why = PollError::kNone;
    const int32_t res = co_await exec_io(&op, &why);
    if (res < 0) co_return IoResult{0, op_status(res, why)};
    if (st.namelen) *st.namelen = st.msg.msg_namelen;
    co_return IoResult{static_cast<size_t>(res), Status()};
  }
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

  // A single-shot recv into the caller's buffer (multishot recv off, or IOCP): the kernel
  // owns the buffer until the completion, so timeout and close cancel and wait (S23). With
  // a multishot recv the read never gets here: it is the frame-less FdOp<RingRead>.
  Task<IoResult> read_completion(std::span<std::byte> buf) {
    auto& b = s_->backend();
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
      if (f_) f_->release_ref();
    }
    explicit operator bool() const noexcept { return f_ != nullptr; }
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;

   private:
    PollFd* f_;
  };

  // close() waits here for the operations in flight. The node lives in close()'s frame,
  // and the PollDesc points at it (PollDesc::closer) until the last operation leaves.
  struct CloseAwaiter {
    PollFd* f;
    TaskNode node;
    bool await_ready() const noexcept { return f->refs_ == 0; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      node.handle = h;
      f->pd_->closer = &node;
    }
    void await_resume() const noexcept {}
    ~CloseAwaiter() {  // destroyed while waiting (teardown)
      if (f->pd_ && f->pd_->closer == &node) f->pd_->closer = nullptr;
    }
  };

  template <PollerBackend, class>
  friend class FdOp;
  friend class CompSend<P>;
  void release_ref() {
    if (--refs_ == 0 && state_ == State::kClosing) last_ref_gone();
  }

  void last_ref_gone() {
    TaskNode* c = pd_ ? std::exchange(pd_->closer, nullptr) : nullptr;
    destroy();  // frees the PollDesc
    if (c) s_->make_ready(c);
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
  uint16_t refs_ = 0;  // operations in flight: a reader, a writer, a close, a few at most
  State state_ = State::kUnused;
  [[no_unique_address]] typename FdStateOf<P>::type cst_;
};

}  // namespace ringpoll
