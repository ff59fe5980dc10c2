#pragma once
// An AIX pollset EMULATION, FOR TESTING ONLY. It is not AIX and nothing in production may
// use it: it lets the pollset backend (aix/pollset_poller.h) and the conformance suite run
// on Linux, where no machine here runs AIX.
//
// It reproduces, on top of epoll, the documented behaviour of pollset_create,
// pollset_ctl, pollset_poll, pollset_query and pollset_destroy that the backend relies on,
// with AIX's structs and constants (defined here; AIX's headers do not exist on Linux):
//
//   level-triggered   pollset_poll reports a descriptor at every call while one of its
//                     events holds, like poll(2); POLLHUP and POLLERR are reported even
//                     when not asked for
//   no user data      a result is a struct pollfd: the fd and its revents, nothing else
//   PS_ADD            adds an fd with its events (EINVAL if it is already in the set: the
//                     errno the emulation chose)
//   PS_MOD            ORs the events into those of an fd already in the set (it cannot
//                     remove a bit); adds the fd when it is not in the set
//   PS_DELETE         removes an fd (EINVAL if it is not in the set)
//   pollset_ctl       applies the array in order and stops at the first element that
//                     fails, returning -1 with errno; the elements before it stay applied
//   timeout           milliseconds: -1 blocks, 0 polls; a signal gives -1/EINTR
//   AIX's values      POLLIN 0x1, POLLOUT 0x2, POLLPRI 0x4, POLLHUP 0x2000, POLLERR 0x4000,
//                     POLLNVAL 0x8000 (not Linux's), PS_ADD 0, PS_MOD 1, PS_DELETE 2
//   close()           a closed fd leaves the pollset. The emulation cannot see close(2); it
//                     notices lazily (the fd number is invalid or names another file) and
//                     drops the entry then
//
// Known differences, none of which the backend depends on: PS_REPLACE and the _ext
// variants are not emulated; maxfd is not enforced; regular files cannot be added (epoll
// refuses them with EPERM); a peer's half-close (Linux POLLRDHUP) is reported as POLLIN.
//
// Thread safety: every call may be made from any thread; one mutex per pollset, never
// held while blocking.
#include <atomic>
#include <cstdint>

namespace ringpoll::psemu {

using pollset_t = int;

// AIX <sys/pollset.h>.
struct poll_ctl {
  short cmd;
  short events;
  int fd;
};
inline constexpr short PS_ADD = 0;
inline constexpr short PS_MOD = 1;
inline constexpr short PS_DELETE = 2;

// AIX's struct pollfd has Linux's layout; it is its own type here so that the two kinds of
// event bits cannot be mixed up.
struct pollfd {
  int fd;
  short events;
  short revents;
};

// AIX <sys/poll.h> event bits (named with a k because <poll.h> owns POLLIN & co.).
inline constexpr short kPollIn = 0x0001;
inline constexpr short kPollOut = 0x0002;
inline constexpr short kPollPri = 0x0004;
inline constexpr short kPollHup = 0x2000;
inline constexpr short kPollErr = 0x4000;
inline constexpr short kPollNval = static_cast<short>(0x8000);

pollset_t pollset_create(int maxfd) noexcept;
int pollset_destroy(pollset_t ps) noexcept;
int pollset_ctl(pollset_t ps, poll_ctl* array, int length) noexcept;
// 1 when fd is in the set (its events stored in q->events), 0 when not, -1 on error.
int pollset_query(pollset_t ps, pollfd* q) noexcept;
int pollset_poll(pollset_t ps, pollfd* out, int length, int timeout_ms) noexcept;

// Test seam: called by Sys::pollset_poll below after a successful call, with the n events
// it returned and room for cap; it may rewrite them or append synthetic ones and returns
// the new count, which the backend's real dispatch then handles (tests feed POLLERR
// alone). Never set outside tests.
using PollsetPollHook = int (*)(pollfd* out, int n, int cap);
inline std::atomic<PollsetPollHook> g_pollset_poll_hook{nullptr};

// The system-call layer the backend is instantiated with (PollsetPoller<psemu::Sys>).
struct Sys {
  using PollsetT = pollset_t;
  using PollCtl = poll_ctl;
  using PollFd = psemu::pollfd;
  static constexpr const char* kName = "pollset-emulated";
  static constexpr short kAdd = PS_ADD;
  static constexpr short kMod = PS_MOD;
  static constexpr short kDelete = PS_DELETE;
  static constexpr short kPollIn = psemu::kPollIn;
  static constexpr short kPollOut = psemu::kPollOut;
  static constexpr short kPollHup = psemu::kPollHup;
  static constexpr short kPollErr = psemu::kPollErr;
  static constexpr short kPollNval = psemu::kPollNval;

  static PollsetT pollset_create(int maxfd) noexcept { return psemu::pollset_create(maxfd); }
  static int pollset_destroy(PollsetT ps) noexcept { return psemu::pollset_destroy(ps); }
  static int pollset_ctl(PollsetT ps, PollCtl* a, int n) noexcept {
    return psemu::pollset_ctl(ps, a, n);
  }
  static int pollset_poll(PollsetT ps, PollFd* out, int n, int timeout_ms) noexcept {
    int r = psemu::pollset_poll(ps, out, n, timeout_ms);
    if (r >= 0) {
      if (const PollsetPollHook hook = g_pollset_poll_hook.load(std::memory_order_relaxed)) {
        r = hook(out, r, n);
      }
    }
    return r;
  }
};

}  // namespace ringpoll::psemu
