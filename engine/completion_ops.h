#pragma once
// PollFd's operations on a completion backend (poller/completion.h: io_uring completion
// mode, IOCP), where the kernel performs the I/O and the completion wakes the waiter:
//
//   fdop::RingRead   a read from the multishot recv's queue (FdOp<RingRead>, frame-less);
//                    a starved connection receives directly (DESIGN.md "Fairness"), and
//                    so does a detached one (a bulk stream) until its queue is drained
//   CompSend         a write: submit, park, continue a short send, cancel-and-wait on
//                    timeout or close (the one execIO write sequence, both backends)
//   FastOrTask       the awaitable that is a frame-less awaiter on the common path and a
//                    coroutine on the rare ones
//   CompletionIo     everything else as coroutines: execIO for one operation (exec_io),
//                    the single-shot read, accept (multishot or not), connect, sendmsg
//                    and recvmsg; and the choice between the two (start)
//
// The backend declares which operations may live in the caller's frame (kFramelessOps);
// nothing is inferred from the size of its Op.
#include <coroutine>
#include <optional>
#include <type_traits>
#include <utility>

#include "../poller/completion.h"
#include "fd_steps.h"
#include "readiness_op.h"
#include "scheduler.h"

namespace ringpoll {

template <PollerBackend P>
class PollFd;
template <CompletionBackend P>
struct CompletionIo;

namespace fdop {
// A read on a completion backend with a multishot recv: the data is already queued on the
// descriptor (FdState); take it, or arm the recv and wait for the completion to wake us.
// A connection whose recv ended for want of buffers (the shard's ring ran dry) receives
// straight into the caller's buffer instead, so no reader waits on buffers other
// connections hold (DESIGN.md "Fairness").
// FdOp hands the backend and the descriptor's state to attempt_ring (OnRing), so the
// step, which waits in the caller's frame, holds no pointers to them.
template <MultishotCompletionBackend P>
struct RingRead {
  using Result = IoResult;
  using OnRing = void;
  std::span<std::byte> buf;  // cut down to the bytes read
  Status err;
  bool early() const noexcept { return buf.empty(); }
  bool attempt_ring(P* b, typename P::FdState* st) noexcept {
    if (const size_t n = b->take_recv(st, buf); n > 0) {
      buf = buf.first(n);
    } else if (st->recv_err != 0) {
      fail(Status::from_errno(-std::exchange(st->recv_err, 0)));
    } else if (st->eof) {
      fail(Errc::kEof);
    } else if (st->recv_waiting || (st->recv_detached && !st->recv_armed)) {
      const ssize_t r = b->recv_starved(st, buf);
      if (r == -EAGAIN) return false;
      if (r > 0) {
        buf = buf.first(static_cast<size_t>(r));
      } else {
        fail(r == 0 ? Status(Errc::kEof) : Status::from_errno(static_cast<int>(-r)));
      }
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

// wait_readable() with a multishot recv: done once data is queued, or the stream ended or
// failed, or the connection is starved of buffers or detached from the ring with its last
// completion in (its read then receives directly); otherwise arms the recv and waits.
// Reads nothing.
template <MultishotCompletionBackend P>
struct RingWait {
  using Result = IoResult;
  using OnRing = void;
  Status err;
  bool early() const noexcept { return false; }
  bool attempt_ring(P* b, typename P::FdState* st) noexcept {
    if (st->has_queued() || st->recv_err != 0 || st->eof || st->recv_waiting ||
        (st->recv_detached && !st->recv_armed))
      return true;
    b->arm_recv(st);
    return false;
  }
  void fail(Status e) noexcept { err = e; }
  Result result() const noexcept { return IoResult{0, err}; }
};
}  // namespace fdop

// A write on a completion backend — the one execIO write sequence, for io_uring and IOCP
// alike (Go's execIO, as a state machine): submit a send; park until its completion
// wakes us; a short send submits the rest. On timeout or close the send is cancelled and the
// completion awaited, ignoring further timeout/close; a send that completed first counts (S23/S24).
// The Op lives here, in the awaiting frame, which does not end before the completion was reaped:
// the caller's own frame where the backend's kFramelessOps says so, else a coroutine frame that
// hosts the awaiter (CompletionIo::completion_body).
template <CompletionBackend P>
class [[nodiscard("co_await it: an I/O operation that is not awaited never runs")]] CompSend
    : private TaskNode {
 public:
  CompSend(PollFd<P> * f, std::span<const std::byte> buf) noexcept : f_(f), buf_(buf) {
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
  void await_suspend(std::coroutine_handle<> caller) noexcept {
    handle = caller;
  }
  IoResult await_resume() noexcept {
    return IoResult{done_, err_};
  }

 private:
  TaskNode* node() noexcept {
    return this;
  }
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
    if ((res == -EAGAIN || res == -EINTR) && why == PollError::kNone) {
      submit();  // nothing was sent: try again (issue 22, fault injection)
      return false;
    }
    if (res < 0) {
      err_ = CompletionIo<P>::op_status(res, why);
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
      // While cancelling, only the completion ends the wait (Go's netpollblock, waitio).
      const PollDesc::Parking r = pd->park(Mode::kWrite, node(), cancelling_);
      if (r.state == PollDesc::Parking::kParked) {
        parked_ = true;
        return false;
      }
      if (r.state == PollDesc::Parking::kError && !op_.done) cancel(r.err);
      // the completion, or an S15 race, or S09: look again
    }
  }
  static void woken(TaskNode * n) noexcept {
    CompSend* op = static_cast<CompSend*>(n);
    op->parked_ = false;
    const PollError e = op->f_->pd_->woken(Mode::kWrite, op->cancelling_);
    if (e != PollError::kNone && !op->op_.done) op->cancel(e);
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
  explicit FastOrTask(std::in_place_t, A && ... a) {
    fast_.emplace(std::forward<A>(a)...);
  }
  explicit FastOrTask(Task<R> t) noexcept : slow_(std::move(t)) {}
  bool await_ready() noexcept {
    return fast_ ? fast_->await_ready() : false;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) noexcept {
    if (!fast_) return slow_.await_suspend(h);
    fast_->await_suspend(h);
    return std::noop_coroutine();
  }
  R await_resume() noexcept {
    return fast_ ? fast_->await_resume() : slow_.await_resume();
  }

 private:
  std::optional<Fast> fast_;
  Task<R> slow_;
};

// The coroutine paths, and the choice of path for each operation. Friends of PollFd.
template <CompletionBackend P>
struct CompletionIo {
  using Fd = PollFd<P>;

  template <class Step>
  static auto start(Fd* f, Step st, Mode m) {
    if constexpr (std::is_same_v<Step, fdop::Read> && P::kFramelessOps &&
                  MultishotCompletionBackend<P>) {
      using Fast = FdOp<P, fdop::RingRead<P>>;
      P& b = f->s_->backend();
      // A connection detached from the ring (detach_recv, a bulk stream) and drained
      // receives with single-shot recvs into the caller's buffer, one copy instead of two.
      if (f->pd_ && b.multishot_recv() && !P::recv_detached(f->cst_)) {
        return FastOrTask<Fast, IoResult>(std::in_place, f, m, fdop::RingRead<P>{st.buf, {}});
      }
      return FastOrTask<Fast, IoResult>(completion_op(f, std::move(st), m));
    } else if constexpr (std::is_same_v<Step, fdop::WaitReadable>) {
      if constexpr (P::kFramelessOps && MultishotCompletionBackend<P>) {
        using Fast = FdOp<P, fdop::RingWait<P>>;
        P& b = f->s_->backend();
        if (f->pd_ && b.multishot_recv()) {
          return FastOrTask<Fast, IoResult>(std::in_place, f, m, fdop::RingWait<P>{{}});
        }
        return FastOrTask<Fast, IoResult>(ready_now());
      } else {
        return ready_now();
      }
    } else if constexpr (std::is_same_v<Step, fdop::Write> && P::kFramelessOps) {
      if (f->pd_) return FastOrTask<CompSend<P>, IoResult>(std::in_place, f, st.buf);
      return FastOrTask<CompSend<P>, IoResult>(completion_op(f, std::move(st), m));
    } else {
      return completion_op(f, std::move(st), m);
    }
  }

  // wait_readable() where nothing can be waited on without a buffer: ready at once.
  static Task<IoResult> ready_now() { co_return IoResult{}; }

  // An operation as a coroutine: take the reference, report a pending error (S02, S17),
  // then submit and wait (completion_body); a descriptor the ring cannot take (S12) gets
  // plain blocking calls.
  template <class Step>
  static Task<typename Step::Result> completion_op(Fd* f, Step step, Mode m) {
    typename Fd::Ref ref(f);
    if (!ref) {
      step.fail(Errc::kClosed);
      co_return step.result();
    }
    if (step.early()) co_return step.result();
    if (!f->pd_) {
      if (!step.attempt(f->fd_)) step.fail(Status::from_errno(EAGAIN));
      co_return step.result();
    }
    if (PollError e = f->pd_->reset(m); e != PollError::kNone) {
      step.fail(Status::from_poll(e));
      co_return step.result();
    }
    co_return co_await completion_body(f, step);
  }
  static Task<IoResult> completion_body(Fd* f, fdop::Read& st) {
    return read_completion(f, st.buf);
  }
  // The write sequence is CompSend's; here it runs in this coroutine's frame.
  static Task<IoResult> completion_body(Fd* f, fdop::Write& st) {
    co_return co_await CompSend<P>(f, st.buf);
  }
  static Task<AcceptResult> completion_body(Fd* f, fdop::Accept&) { return accept_completion(f); }
  static Task<IoResult> completion_body(Fd* f, fdop::Msg& st) {
    typename P::Op op{f->pd_, st.mode};
    if (st.mode == Mode::kRead) {
      f->s_->backend().submit_recvmsg(&op, f->fd_, st.header());
    } else {
      f->s_->backend().submit_sendmsg(&op, f->fd_, st.header());
    }
    PollError why = PollError::kNone;
    const int32_t res = co_await exec_io(f, &op, &why);
    if (res < 0) co_return IoResult{0, op_status(res, why)};
    if (st.namelen) *st.namelen = st.msg.msg_namelen;
    co_return IoResult{static_cast<size_t>(res), Status()};
  }

  // Go's execIO: the operation is submitted; wait for its completion. On timeout or close,
  // cancel it and wait for the completion, ignoring further timeout/close; an operation
  // that completed first is a success (S24), and the buffer is the caller's again only
  // after the completion was reaped (S23). *why gets the timeout/close that interrupted.
  static Task<int32_t> exec_io(Fd* f, typename P::Op* op, PollError* why) {
    for (;;) {
      const PollError e = co_await f->s_->wait(f->pd_, op->mode);
      if (op->done) break;
      if (e == PollError::kNone) continue;  // woken without a completion (S09): wait on
      *why = e;
      f->s_->backend().cancel(op);
      while (!op->done) co_await f->s_->wait_io(f->pd_, op->mode);
      break;
    }
    co_return op->res;
  }
  static Status op_status(int32_t res, PollError why) {
    if (res == -ECANCELED && why != PollError::kNone) return Status::from_poll(why);
    return Status::from_errno(-res);
  }

  // A single-shot recv into the caller's buffer (multishot recv off, or IOCP): the kernel
  // owns the buffer until the completion, so timeout and close cancel and wait (S23).
  static Task<IoResult> read_completion(Fd* f, std::span<std::byte> buf) {
    typename P::Op op{f->pd_, Mode::kRead};
    f->s_->backend().submit_recv(&op, f->fd_, buf.data(), buf.size());
    PollError why = PollError::kNone;
    const int32_t res = co_await exec_io(f, &op, &why);
    if (res > 0) co_return IoResult{static_cast<size_t>(res), Status()};
    if (res == 0) co_return IoResult{0, Errc::kEof};
    co_return IoResult{0, op_status(res, why)};
  }

  static Task<AcceptResult> accept_completion(Fd* f) {
    P& b = f->s_->backend();
    if constexpr (MultishotCompletionBackend<P>) {
      if (b.multishot_accept()) {
        b.arm_accept(&f->cst_);
        for (;;) {
          if (const int c = b.take_accept(&f->cst_); c >= 0) co_return AcceptResult{c, Status()};
          if (f->cst_.accept_err != 0) {
            const int32_t e = std::exchange(f->cst_.accept_err, 0);
            b.arm_accept(&f->cst_);
            co_return AcceptResult{-1, Status::from_errno(-e)};
          }
          // Stopped (PollFd::stop_accepting) and its last connection handed out.
          if (P::accept_stopped(f->cst_)) co_return AcceptResult{-1, Errc::kClosed};
          if (PollError e = co_await f->s_->wait(f->pd_, Mode::kRead); e != PollError::kNone) {
            co_return AcceptResult{-1, Status::from_poll(e)};
          }
        }
      }
    }
    for (;;) {
      typename P::Op op{f->pd_, Mode::kRead};
      b.submit_accept(&op, f->fd_);
      PollError why = PollError::kNone;
      const int32_t res = co_await exec_io(f, &op, &why);
      if (res >= 0) co_return AcceptResult{res, Status()};
      // S31; and EAGAIN/EINTR: nothing was taken from the queue, accept again.
      if ((res == -ECONNABORTED || res == -EAGAIN || res == -EINTR) && why == PollError::kNone)
        continue;
      co_return AcceptResult{-1, op_status(res, why)};
    }
  }

  // connect on a polled descriptor whose reference the caller holds.
  static Task<Status> connect(Fd* f, const sockaddr* sa, socklen_t len) {
    typename P::Op op{f->pd_, Mode::kWrite};
    f->s_->backend().submit_connect(&op, f->fd_, sa, len);
    PollError why = PollError::kNone;
    const int32_t res = co_await exec_io(f, &op, &why);
    co_return res == 0 ? Status() : op_status(res, why);
  }
};

}  // namespace ringpoll
