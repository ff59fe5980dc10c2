#pragma once
// The deadline and lifetime logic of a PollDesc, run on its shard (Go's
// poll_runtime_pollOpen / pollSetDeadline / pollUnblock / pollClose and
// netpolldeadlineimpl).
//
// One timer node per PollDesc serves both directions: it is armed at the earlier of the
// positive deadlines, and when it fires it expires whichever directions are due and re-arms
// for the other. So "rd == wd > 0" is served by one timer (S11) and a deadline pushed
// later costs one store in the wheel (lazy re-bucketing). A fired timer re-reads rd/wd
// instead of trusting what it was armed with, which is what Go's rseq/wseq comparison
// achieves: a timer armed for an older deadline does nothing (S10). rseq/wseq still count
// every change, but nothing reads them (no backend, no timer).
#include <cstdint>

#include "../poller/poll_desc.h"
#include "../poller/task_list.h"
#include "timer_wheel.h"

namespace ringpoll {

inline constexpr int64_t kDeadlineMax = INT64_MAX;

// pollOpen: make a free descriptor ready for fd. Stops the process if a waiter is still
// registered (a descriptor freed while in use).
void deadline_open(PollDesc* pd, int fd) noexcept;

// pollSetDeadline with Go's relative encoding: d == 0 no deadline, d < 0 already expired,
// d > 0 expires d ns after `now` (clamped to the maximum on overflow). A closing
// descriptor is left unchanged (S12). Tasks woken by an already-expired deadline are
// appended to `ready`.
void deadline_set(PollDesc* pd, int64_t d, Mode mode, int64_t now, TimerWheel& wheel,
                  TaskList& ready) noexcept;

// The same with an absolute deadline: 0 none, otherwise ns on CLOCK_MONOTONIC; a deadline
// at or before `now` is expired (-1), never "none" (S01).
void deadline_set_at_slow(PollDesc* pd, int64_t abs, Mode mode, int64_t now, TimerWheel& wheel,
                          TaskList& ready) noexcept;
inline void deadline_set_at(PollDesc* pd, int64_t abs, Mode mode, int64_t now, TimerWheel& wheel,
                            TaskList& ready) noexcept {
  // Fast path, the per-read idle-timeout refresh: one direction's live deadline pushed
  // later. Nothing expires or un-expires (no info update, nobody to wake), and the timer
  // stays where it is: one store in the wheel.
  if (mode != Mode::kReadWrite && abs > now && !pd->closing) {
    int64_t& d = mode == Mode::kRead ? pd->rd : pd->wd;
    const int64_t other = mode == Mode::kRead ? pd->wd : pd->rd;
    if (d > 0 && abs >= d) {
      if (abs != d) {
        d = abs;
        ++(mode == Mode::kRead ? pd->rseq : pd->wseq);
      }
      wheel.arm(&pd->timer, other > 0 && other < abs ? other : abs);
      return;
    }
  }
  deadline_set_at_slow(pd, abs, mode, now, wheel, ready);
}

// The wheel callback for pd->timer (netpolldeadlineimpl for whichever directions are due).
void deadline_fired(PollDesc* pd, int64_t now, TimerWheel& wheel, TaskList& ready) noexcept;

// pollUnblock: mark closing, bump both sequences, stop the timer, wake both waiters (S21).
void deadline_evict(PollDesc* pd, TimerWheel& wheel, TaskList& ready) noexcept;

// pollClose's checks: the descriptor must be closing and have no waiter.
void deadline_check_close(PollDesc* pd) noexcept;

}  // namespace ringpoll
