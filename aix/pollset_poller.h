#pragma once
// The AIX pollset backend. (Go's netpoll_aix.go polls with plain poll(2) and a pipe; we use
// pollset, AIX's scalable interface, and keep Go's pipe wake.)
//
// What kind of interface this is. A pollset is a kernel-side poll(2) set: pollset_ctl adds,
// changes and deletes (fd, events) entries, and pollset_poll returns struct pollfd results
// for the entries whose events hold. Three properties shape this file:
//
//   1. Level-triggered. An entry is reported at every pollset_poll while its condition
//      holds, including POLLHUP and POLLERR, which are reported whether asked for or not.
//      Leaving POLLIN set on a socket whose data nobody reads yet would make every poll
//      return at once: a spin. So interest follows the waiters: the backend declares
//      kLevelTriggered, the core calls arm(pd, mode) before each wait, arm adds that
//      direction's bit, and an event removes the bits of the directions it woke. An fd
//      with no waiter has no entry at all (so a hung-up fd that nobody waits on stays
//      quiet). The bits currently in the set live in pd->backend_data.
//   2. No user data. A result names only the fd, so the backend keeps its own fd ->
//      (PollDesc*, fdseq) table, filled by open() and cleared by close(). The fdseq in the
//      table plays the part of the tag other backends keep in the kernel: a result for an
//      fd whose table entry names an old generation is stale (S26); its entry is an orphan
//      nobody will arm again, so it is deleted rather than left to fire forever.
//   3. PS_MOD only ORs bits in (it cannot clear one). Adding a direction is a PS_MOD (or a
//      PS_ADD for an fd not in the set); removing one is PS_DELETE followed by PS_ADD of
//      the bits that remain, two elements of one pollset_ctl call.
//
// Races, and why each is harmless: readiness that arrives while a direction's bit is out
// of the set is not lost, because the next arm() adds the bit and a level-triggered poll
// reports a condition that already holds. A waiter that is woken and whose retried syscall
// still says EAGAIN arms again before it parks. Everything here runs on the shard's thread
// (wake() excepted, which touches only the pipe), so the table and bits need no lock.
//
// AIX's poll bits are not Linux's: POLLOUT is 0x2, POLLHUP 0x2000, POLLERR 0x4000. Only the
// Sys layer's names are used here.
//
// Timeouts: pollset_poll takes milliseconds, so a sub-millisecond wait is rounded up to
// 1 ms rather than truncated to 0 (a spin); long waits are capped (the caller polls again).
//
// Wake: a non-blocking pipe whose read end is always in the set; written only by the
// caller whose CAS turns wake_pending_ 0 -> 1 (S28) and drained only by a blocking poll
// (the pipe stays readable, so the next blocking poll still sees a wake that a
// non-blocking one skipped).
//
// Not pollable (EPERM from open()): regular files and directories, which poll as always
// ready.
//
// The system-call layer `Sys` provides exactly what this file calls: pollset_create,
// pollset_ctl, pollset_poll, pollset_destroy, the poll_ctl and pollfd structs and the
// constants. NativePollsetSys below is the real one (AIX only); psemu::Sys
// (aix/emulation/, Linux, tests only) lets the conformance suite run this code here.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "poller/poller.h"

#if defined(_AIX) || defined(RINGPOLL_NATIVE_SHIM)
#include <sys/poll.h>
#include <sys/pollset.h>
#endif

namespace ringpoll {

template <class Sys>
class PollsetPoller {
 public:
  using PollsetT = typename Sys::PollsetT;
  using PollCtl = typename Sys::PollCtl;
  using PollFd = typename Sys::PollFd;
  static constexpr const char* kName = Sys::kName;
  static constexpr bool kLevelTriggered = true;
  static constexpr bool kCompletion = false;
  // Results fetched per pollset_poll call; more are picked up next call.
  static constexpr int kMaxEvents = 128;
  // Longest single wait in ms (about 16 minutes); pollset_poll's timeout is an int.
  static constexpr int kMaxWaitMs = 1'000'000;

  PollsetPoller() = default;
  ~PollsetPoller() {
    if (ps_ != kNoPollset) Sys::pollset_destroy(ps_);
    if (wake_rd_ >= 0) ::close(wake_rd_);
    if (wake_wr_ >= 0) ::close(wake_wr_);
  }
  PollsetPoller(const PollsetPoller&) = delete;
  PollsetPoller& operator=(const PollsetPoller&) = delete;

  static Availability available() {
    const PollsetT ps = Sys::pollset_create(-1);
    if (ps == kNoPollset) {
      const int e = errno;
      return {false, e, std::string("pollset_create(-1) failed: ") + std::strerror(e)};
    }
    Sys::pollset_destroy(ps);
    return {true, 0, "pollset_create(-1) succeeded"};
  }

  Status init() {
    ps_ = Sys::pollset_create(-1);  // -1: no limit beyond the process's open files
    if (ps_ == kNoPollset) return Status::from_errno(errno);
    int p[2];
    if (::pipe(p) < 0) return Status::from_errno(errno);
    wake_rd_ = p[0];
    wake_wr_ = p[1];
    for (int fd : p) {
      if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
          fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return Status::from_errno(errno);
      }
    }
    PollCtl c = ctl(Sys::kAdd, wake_rd_, Sys::kPollIn);
    if (Sys::pollset_ctl(ps_, &c, 1) < 0) return Status::from_errno(errno);
    return Status();
  }

  int open(int fd, PollDesc* pd) {
    struct stat st;
    if (fstat(fd, &st) < 0) return errno;
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return EPERM;
    // No entry in the set until a waiter arms a direction (see 1. above).
    pd->backend_data = 0;
    const auto i = static_cast<size_t>(fd);
    if (i >= table_.size()) table_.resize(i + 1, 0);
    table_[i] = tag_pointer(pd, pd->fdseq.load());
    return 0;
  }

  int close(int fd, PollDesc* pd) {
    int err = 0;
    if (pd->backend_data != 0) {
      PollCtl c = ctl(Sys::kDelete, fd, 0);
      if (Sys::pollset_ctl(ps_, &c, 1) < 0) err = errno;
      pd->backend_data = 0;
    }
    const auto i = static_cast<size_t>(fd);
    if (i < table_.size() && tagged_pd(table_[i]) == pd) table_[i] = 0;
    return err;
  }

  void arm(PollDesc* pd, Mode mode) {
    const short want = static_cast<short>((has_read(mode) ? Sys::kPollIn : 0) |
                                          (has_write(mode) ? Sys::kPollOut : 0));
    const auto cur = static_cast<short>(pd->backend_data);
    if ((cur & want) == want) return;
    // PS_MOD ORs the new bit in; an fd not yet in the set needs PS_ADD.
    PollCtl c = ctl(cur == 0 ? Sys::kAdd : Sys::kMod, pd->fd, want);
    if (Sys::pollset_ctl(ps_, &c, 1) < 0) fatal("pollset: pollset_ctl failed in arm", errno);
    pd->backend_data = static_cast<uint64_t>(static_cast<uint16_t>(cur | want));
  }

  int poll(int64_t delta_ns, TaskList& out) {
    int ms;
    if (delta_ns < 0) {
      ms = -1;
    } else if (delta_ns == 0) {
      ms = 0;
    } else if (delta_ns >= int64_t{kMaxWaitMs} * kNsPerMs) {
      ms = kMaxWaitMs;
    } else {
      ms = static_cast<int>((delta_ns + kNsPerMs - 1) / kNsPerMs);  // round up, never 0
    }
    PollFd res[kMaxEvents];
    int n;
    for (;;) {
      n = Sys::pollset_poll(ps_, res, kMaxEvents, ms);
      if (n >= 0) break;
      if (errno != EINTR) fatal("pollset: pollset_poll failed with an unexpected error", errno);
      // An interrupted timed wait returns so the caller recomputes its timeout.
      if (delta_ns >= 0) return 0;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = res[i].fd;
      const short rev = res[i].revents;
      if (fd == wake_rd_) {
        if (delta_ns != 0) drain_wake();
        continue;
      }
      const auto idx = static_cast<size_t>(fd);
      const uint64_t data = idx < table_.size() ? table_[idx] : 0;
      if (data == 0) {
        // Not ours (any more): an entry whose close we never saw. Remove it so it cannot
        // fire at every poll.
        PollCtl c = ctl(Sys::kDelete, fd, 0);
        Sys::pollset_ctl(ps_, &c, 1);
        continue;
      }
      PollDesc* pd = tagged_pd(data);
      const uint32_t tag = tagged_seq(data);
      if (!tag_current(pd, tag)) {
        // Stale: pd was freed and reused for another fd without this one being closed.
        // Its entry is an orphan; nobody will arm it again.
        PollCtl c = ctl(Sys::kDelete, fd, 0);
        Sys::pollset_ctl(ps_, &c, 1);
        table_[idx] = 0;
        continue;
      }
      uint8_t mode = 0;
      if (rev & (Sys::kPollIn | Sys::kPollHup | Sys::kPollErr)) mode |= 1;
      if (rev & (Sys::kPollOut | Sys::kPollHup | Sys::kPollErr)) mode |= 2;
      if (rev & Sys::kPollNval) mode = 3;  // the fd was closed under us: wake everyone
      disarm(pd, fd, mode);
      // The error bit is set only when error is the sole event (S20).
      pd->set_event_err(rev == Sys::kPollErr, tag);
      if (mode != 0) pd->ready(static_cast<Mode>(mode), out);
    }
    return n;
  }

  void wake() noexcept {
    uint32_t expected = 0;
    if (!wake_pending_.compare_exchange_strong(expected, 1)) return;
    const char b = 0;
    for (;;) {
      if (::write(wake_wr_, &b, 1) == 1) break;
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;  // the pipe is full: a wake is certainly pending
      fatal("pollset: write to the wake pipe failed", errno);
    }
    wakes_written_.fetch_add(1);
  }

  bool owns(int fd) const { return fd >= 0 && (fd == wake_rd_ || fd == wake_wr_); }

  // Wakes written to the pipe so far (for tests of coalescing).
  uint64_t wakes_written() const noexcept { return wakes_written_.load(); }

 private:
  static constexpr int64_t kNsPerMs = 1'000'000;
  static constexpr PollsetT kNoPollset = static_cast<PollsetT>(-1);

  static PollCtl ctl(short cmd, int fd, short events) {
    PollCtl c{};
    c.cmd = cmd;
    c.events = events;
    c.fd = fd;
    return c;
  }

  // Takes the directions in `mode` out of the set: PS_MOD cannot clear a bit, so the fd
  // is deleted and, when a direction is still wanted, added back with what remains.
  void disarm(PollDesc* pd, int fd, uint8_t mode) {
    const auto cur = static_cast<short>(pd->backend_data);
    short keep = cur;
    if (mode & 1) keep = static_cast<short>(keep & ~Sys::kPollIn);
    if (mode & 2) keep = static_cast<short>(keep & ~Sys::kPollOut);
    if (keep == cur) return;  // none of the bits we hold fired
    PollCtl c[2] = {ctl(Sys::kDelete, fd, 0), ctl(Sys::kAdd, fd, keep)};
    if (Sys::pollset_ctl(ps_, c, keep != 0 ? 2 : 1) < 0) {
      fatal("pollset: pollset_ctl failed removing a fired direction", errno);
    }
    pd->backend_data = static_cast<uint64_t>(static_cast<uint16_t>(keep));
  }

  void drain_wake() {
    char buf[64];
    while (::read(wake_rd_, buf, sizeof buf) > 0) {
    }
    wake_pending_.store(0);
  }

  PollsetT ps_ = kNoPollset;
  int wake_rd_ = -1;
  int wake_wr_ = -1;
  // fd -> tag_pointer(pd, fdseq) of the descriptor open on it; 0: none.
  std::vector<uint64_t> table_;
  std::atomic<uint32_t> wake_pending_{0};
  std::atomic<uint64_t> wakes_written_{0};
};

#if defined(_AIX) || defined(RINGPOLL_NATIVE_SHIM)
// The real system-call layer, written against pollset_create(3). On Linux it is only
// type-checked, against header shims (RINGPOLL_NATIVE_SHIM; target
// ringpoll-native-typecheck).
struct NativePollsetSys {
  using PollsetT = pollset_t;
  using PollCtl = struct poll_ctl;
  using PollFd = struct pollfd;
  static constexpr const char* kName = "pollset";
  static constexpr short kAdd = PS_ADD;
  static constexpr short kMod = PS_MOD;
  static constexpr short kDelete = PS_DELETE;
  static constexpr short kPollIn = POLLIN;
  static constexpr short kPollOut = POLLOUT;
  static constexpr short kPollHup = POLLHUP;
  static constexpr short kPollErr = POLLERR;
  static constexpr short kPollNval = POLLNVAL;

  static PollsetT pollset_create(int maxfd) noexcept { return ::pollset_create(maxfd); }
  static int pollset_destroy(PollsetT ps) noexcept { return ::pollset_destroy(ps); }
  static int pollset_ctl(PollsetT ps, PollCtl* a, int n) noexcept {
    return ::pollset_ctl(ps, a, n);
  }
  static int pollset_poll(PollsetT ps, PollFd* out, int n, int timeout_ms) noexcept {
    return ::pollset_poll(ps, out, n, timeout_ms);
  }
};
using NativePollsetPoller = PollsetPoller<NativePollsetSys>;
static_assert(PollerBackend<NativePollsetPoller>);
#endif

}  // namespace ringpoll
