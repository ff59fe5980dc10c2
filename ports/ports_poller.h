#pragma once
// The event-ports backend (Solaris, illumos); Go's netpoll_solaris.go.
//
// Why re-association. An event port watches a descriptor through an *association*
// (port_associate: fd, the poll events wanted, a user pointer), and an association is
// one-shot: the first event it produces ends it. Nothing more is reported for that fd until
// someone associates it again. So this backend is level-triggered in the contract's sense
// (kLevelTriggered = true): before each wait the core calls arm(pd, mode), and arm makes
// sure the fd is associated for that direction. The events currently asked for live in
// pd->backend_data and "is associated" in pd->backend_flags; both are shard-confined, like
// every caller of open/close/arm/poll, so no lock is needed (Go takes pd.lock here because
// any M may poll or arm).
//
// What an event does. The event ends the association, and it can carry both directions or
// just one. We wake the directions that fired and re-associate at once for the directions
// that are still wanted but did not fire (a writer still waiting while a reader was woken).
// A direction that fired is not re-armed until its next waiter calls arm(): its owner will
// first retry its syscall, and re-arming a readable fd that nobody reads would make every
// poll return the same event again.
//
// The races, and why each is harmless:
//   - Readiness that arrives while the fd is not associated (between an event and the next
//     arm) is not lost: port_associate checks the condition at once and sends an event
//     straight away if it already holds.
//   - arm() finding the fd still associated for its direction does nothing; associating
//     again would only replace the same mask.
//   - An event that was already queued in the port when the descriptor was freed and reused
//     carries the old (PollDesc*, fdseq) tag in portev_user and is dropped (S26). It must
//     not touch the association bookkeeping either, which now belongs to the new fd.
//   - close() dissociates; ENOENT only means the last event already ended the association.
//   - An event whose condition stopped holding before it was retrieved is not delivered
//     (illumos re-checks at retrieval); the fd stays associated and nobody waits wrongly.
//
// port_getn: we ask for at least one event (nget = 1). When the timeout passes it fails
// with ETIME, but nget may still count events it retrieved: those are processed, not
// dropped (port_getn(3C)). EINTR returns an empty list to a timed wait.
//
// Wake: port_send of a PORT_SOURCE_USER event, written only by the caller whose CAS turns
// wake_pending_ 0 -> 1 (S28). Retrieving a user event consumes it, so a non-blocking poll
// that happens to retrieve it sends it again: the wake belongs to the next blocking poll,
// which alone clears wake_pending_. Go uses port_alert instead; we do not, because while a
// port is in alert mode port_getn returns only the alert, so every non-blocking (fairness)
// poll would see no I/O at all until a blocking poll cleared the alert.
//
// Not pollable (EPERM from open()): regular files and directories, which poll as always
// ready (Go does not give them to the poller on Solaris either).
//
// The system-call layer `Sys` provides exactly what this file calls: port_create,
// port_associate, port_dissociate, port_getn, port_send, close, the port_event_t struct
// and the constants. NativePortsSys below is the real one (Solaris/illumos only);
// portemu::Sys (ports/emulation/, Linux, tests only) lets the conformance suite run here.
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <string>

#include "poller/poller.h"

#if defined(__sun) || defined(RINGPOLL_NATIVE_SHIM)
#include <poll.h>
#include <port.h>
#include <unistd.h>
#endif

namespace ringpoll {

template <class Sys>
class PortsPoller {
 public:
  using PortEvent = typename Sys::PortEvent;
  static constexpr const char* kName = Sys::kName;
  static constexpr bool kLevelTriggered = true;
  static constexpr bool kCompletion = false;
  // Events fetched per port_getn call; Go uses 128. More are picked up next call.
  static constexpr unsigned kMaxEvents = 128;

  PortsPoller() = default;
  ~PortsPoller() {
    if (port_ >= 0) Sys::close(port_);
  }
  PortsPoller(const PortsPoller&) = delete;
  PortsPoller& operator=(const PortsPoller&) = delete;

  static Availability available() {
    const int p = Sys::port_create();
    if (p < 0) {
      const int e = errno;
      return {false, e, std::string("port_create() failed: ") + std::strerror(e)};
    }
    Sys::close(p);
    return {true, 0, "port_create() succeeded"};
  }

  Status init() {
    port_ = Sys::port_create();
    if (port_ < 0) return Status::from_errno(errno);
    return Status();
  }

  int open(int fd, PollDesc* pd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return errno;
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return EPERM;
    // Associate with no events yet (arm() asks for them): this proves the fd can be
    // associated, and reports a hang-up or error that is already there.
    pd->backend_data = 0;
    pd->backend_flags = 0;
    if (associate(pd, fd, 0) < 0) return errno;
    return 0;
  }

  int close(int fd, PollDesc* pd) {
    pd->backend_flags = 0;
    pd->backend_data = 0;
    if (Sys::port_dissociate(port_, Sys::kSourceFd, static_cast<uintptr_t>(fd)) < 0) {
      if (errno != ENOENT && errno != EBADF) return errno;
    }
    return 0;
  }

  // Go's netpollarm: make sure the fd is associated for this direction.
  void arm(PollDesc* pd, Mode mode) {
    const int want = (has_read(mode) ? Sys::kPollIn : 0) | (has_write(mode) ? Sys::kPollOut : 0);
    const int cur = static_cast<int>(pd->backend_data);
    if ((pd->backend_flags & kAssociated) && (cur & want) == want) return;
    if (associate(pd, pd->fd, cur | want) < 0) fatal("ports: port_associate failed in arm", errno);
  }

  int poll(int64_t delta_ns, TaskList& out) {
    timespec ts{};
    const timespec* tsp = nullptr;
    if (delta_ns >= 0) {
      ts.tv_sec = static_cast<time_t>(delta_ns / kNsPerSec);
      ts.tv_nsec = static_cast<long>(delta_ns % kNsPerSec);
      tsp = &ts;
    }
    PortEvent events[kMaxEvents];
    unsigned n;
    for (;;) {
      n = 1;
      if (Sys::port_getn(port_, events, kMaxEvents, &n, tsp) >= 0) break;
      if (errno == ETIME) {
        if (n > 0) break;  // a timeout that still delivered events: a success
        return 0;
      }
      if (errno != EINTR) fatal("ports: port_getn failed with an unexpected error", errno);
      // An interrupted timed wait returns so the caller recomputes its timeout.
      if (delta_ns >= 0) return 0;
    }
    for (unsigned i = 0; i < n; ++i) {
      const PortEvent& ev = events[i];
      if (ev.portev_source == Sys::kSourceUser) {
        if (ev.portev_user != static_cast<void*>(this))
          fatal("ports: a user event that is not our wake");
        if (delta_ns != 0) {
          wake_pending_.store(0);
        } else {
          send_wake();  // relay: we consumed it, but the wake is the blocking poll's
        }
        continue;
      }
      if (ev.portev_source != Sys::kSourceFd) continue;
      const auto data = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ev.portev_user));
      PollDesc* pd = tagged_pd(data);
      const uint32_t tag = tagged_seq(data);
      if (!tag_current(pd, tag)) continue;  // stale: the descriptor was freed since
      const int got = ev.portev_events;
      uint8_t mode = 0;
      if (got & (Sys::kPollIn | Sys::kPollHup | Sys::kPollErr)) mode |= 1;
      if (got & (Sys::kPollOut | Sys::kPollHup | Sys::kPollErr)) mode |= 2;
      // The event ended the association; keep asking for the directions that did not fire.
      int keep = static_cast<int>(pd->backend_data);
      if (mode & 1) keep &= ~Sys::kPollIn;
      if (mode & 2) keep &= ~Sys::kPollOut;
      pd->backend_flags &= static_cast<uint8_t>(~kAssociated);
      pd->backend_data = 0;
      if (keep != 0 && associate(pd, pd->fd, keep) < 0) {
        fatal("ports: port_associate failed re-associating after an event", errno);
      }
      // The error bit is set only when error is the sole event (S20).
      pd->set_event_err(got == Sys::kPollErr, tag);
      if (mode != 0) pd->ready(static_cast<Mode>(mode), out);
    }
    return static_cast<int>(n);
  }

  void wake() noexcept {
    uint32_t expected = 0;
    if (!wake_pending_.compare_exchange_strong(expected, 1)) return;
    send_wake();
    wakes_written_.fetch_add(1);
  }

  bool owns(int fd) const { return fd >= 0 && fd == port_; }

  // Wakes delivered to the port so far (for tests of coalescing).
  uint64_t wakes_written() const noexcept { return wakes_written_.load(); }

 private:
  static constexpr int64_t kNsPerSec = 1'000'000'000;
  static constexpr uint8_t kAssociated = 1;
  // portev_events of the wake (any non-zero value; POLLIN reads naturally in a dump).
  static constexpr int kWakeEvents = Sys::kPollIn;

  int associate(PollDesc* pd, int fd, int events) {
    void* user = reinterpret_cast<void*>(static_cast<uintptr_t>(tag_pointer(pd, pd->fdseq.load())));
    if (Sys::port_associate(port_, Sys::kSourceFd, static_cast<uintptr_t>(fd), events, user) < 0) {
      return -1;
    }
    pd->backend_data = static_cast<uint64_t>(events);
    pd->backend_flags |= kAssociated;
    return 0;
  }

  void send_wake() noexcept {
    for (;;) {
      if (Sys::port_send(port_, kWakeEvents, static_cast<void*>(this)) == 0) return;
      if (errno != EINTR) fatal("ports: port_send of the wake event failed", errno);
    }
  }

  int port_ = -1;
  std::atomic<uint32_t> wake_pending_{0};
  std::atomic<uint64_t> wakes_written_{0};
};

#if defined(__sun) || defined(RINGPOLL_NATIVE_SHIM)
// The real system-call layer, written against port_create(3C) and friends. On Linux it is
// only type-checked, against header shims (RINGPOLL_NATIVE_SHIM; target
// ringpoll-native-typecheck).
struct NativePortsSys {
  using PortEvent = port_event_t;
  static constexpr const char* kName = "ports";
  static constexpr int kSourceFd = PORT_SOURCE_FD;
  static constexpr int kSourceUser = PORT_SOURCE_USER;
  static constexpr int kPollIn = POLLIN;
  static constexpr int kPollOut = POLLOUT;
  static constexpr int kPollErr = POLLERR;
  static constexpr int kPollHup = POLLHUP;

  static int port_create() noexcept { return ::port_create(); }
  static int port_associate(int port, int source, uintptr_t object, int events,
                            void* user) noexcept {
    return ::port_associate(port, source, object, events, user);
  }
  static int port_dissociate(int port, int source, uintptr_t object) noexcept {
    return ::port_dissociate(port, source, object);
  }
  static int port_getn(int port, PortEvent list[], unsigned max, unsigned* nget,
                       const timespec* timeout) noexcept {
    // port_getn(3C) takes a non-const timespec_t* (it does not write it): pass a copy.
    timespec t{};
    if (timeout) t = *timeout;
    return ::port_getn(port, list, max, nget, timeout ? &t : nullptr);
  }
  static int port_send(int port, int events, void* user) noexcept {
    return ::port_send(port, events, user);
  }
  static int close(int fd) noexcept { return ::close(fd); }
};
using NativePortsPoller = PortsPoller<NativePortsSys>;
static_assert(PollerBackend<NativePortsPoller>);
#endif

}  // namespace ringpoll
