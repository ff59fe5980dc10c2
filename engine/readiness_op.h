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
//
// The short-read rule (backends with kShortReadDrains, poller/poller.h: epoll, io_uring
// readiness). A read that came back with fewer bytes than it asked for emptied the socket
// (tcp_recvmsg stops short only when the receive queue and backlog are empty), and every
// byte that arrives after it brings a new edge. So the next read operation on the
// descriptor does not try its system call first — that call could only meet EAGAIN —
// but parks at once, without clearing a pending "ready" (which is then an arrival since
// the short read, and is taken as readiness: the call is tried). Not once an event has
// carried RDHUP, HUP or ERR (PollDesc's kInfoHangup): a FIN that arrived with the last
// bytes, before their event was fetched, shares their edge, and the read that meets it
// (0, end of stream) must be made without waiting for another. Only for a descriptor
// PollFd knows to be a stream socket (mark_stream_socket: a terminal returns a line at a
// time with more queued, and would wait for an edge that never comes). The peers'
// c-epoll-echo (shared/peers) reads the same way. PollFd keeps the one bit (read_drained_);
// the shard counts reads that met EAGAIN and reads parked by the rule (IoCounters).
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
    bool park_first = false;
    if (PollDesc* pd = f_->pd_) {
      // Never once an event brought the end of the read side (RDHUP, HUP, ERR): a FIN that
      // came with the last bytes got no edge of its own, so reads go on until 0 or an error.
      if constexpr (kShortRead) {
        park_first = mode_ == Mode::kRead && f_->read_drained_ && !pd->hangup_seen();
      }
      // After a short read a pending "ready" is an arrival since: kept, not cleared (S17's
      // stale ready cannot be one, since the read that set the rule consumed everything).
      const PollError e = park_first ? pd->check_err(mode_) : pd->reset(mode_);
      if (e != PollError::kNone) {
        Step::fail(Status::from_poll(e));
        return release();
      }
    }
    return advance(park_first);
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
  // park_first: the short-read rule holds (pd is set); park before any system call.
  bool advance(bool park_first = false) noexcept {
    PollDesc* pd = f_->pd_;
    if (park_first) f_->s_->io_counters().read_parked_drained++;
    for (;;) {
      if (!park_first) {
        if (attempt()) {
          if constexpr (kShortRead) {
            if (mode_ == Mode::kRead) f_->read_drained_ = f_->stream_socket_ && drained();
          }
          return release();
        }
        if (mode_ == Mode::kRead) f_->s_->io_counters().read_wouldblock++;
        if constexpr (kShortRead) f_->read_drained_ = false;
        if (!pd) {  // not pollable (S12): EAGAIN is the answer
          Step::fail(Status::from_errno(EAGAIN));
          return release();
        }
      }
      park_first = false;
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

  // One try of the step: its system call, or (a completion backend's OnRing step) its
  // look at what the backend has queued for the descriptor.
  bool attempt() noexcept {
    if constexpr (requires { typename Step::OnRing; }) {
      return Step::attempt_ring(&f_->s_->backend(), &f_->cst_);
    } else {
      return Step::attempt(f_->fd_);
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
  static constexpr bool kShortRead = short_read_drains<P>();
  // The step's word on the attempt that just ended the operation (false when it has none).
  bool drained() const noexcept {
    if constexpr (requires(const Step& st) { st.drained(); }) {
      return static_cast<const Step&>(*this).drained();
    } else {
      return false;
    }
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
