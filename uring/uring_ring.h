#pragma once
// UringRing: one io_uring instance and the parts every io_uring mode shares: setup with
// probed flags, a submission path that never fails, waiting with the ring's own timeout,
// and the coalesced cross-thread wake. Used by UringPoller (readiness) and the
// completion-mode poller.
//
// Setup flags, each probed by trying it (the kernel answers EINVAL for what it lacks):
//   SINGLE_ISSUER  (6.0) only the shard's thread submits; lets the kernel skip locking
//   DEFER_TASKRUN  (6.1) completions run when we ask (GETEVENTS), not by interrupting us
//   COOP_TASKRUN   (5.19) no IPI to run task work; we enter the kernel often enough
//   SQPOLL         optional: a kernel thread polls the SQ (costs a core; off by default)
//
// Threads: create and use a ring on the shard's thread. When a ring is torn down the
// kernel cancels its requests with task work that interrupts the creating thread, so a
// blocking syscall that thread makes soon after (recv with SO_RCVTIMEO, ...) can fail
// with EINTR; shard threads own their rings for their whole life, so only threads that
// create short-lived rings (tests) see it.
//
// Wake (Go's netpollBreak): a CAS turns wake_pending_ 0 -> 1 and only that caller sends.
// Where the kernel has IORING_OP_MSG_RING (5.18) the waker posts a CQE straight into our
// ring from a small per-thread ring of its own; otherwise an eventfd watched by a
// multishot poll. Only a blocking poll drains a wake (S28): a wake CQE seen by a
// non-blocking poll is remembered and makes the next blocking poll return at once.
//
// Restart (teardown, then setup again on the same thread; UringPoller::restart_ring):
// teardown publishes ring_fd -1 and waits for the wakers that read the old fd to finish
// their MSG_RING, so no waker ever sends to a closed (or reused) descriptor; a wake that
// found -1 is not sent, and the poll that restarted returns without blocking so the
// scheduler looks at its inbox anyway. The wake eventfd outlives the rings.
#include <liburing.h>
#include <poll.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "../poller/poller.h"
#include "uring_options.h"

namespace ringpoll {

// The io_uring user_data layout of both modes, in one table. PollDescs and Ops are 8-byte
// aligned, so the three low bits are free; tag(pd) is the PollDesc pointer with its 16-bit
// fdseq in bits 48-63 (poller/poller.h), so a CQE for a freed descriptor is stale.
//
//   user_data                 mode          what completed
//   0                         both          the cross-shard wake (MSG_RING, or the eventfd read)
//   2                         both          a cancel or a removal: nothing to do
//   LIBURING_UDATA_TIMEOUT    both          liburing's own wait timeout
//   tag(pd)                   readiness     the descriptor's multishot poll
//   tag(pd) | 1               readiness     the removal of that poll
//   Op* | 1                   completion    one operation (send, connect, single-shot recv, ...)
//   tag(pd) | 2               completion    the descriptor's multishot recv
//   tag(pd) | 4               completion    the listener's multishot accept
//   tag(pd) | 6               completion    a starved reader's one-shot POLLIN ("Fairness")
inline constexpr uint64_t kUringWakeData = 0;
inline constexpr uint64_t kUringIgnoreData = 2;
inline constexpr uint64_t kUringRemoveBit = 1;  // readiness mode
inline constexpr uint64_t kUringOpBit = 1;      // completion mode
inline constexpr uint64_t kUringKindRecv = 2;
inline constexpr uint64_t kUringKindAccept = 4;
inline constexpr uint64_t kUringKindPoll = 6;
inline constexpr uint64_t kUringKindMask = 7;

namespace detail {
// After a poll's real CQEs: fills *cqe with one a test injects (true), or returns false;
// never true in production (poller/internal/test_seams.h).
bool uring_injected(io_uring_cqe* cqe) noexcept;
}  // namespace detail

// Why io_uring_setup failed, in one line: ENOSYS (seccomp or no io_uring in the kernel),
// EPERM (kernel.io_uring_disabled, printed, or an LSM/seccomp), ENOMEM (RLIMIT_MEMLOCK,
// printed). err is a positive errno.
std::string classify_uring_setup_failure(int err);

class UringRing {
 public:
  UringRing() = default;
  ~UringRing();
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  // A cheap real probe: set up and tear down a 2-entry ring.
  static Availability probe();

  void set_options(const UringOptions& o) { opt_ = o; }
  const UringOptions& options() const { return opt_; }
  Status setup() { return setup(opt_.entries); }
  // The same with `entries` SQ entries instead of the options' (a restart's smaller ring).
  Status setup(unsigned entries);
  // Cancels everything in flight and frees the ring (io_uring_queue_exit); CQEs not reaped
  // yet are dropped. The wake eventfd stays. setup() may be called again afterwards.
  void teardown();
  bool ready() const noexcept { return ring_fd() >= 0; }
  int ring_fd() const noexcept { return ring_fd_.load(std::memory_order_acquire); }
  unsigned entries() const noexcept { return entries_; }
  unsigned setup_flags() const noexcept { return flags_; }
  std::string describe() const;  // "io_uring (SINGLE_ISSUER|DEFER_TASKRUN|..., wake=msg_ring)"
  bool supports(int opcode) const noexcept;

  // An SQE to fill; never null. When the SQ is full the ring is flushed first; if it is
  // still full (SQPOLL lagging) the SQE goes to an overflow list flushed later.
  io_uring_sqe* sqe();
  // Submits what is queued (including the overflow list). Returns the kernel's count or
  // a negative errno; EBUSY/EAGAIN (CQ backlog) are absorbed: the next wait reaps first.
  int flush();

  // Waits for completions: delta < 0 blocks, 0 does not, > 0 at most delta ns. Returns
  // 0 or -ETIME/-EINTR, or -EBADR: the kernel dropped completions (its CQ overflow list
  // could not grow), so some events are lost and only a restart recovers them. After it,
  // reap CQEs with for_each().
  int wait(int64_t delta_ns);
  template <class Fn>
  unsigned for_each(Fn&& fn) {
    unsigned head, n = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      fn(cqe);
      ++n;
    }
    io_uring_cq_advance(&ring_, n);
    for (io_uring_cqe injected{}; detail::uring_injected(&injected); injected = io_uring_cqe{}) {
      fn(&injected);
      ++n;
    }
    return n;
  }
  // Call on a wake CQE; returns whether this poll should report it (blocking polls).
  bool on_wake_cqe(int64_t delta_ns) noexcept;
  // A remembered wake that a non-blocking poll saw: the next blocking poll returns at once.
  bool take_seen_wake(int64_t delta_ns) noexcept;

  void wake() noexcept;
  uint64_t wakes_written() const noexcept { return wakes_written_.load(); }
  bool wake_uses_msg_ring() const noexcept { return msg_ring_wake_; }

  io_uring* raw() noexcept { return &ring_; }
  int wake_eventfd() const noexcept { return wake_efd_; }
  // Eventfd mode: a wake CQE without IORING_CQE_F_MORE ended the multishot poll.
  void rearm_wake() { arm_wake_eventfd(); }

 private:
  void arm_wake_eventfd();
  UringOptions opt_;
  io_uring ring_{};
  // Read by wakers on other threads (MSG_RING's target); -1 while there is no ring.
  std::atomic<int> ring_fd_{-1};
  std::atomic<int> wakers_{0};  // wakers between reading ring_fd_ and their send's end
  unsigned entries_ = 0;
  unsigned flags_ = 0;
  io_uring_probe* probe_ = nullptr;
  bool msg_ring_wake_ = false;
  bool set_up_ = false;  // a setup succeeded once (msg_ring_wake_ is final)
  int wake_efd_ = -1;
  bool wake_seen_ = false;
  std::vector<io_uring_sqe> overflow_;
  std::atomic<uint32_t> wake_pending_{0};
  std::atomic<uint64_t> wakes_written_{0};
};

}  // namespace ringpoll
