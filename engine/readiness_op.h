#pragma once
// FdOp<P, Step>: an operation of PollFd (engine/poll_fd.h) on a readiness backend (epoll,
// io_uring readiness, kqueue, ports, pollset) with no coroutine frame of its own — Go's
// internal/poll loop: try the step's system call (engine/fd_steps.h), on EAGAIN park on
// the PollDesc (PollDesc::park), try again when woken. It holds the PollFd's reference
// from await_ready until it has a result; while it waits, its TaskNode is parked with
// `run` set, so a wake (readiness, deadline, close) runs the next attempt on the shard,
// and the caller is resumed once, when done. An operation allocates nothing.
//
// Layout: the node parked on the PollDesc, then the step (its result), then the flags,
// which the compiler may place in the step's tail padding: an idle read is 56 bytes.
// (io_uring completion mode reuses FdOp for its multishot read, whose step takes queued
// data instead of making a system call: fdop::RingRead in engine/completion_ops.h.)
#include <coroutine>
#include <utility>

#include "fd_steps.h"
#include "scheduler.h"

namespace ringpoll {

template <PollerBackend P>
class PollFd;

template <PollerBackend P, class Step>
class [[nodiscard("co_await it: an I/O operation that is not awaited never runs")]] FdOp
    : private TaskNode,
      private Step {
 public:
  using Result = typename Step::Result;
  FdOp(PollFd<P> * f, Mode m, Step step) noexcept : Step(std::move(step)), mode_(m), f_(f) {
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
  void await_suspend(std::coroutine_handle<> caller) noexcept {
    handle = caller;
  }
  Result await_resume() noexcept {
    return Step::result();
  }

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
      if constexpr (P::kLevelTriggered) f_->s_->backend().arm(pd, mode_);
      const PollDesc::Parking r = pd->park(mode_, node(), false);
      if (r.state == PollDesc::Parking::kParked) {
        parked_ = true;
        return false;
      }
      if (r.state == PollDesc::Parking::kError) {
        Step::fail(Status::from_poll(r.err));
        return release();
      }
      // readiness (S15 included): retry
    }
  }

  // The shard runs the parked node: readiness, a fired deadline or a close.
  static void woken(TaskNode * n) noexcept {
    FdOp* op = static_cast<FdOp*>(n);
    op->parked_ = false;
    if (const PollError e = op->f_->pd_->woken(op->mode_, false); e != PollError::kNone) {
      op->Step::fail(Status::from_poll(e));
      op->release();
    } else if (!op->advance()) {  // readiness, or a deadline reset before we ran (S09)
      return;                     // parked again
    }
    op->handle.resume();  // the caller; `op` may be gone after this
  }
  TaskNode* node() noexcept {
    return this;
  }
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

}  // namespace ringpoll
