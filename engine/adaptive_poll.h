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
//             forget once a burst starts again
//   mode      kBlock      the expected gap is longer than max_spin: spinning would not
//                         reach the work; block at once
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
  // 10'000 = 1 % of a core).
  int64_t idle_budget_ppm = 10'000;
  // The budget's window: short enough that a throttled shard spins again soon after
  // traffic returns, long enough to hold many idle periods.
  int64_t window_ns = 100'000'000;
};

enum class AdaptivePollMode : uint8_t { kBlock = 0, kSpin = 1, kThrottled = 2 };
const char* to_string(AdaptivePollMode m) noexcept;

struct AdaptivePollState {
  AdaptivePollMode mode = AdaptivePollMode::kBlock;
  int64_t spin_ns = 0;       // how long to spin at the next idle point
  int64_t gap_ewma_ns = -1;  // expected idle gap; -1: nothing observed yet
  int64_t window_start_ns = 0;
  int64_t wasted_ns = 0;  // spinning that found nothing, in this window
};

// One idle period, as the scheduler saw it.
struct IdleObservation {
  int64_t now_ns;        // when it ended (work arrived, a timer fired, or a wake)
  int64_t gap_ns;        // how long the shard had nothing to run
  int64_t spun_ns;       // of which it spent spinning
  bool spin_found_work;  // the spin ended because work arrived (not because it ran out)
};

// Sample clip: a gap counts as at most this many max_spins (8: a burst after a long sleep
// brings the EWMA under max_spin within about 16 idle periods, with alpha 1/8).
inline constexpr int64_t kGapClip = 8;
// EWMA weight of a new sample: 1 / 2^kGapShift.
inline constexpr int kGapShift = 3;

// The rule. Pure: the same inputs give the same state.
constexpr AdaptivePollState adaptive_poll_step(AdaptivePollState s, const IdleObservation& o,
                                               const AdaptivePollLimits& l) noexcept {
  // The budget's window: a new one starts when the old one has ended.
  if (o.now_ns - s.window_start_ns >= l.window_ns) {
    s.window_start_ns = o.now_ns;
    s.wasted_ns = 0;
  }
  if (!o.spin_found_work) s.wasted_ns += o.spun_ns;
  // The expected gap: an EWMA of clipped samples (the first sample sets it).
  const int64_t sample = std::min(o.gap_ns, kGapClip * l.max_spin_ns);
  s.gap_ewma_ns =
      s.gap_ewma_ns < 0 ? sample : s.gap_ewma_ns + ((sample - s.gap_ewma_ns) >> kGapShift);
  const int64_t budget = l.idle_budget_ppm * (l.window_ns / 1'000'000);
  const int64_t left = budget - s.wasted_ns;
  if (left <= 0) {
    s.mode = AdaptivePollMode::kThrottled;
    s.spin_ns = 0;
  } else if (s.gap_ewma_ns > l.max_spin_ns) {
    s.mode = AdaptivePollMode::kBlock;
    s.spin_ns = 0;
  } else {
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
  int64_t spin_ns = 0;          // the spin the next idle point will use
  int64_t gap_ewma_ns = 0;      // expected idle gap
  int64_t budget_used_ppm = 0;  // wasted spin in this window, per million of the window
  uint64_t spins = 0;           // idle points that spun
  uint64_t spin_hits = 0;       // of which found work while spinning
  int64_t spun_ns = 0;          // total time spent spinning
  int64_t wasted_ns = 0;        // total spinning that found nothing
};

}  // namespace ringpoll
