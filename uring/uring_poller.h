#pragma once
// UringPoller: io_uring in readiness mode, the default contract (DESIGN.md "io_uring").
//
// One multishot poll (IORING_POLL_ADD_MULTI) per descriptor, armed at open, whose
// user_data is the tagged pointer (PollDesc*, fdseq): a completion for an old generation
// is dropped (S26). A multishot poll posts a CQE per wake-up of the socket, like
// EPOLLET. When a CQE arrives without IORING_CQE_F_MORE the kernel has ended the
// request (CQ overflow, an error, our cancel): if the descriptor is still current and
// open we arm it again (S30), and since a fresh poll reports readiness that already
// exists, no event is lost. All CQEs reaped by one poll() become one TaskList.
//
// Waits use the ring's own timeout (io_uring_submit_and_wait_timeout, EXT_ARG), never a
// linked timeout per operation. Setup and the wake are in UringRing.
//
// Restart. When the kernel says it dropped completions (io_uring_enter: EBADR, its CQ
// overflow list could not grow), some descriptor's readiness is lost and no CQE will bring
// it back; the cure is a fresh poll per descriptor, since a new poll reports readiness
// that already exists. restart_ring() stops submitting (it runs on the shard's thread,
// outside any wait), tears the ring down (the kernel cancels every poll in flight and
// drops the CQEs not reaped; the fresh polls re-report them), sets a new ring up and arms
// every open descriptor's poll on it (watched_), so no waiter is lost. A setup that fails
// with ENOMEM is retried with a ring half the size down to kRestartMinEntries, then a few
// more times with a doubling pause; the old ring's locked memory is already given back by
// then, which is why it is torn down first. If it still fails the process stops, naming
// the shard's errno and the memlock limit: the backend is fixed per process at start
// (DESIGN.md "Dispatch is static: Shard<P>"), so a shard cannot move to epoll, and a
// shard without a ring cannot serve its descriptors. Engine users may also ask for a
// restart (Scheduler::restart_backend). Completion mode has no restart yet (its
// operations in flight live in coroutine frames the ring does not list; EBADR stops it).
#include <atomic>
#include <cstdint>
#include <vector>

#include "../poller/poller.h"
#include "uring_ring.h"

namespace ringpoll {

// Application code names this type only as the P of Engine<P> (or gets it from
// with_backend); the Scheduler calls the contract methods, whose meaning is stated once in
// poller/poller.h, on the shard's thread — except wake(), which any thread may call.
class UringPoller {
 public:
  static constexpr const char* kName = "io_uring";
  static constexpr bool kLevelTriggered = false;
  static constexpr bool kCompletion = false;
  // The multishot poll posts a CQE per wake-up of the socket (and a re-armed one reports
  // readiness that exists), so a short read may park the next one at once, as on epoll.
  static constexpr bool kShortReadDrains = true;
  // What the multishot poll asks for: the same set the epoll backend registers.
  static constexpr unsigned kPollMask = POLLIN | POLLOUT | POLLRDHUP | POLLERR | POLLHUP;

  UringPoller() = default;
  UringPoller(const UringPoller&) = delete;
  UringPoller& operator=(const UringPoller&) = delete;

  // Probed once per process (a real 2-entry ring setup).
  static Availability available();
  void set_options(const UringOptions& o) { ring_.set_options(o); }
  Status init() { return ring_.setup(); }
  int open(int fd, PollDesc* pd);
  int close(int fd, PollDesc* pd);
  void arm(PollDesc*, Mode) {}
  int poll(int64_t delta_ns, TaskList& out);
  void wake() noexcept { ring_.wake(); }
  bool owns(int fd) const {
    return fd >= 0 && (fd == ring_.ring_fd() || fd == ring_.wake_eventfd());
  }

  uint64_t wakes_written() const noexcept { return ring_.wakes_written(); }
  uint64_t rearms() const noexcept { return rearms_; }
  // Poll removals asked again after losing the race with a completion (-EALREADY).
  uint64_t remove_retries() const noexcept { return remove_retries_; }
  UringRing& ring() noexcept { return ring_; }
  std::string describe() const { return ring_.describe(); }

  // Rebuilds the ring and re-arms every open descriptor (Restart, above); `why` is logged.
  // Shard thread, outside poll(). Stops the process when no ring can be set up again.
  void restart_ring(const char* why);
  // Any thread: restarts done, and ring setups that failed with ENOMEM and were retried.
  uint64_t ring_restarts() const noexcept { return restarts_.load(std::memory_order_relaxed); }
  uint64_t ring_setup_retries() const noexcept {
    return setup_retries_.load(std::memory_order_relaxed);
  }

 private:
  void arm_poll(int fd, PollDesc* pd);
  void remove_poll(uint64_t poll_data);
  void unwatch(PollDesc* pd);
  UringRing ring_;
  uint64_t rearms_ = 0;
  uint64_t remove_retries_ = 0;
  // Every descriptor open() armed and close() has not yet seen; a descriptor's index is in
  // its backend_data (swap-remove), so both stay O(1).
  std::vector<PollDesc*> watched_;
  std::atomic<uint64_t> restarts_{0};
  std::atomic<uint64_t> setup_retries_{0};
};
static_assert(PollerBackend<UringPoller>);

}  // namespace ringpoll
