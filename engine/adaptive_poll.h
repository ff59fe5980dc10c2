#pragma once
// Adaptive busy polling (engine.busy_poll_us = "auto"): whether a shard with nothing to run
// spins on non-blocking polls before it blocks, and for how long.
//
// Spinning trades CPU for wake-up latency: work that arrives while the shard spins is
// picked up at once instead of after a sleep and a wake-up (5-50 us). It pays when the
// next work comes soon (one busy connection's next request); it is waste when it does not
// (an idle shard, or many connections that keep the shard busy without gaps). A fixed
// spin is right for one of those loads only, so the shard learns from what it sees.
//
// At every idle point (nothing runnable) the scheduler spins for `spin_ns` at most, then
// blocks; when work comes back it reports what happened (an IdleObservation) and
// adaptive_poll_step() decides the next spin:
//
//   gap       the time from going idle to the next work: an EWMA of it, each sample
//             clipped to kGapClip x max_spin so that one long sleep does not take long to
//             forget once a burst starts again. A gap the shard slept through includes its
//             own wake-up (tens of us), so a shard that blocks sees its gaps stretched past
//             max_spin and would never spin again: a gap a spin caught is exact, and one
//             caught after the estimate had gone past max_spin replaces the estimate
//   tasks     tasks run per busy period (between two idle points): an EWMA. A wake-up's
//             cost is shared by the tasks it brings; when they are more than
//             max_tasks_per_wake, spinning to save it costs more CPU than it saves (the
//             many-connection loads), so the shard blocks
//   busy      how long the shard runs between two idle points: an EWMA. A shard busier
//             than idle (busy > gap) is serving many connections, and its gaps are the
//             slack that a blocked wake-up gathers into one batch; spinning through them
//             burns CPU and splits the batches, so it blocks
//   mode      kBlock      the expected gap is longer than max_spin: spinning would not
//                         reach the work; block at once. Or a wake-up brings many tasks,
//                         or the shard is busier than idle.
//                         When the gap is within kProbeReach x max_spin (a wake-up may be
//                         what stretched it), every kProbeEvery-th idle point spins
//                         max_spin once: the probe
//             kSpin       spin up to 2 x the expected gap (at least max_spin / 8, at most
//                         max_spin): covers a gap somewhat longer than the average
//             kThrottled  the idle budget of this window is spent: block at once until
//                         the window ends (a blocked shard wakes only for work or a
//                         timer, so the budget returns when events come back)
//   budget    spinning that found nothing ("wasted") is counted per window of
//             window_ns; it may reach idle_budget_ppm of the window and no more: each
//             spin is also clipped to what is left. So an idle or erratic shard spends
//             at most that share of a core spinning, whatever the gaps look like.
//
// The step is a pure function of (state, observation, limits), tested on recorded traces
// (tests/unit/adaptive_poll_test.cc); the scheduler publishes the state for the admin
// endpoint (Scheduler::adaptive_poll()).
#include <algorithm>
#include <cstdint>

namespace ringpoll {

// SchedulerOptions::busy_poll_ns value that selects the adaptive controller.
inline constexpr int64_t kBusyPollAuto = -1;

struct AdaptivePollLimits {
  // The longest spin: the latency profile's fixed 50 us, which covers a loopback round
  // trip of a small request.
  int64_t max_spin_ns = 50'000;
  // Spinning that found nothing may take this share of the window (parts per million;
  // 50'000 = 5 % of a core). An idle shard does not spin at all (its gaps are past the
  // probe's reach); this caps an erratic load. At 1 % one connection's occasional slow
  // turn (1-3 % of them here) used the budget up, throttling it to 0.6x the latency
  // profile's requests/s; at 5 % it reaches 0.9x.
  int64_t idle_budget_ppm = 50'000;
  // The budget's window: short enough that a throttled shard spins again soon after
  // traffic returns, long enough to hold many idle periods.
  int64_t window_ns = 100'000'000;
  // More tasks than this per busy period, on average: block (see "tasks" above).
  int64_t max_tasks_per_wake = 4;
};

enum class AdaptivePollMode : uint8_t { kBlock = 0, kSpin = 1, kThrottled = 2 };
const char* to_string(AdaptivePollMode m) noexcept;

struct AdaptivePollState {
  AdaptivePollMode mode = AdaptivePollMode::kBlock;
  int64_t spin_ns = 0;       // how long to spin at the next idle point
  int64_t gap_ewma_ns = -1;  // expected idle gap; -1: nothing observed yet
  int64_t window_start_ns = 0;
  int64_t wasted_ns = 0;        // spinning that found nothing, in this window
  int64_t tasks_ewma_x16 = -1;  // tasks per busy period, x16; -1: nothing observed yet
  int64_t busy_ewma_ns = 0;     // time run per busy period
  int64_t since_probe = 0;      // idle points blocked within the probe's reach
};

// One idle period, as the scheduler saw it.
struct IdleObservation {
  int64_t now_ns;        // when it ended (work arrived, a timer fired, or a wake)
  int64_t gap_ns;        // how long the shard had nothing to run
  int64_t spun_ns;       // of which it spent spinning
  bool spin_found_work;  // the spin ended because work arrived (not because it ran out)
  int64_t tasks = 1;     // tasks the shard ran in the busy period before this idle point
  int64_t busy_ns = 0;   // and how long that busy period was
};

// Sample clip: a gap counts as at most this many max_spins (8: a burst after a long sleep
// brings the EWMA under max_spin within about 16 idle periods, with alpha 1/8).
inline constexpr int64_t kGapClip = 8;
// EWMA weight of a new sample: 1 / 2^kGapShift (the gap's and the tasks').
inline constexpr int kGapShift = 3;
// The probe: every kProbeEvery-th blocked idle point, while the expected gap is within
// kProbeReach x max_spin. At most 1/16 of those idle points spin, each max_spin at most,
// and every one that finds nothing counts against the idle budget like any spin.
inline constexpr int64_t kProbeEvery = 16;
inline constexpr int64_t kProbeReach = 4;

// The rule. Pure: the same inputs give the same state.
constexpr AdaptivePollState adaptive_poll_step(AdaptivePollState s, const IdleObservation& o,
                                               const AdaptivePollLimits& l) noexcept {
  // The budget's window: a new one starts when the old one has ended.
  if (o.now_ns - s.window_start_ns >= l.window_ns) {
    s.window_start_ns = o.now_ns;
    s.wasted_ns = 0;
  }
  if (!o.spin_found_work) s.wasted_ns += o.spun_ns;
  // The expected gap: an EWMA of clipped samples (the first sample sets it; so does a gap
  // a spin caught while the estimate said block: the probe's finding).
  const int64_t sample = std::min(o.gap_ns, kGapClip * l.max_spin_ns);
  if (s.gap_ewma_ns < 0 || (o.spin_found_work && s.gap_ewma_ns > l.max_spin_ns)) {
    s.gap_ewma_ns = sample;
  } else {
    s.gap_ewma_ns += (sample - s.gap_ewma_ns) >> kGapShift;
  }
  const int64_t tasks16 = std::max<int64_t>(o.tasks, 0) * 16;
  s.tasks_ewma_x16 = s.tasks_ewma_x16 < 0
                         ? tasks16
                         : s.tasks_ewma_x16 + ((tasks16 - s.tasks_ewma_x16) >> kGapShift);
  s.busy_ewma_ns += (std::max<int64_t>(o.busy_ns, 0) - s.busy_ewma_ns) >> kGapShift;
  const int64_t budget = l.idle_budget_ppm * (l.window_ns / 1'000'000);
  const int64_t left = budget - s.wasted_ns;
  if (left <= 0) {
    s.mode = AdaptivePollMode::kThrottled;
    s.spin_ns = 0;
  } else if (s.tasks_ewma_x16 > l.max_tasks_per_wake * 16 || s.busy_ewma_ns > s.gap_ewma_ns) {
    // A wake-up serves many (its cost is shared), or the gaps are a busy shard's slack.
    s.mode = AdaptivePollMode::kBlock;
    s.spin_ns = 0;
    s.since_probe = 0;
  } else if (s.gap_ewma_ns > l.max_spin_ns) {
    s.mode = AdaptivePollMode::kBlock;
    s.spin_ns = 0;
    if (s.gap_ewma_ns > kProbeReach * l.max_spin_ns) {
      s.since_probe = 0;
    } else if (++s.since_probe >= kProbeEvery) {
      s.since_probe = 0;
      s.spin_ns = std::min(l.max_spin_ns, left);  // the probe (mode stays kBlock)
    }
  } else {
    s.since_probe = 0;
    s.mode = AdaptivePollMode::kSpin;
    s.spin_ns = std::min({std::max(2 * s.gap_ewma_ns, l.max_spin_ns / 8), l.max_spin_ns, left});
  }
  return s;
}

inline const char* to_string(AdaptivePollMode m) noexcept {
  switch (m) {
    case AdaptivePollMode::kBlock:
      return "block";
    case AdaptivePollMode::kSpin:
      return "spin";
    case AdaptivePollMode::kThrottled:
      return "throttled";
  }
  return "?";
}

// What a shard publishes about its controller (any thread reads it; Scheduler::adaptive_poll).
struct AdaptivePollStats {
  AdaptivePollMode mode = AdaptivePollMode::kBlock;
  int64_t spin_ns = 0;             // the spin the next idle point will use
  int64_t gap_ewma_ns = 0;         // expected idle gap
  int64_t tasks_per_wake_x16 = 0;  // tasks per busy period (EWMA), x16
  int64_t budget_used_ppm = 0;     // wasted spin in this window, per million of the window
  uint64_t spins = 0;              // idle points that spun
  uint64_t spin_hits = 0;          // of which found work while spinning
  int64_t spun_ns = 0;             // total time spent spinning
  int64_t wasted_ns = 0;           // total spinning that found nothing
};

}  // namespace ringpoll
