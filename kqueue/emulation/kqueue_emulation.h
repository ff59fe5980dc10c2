#pragma once
// A kqueue EMULATION, FOR TESTING ONLY. It is not a kqueue and nothing in production may
// use it: it lets the kqueue backend (kqueue/kqueue_poller.h) and the conformance suite
// run on Linux, where no machine here has a BSD or macOS kernel.
//
// It reproduces, on top of epoll, eventfd and ppoll, the documented kqueue(2) behaviour the
// backend relies on, with FreeBSD's struct layout and constants:
//
//   EV_ADD / EV_DELETE / EV_ENABLE / EV_DISABLE   register, remove, (dis)arm a knote; an
//                                                 EV_ADD on an existing knote modifies it;
//                                                 a change without EV_ADD to a missing
//                                                 knote fails with ENOENT
//   EV_CLEAR    after the event is retrieved its state is reset: the knote fires again
//               only on new activity (an edge), and EVFILT_USER's trigger is cleared
//   (no flag)   level: the knote is re-evaluated at every kevent() while its condition holds
//   EV_ONESHOT / EV_DISPATCH   delete / disable after the first retrieval
//   EV_RECEIPT  every change reports an EV_ERROR entry (data 0 on success)
//   EV_EOF      EVFILT_READ: the read side is shut (peer closed); EVFILT_WRITE: can no
//               longer send. EV_ERROR + data=errno: a change failed and the event list had
//               room; with no room kevent() returns -1 and stops at that change
//   EVFILT_USER + NOTE_TRIGGER   a user event, triggered from any thread
//   timeout     NULL blocks, {0,0} polls, otherwise waits at most that long (ns precision);
//               a negative or out-of-range timespec, or tv_sec > 1e8 (Darwin's limit, the
//               strictest of the platforms) is EINVAL; a signal gives -1/EINTR
//   close()     real kqueue drops a descriptor's knotes when the fd is closed. The
//               emulation cannot see close(2); it notices lazily (the fd number is invalid
//               or now names another file) and drops the knotes silently then
//
// Filter conditions are evaluated, as FreeBSD's kqueue_scan does, when the knote is
// retrieved (here with poll(2)), so a knote that is no longer true is not reported.
//
// Known differences, none of which the backend depends on: only EVFILT_READ, EVFILT_WRITE
// and EVFILT_USER exist; regular files and directories cannot be registered (epoll refuses
// them with EPERM; real kqueue accepts them, the backend never passes them); an epoll
// wake-up reports the whole readiness mask, so activity in one direction can also re-report
// the other direction's EV_CLEAR knote when that condition holds (a spurious event, which
// every readiness consumer tolerates); EV_EOF's fflags (the socket error) is always 0,
// because reading SO_ERROR on Linux would clear it; EVFILT_USER's NOTE_FF* flag arithmetic
// is not emulated; `data` is FIONREAD's count for EVFILT_READ and 0 for EVFILT_WRITE.
//
// Thread safety: every call may be made from any thread (wake() triggers EVFILT_USER while
// the owning thread blocks in kevent()); one mutex per kqueue guards its state and is never
// held while blocking.
#include <atomic>
#include <cstdint>
#include <ctime>

namespace ringpoll::kqemu {

// FreeBSD's struct kevent (12.0 and later), member for member.
struct kevent {
  uintptr_t ident;
  int16_t filter;
  uint16_t flags;
  uint32_t fflags;
  int64_t data;
  void* udata;
  uint64_t ext[4];
};

// FreeBSD <sys/event.h> values.
inline constexpr int16_t EVFILT_READ = -1;
inline constexpr int16_t EVFILT_WRITE = -2;
inline constexpr int16_t EVFILT_USER = -11;

inline constexpr uint16_t EV_ADD = 0x0001;
inline constexpr uint16_t EV_DELETE = 0x0002;
inline constexpr uint16_t EV_ENABLE = 0x0004;
inline constexpr uint16_t EV_DISABLE = 0x0008;
inline constexpr uint16_t EV_ONESHOT = 0x0010;
inline constexpr uint16_t EV_CLEAR = 0x0020;
inline constexpr uint16_t EV_RECEIPT = 0x0040;
inline constexpr uint16_t EV_DISPATCH = 0x0080;
inline constexpr uint16_t EV_ERROR = 0x4000;
inline constexpr uint16_t EV_EOF = 0x8000;

inline constexpr uint32_t NOTE_TRIGGER = 0x01000000;

// Darwin refuses (EINVAL) a kevent timeout whose tv_sec exceeds this; the emulation does
// too, so the backend's clamp is exercised here.
inline constexpr time_t kMaxTimeoutSec = 100'000'000;

int kqueue() noexcept;
int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist,
           int nevents, const timespec* timeout) noexcept;
// close(2) for an emulated kqueue descriptor (and plain close(2) for any other fd).
int close(int fd) noexcept;

// Test seam: called by Sys::kevent below after a call that only fetched events (no
// changes: the backend's poll), with the n events it returned and room for cap; it may
// rewrite them or append synthetic ones and returns the new count, which the backend's
// real dispatch then handles (tests feed EV_ERROR without EV_EOF). Never set outside tests.
using KeventHook = int (*)(struct kevent* events, int n, int cap);
inline std::atomic<KeventHook> g_kevent_hook{nullptr};

// The system-call layer the backend is instantiated with (KqueuePoller<kqemu::Sys>).
struct Sys {
  using Kevent = struct kqemu::kevent;
  static constexpr const char* kName = "kqueue-emulated";
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
  // The emulation follows FreeBSD, where kqueue reports a FIFO's last writer closing.
  static constexpr bool kFifoUnreliable = false;

  static int kqueue() noexcept { return kqemu::kqueue(); }
  static int kevent(int kq, const Kevent* ch, int nch, Kevent* ev, int nev,
                    const timespec* ts) noexcept {
    int n = kqemu::kevent(kq, ch, nch, ev, nev, ts);
    if (n >= 0 && nch == 0 && nev > 0) {
      if (const KeventHook hook = g_kevent_hook.load(std::memory_order_relaxed)) {
        n = hook(ev, n, nev);
      }
    }
    return n;
  }
  static int close(int fd) noexcept { return kqemu::close(fd); }
  static void set_udata(Kevent& ev, uint64_t v) noexcept {
    ev.udata = reinterpret_cast<void*>(static_cast<uintptr_t>(v));
  }
  static uint64_t udata(const Kevent& ev) noexcept {
    return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ev.udata));
  }
};

}  // namespace ringpoll::kqemu
