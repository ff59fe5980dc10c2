#pragma once
// The epoll backend (Linux fallback when io_uring is unavailable); Go's netpoll_epoll.go.
//
// Edge-triggered: each descriptor is added once with EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET
// and never re-armed; the core clears stale "ready" before each operation (S17) so a
// missed edge cannot strand a waiter — except a read right after a short read, which
// parks first (kShortReadDrains below: nothing it could miss). The event's user data is the tagged
// pointer (PollDesc*, fdseq); an event for an old generation is dropped (S26).
//
// Wake: an eventfd, written only by the caller whose CAS turns wake_pending_ 0 -> 1, and
// drained only by a blocking poll (S28).
//
// Timeouts: epoll_wait takes milliseconds, so a sub-millisecond wait would truncate to 0
// and spin. We use epoll_pwait2 (Linux 5.11+, timespec) when the kernel has it and
// otherwise round sub-millisecond waits up to 1 ms (S29).
#include <atomic>
#include <cstdint>

#include "../poller/poller.h"

struct epoll_event;

namespace ringpoll {

// Application code names this type only as the P of Engine<P> (or gets it from
// with_backend); the Scheduler calls the contract methods, whose meaning is stated once in
// poller/poller.h, on the shard's thread — except wake(), which any thread may call.
class EpollPoller {
 public:
  static constexpr const char* kName = "epoll";
  static constexpr bool kLevelTriggered = false;
  static constexpr bool kCompletion = false;
  // EPOLLET queues the descriptor again on every arrival of data after the event was
  // fetched, so a read that came back short (the socket drained) needs no EAGAIN read to
  // learn it: the next read parks at once (poller/poller.h).
  static constexpr bool kShortReadDrains = true;
  // Events fetched per epoll_wait call; Go uses 128. More events are picked up next call.
  static constexpr int kMaxEvents = 128;

  EpollPoller() = default;
  ~EpollPoller();
  EpollPoller(const EpollPoller&) = delete;
  EpollPoller& operator=(const EpollPoller&) = delete;

  static Availability available();
  Status init();
  int open(int fd, PollDesc* pd);
  int close(int fd, PollDesc* pd);
  void arm(PollDesc*, Mode) {}
  int poll(int64_t delta_ns, TaskList& out);
  void wake() noexcept;
  bool owns(int fd) const { return fd >= 0 && (fd == epfd_ || fd == wakefd_); }

  bool uses_pwait2() const noexcept { return pwait2_; }
  // Wakes written to the eventfd so far (for tests of coalescing).
  uint64_t wakes_written() const noexcept { return wakes_written_.load(); }

 private:
  int epfd_ = -1;
  int wakefd_ = -1;
  bool pwait2_ = false;
  std::atomic<uint32_t> wake_pending_{0};
  std::atomic<uint64_t> wakes_written_{0};
};
static_assert(PollerBackend<EpollPoller>);

}  // namespace ringpoll
