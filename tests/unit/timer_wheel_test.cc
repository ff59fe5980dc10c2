// Tests of engine/timer_wheel.h. Every test drives the wheel with synthetic times; none
// sleeps. The wheel's contract: never fire early, fire at the first advance() whose time
// reaches the node's expiry tick (late by less than one tick), lazy extension is one store,
// and nothing on the hot path allocates.
#include "engine/timer_wheel.h"

#include <gtest/gtest.h>

#include "support/alloc_counter.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <stdexcept>
#include <vector>

namespace ringpoll {
namespace {

constexpr int64_t kMs = 1'000'000;

// The first tick at which a node armed for `when` may fire: ceil(when / tick).
int64_t expiry_tick(int64_t when, int64_t tick) {
  return when / tick + (when % tick != 0);
}

// Collects what one advance() fired.
struct Fired {
  std::vector<TimerNode*> nodes;
  void operator()(TimerNode* n) { nodes.push_back(n); }
};

TEST(TimerWheel, Geometry) {
  EXPECT_EQ(TimerWheel::kSlots, 1 << TimerWheel::kLevelBits);
  EXPECT_EQ(TimerWheel::kSlots, 64);  // one uint64_t occupancy bitmap a level
  EXPECT_EQ(TimerWheel::kLevels, 6);
  EXPECT_EQ(sizeof(TimerNode), 24u);
  TimerWheel w;
  EXPECT_EQ(w.tick_ns(), kMs);
  EXPECT_EQ(w.now_ns(), 0);
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.next_deadline(), -1);
}

TEST(TimerWheel, LevelForAtEachBoundary) {
  // From tick 0, level L holds ticks [64^L, 64^(L+1)) (level 0 also holds tick 0..63).
  EXPECT_EQ(TimerWheel::level_for(0, 0), 0);
  EXPECT_EQ(TimerWheel::level_for(0, 1), 0);
  EXPECT_EQ(TimerWheel::level_for(0, 63), 0);
  for (int level = 1; level < TimerWheel::kLevels; ++level) {
    const uint64_t first = uint64_t{1} << (6 * level);
    EXPECT_EQ(TimerWheel::level_for(0, first - 1), level - 1) << "level " << level;
    EXPECT_EQ(TimerWheel::level_for(0, first), level) << "level " << level;
    EXPECT_EQ(TimerWheel::level_for(0, first * 64 - 1), level) << "level " << level;
  }
  // Beyond the wheel's 2^36 ticks: clamped into the top level.
  EXPECT_EQ(TimerWheel::level_for(0, (uint64_t{1} << 36) - 1), 5);
  EXPECT_EQ(TimerWheel::level_for(0, uint64_t{1} << 36), 5);
  EXPECT_EQ(TimerWheel::level_for(0, uint64_t{1} << 50), 5);
  EXPECT_EQ(TimerWheel::level_for(0, UINT64_MAX), 5);
  // The split follows the bits of the current tick, not the distance: one tick ahead across
  // a 64-tick boundary is level 1 (its level-1 slot starts exactly at that tick).
  EXPECT_EQ(TimerWheel::level_for(100, 127), 0);
  EXPECT_EQ(TimerWheel::level_for(63, 64), 1);
  EXPECT_EQ(TimerWheel::level_for(4095, 4096), 2);
  EXPECT_EQ(TimerWheel::level_for(4096 + 5, 4096 + 63), 0);
  EXPECT_EQ(TimerWheel::level_for(4096 + 5, 4096 + 64), 1);
}

// Slot widths: a timer at level L is reached at the start of its slot, a multiple of 64^L
// ticks, and cascades from there; the first advance() that has work is at that start.
TEST(TimerWheel, SlotWidthsPerLevel) {
  for (const int64_t tick : {kMs, int64_t{10'000}}) {
    for (int level = 0; level < TimerWheel::kLevels; ++level) {
      TimerWheel w(tick, 0);
      const int64_t width = int64_t{1} << (6 * level);
      const int64_t slot_start = width * 5;  // slot 5 of this level
      TimerNode n;
      if (level == 0) {  // one tick wide: it fires at its slot
        w.arm(&n, slot_start * tick);
        EXPECT_EQ(w.next_deadline(), slot_start * tick);
        EXPECT_EQ(w.advance(slot_start * tick, [](TimerNode*) {}), 1u);
        continue;
      }
      w.arm(&n, (slot_start + width / 2) * tick + 1);  // inside the slot, not aligned
      EXPECT_EQ(w.next_deadline(), slot_start * tick) << "level " << level << " tick " << tick;
      size_t fired = 0;
      w.advance(slot_start * tick, [&](TimerNode*) { ++fired; });
      EXPECT_EQ(fired, 0u);  // cascaded, not fired
      EXPECT_TRUE(n.linked());
      // After the cascade the node sits at a lower level, so the next work comes sooner
      // than the next slot of the same level.
      EXPECT_LE(w.next_deadline(), expiry_tick(n.when, tick) * tick);
      EXPECT_GT(w.next_deadline(), slot_start * tick);
    }
  }
}

TEST(TimerWheel, RangeCoveredWithoutClamping) {
  // 2^36 ticks: at 1 ms about 795 days, at 10 us about 7.95 days. A timer just inside the
  // range fires exactly at its tick after cascading through every level.
  constexpr int64_t kSpanTicks = int64_t{1} << (TimerWheel::kLevelBits * TimerWheel::kLevels);
  EXPECT_EQ(kSpanTicks * kMs / (86'400LL * 1'000'000'000), 795);
  EXPECT_EQ(kSpanTicks * 10'000 / (86'400LL * 1'000'000'000), 7);
  TimerWheel w(kMs, 0);
  TimerNode n;
  const int64_t when = (kSpanTicks - 1) * kMs;
  w.arm(&n, when);
  size_t fired = 0;
  auto count = [&](TimerNode*) { ++fired; };
  int steps = 0;
  while (w.next_deadline() != -1 && w.next_deadline() < when) {
    w.advance(w.next_deadline(), count);  // jump from cascade point to cascade point
    ++steps;
    ASSERT_EQ(fired, 0u);
  }
  EXPECT_LE(steps, TimerWheel::kLevels);  // at most one cascade a level
  EXPECT_EQ(w.next_deadline(), when);
  w.advance(when - 1, count);
  EXPECT_EQ(fired, 0u);
  w.advance(when, count);
  EXPECT_EQ(fired, 1u);
  EXPECT_FALSE(n.linked());
}

TEST(TimerWheel, TickBelowMinimumAborts) {
  EXPECT_DEATH({ TimerWheel w(9'999); }, "tick_ns must be >= 10'000");
  TimerWheel ok(10'000);
  EXPECT_EQ(ok.tick_ns(), 10'000);
}

TEST(TimerWheel, FiresAtExpiryTickNeverEarly) {
  TimerWheel w(kMs, 0);
  TimerNode aligned, unaligned;
  w.arm(&aligned, 7 * kMs);
  w.arm(&unaligned, 7 * kMs + 1);  // rounds up to tick 8
  Fired f;
  w.advance(7 * kMs - 1, f);
  EXPECT_TRUE(f.nodes.empty());
  w.advance(7 * kMs, f);
  ASSERT_EQ(f.nodes.size(), 1u);
  EXPECT_EQ(f.nodes[0], &aligned);
  w.advance(8 * kMs - 1, f);  // now >= when, but the expiry tick (8) is not reached
  EXPECT_EQ(f.nodes.size(), 1u);
  w.advance(8 * kMs, f);
  ASSERT_EQ(f.nodes.size(), 2u);
  EXPECT_EQ(f.nodes[1], &unaligned);
}

// The expiry tick is ceil(when / tick) for any tick and any when: a node fires at exactly
// that tick's start, not a nanosecond before. Odd and power-of-two ticks, huge deadlines.
TEST(TimerWheel, ExpiryTickIsExactForAnyTick) {
  std::mt19937_64 rng(11);
  for (const int64_t tick : {int64_t{10'000}, int64_t{16'384}, int64_t{999'983}, kMs,
                             int64_t{1'234'567}, int64_t{1} << 30, int64_t{987'654'321'987}}) {
    for (int i = 0; i < 300; ++i) {
      TimerWheel w(tick, 0);
      const int bits = 1 + static_cast<int>(rng() % 62);
      const int64_t when = 1 + static_cast<int64_t>(rng() % (uint64_t{1} << bits));
      const int64_t e = expiry_tick(when, tick);
      if (e > INT64_MAX / tick) continue;  // in the last partial tick: never fires
      TimerNode n;
      w.arm(&n, when);
      size_t fired = 0;
      auto count = [&](TimerNode*) { ++fired; };
      w.advance(e * tick - 1, count);
      ASSERT_EQ(fired, 0u) << "tick " << tick << " when " << when;
      w.advance(e * tick, count);
      ASSERT_EQ(fired, 1u) << "tick " << tick << " when " << when;
    }
  }
}

TEST(TimerWheel, NowGoingBackwardsIsIgnored) {
  TimerWheel w(kMs, 5 * kMs);
  TimerNode n;
  w.arm(&n, 10 * kMs);
  Fired f;
  w.advance(9 * kMs, f);
  EXPECT_EQ(w.now_ns(), 9 * kMs);
  w.advance(3 * kMs, f);
  EXPECT_EQ(w.now_ns(), 9 * kMs);
  EXPECT_TRUE(f.nodes.empty());
  w.advance(10 * kMs, f);
  EXPECT_EQ(f.nodes.size(), 1u);
}

TEST(TimerWheel, ArmAtOrBeforeNowIsDueAtNextAdvance) {
  TimerWheel w(kMs, 0);
  Fired f;
  w.advance(10 * kMs + 500, f);
  TimerNode past, exactly_now;
  w.arm(&past, 3 * kMs);
  w.arm(&exactly_now, 10 * kMs + 500);  // its expiry tick (11) is after now: due anyway
  EXPECT_EQ(w.size(), 2u);
  EXPECT_EQ(w.next_deadline(), w.now_ns());
  w.advance(w.now_ns(), f);  // same time: still fires both
  EXPECT_EQ(f.nodes.size(), 2u);
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.next_deadline(), -1);
}

TEST(TimerWheel, LazyExtendIsOneStore) {
  TimerWheel w(kMs, 0);
  TimerNode n, other;
  w.arm(&other, 10 * kMs);  // a slot neighbour, so next/prev are not the sentinel only
  w.arm(&n, 10 * kMs);
  TimerNode* const next = n.next;
  TimerNode* const prev = n.prev;
  const int64_t before = w.next_deadline();
  w.arm(&n, 500 * kMs);
  // Same links, same slot, same bitmaps: only `when` changed.
  EXPECT_EQ(n.next, next);
  EXPECT_EQ(n.prev, prev);
  EXPECT_EQ(n.when, 500 * kMs);
  EXPECT_EQ(w.size(), 2u);
  EXPECT_EQ(w.next_deadline(), before);
  w.cancel(&other);
  Fired f;
  w.advance(10 * kMs, f);  // the old slot is reached: the node is re-bucketed, not fired
  EXPECT_TRUE(f.nodes.empty());
  EXPECT_TRUE(n.linked());
  EXPECT_GT(w.next_deadline(), 10 * kMs);
  EXPECT_LE(w.next_deadline(), 500 * kMs);
  w.advance(499 * kMs, f);
  EXPECT_TRUE(f.nodes.empty());
  w.advance(500 * kMs, f);
  ASSERT_EQ(f.nodes.size(), 1u);
  EXPECT_EQ(f.nodes[0], &n);
}

TEST(TimerWheel, ArmEarlierMovesTheNode) {
  TimerWheel w(kMs, 0);
  TimerNode n;
  w.arm(&n, 500 * kMs);
  TimerNode* const old_next = n.next;
  w.arm(&n, 10 * kMs);
  EXPECT_NE(n.next, old_next);  // relinked into a level-0 slot
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(w.next_deadline(), 10 * kMs);
  Fired f;
  w.advance(10 * kMs, f);
  ASSERT_EQ(f.nodes.size(), 1u);
  EXPECT_EQ(f.nodes[0], &n);
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, Cancel) {
  TimerWheel w(kMs, 0);
  TimerNode a, b;
  w.cancel(&a);  // not linked: no-op
  EXPECT_EQ(w.size(), 0u);
  w.arm(&a, 20 * kMs);
  w.arm(&b, 20 * kMs);
  w.cancel(&a);
  EXPECT_FALSE(a.linked());
  EXPECT_EQ(w.size(), 1u);
  w.cancel(&a);  // twice: still a no-op
  EXPECT_EQ(w.size(), 1u);
  Fired f;
  w.advance(1000 * kMs, f);
  ASSERT_EQ(f.nodes.size(), 1u);
  EXPECT_EQ(f.nodes[0], &b);
  // A cancelled node that was alone leaves a stale bit at most; the wheel reports empty.
  w.arm(&a, 2000 * kMs);
  w.cancel(&a);
  EXPECT_EQ(w.next_deadline(), -1);
  EXPECT_EQ(w.advance(5000 * kMs, f), 0u);
}

TEST(TimerWheel, CancelFromCallbackOfNodeDueInSameAdvance) {
  TimerWheel w(kMs, 0);
  // a and b share a slot; c is in a later slot that the same advance() also reaches.
  TimerNode a, b, c;
  w.arm(&a, 5 * kMs);
  w.arm(&b, 5 * kMs);
  w.arm(&c, 300 * kMs);
  std::vector<TimerNode*> fired;
  w.advance(1000 * kMs, [&](TimerNode* n) {
    fired.push_back(n);
    w.cancel(n == &a ? &b : &a);  // the other one of the pair, still in the detached slot
    w.cancel(&c);                 // due later in this same call
  });
  ASSERT_EQ(fired.size(), 1u);  // whichever of a and b ran first cancelled the rest
  EXPECT_TRUE(fired[0] == &a || fired[0] == &b);
  EXPECT_FALSE(a.linked());
  EXPECT_FALSE(b.linked());
  EXPECT_FALSE(c.linked());
  EXPECT_EQ(w.size(), 0u);
  EXPECT_EQ(w.next_deadline(), -1);
}

TEST(TimerWheel, CallbackRearmsItselfAndArmsAndCancelsOthers) {
  TimerWheel w(kMs, 0);
  TimerNode self, other_due, later, victim;
  w.arm(&self, 5 * kMs);
  w.arm(&victim, 50 * kMs);
  int self_fires = 0, other_fires = 0, later_fires = 0, victim_fires = 0;
  auto fn = [&](TimerNode* n) {
    if (n == &self) {
      ++self_fires;
      EXPECT_FALSE(self.linked());  // unlinked before the callback
      w.arm(&self, w.now_ns());     // at now: must not loop; due at the next advance()
      w.arm(&other_due, 1 * kMs);   // never fired in this call: fires in this call
      w.arm(&later, 200 * kMs);     // in the future: fires later
      w.cancel(&victim);            // due in this call, must not fire
    } else if (n == &other_due) {
      ++other_fires;
    } else if (n == &later) {
      ++later_fires;
    } else if (n == &victim) {
      ++victim_fires;
    }
  };
  EXPECT_EQ(w.advance(100 * kMs, fn), 2u);
  EXPECT_EQ(self_fires, 1);
  EXPECT_EQ(other_fires, 1);
  EXPECT_EQ(victim_fires, 0);
  EXPECT_TRUE(self.linked());
  EXPECT_EQ(w.next_deadline(), w.now_ns());  // self is due
  EXPECT_EQ(w.size(), 2u);                   // self and later
  // The next call (even at the same time) fires self once more, which re-arms itself again,
  // and other_due, re-armed in the past by it, again in that call.
  EXPECT_EQ(w.advance(100 * kMs, fn), 2u);
  EXPECT_EQ(self_fires, 2);
  EXPECT_EQ(other_fires, 2);
  w.cancel(&self);
  EXPECT_EQ(w.advance(200 * kMs, fn), 1u);
  EXPECT_EQ(later_fires, 1);
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, CallbackRearmingToFutureFiresLater) {
  TimerWheel w(kMs, 0);
  TimerNode n;
  w.arm(&n, 1 * kMs);
  std::vector<int64_t> fired_at;
  auto fn = [&](TimerNode* x) {
    fired_at.push_back(w.now_ns());
    if (fired_at.size() < 5) w.arm(x, w.now_ns() + 10 * kMs);
  };
  for (int64_t t = 0; t <= 100 * kMs; t += kMs) w.advance(t, fn);
  EXPECT_EQ(fired_at, (std::vector<int64_t>{1 * kMs, 11 * kMs, 21 * kMs, 31 * kMs, 41 * kMs}));
}

TEST(TimerWheel, NextDeadline) {
  TimerWheel w(kMs, 0);
  EXPECT_EQ(w.next_deadline(), -1);
  TimerNode a, b;
  w.arm(&a, 7 * kMs);  // level 0: exactly its expiry tick
  EXPECT_EQ(w.next_deadline(), 7 * kMs);
  w.arm(&b, 3 * kMs + 1);  // unaligned: its expiry tick is 4 ms
  EXPECT_EQ(w.next_deadline(), 4 * kMs);
  w.cancel(&b);
  EXPECT_EQ(w.next_deadline(), 4 * kMs);  // a stale bit may make it earlier, never later
  EXPECT_LE(w.next_deadline(), 7 * kMs);
  Fired f;
  w.advance(4 * kMs, f);  // clears the stale bit
  EXPECT_TRUE(f.nodes.empty());
  EXPECT_EQ(w.next_deadline(), 7 * kMs);
  w.cancel(&a);
  EXPECT_EQ(w.next_deadline(), -1);

  // Randomised: never later than the earliest node's expiry tick.
  std::mt19937_64 rng(7);
  std::vector<TimerNode> nodes(2000);
  int64_t now = w.now_ns();
  for (int round = 0; round < 200; ++round) {
    for (int i = 0; i < 50; ++i) {
      TimerNode& n = nodes[rng() % nodes.size()];
      const int bits = static_cast<int>(rng() % 40);
      w.arm(&n, now + 1 + static_cast<int64_t>(rng() % (uint64_t{1} << bits)));
    }
    int64_t earliest = INT64_MAX;
    for (const TimerNode& n : nodes) {
      if (n.linked()) earliest = std::min(earliest, expiry_tick(n.when, kMs) * kMs);
    }
    ASSERT_LE(w.next_deadline(), earliest);
    ASSERT_GT(w.next_deadline(), now);
    now += static_cast<int64_t>(rng() % (uint64_t{1} << (rng() % 36)));
    w.advance(now, f);
  }
}

TEST(TimerWheel, ClampsFarDeadlinesWithoutFiringEarly) {
  TimerWheel w(kMs, 0);
  constexpr int64_t kSpanTicks = int64_t{1} << 36;
  TimerNode forever, far;
  w.arm(&forever, INT64_MAX);
  const int64_t far_when = 3 * kSpanTicks * kMs + 12'345;  // three wheel spans ahead
  w.arm(&far, far_when);
  EXPECT_EQ(w.size(), 2u);
  std::vector<TimerNode*> fired;
  std::vector<int64_t> fired_now;
  auto fn = [&](TimerNode* n) {
    fired.push_back(n);
    fired_now.push_back(w.now_ns());
  };
  // Jump from work point to work point: every re-bucket is checked, none fires early.
  const int64_t far_due = expiry_tick(far_when, kMs) * kMs;  // the first time it may fire
  int steps = 0;
  while (w.next_deadline() <= far_due && steps < 10'000) {
    const int64_t d = w.next_deadline();
    ASSERT_LE(d, far_due);
    w.advance(d, fn);
    ++steps;
    for (TimerNode* n : fired) ASSERT_LE(n->when, d);
    if (!fired.empty()) break;
  }
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_EQ(fired[0], &far);
  EXPECT_EQ(fired_now[0], far_due);  // not even one tick late
  EXPECT_LT(steps, 100);
  EXPECT_TRUE(forever.linked());
  // Large random jumps up to far into the future: INT64_MAX never fires before the end.
  std::mt19937_64 rng(3);
  int64_t now = w.now_ns();
  for (int i = 0; i < 2000; ++i) {
    now += static_cast<int64_t>(rng() % (uint64_t{1} << 51));
    w.advance(now, fn);
    ASSERT_EQ(fired.size(), 1u);
    ASSERT_LE(w.next_deadline(), INT64_MAX);
  }
  // INT64_MAX lies inside a tick that ends after INT64_MAX: it reads as "never".
  w.advance(INT64_MAX, fn);
  EXPECT_EQ(fired.size(), 1u);
  EXPECT_TRUE(forever.linked());
  EXPECT_EQ(w.size(), 1u);
}

TEST(TimerWheel, SizeBookkeeping) {
  TimerWheel w(kMs, 0);
  std::vector<TimerNode> n(10);
  for (int i = 0; i < 10; ++i) w.arm(&n[i], (i + 1) * 10 * kMs);
  EXPECT_EQ(w.size(), 10u);
  w.arm(&n[0], 1000 * kMs);  // extend: no change
  w.arm(&n[1], 1 * kMs);     // earlier: no change
  EXPECT_EQ(w.size(), 10u);
  w.cancel(&n[2]);
  w.cancel(&n[2]);
  EXPECT_EQ(w.size(), 9u);
  w.arm(&n[2], 0);  // due now
  EXPECT_EQ(w.size(), 10u);
  Fired f;
  EXPECT_EQ(w.advance(35 * kMs, f), 2u);  // n[2] (due) and n[1] (1 ms); n[3] is at 40 ms
  EXPECT_EQ(f.nodes.size(), 2u);
  EXPECT_EQ(w.size(), 8u);
  EXPECT_EQ(w.advance(2000 * kMs, f), 8u);
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, ThrowingCallbackKeepsPendingNodes) {
  TimerWheel w(kMs, 0);
  std::vector<TimerNode> n(5);
  for (TimerNode& x : n) w.arm(&x, 5 * kMs);
  int calls = 0;
  EXPECT_THROW(w.advance(10 * kMs,
                         [&](TimerNode*) {
                           if (++calls == 2) throw std::runtime_error("boom");
                         }),
               std::runtime_error);
  EXPECT_EQ(w.size(), 3u);  // two fired (the second threw after being unlinked)
  EXPECT_EQ(w.next_deadline(), w.now_ns());
  EXPECT_EQ(w.advance(10 * kMs, [](TimerNode*) {}), 3u);
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, ReentrantAdvanceAborts) {
  EXPECT_DEATH(
      {
        TimerWheel w(kMs, 0);
        TimerNode n;
        w.arm(&n, kMs);
        w.advance(kMs, [&](TimerNode*) { w.advance(2 * kMs, [](TimerNode*) {}); });
      },
      "inside an advance");
}

// Per-node bookkeeping for the randomised tests: what the contract says must happen.
struct Expect {
  int64_t when = 0;
  bool due_at_arm = false;  // armed at or before now: fires at the next advance()
  int arm_advance = 0;      // advance() calls completed (or running) when it was armed
};

// 100k timers spread over every level (and beyond the wheel's span), random advance steps,
// callbacks that re-arm. Every fire is checked against the contract: n->when <= now, and it
// is the first advance() at which now reached the expiry tick (late by less than one tick).
TEST(TimerWheel, NeverFiresEarlyRandomised) {
  for (const int64_t tick : {kMs, int64_t{10'000}}) {
    std::mt19937_64 rng(tick);
    TimerWheel w(tick, 1'000 * tick + 17);
    constexpr size_t kNodes = 100'000;
    std::vector<TimerNode> nodes(kNodes);
    std::vector<Expect> expect(kNodes);
    int advances = 0;
    bool in_call = false;
    auto random_when = [&](int64_t now) -> int64_t {
      switch (rng() % 16) {
        case 0:
          return now - static_cast<int64_t>(rng() % (5 * tick));  // in the past
        case 1:
          return INT64_MAX - static_cast<int64_t>(rng() % 1000);  // clamped forever
        default: {
          const int bits = static_cast<int>(rng() % 40);  // 1 tick .. past 2^36 ticks
          return now + 1 + static_cast<int64_t>(rng() % ((uint64_t{1} << bits) * tick));
        }
      }
    };
    auto arm = [&](size_t i, int64_t when) {
      w.arm(&nodes[i], when);
      expect[i] = Expect{when, when <= w.now_ns(), advances};
    };
    for (size_t i = 0; i < kNodes; ++i) arm(i, random_when(w.now_ns()));
    ASSERT_EQ(w.size(), kNodes);

    int64_t prev_now = w.now_ns();
    int64_t now = prev_now;
    size_t total_fired = 0, total_armed = kNodes;
    auto fn = [&](TimerNode* n) {
      const size_t i = static_cast<size_t>(n - nodes.data());
      const Expect& e = expect[i];
      ASSERT_LE(e.when, now) << "fired early";
      if (e.due_at_arm) {
        ASSERT_EQ(e.arm_advance + 1, advances) << "a due node must fire at the next advance";
      } else {
        ASSERT_GE(now / tick, expiry_tick(e.when, tick));
        ASSERT_LT(prev_now / tick, expiry_tick(e.when, tick)) << "fired late";
      }
      ++total_fired;
      if (rng() % 4 == 0) {  // re-arm from the callback, sometimes in the past
        ++total_armed;
        arm(i, random_when(now));
      }
    };
    for (int step = 0; step < 20'000; ++step) {
      const int bits = static_cast<int>(rng() % 24);
      now += static_cast<int64_t>(rng() % ((uint64_t{1} << bits) * tick)) +
             static_cast<int64_t>(rng() % 3);
      ++advances;
      in_call = true;
      w.advance(now, fn);
      in_call = false;
      prev_now = now;
      ASSERT_FALSE(HasFatalFailure());
      if (step % 8 == 0) {  // arm some outside advance(), sometimes in the past
        const size_t i = rng() % kNodes;
        if (!nodes[i].linked()) {
          ++total_armed;
          arm(i, random_when(now));
        }
      }
    }
    EXPECT_FALSE(in_call);
    EXPECT_GT(total_fired, kNodes / 2);  // the steps above reach most levels
    // The end of time: everything left fires, exactly once per arm, except deadlines in the
    // last partial tick below INT64_MAX, whose expiry tick is never reached ("never").
    ++advances;
    auto last = [&](TimerNode* n) {
      const size_t i = static_cast<size_t>(n - nodes.data());
      ASSERT_LE(expect[i].when, now);
      ++total_fired;
    };
    now = INT64_MAX;
    w.advance(now, last);
    size_t never = 0;
    for (const TimerNode& n : nodes) {
      if (!n.linked()) continue;
      ASSERT_GT(expiry_tick(n.when, tick), INT64_MAX / tick);
      ++never;
    }
    EXPECT_GT(never, 0u);  // the INT64_MAX - k deadlines
    EXPECT_EQ(w.size(), never);
    EXPECT_EQ(total_fired + never, total_armed);
  }
}

// Random arm / extend / arm-earlier / cancel / advance against an exact model of which
// nodes must fire at each advance().
TEST(TimerWheel, RandomisedAgainstModel) {
  std::mt19937_64 rng(42);
  const int64_t tick = kMs;
  TimerWheel w(tick, 0);
  constexpr size_t kNodes = 1000;
  std::vector<TimerNode> nodes(kNodes);
  std::vector<uint8_t> armed(kNodes, false);
  std::vector<Expect> expect(kNodes);
  int advances = 0;
  int64_t now = 0;
  for (int op = 0; op < 100'000; ++op) {
    const size_t i = rng() % kNodes;
    const uint64_t r = rng() % 100;
    if (r < 60) {  // arm or extend or move earlier
      const int bits = static_cast<int>(rng() % 30);
      const int64_t when =
          now - 2 * tick + static_cast<int64_t>(rng() % ((uint64_t{1} << bits) * tick));
      const bool extend = armed[i] && when >= expect[i].when;
      w.arm(&nodes[i], when);
      if (!extend) {
        expect[i] = Expect{when, when <= now, advances};
      } else {
        expect[i].when = when;  // the due-ness stays as it was (it stays in its list)
      }
      armed[i] = true;
    } else if (r < 80) {
      w.cancel(&nodes[i]);
      armed[i] = false;
    } else {
      const int bits = static_cast<int>(rng() % 14);
      now += static_cast<int64_t>(rng() % ((uint64_t{1} << bits) * tick));
      ++advances;
      std::vector<uint8_t> must(kNodes, false);
      for (size_t k = 0; k < kNodes; ++k) {
        if (!armed[k]) continue;
        const Expect& e = expect[k];
        must[k] = (e.due_at_arm && e.when <= now) || now / tick >= expiry_tick(e.when, tick);
      }
      std::vector<uint8_t> got(kNodes, false);
      w.advance(now, [&](TimerNode* n) {
        const size_t k = static_cast<size_t>(n - nodes.data());
        got[k] = true;
        armed[k] = false;
      });
      for (size_t k = 0; k < kNodes; ++k) {
        expect[k].due_at_arm = false;  // whatever did not fire now sits in a slot
        ASSERT_EQ(got[k], must[k])
            << "node " << k << " when " << expect[k].when << " now " << now << " op " << op;
      }
    }
    size_t linked = 0;
    if (op % 1000 == 0) {
      for (size_t k = 0; k < kNodes; ++k) linked += armed[k];
      ASSERT_EQ(w.size(), linked);
    }
  }
}

TEST(TimerWheel, ArmCancelAdvanceAllocateNothing) {
  TimerWheel w(kMs, 0);
  std::vector<TimerNode> nodes(20'000);  // allocated before counting starts
  std::mt19937_64 rng(9);
  std::vector<int64_t> whens(nodes.size());
  for (int64_t& x : whens) x = 1 + static_cast<int64_t>(rng() % (uint64_t{1} << 40));
  size_t fired = 0;
  test::alloc_counting(true);
  const size_t before = test::alloc_count();
  for (size_t i = 0; i < nodes.size(); ++i) w.arm(&nodes[i], whens[i]);
  for (size_t i = 0; i < nodes.size(); i += 3) w.arm(&nodes[i], whens[i] + kMs);  // extend
  for (size_t i = 1; i < nodes.size(); i += 3) w.arm(&nodes[i], whens[i] / 2);    // earlier
  for (size_t i = 2; i < nodes.size(); i += 7) w.cancel(&nodes[i]);
  for (int64_t t = 0; t < 10'000 * kMs; t += kMs) {
    fired += w.advance(t, [&](TimerNode* n) {
      if (fired % 2 == 0) w.arm(n, w.now_ns() + 5 * kMs);
    });
  }
  fired += w.advance(INT64_MAX, [](TimerNode*) {});
  (void)w.next_deadline();
  const size_t after = test::alloc_count();
  test::alloc_counting(false);
  EXPECT_EQ(after - before, 0);
  EXPECT_GT(fired, 0u);
  EXPECT_EQ(w.size(), 0u);
  // The counter does see allocations (guards against a hook that never counts).
  test::alloc_counting(true);
  int* volatile p = new int(1);  // volatile: a new/delete pair may otherwise be elided
  test::alloc_counting(false);
  delete p;
  EXPECT_EQ(test::alloc_count(), after + 1);
}

}  // namespace
}  // namespace ringpoll
