#pragma once
// The backend contract. Every poller backend (uring/, epoll/, kqueue/, ports/, aix/,
// iocp/) provides exactly this, as Go's runtime/netpoll.go asks of netpoll_*.go; the
// PollerBackend concept below makes the compiler check it (each backend header ends with
// static_assert(PollerBackend<ItsPoller>)).
//
//   static constexpr const char* kName      the backend's name ("epoll", "io_uring", ...)
//   static constexpr bool kLevelTriggered   true: the core calls arm(pd, mode) before each
//                                           wait (Go's netpollarm); false: edge-triggered
//                                           or one-shot re-armed by the backend itself
//   static constexpr bool kCompletion       true: the backend also performs I/O (submit)
//   static Availability available()         a cheap real probe (create and destroy the
//                                           kernel object once); says why when it fails
//   Status init()                           create the kernel objects (Go's netpollinit)
//   int open(int fd, PollDesc* pd)          start watching fd for pd; 0 or an errno
//                                           (EPERM: fd cannot be polled, e.g. a file)
//   int close(int fd, PollDesc* pd)         stop watching fd; 0 or an errno
//   void arm(PollDesc* pd, Mode mode)       re-arm before a wait (level-triggered only)
//   int poll(int64_t delta_ns, TaskList& out)
//                                           wait for events: delta < 0 blocks, 0 returns
//                                           at once, > 0 waits at most delta (rounded up,
//                                           never truncated to a spin). Every task woken
//                                           is appended to `out` (one list per call).
//                                           An interrupted timed wait returns with no
//                                           events. Returns the number of events seen.
//                                           Events whose fdseq tag is old are dropped.
//   void wake() noexcept                    interrupt a blocking poll from any thread;
//                                           coalesced: at most one wake outstanding, and
//                                           only a blocking poll drains it (Go's
//                                           netpollBreak)
//   bool owns(int fd) const                 fd is one of the backend's own descriptors
//                                           (Go's netpollIsPollDescriptor)
//
// Optional, readiness backends only (detected with `requires`, false when absent):
//   static constexpr bool kShortReadDrains  true: every byte that reaches a socket after a
//                                           read returned fewer bytes than it asked for
//                                           brings a new readiness event (an edge per
//                                           arrival: EPOLLET, io_uring's multishot poll).
//                                           The engine then parks the next read at once
//                                           instead of trying a system call that would
//                                           only meet EAGAIN (short_read_drains below).
//
// Completion backends add `submit(op)`, which never fails: when the submission queue is
// full the operation is queued and flushed later (their own headers state it).
//
// Threads: init, open, close, arm and poll are called by the owning shard's thread only;
// wake may be called from any thread.
#include <concepts>
#include <cstdint>
#include <string>

#include "errors.h"
#include "poll_desc.h"
#include "task_list.h"

namespace ringpoll {

struct Availability {
  bool ok = false;
  int err = 0;      // errno of the failed probe, 0 when ok
  std::string why;  // one line: what was tried and what the kernel said
};

template <class P>
concept PollerBackend = requires(P p, const P cp, int fd, PollDesc* pd, Mode m, int64_t delta,
                                 TaskList& out) {
  { P::kName } -> std::convertible_to<const char*>;
  { P::kLevelTriggered } -> std::convertible_to<bool>;
  { P::kCompletion } -> std::convertible_to<bool>;
  { P::available() } -> std::same_as<Availability>;
  { p.init() } -> std::same_as<Status>;
  { p.open(fd, pd) } -> std::same_as<int>;
  { p.close(fd, pd) } -> std::same_as<int>;
  { p.arm(pd, m) } -> std::same_as<void>;
  { p.poll(delta, out) } -> std::same_as<int>;
  { p.wake() }
  noexcept->std::same_as<void>;
  { cp.owns(fd) } -> std::same_as<bool>;
};

// The optional kShortReadDrains trait of a backend (see the contract above).
template <class P>
constexpr bool short_read_drains() noexcept {
  if constexpr (requires { P::kShortReadDrains; }) {
    return P::kShortReadDrains && !P::kCompletion;
  } else {
    return false;
  }
}

// Kernel user data carries (PollDesc*, its 16-bit fdseq), as netpoll_epoll.go's
// taggedPointer does: user-space addresses fit in 48 bits on the platforms we build for.
inline constexpr int kTagShift = 48;
inline constexpr uint64_t kTagMask = 0xffff;
inline uint64_t tag_pointer(PollDesc* pd, uint32_t seq) noexcept {
  const auto p = reinterpret_cast<uint64_t>(pd);
  if (p >> kTagShift) fatal("PollDesc address does not fit the 48-bit tagged pointer");
  return p | (static_cast<uint64_t>(seq & kTagMask) << kTagShift);
}
inline PollDesc* tagged_pd(uint64_t data) noexcept {
  return reinterpret_cast<PollDesc*>(data & ((uint64_t{1} << kTagShift) - 1));
}
inline uint32_t tagged_seq(uint64_t data) noexcept {
  return static_cast<uint32_t>(data >> kTagShift);
}
// Does an event's tag match the descriptor's current generation?
inline bool tag_current(PollDesc* pd, uint32_t tag) noexcept {
  return (pd->fdseq.load() & kTagMask) == tag;
}

}  // namespace ringpoll
