#pragma once
// The kqueue backend (FreeBSD, macOS, DragonFly); Go's netpoll_kqueue.go.
//
// Edge-triggered: open() registers EVFILT_READ and EVFILT_WRITE with EV_CLEAR once per
// descriptor and nothing re-arms them; the core clears a stale "ready" before each
// operation (S17), so a missed edge cannot strand a waiter. udata is the tagged pointer
// (PollDesc*, fdseq); an event for an old generation is dropped (S26). close() deletes both
// knotes explicitly: closing the fd would drop them too, but the contract's close() means
// "stop watching" even if the fd lives on (e.g. handed to another shard).
//
// Events: EVFILT_READ wakes the reader, and also the writer when EV_EOF is set (when the
// read end of a pipe closes, some kernels report the write end only as EVFILT_READ with
// EV_EOF; the writer retries its write and learns EPIPE or success). EVFILT_WRITE wakes the
// writer. The event-error bit is set only when EV_ERROR is the sole event, without EV_EOF
// (S20); the kernel echoes registration flags such as EV_CLEAR in every event, so those are
// ignored in that comparison.
//
// Wake: an EVFILT_USER knote registered with EV_CLEAR and fired with NOTE_TRIGGER, written
// only by the caller whose CAS turns wake_pending_ 0 -> 1 (S28). Retrieving an EV_CLEAR
// event resets it, so a non-blocking poll that happens to retrieve the wake re-triggers it:
// the wake belongs to the next blocking poll, which alone clears wake_pending_.
//   EVFILT_USER differs between the kqueue platforms: FreeBSD (8.1+) and macOS (10.6+)
//   both have it with NOTE_TRIGGER = 0x01000000, but the filter's number differs (-11 on
//   FreeBSD, -10 on macOS) and so does struct kevent (FreeBSD 12+ has 64-bit data and
//   ext[4]; macOS has neither, its 64-bit form is kevent64). We only use the names from
//   <sys/event.h>, never numbers. NetBSD gained EVFILT_USER in 10.0 (with its own
//   NOTE_TRIGGER value) and OpenBSD only in 7.8; older releases of both have none.
//   TODO(kqueue): for those, wake through a non-blocking pipe registered with EVFILT_READ
//   (as Go's netpoll_kqueue_pipe.go does); until then this backend does not build there.
//
// Timeouts: kevent takes a timespec, so sub-millisecond waits are exact and never round to
// a spin. Darwin rejects (EINVAL) a timeout longer than 1e8 seconds, so waits are capped at
// kMaxWaitSec; the caller simply polls again.
//
// Not pollable (EPERM from open()): regular files and directories (FreeBSD reports a
// regular file as always writable, NetBSD/OpenBSD/DragonFly signal it once; Go issue
// 19093), and FIFOs on Darwin, where closing the last writer sends readers no event (Go
// issue 24164).
//
// The system-call layer `Sys` provides exactly what this file calls: kqueue(), kevent(),
// close(), the Kevent struct, udata accessors and the constants. NativeKqueueSys below is
// the real one (BSD/macOS only); kqemu::Sys (kqueue/emulation/, Linux, tests only) is an
// emulation that lets the conformance suite run this code here.
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <string>

#include "poller/poller.h"

#if defined(__FreeBSD__) || defined(__APPLE__) || defined(__DragonFly__) || \
    defined(RINGPOLL_NATIVE_SHIM)
#include <sys/event.h>
#include <sys/types.h>
#include <unistd.h>
#endif

namespace ringpoll {

template <class Sys>
class KqueuePoller {
 public:
  using Kevent = typename Sys::Kevent;
  static constexpr const char* kName = Sys::kName;
  static constexpr bool kLevelTriggered = false;
  static constexpr bool kCompletion = false;
  // Events fetched per kevent call; Go uses 64 for kqueue. More are picked up next call.
  static constexpr int kMaxEvents = 64;
  // The EVFILT_USER identifier of the wake knote: "ring" in ASCII, easy to spot in a dump.
  static constexpr uintptr_t kWakeIdent = 0x72696e67;
  // Longest single wait: well under Darwin's 1e8 s limit (about 11.6 days).
  static constexpr time_t kMaxWaitSec = 1'000'000;

  KqueuePoller() = default;
  ~KqueuePoller() {
    if (kq_ >= 0) Sys::close(kq_);
  }
  KqueuePoller(const KqueuePoller&) = delete;
  KqueuePoller& operator=(const KqueuePoller&) = delete;

  static Availability available() {
    const int kq = Sys::kqueue();
    if (kq < 0) {
      const int e = errno;
      return {false, e, std::string("kqueue() failed: ") + std::strerror(e)};
    }
    Sys::close(kq);
    return {true, 0, "kqueue() succeeded"};
  }

  Status init() {
    kq_ = Sys::kqueue();
    if (kq_ < 0) return Status::from_errno(errno);
    Kevent ev = change(kWakeIdent, Sys::kFiltUser, Sys::kEvAdd | Sys::kEvClear, 0, 0);
    if (const int e = apply(&ev, 1); e != 0) return Status::from_errno(e);
    return Status();
  }

  int open(int fd, PollDesc* pd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return errno;
    if (!pollable(st.st_mode)) return EPERM;
    const uint64_t tag = tag_pointer(pd, pd->fdseq.load());
    const auto ufd = static_cast<uintptr_t>(fd);
    Kevent ch[2] = {change(ufd, Sys::kFiltRead, Sys::kEvAdd | Sys::kEvClear, 0, tag),
                    change(ufd, Sys::kFiltWrite, Sys::kEvAdd | Sys::kEvClear, 0, tag)};
    return apply(ch, 2);
  }

  int close(int fd, PollDesc*) {
    // EV_RECEIPT makes kevent process both deletions and report each one, instead of
    // stopping at the first failure; ENOENT/EBADF mean the knote is already gone.
    const auto ufd = static_cast<uintptr_t>(fd);
    const uint16_t del = Sys::kEvDelete | Sys::kEvReceipt;
    Kevent ch[2] = {change(ufd, Sys::kFiltRead, del, 0, 0),
                    change(ufd, Sys::kFiltWrite, del, 0, 0)};
    Kevent res[2];
    int n;
    while ((n = Sys::kevent(kq_, ch, 2, res, 2, nullptr)) < 0 && errno == EINTR) {
    }
    if (n < 0) return errno;
    for (int i = 0; i < n; ++i) {
      const int e = static_cast<int>(res[i].data);
      if ((res[i].flags & Sys::kEvError) && e != 0 && e != ENOENT && e != EBADF) return e;
    }
    return 0;
  }

  void arm(PollDesc*, Mode) {}

  int poll(int64_t delta_ns, TaskList& out) {
    timespec ts{};
    const timespec* tsp = nullptr;
    if (delta_ns >= 0) {
      const int64_t sec = delta_ns / kNsPerSec;
      if (sec >= kMaxWaitSec) {
        ts.tv_sec = kMaxWaitSec;
      } else {
        ts.tv_sec = static_cast<time_t>(sec);
        ts.tv_nsec = static_cast<long>(delta_ns % kNsPerSec);
      }
      tsp = &ts;
    }
    Kevent events[kMaxEvents];
    int n;
    for (;;) {
      n = Sys::kevent(kq_, nullptr, 0, events, kMaxEvents, tsp);
      if (n >= 0) break;
      if (errno != EINTR) fatal("kqueue: kevent failed with an unexpected error", errno);
      // An interrupted timed wait returns so the caller recomputes its timeout.
      if (delta_ns >= 0) return 0;
    }
    for (int i = 0; i < n; ++i) {
      const Kevent& ev = events[i];
      if (ev.filter == Sys::kFiltUser) {
        if (ev.ident != kWakeIdent) fatal("kqueue: an EVFILT_USER event that is not our wake");
        if (delta_ns != 0) {
          wake_pending_.store(0);
        } else {
          trigger();  // relay: EV_CLEAR reset it, but the wake is the blocking poll's
        }
        continue;
      }
      uint8_t mode = 0;
      if (ev.filter == Sys::kFiltRead) {
        mode |= 1;
        if (ev.flags & Sys::kEvEof) mode |= 2;
      } else if (ev.filter == Sys::kFiltWrite) {
        mode |= 2;
      }
      if (mode == 0) continue;
      const uint64_t data = Sys::udata(ev);
      PollDesc* pd = tagged_pd(data);
      const uint32_t tag = tagged_seq(data);
      if (!tag_current(pd, tag)) continue;  // stale: the descriptor was freed since
      const bool error_only = (ev.flags & (Sys::kEvError | Sys::kEvEof)) == Sys::kEvError;
      pd->set_event_err(error_only, tag);
      pd->ready(static_cast<Mode>(mode), out);
    }
    return n;
  }

  void wake() noexcept {
    uint32_t expected = 0;
    if (!wake_pending_.compare_exchange_strong(expected, 1)) return;
    trigger();
    wakes_written_.fetch_add(1);
  }

  bool owns(int fd) const { return fd >= 0 && fd == kq_; }

  // Wakes delivered to the kernel so far (for tests of coalescing).
  uint64_t wakes_written() const noexcept { return wakes_written_.load(); }

 private:
  static constexpr int64_t kNsPerSec = 1'000'000'000;

  static bool pollable(mode_t m) {
    if (S_ISREG(m) || S_ISDIR(m)) return false;
    if (Sys::kFifoUnreliable && S_ISFIFO(m)) return false;
    return true;
  }

  static Kevent change(uintptr_t ident, int16_t filter, uint16_t flags, uint32_t fflags,
                       uint64_t udata) {
    Kevent ev{};
    ev.ident = ident;
    ev.filter = filter;
    ev.flags = flags;
    ev.fflags = fflags;
    Sys::set_udata(ev, udata);
    return ev;
  }

  // Applies changes without fetching events; 0 or the errno of the first failure.
  int apply(Kevent* ch, int n) {
    for (;;) {
      if (Sys::kevent(kq_, ch, n, nullptr, 0, nullptr) >= 0) return 0;
      // Changes are applied before kevent() can be interrupted, and re-applying an EV_ADD
      // is harmless, so EINTR is simply retried.
      if (errno != EINTR) return errno;
    }
  }

  void trigger() noexcept {
    Kevent ev = change(kWakeIdent, Sys::kFiltUser, 0, Sys::kNoteTrigger, 0);
    for (;;) {
      if (Sys::kevent(kq_, &ev, 1, nullptr, 0, nullptr) >= 0) return;
      if (errno != EINTR) fatal("kqueue: NOTE_TRIGGER of the wake event failed", errno);
    }
  }

  int kq_ = -1;
  std::atomic<uint32_t> wake_pending_{0};
  std::atomic<uint64_t> wakes_written_{0};
};

#if defined(__FreeBSD__) || defined(__APPLE__) || defined(__DragonFly__) || \
    defined(RINGPOLL_NATIVE_SHIM)
// The real system-call layer, written against kqueue(2). On Linux it is only type-checked,
// against header shims (RINGPOLL_NATIVE_SHIM; target ringpoll-native-typecheck).
struct NativeKqueueSys {
  using Kevent = struct ::kevent;
  static constexpr const char* kName = "kqueue";
  static constexpr int16_t kFiltRead = EVFILT_READ;
  static constexpr int16_t kFiltWrite = EVFILT_WRITE;
  static constexpr int16_t kFiltUser = EVFILT_USER;
  static constexpr uint16_t kEvAdd = EV_ADD;
  static constexpr uint16_t kEvDelete = EV_DELETE;
  static constexpr uint16_t kEvClear = EV_CLEAR;
  static constexpr uint16_t kEvReceipt = EV_RECEIPT;
  static constexpr uint16_t kEvError = EV_ERROR;
  static constexpr uint16_t kEvEof = EV_EOF;
  static constexpr uint32_t kNoteTrigger = NOTE_TRIGGER;
#if defined(__APPLE__)
  static constexpr bool kFifoUnreliable = true;
#else
  static constexpr bool kFifoUnreliable = false;
#endif

  static int kqueue() noexcept {
    return ::kqueue();
  }
  static int kevent(int kq, const Kevent* ch, int nch, Kevent* ev, int nev,
                    const timespec* ts) noexcept {
    return ::kevent(kq, ch, nch, ev, nev, ts);
  }
  static int close(int fd) noexcept {
    return ::close(fd);
  }
  static void set_udata(Kevent& ev, uint64_t v) noexcept {
    ev.udata = reinterpret_cast<void*>(static_cast<uintptr_t>(v));
  }
  static uint64_t udata(const Kevent& ev) noexcept {
    return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ev.udata));
  }
};
using NativeKqueuePoller = KqueuePoller<NativeKqueueSys>;
static_assert(PollerBackend<NativeKqueuePoller>);
#endif

}  // namespace ringpoll
