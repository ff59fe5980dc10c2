#pragma once
// PollDesc: the per-descriptor poll state of Go's runtime/netpoll.go (pollDesc), in C++.
//
// Threads. A PollDesc belongs to one shard. Its deadline and close state (rd, wd, rseq,
// wseq, closing, timer) is touched only by that shard's thread, so it needs no lock (Go
// guards the same fields with pd.lock because any M may touch them). The wait slots
// rg/wg, the summary word `info` and `fdseq` are atomics with sequentially consistent
// order, exactly as in Go, so a backend or a waker on another thread stays correct (S16).
//
// The wait slots (rg for readers, wg for writers) are binary semaphores:
//
//   value      meaning
//   kPdNil     no notification pending, nobody waiting
//   kPdReady   an I/O readiness notification is pending; the next waiter takes it
//              without parking
//   kPdWait    a task is about to park (between "prepare" and "commit")
//   TaskNode*  a task is parked; whoever unblocks it swaps in nil or ready and gets it
//
//   from      event                              to
//   nil       waiter prepares                    wait
//   wait      waiter commits the park            TaskNode*
//   wait      readiness (ioready)                ready   (the park is abandoned, S15)
//   wait      timeout/close                      nil     (the park is abandoned)
//   TaskNode* readiness                          ready   (task returned to run)
//   TaskNode* timeout/close                      nil     (task returned to run)
//   nil       readiness                          ready
//   nil       timeout/close                      nil     (nothing to do)
//   ready     waiter prepares                    nil     (consumed, no park)
//   ready     operation starts (reset, S17)      nil
//   *         waiter resumes                     nil     (it reads what was there)
//
// Only readiness ever sets ready; timeout and close set nil and the woken waiter re-checks
// the info bits to learn why (S14). A second waiter in the same direction finds wait or a
// TaskNode* and stops the process ("double wait", S18).
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "errors.h"
#include "task_list.h"
#include "timer_node.h"

namespace ringpoll {

enum class Mode : uint8_t { kRead = 1, kWrite = 2, kReadWrite = 3 };
constexpr bool has_read(Mode m) noexcept {
  return static_cast<uint8_t>(m) & 1;
}
constexpr bool has_write(Mode m) noexcept {
  return static_cast<uint8_t>(m) & 2;
}

inline constexpr uintptr_t kPdNil = 0;
inline constexpr uintptr_t kPdReady = 1;
inline constexpr uintptr_t kPdWait = 2;

// The `info` word: a summary readable without the shard's fields (Go's atomicInfo).
inline constexpr uint32_t kInfoClosing = 1u << 0;
inline constexpr uint32_t kInfoEventErr = 1u << 1;
inline constexpr uint32_t kInfoExpiredRead = 1u << 2;
inline constexpr uint32_t kInfoExpiredWrite = 1u << 3;
// Sticky until the descriptor is opened again: an event carried the end of the read side
// (RDHUP: the peer's FIN; HUP; ERR). No new edge follows the last bytes then, so the
// engine's short-read rule (engine/readiness_op.h) must not park a read on it.
inline constexpr uint32_t kInfoHangup = 1u << 4;
inline constexpr int kInfoFdSeqShift = 5;
// fdseq is a 16-bit generation (it wraps from 0xffff to 1; 0 means "untagged"). It rides
// in the kernel's user data beside the PollDesc pointer and in `info`, so that setting the
// event-error bit can honour the tag of the event that caused it (Go #59545).
inline constexpr uint32_t kFdSeqMask = 0xffff;
constexpr uint32_t next_fdseq(uint32_t s) noexcept {
  const uint32_t n = (s + 1) & kFdSeqMask;
  return n == 0 ? 1 : n;
}

struct PollDesc;
namespace detail {
// Runs a test's hook between "prepare to wait" and the park commit (S15); nothing in
// production (poller/internal/test_seams.h).
void before_park(PollDesc* pd, Mode mode) noexcept;
}  // namespace detail

struct PollDesc {
  // ---- shard-confined state ----
  TimerNode timer;    // first member: the one wheel node that serves rd and wd together
  int64_t rd = 0;     // read deadline: 0 none, -1 expired, >0 absolute ns (CLOCK_MONOTONIC)
  int64_t wd = 0;     // write deadline, likewise
  uint32_t rseq = 0;  // bumped by every read-deadline change and by close
  uint32_t wseq = 0;  // bumped by every write-deadline change and by close
  int32_t fd = -1;
  bool closing = false;
  uint8_t backend_flags = 0;  // private to the backend (e.g. io_uring: poll armed)
  uint16_t shard = 0;
  union {
    PollDesc* link = nullptr;  // PollCache free list, while the descriptor is free
    TaskNode* closer;          // a close waiting for operations in flight (engine's PollFd)
  };
  uint64_t backend_data = 0;  // private to the backend
  // ---- shared state (atomics, seq_cst) ----
  std::atomic<uint32_t> fdseq{0};  // generation: bumped when the descriptor is freed
  std::atomic<uint32_t> info{0};
  std::atomic<uintptr_t> rg{kPdNil};
  std::atomic<uintptr_t> wg{kPdNil};

  std::atomic<uintptr_t>& slot(Mode m) noexcept { return m == Mode::kRead ? rg : wg; }

  // Go's publishInfo: recompute the closing/expired bits from the shard state, keeping the
  // event-error bit and the fdseq bits. Called after closing, rd or wd change.
  void publish_info() noexcept {
    uint32_t bits = 0;
    if (closing) bits |= kInfoClosing;
    if (rd < 0) bits |= kInfoExpiredRead;
    if (wd < 0) bits |= kInfoExpiredWrite;
    bits |= (fdseq.load() & kFdSeqMask) << kInfoFdSeqShift;
    uint32_t x = info.load();
    while (!info.compare_exchange_weak(x, (x & (kInfoEventErr | kInfoHangup)) | bits)) {
    }
  }

  // Go's setEventErr: seq is the tag the event carried (0 = untagged); an event for an old
  // generation leaves the bit alone (S26).
  void set_event_err(bool on, uint32_t seq) noexcept { set_event_bit(kInfoEventErr, on, seq); }
  // An event of generation seq carried RDHUP, HUP or ERR (kInfoHangup); on = false when the
  // descriptor is opened again.
  void set_hangup(bool on, uint32_t seq) noexcept { set_event_bit(kInfoHangup, on, seq); }
  bool hangup_seen() const noexcept { return info.load() & kInfoHangup; }

  // Go's netpollcheckerr. Priority: closing > timeout > event error (readers only), S19.
  PollError check_err(Mode m) const noexcept {
    const uint32_t x = info.load();
    if (x & kInfoClosing) return PollError::kClosing;
    if ((m == Mode::kRead && (x & kInfoExpiredRead)) ||
        (m == Mode::kWrite && (x & kInfoExpiredWrite))) {
      return PollError::kTimeout;
    }
    // An error seen by a writer is left to the write syscall, which can say more.
    if (m == Mode::kRead && (x & kInfoEventErr)) return PollError::kNotPollable;
    return PollError::kNone;
  }

  // Go's poll_runtime_pollReset: before an operation's first syscall, report a pending
  // error, else clear a stale "ready" so the syscall is tried before any park (S17).
  PollError reset(Mode m) noexcept {
    const PollError e = check_err(m);
    if (e != PollError::kNone) return e;
    // Go stores nil here, relying on its fdMutex to serialise same-direction operations.
    // We do not serialise, so only a stale ready is cleared: a parked or parking task in
    // the slot means a second concurrent operation in this direction (S18).
    uintptr_t v = kPdReady;
    if (!slot(m).compare_exchange_strong(v, kPdNil) && v != kPdNil) double_wait(m);
    return PollError::kNone;
  }

  // A waiter whose frame is destroyed while parked (its scheduler is going away) takes its
  // node back, so a later wake cannot run freed memory.
  void withdraw(Mode m, TaskNode* n) noexcept {
    uintptr_t v = reinterpret_cast<uintptr_t>(n);
    slot(m).compare_exchange_strong(v, kPdNil);
  }

  // Go's netpollunblock. ioready: readiness (sets ready) rather than timeout/close (sets
  // nil). Returns the parked task to run, or nullptr.
  TaskNode* unblock(Mode m, bool ioready) noexcept {
    std::atomic<uintptr_t>& g = slot(m);
    uintptr_t old = g.load();
    for (;;) {
      if (old == kPdReady) return nullptr;
      // Only readiness sets ready; a waiter re-checks deadlines and close before parking.
      if (old == kPdNil && !ioready) return nullptr;
      const uintptr_t nv = ioready ? kPdReady : kPdNil;
      if (g.compare_exchange_weak(old, nv)) {
        if (old == kPdWait || old == kPdNil) return nullptr;
        return reinterpret_cast<TaskNode*>(old);
      }
    }
  }

  // Go's netpollready: readiness for mode; woken tasks are appended to `out`.
  void ready(Mode m, TaskList& out) noexcept {
    if (has_read(m)) {
      if (TaskNode* t = unblock(Mode::kRead, true)) out.push_back(t);
    }
    if (has_write(m)) {
      if (TaskNode* t = unblock(Mode::kWrite, true)) out.push_back(t);
    }
  }

  // Go's netpollblock, the one place a waiter parks (every awaiter of the engine calls
  // it). Waits for `m` on behalf of `node`:
  //   kReady   readiness was pending (consumed), or arrived before the park was committed
  //            (S15): retry the system call
  //   kParked  `node` is in the slot; whoever unblocks it runs it, and the waiter then
  //            calls woken(m, waitio) to learn why
  //   kError   a timeout or close is already set (err says which); nothing parked
  // waitio (Go's waitio): wait for an operation's completion ignoring timeout and close,
  // as a completion backend does after cancelling one (S24): never kError.
  struct Parking {
    enum State : uint8_t { kReady, kParked, kError } state;
    PollError err = PollError::kNone;
  };
  Parking park(Mode m, TaskNode* node, bool waitio) noexcept {
    if (!waitio) {
      if (const PollError e = check_err(m); e != PollError::kNone) return {Parking::kError, e};
    }
    const Begin b = begin_wait(m);
    if (b == Begin::kTookReady) return {Parking::kReady};
    if ((b == Begin::kPark || waitio) && commit_park(m, node)) return {Parking::kParked};
    // An error was set after the slot went to wait, or readiness, a timeout or a close
    // arrived between prepare and commit (S15): the park is abandoned.
    const PollError e = woken(m, waitio);
    return e == PollError::kNone ? Parking{Parking::kReady} : Parking{Parking::kError, e};
  }
  // After a parked node was run (or a park abandoned): clears the slot and returns why the
  // waiter woke: kNone for readiness — and for a deadline reset before the waiter ran
  // (S09): the retried system call then waits again — else the timeout or close. With
  // waitio, always kNone.
  PollError woken(Mode m, bool waitio) noexcept {
    const bool ready = finish_wait(m);
    if (ready || waitio) return PollError::kNone;
    return check_err(m);
  }

  [[noreturn]] static void double_wait(Mode m) noexcept {
    fatal(m == Mode::kRead ? "double wait: a second reader waits on one PollDesc (S18)"
                           : "double wait: a second writer waits on one PollDesc (S18)");
  }

 private:
  // Sets or clears one of the bits that events set (kInfoEventErr, kInfoHangup), unless the
  // event's tag is of an old generation (S26).
  void set_event_bit(uint32_t bit, bool on, uint32_t seq) noexcept {
    const uint32_t mseq = seq & kFdSeqMask;
    uint32_t x = info.load();
    for (;;) {
      const uint32_t xseq = (x >> kInfoFdSeqShift) & kFdSeqMask;
      if (seq != 0 && xseq != mseq) return;
      const bool cur = x & bit;
      if (cur == on) return;
      if (info.compare_exchange_weak(x, x ^ bit)) return;
    }
  }
  // The three steps of netpollblock, used by park() and woken() only. begin_wait: take a
  // pending ready (kTookReady), or move nil -> wait and re-check the info bits after that
  // store (S16): kPark to park, kAbandon when an error is already set.
  enum class Begin : uint8_t { kTookReady, kPark, kAbandon };
  Begin begin_wait(Mode m) noexcept {
    std::atomic<uintptr_t>& g = slot(m);
    for (;;) {
      uintptr_t v = kPdReady;
      if (g.compare_exchange_strong(v, kPdNil)) return Begin::kTookReady;
      if (v == kPdNil && g.compare_exchange_strong(v, kPdWait)) break;
      if (v != kPdReady && v != kPdNil) double_wait(m);
    }
    detail::before_park(this, m);
    return check_err(m) == PollError::kNone ? Begin::kPark : Begin::kAbandon;
  }
  // Go's netpollblockcommit: wait -> task. False when readiness, timeout or close got there
  // first; the caller then must not park.
  bool commit_park(Mode m, TaskNode* t) noexcept {
    uintptr_t v = kPdWait;
    return slot(m).compare_exchange_strong(v, reinterpret_cast<uintptr_t>(t));
  }
  // After waking (or abandoning the park): returns true when readiness woke us.
  bool finish_wait(Mode m) noexcept {
    const uintptr_t old = slot(m).exchange(kPdNil);
    if (old > kPdWait) fatal("corrupted PollDesc: a waiter resumed while still registered");
    return old == kPdReady;
  }
};
// 96 bytes: every idle connection pays for one. Not padded to cache lines: a shard's
// descriptors are touched by that shard's thread only. 8-byte alignment leaves the three
// low bits of a PollDesc pointer free for the backends' user-data tags.
static_assert(sizeof(PollDesc) <= 96, "PollDesc: one is paid for by every connection");
static_assert(alignof(PollDesc) >= 8, "backends tag the three low bits of PollDesc pointers");
static_assert(offsetof(PollDesc, timer) == 0, "the timer node must be first (container-of)");

inline PollDesc* poll_desc_of(TimerNode* n) noexcept {
  return reinterpret_cast<PollDesc*>(n);
}

}  // namespace ringpoll
