#pragma once
// PollFd<P>: a descriptor driven by a shard, in the spirit of Go's internal/poll.FD:
// read, write (all of it), accept, deadlines and close, with errors as values. This file
// is the API, opening, references and close; the operations live beside it:
//
//   engine/fd_steps.h        the system-call halves (fdop::Read, Write, Accept, Msg, Call)
//   engine/readiness_op.h    FdOp: an operation on a readiness backend, frame-less
//   engine/completion_ops.h  the same on a completion backend (io_uring completion mode,
//                            IOCP): RingRead, CompSend, execIO and the coroutines
//
// Each operation: take a reference (fails with kClosed once closing), report a pending
// error or clear a stale "ready" before the first syscall (S02, S17), try the syscall,
// and on EAGAIN wait on the PollDesc and retry (a read that follows a short read on an
// edge-per-arrival backend waits first: the short-read rule, engine/readiness_op.h) — or, on a
// completion backend, submit and wait for the completion. close() evicts the waiters, waits until
// the operations in flight have left, and the last reference closes the fd (S22).
//
// A PollFd must not move while an operation is in flight (operations hold `this`).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/uio.h>

#include "completion_ops.h"
#include "fd_steps.h"
#include "readiness_op.h"
#include "scheduler.h"

namespace ringpoll {

// Per-descriptor state a completion backend keeps (multishot queues); empty otherwise.
template <class P, bool = P::kCompletion>
struct FdStateOf {
  struct type {};
};
template <class P>
struct FdStateOf<P, true> {
  using type = typename P::FdState;
};

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
  // Says the descriptor is a connected stream socket (TCP, AF_UNIX SOCK_STREAM), whose
  // read returns fewer bytes than asked only when its receive queue is empty: its reads
  // may then follow the short-read rule (engine/readiness_op.h) and skip the system call
  // that would only meet EAGAIN. TcpStream says it of its sockets. Not for a terminal or
  // any descriptor whose reads stop short with data left (a line at a time).
  void mark_stream_socket() noexcept { stream_socket_ = true; }
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

  // Waits until a read would not block — data, the end of the stream or an error — and
  // reads nothing: a caller can take its buffer only then (an idle connection holds none).
  // Readiness backends peek one byte; io_uring with multishot recv looks at the data the
  // kernel already queued; a completion backend without it is ready at once (its read
  // then waits holding the buffer). The error, if any, is the one the read would get.
  auto wait_readable() { return start(fdop::WaitReadable{}, Mode::kRead); }

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
      co_return co_await CompletionIo<P>::connect(this, sa, len);
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

  // A bulk stream on a completion backend with a multishot recv: take this descriptor off
  // the shard's provided-buffer ring for good, so its reads land straight in the caller's
  // buffer (one copy instead of two, one completion per read instead of one per 4 KiB)
  // and it holds none of the shard's buffers. Elsewhere there is nothing to detach.
  void detach_recv() {
    if constexpr (MultishotCompletionBackend<P>) {
      if (pd_ && state_ == State::kOpen) s_->backend().detach_recv(&cst_);
    }
  }
  // Detached and drained (detach_recv's cancel has completed, nothing it received is still
  // queued): a read now receives straight from the socket, and so may a plain recv(2) of
  // the caller's. Before that point a direct recv would overtake bytes still queued or in
  // flight on the ring. Always true where there is no ring to detach from.
  bool receives_directly() const noexcept {
    if constexpr (MultishotCompletionBackend<P>) {
      return !pd_ || P::recv_detached(cst_);
    } else {
      return true;
    }
  }
  // Whether wait_readable() waits holding nothing, as long as nothing is there: readiness
  // backends (a peek on readiness) and a completion backend's multishot recv (it looks at
  // what the ring queued). False where it is ready at once (no PollDesc, a completion
  // backend without multishot receives, IOCP, a socket detached from the ring): a caller
  // that would wait on it without reading must not.
  bool waits_without_buffer() const noexcept {
    if (!pd_ || state_ != State::kOpen) return false;
    if constexpr (!P::kCompletion) {
      return true;
    } else if constexpr (P::kFramelessOps && MultishotCompletionBackend<P>) {
      return s_->backend().multishot_recv() && !P::recv_detached(cst_);
    } else {
      return false;
    }
  }
  // True when the backend knows, without a system call, that nothing has arrived on the
  // descriptor since it was last read (no bytes, no end of stream, no error): a completion
  // backend whose multishot recv is armed and has queued nothing (the kernel would have
  // taken anything that arrived into the ring, and a peek at the socket would find
  // nothing either). False: it cannot tell, or something is there.
  bool known_quiet() const noexcept {
    if constexpr (MultishotCompletionBackend<P>) {
      return pd_ && state_ == State::kOpen && P::recv_quiet(cst_);
    } else {
      return false;
    }
  }
  // Undoes detach_recv when the stream has gone quiet, between two reads (none in flight):
  // the descriptor takes the ring's buffers again and its reader holds no buffer while it
  // waits.
  void attach_recv() {
    if constexpr (MultishotCompletionBackend<P>) {
      if (pd_ && state_ == State::kOpen) s_->backend().attach_recv(&cst_);
    }
  }

  // Handing a connection to another process (an upgrade, engine/handover.h) between two
  // reads: what the backend received ahead of the application must travel with it, and
  // nothing more may land in this process. stop_recv_ahead() stops receiving ahead (a
  // multishot recv is detached, as detach_recv: cancelled, never re-armed);
  // recv_ahead_stopped() says when the cancelled request's last completion has come, so
  // take_received() then holds everything: it appends the queued bytes to *out and says
  // whether the end of stream came after them (taken too). A pending receive error is not
  // taken: the result is its errno (the connection is failing; it stays here). Readiness
  // backends and completion backends without a multishot recv receive nothing ahead.
  void stop_recv_ahead() { detach_recv(); }
  bool recv_ahead_stopped() const noexcept {
    if constexpr (MultishotCompletionBackend<P>) {
      return !pd_ || (cst_.recv_detached && !cst_.recv_armed);
    } else {
      return true;
    }
  }
  int take_received(std::vector<std::byte>* out, bool* eof) {
    *eof = false;
    if constexpr (MultishotCompletionBackend<P>) {
      if (!pd_ || state_ != State::kOpen) return 0;
      if (cst_.recv_err != 0) return -cst_.recv_err;
      std::byte chunk[4096];
      for (;;) {
        const size_t n = s_->backend().take_recv(&cst_, chunk);
        if (n == 0) break;
        out->insert(out->end(), chunk, chunk + n);
      }
      *eof = cst_.eof;  // (a bit-field: no std::exchange)
      cst_.eof = false;
    }
    return 0;
  }

  // A listener stops accepting without losing a connection. Where the backend takes
  // connections ahead of accept() (io_uring's multishot accept), that request is
  // cancelled, and accept() hands out every connection it took, then fails with kClosed
  // (returns true: the caller lets accept() run dry before close()). Elsewhere there is
  // nothing taken ahead: false, and close() alone stops accepting (a single-shot accept
  // that won against the cancel still returns its connection, S24).
  bool stop_accepting() {
    if constexpr (MultishotCompletionBackend<P>) {
      if (pd_ && state_ == State::kOpen && s_->backend().multishot_accept()) {
        s_->backend().stop_accept(&cst_);
        return true;
      }
    }
    return false;
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

  // An operation as the backend runs it: a frame-less FdOp on readiness backends; on
  // completion backends, what engine/completion_ops.h chooses.
  template <class Step>
  auto start(Step st, Mode m) {
    if constexpr (!P::kCompletion) {
      return FdOp<P, Step>(this, m, std::move(st));
    } else {
      return CompletionIo<P>::start(this, std::move(st), m);
    }
  }

  static Task<IoResult> unsupported_op() { co_return IoResult{0, Errc::kInvalidArgument}; }

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
  template <CompletionBackend>
  friend class CompSend;
  template <CompletionBackend>
  friend struct CompletionIo;
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
    if (fd_ >= 0) {
      if constexpr (requires { P::close_fd(fd_); }) {
        P::close_fd(fd_);  // the platform's way (IOCP: closesocket)
      } else {
        ::close(fd_);
      }
    }
    fd_ = -1;
    state_ = State::kClosed;
  }

  Scheduler<P>* s_ = nullptr;
  PollDesc* pd_ = nullptr;
  int fd_ = -1;
  uint16_t refs_ = 0;  // operations in flight: a reader, a writer, a close, a few at most
  State state_ = State::kUnused;
  // A connected stream socket (mark_stream_socket), and its last read emptied it: the
  // next one parks before its system call (the short-read rule of engine/readiness_op.h;
  // only backends with kShortReadDrains set it). Bits: PollFd stays 24 bytes.
  bool stream_socket_ : 1 = false;
  bool read_drained_ : 1 = false;
  [[no_unique_address]] typename FdStateOf<P>::type cst_;
};

}  // namespace ringpoll
