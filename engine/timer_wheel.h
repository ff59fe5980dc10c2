#pragma once
// TimerWheel: one shard's deadlines (DESIGN.md "Timers"). Hierarchical, lazy, lock-free by
// confinement: only the shard's thread touches it.
//
// Granularity. Level 0 has one slot per tick; each level above is 64x coarser. A timer goes
// to the lowest level whose slot width still separates it from the current tick (level_for),
// and is moved down ("cascaded") or fired when its slot is reached, so it never fires early
// and is late by less than one tick.
//
//   level  slot width     range ahead     | tick = 1 ms            | tick = 10 us
//          (ticks)        (ticks)         | slot width   range     | slot width   range
//   0      1              64              | 1 ms         64 ms     | 10 us        640 us
//   1      64             4'096           | 64 ms        4.1 s     | 640 us       41 ms
//   2      4'096          262'144         | 4.1 s        4.4 min   | 41 ms        2.6 s
//   3      262'144        16'777'216      | 4.4 min      4.7 h     | 2.6 s        2.8 min
//   4      16'777'216     2^30            | 4.7 h        12.4 d    | 2.8 min      3 h
//   5      2^30           2^36            | 12.4 d       2.2 y     | 3 h          8 d
//
// "Range ahead" is how far past the current tick a level reaches (64^(level+1) ticks, the
// exact split follows the bits of the current tick, see level_for). A deadline beyond 2^36
// ticks is clamped into level 5 in the slot its bits name; when that slot is reached the
// timer is simply re-bucketed again, so it still never fires early. A deadline in the last,
// partial tick below INT64_MAX (INT64_MAX itself included) never fires: it reads as "never".
//
// State.
//   slots_[level][slot]  kLanes circular doubly linked lists with a sentinel head each, so
//                        unlink is O(1) without knowing the slot (cancel and "arm earlier"
//                        need this). Inserts go to the lanes in turn; expiry walks the lanes
//                        of a slot side by side, so kLanes cache misses are in flight at once
//                        instead of one (a list walk is otherwise one miss after another).
//   occupied_[level]     bit s set if slot s may hold nodes. A bit may be stale (its list was
//                        emptied by cancel); it is cleared when the slot is reached and found
//                        empty. A stale bit can only make next_deadline() earlier, never later.
//   due_                 nodes armed at or before now_ns(): they fire at the next advance()
//                        (or in the running one, see advance()).
//   deferred_            nodes that already fired in the running advance() and were re-armed
//                        at or before now: they move to due_ when that advance() returns.
//   running_[lane]       the slot being processed by advance(), detached from its level.
//   elapsed_             the wheel's current tick, floor(now_ns_ / tick_).
//
// Invariants (between advance() calls).
//   I1  A node in slots_ has expiry tick e = ceil(when / tick) > elapsed_ (no early fire:
//       e * tick >= when, and a slot is processed only once now >= its start * tick).
//   I2  A node in slots_[L] (L < 5) shares every bit above 6(L+1) with elapsed_ and its slot
//       lies strictly after elapsed_'s slot at that level; so every occupied slot of level L
//       is reached before any occupied slot of level L+1 (next_slot() takes the lowest level).
//   I3  A node's slot starts at or before its expiry tick. Lazy extension (arm() to a later
//       time) only raises `when`, so I3 keeps holding and the node is re-bucketed, not fired,
//       when its old slot is reached.
//   I4  size_ counts the nodes in slots_, due_, deferred_ and running_.
//
// A fired node is unlinked (next == nullptr) and its `prev` holds the wheel's mark for the
// running advance() (an odd value, never a real node address). That is how arm() recognises
// a node that already fired in this advance() and defers it to the next one, instead of
// letting a callback that re-arms itself at or before now spin advance() forever.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "../poller/timer_node.h"  // TimerNode: embedded in PollDesc, so it lives in poller/

namespace ringpoll {

class TimerWheel {
 public:
  static constexpr int kLevelBits = 6;  // 64 slots: one uint64_t occupancy bitmap a level
  static constexpr int kSlots = 1 << kLevelBits;
  static constexpr int kLevels = 6;  // 2^36 ticks: 2.2 years at 1 ms, 8 days at 10 us
  // Finer ticks buy nothing: a shard's loop turn (poll, run tasks) takes microseconds, so it
  // could not advance the wheel that often (DESIGN.md: "down to tens of us").
  static constexpr int64_t kMinTickNs = 10'000;
  static constexpr int64_t kDefaultTickNs = 1'000'000;  // 1 ms: a socket deadline's grain

  explicit TimerWheel(int64_t tick_ns = kDefaultTickNs, int64_t now_ns = 0) noexcept
      : tick_(static_cast<uint64_t>(tick_ns)), now_ns_(now_ns) {
    if (tick_ns < kMinTickNs) die("TimerWheel: tick_ns must be >= 10'000 ns");
    if (now_ns < 0) die("TimerWheel: now_ns must be >= 0 (CLOCK_MONOTONIC)");
    elapsed_ = static_cast<uint64_t>(now_ns) / tick_;
    for (auto& level : slots_) {
      for (auto& slot : level) {
        for (TimerNode& head : slot) list_init(&head);
      }
    }
    list_init(&due_);
    list_init(&deferred_);
    for (TimerNode& head : running_) list_init(&head);
  }
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // Arm `n` to fire at absolute `when` (ns). A linked node pushed later is one store (the
  // proxy idle-timeout refresh): it stays in its slot and is re-bucketed when that slot is
  // reached. Otherwise the node is unlinked (O(1)) and inserted. `when <= now_ns()` makes it
  // due at the next advance(); from inside a callback, due in the running advance() unless
  // the node already fired in it (then at the next one). Allocates nothing.
  void arm(TimerNode* n, int64_t when) noexcept {
    if (n->linked()) {
      if (when >= n->when) [[likely]] {
        n->when = when;
        return;
      }
      list_unlink(n);
    } else {
      if (when <= now_ns_ && in_advance_ && n->prev == fire_mark()) {
        n->when = when;
        list_link_tail(&deferred_, n);
        ++size_;
        return;
      }
      ++size_;
    }
    n->when = when;
    if (when <= now_ns_) {
      list_link_tail(&due_, n);
      return;
    }
    insert(n, expiry_tick(when));
  }

  // O(1) unlink; no-op if not linked.
  void cancel(TimerNode* n) noexcept {
    if (!n->linked()) return;
    list_unlink(n);
    n->next = nullptr;
    n->prev = nullptr;
    --size_;
  }

  // Fire every node whose expiry tick has been reached (ceil(when / tick) * tick <= now_ns)
  // and every node armed at or before now_ns() (see arm()), so n->when <= now_ns whenever
  // fn(n) runs and no node is late by a tick or more. Returns the number fired.
  //
  // Order: slots are visited in non-decreasing order of their start; nodes that share a slot
  // fire together in unspecified order (a coarse slot reached by a large jump fires all its
  // due nodes at once). A node found in a reached slot before its expiry tick (lazily
  // extended, or in a coarse slot) is re-bucketed instead.
  //
  // Callbacks: each node is unlinked before fn(node) runs and its slot is detached first, so
  // fn may arm or cancel any node. A node fn arms at or before now_ns fires in this same call,
  // unless it already fired in this call: then it is due at the next advance(), so a callback
  // that re-arms itself at <= now cannot spin. Known gap: a callback that arms an already
  // fired node later and then earlier again, in the same call, is not recognised (it fires
  // again in this call). If fn throws, every pending node is kept, due at the next advance().
  //
  // now_ns going backwards is treated as now_ns(). Not reentrant (stops the process).
  template <class Fn>
  size_t advance(int64_t now_ns, Fn&& fn) {
    if (in_advance_) die("TimerWheel: advance() called from inside an advance() callback");
    if (now_ns < now_ns_) now_ns = now_ns_;
    now_ns_ = now_ns;
    const uint64_t target = static_cast<uint64_t>(now_ns) / tick_;
    // Slot nodes fire by whole ticks (so lazily extended and cascaded nodes fire exactly at
    // their expiry tick, like the rest); due_ nodes were armed at or before now.
    const int64_t tick_limit = static_cast<int64_t>(target * tick_);
    AdvanceScope scope(this);
    size_t fired = 0;
    for (;;) {
      if (!list_empty(&due_)) {
        list_splice_tail(&running_[0], &due_);
        fired += run_detached(now_ns, fn);  // may re-bucket an extended node, never past now
        continue;
      }
      SlotRef next;
      if (size_ == 0 || !next_slot(&next) || next.start > target) break;
      elapsed_ = next.start;
      occupied_[next.level] &= ~(uint64_t{1} << next.slot);
      bool any = false;  // false: a stale bit, the slot was emptied by cancel
      for (int lane = 0; lane < kLanes; ++lane) {
        TimerNode* head = &slots_[next.level][next.slot][lane];
        if (list_empty(head)) continue;
        list_splice_tail(&running_[lane], head);
        any = true;
      }
      if (!any) continue;
      fired += run_detached(tick_limit, fn);
    }
    if (target > elapsed_) elapsed_ = target;
    return fired;
  }

  // The absolute ns at which advance() next has work (a fire or a cascade/re-bucket), or -1
  // if the wheel is empty. That is the start of the next occupied slot (O(levels), from the
  // bitmaps): never later than the earliest node's expiry tick ceil(when / tick) * tick, the
  // first time advance() can fire it; may be earlier (a cascade point or a stale bit).
  // now_ns() if a node is already due.
  int64_t next_deadline() const noexcept {
    if (size_ == 0) return -1;
    if (!list_empty(&due_) || !list_empty(&deferred_) || running()) return now_ns_;
    SlotRef next;
    if (!next_slot(&next)) return -1;  // unreachable while I4 holds
    if (next.start > static_cast<uint64_t>(INT64_MAX) / tick_) return INT64_MAX;
    return static_cast<int64_t>(next.start * tick_);
  }

  size_t size() const noexcept { return size_; }
  int64_t tick_ns() const noexcept { return static_cast<int64_t>(tick_); }
  int64_t now_ns() const noexcept { return now_ns_; }

  // Which level a timer expiring at tick `when_tick` goes to when the wheel stands at
  // `elapsed_tick` (when_tick >= elapsed_tick): the level of the highest bit in which the two
  // differ, so the timer shares its slot's upper bits with the current tick (I2). Differences
  // beyond the wheel's 2^36 ticks are clamped into the top level.
  static int level_for(uint64_t elapsed_tick, uint64_t when_tick) noexcept {
    uint64_t masked = (elapsed_tick ^ when_tick) | kSlotMask;
    if (masked >= kWheelTicks) masked = kWheelTicks - 1;
    const int significant = 63 - std::countl_zero(masked);
    return significant / kLevelBits;
  }

 private:
  static constexpr uint64_t kSlotMask = kSlots - 1;
  // Lists a slot keeps side by side: expiry has this many cache misses in flight at once.
  static constexpr int kLanes = 8;
  static_assert((kLanes & (kLanes - 1)) == 0, "lanes are picked with a mask");
  // Ticks the whole wheel spans; a deadline further away is clamped into the top level.
  static constexpr uint64_t kWheelTicks = uint64_t{1} << (kLevelBits * kLevels);
  static_assert(kLevelBits * kLevels < 64, "the wheel's span must fit a tick counter");

  struct SlotRef {
    int level;
    unsigned slot;
    uint64_t start;  // the tick at which advance() reaches this slot
  };

  // Clears in_advance_ and hands nodes left by a callback that threw back to due_.
  struct AdvanceScope {
    explicit AdvanceScope(TimerWheel* w) noexcept : w(w) {
      w->in_advance_ = true;
      ++w->epoch_;
    }
    ~AdvanceScope() {
      w->in_advance_ = false;
      for (TimerNode& head : w->running_) {
        if (!list_empty(&head)) list_splice_tail(&w->due_, &head);
      }
      if (!list_empty(&w->deferred_)) list_splice_tail(&w->due_, &w->deferred_);
      if (w->size_ == 0) {
        for (uint64_t& bits : w->occupied_) bits = 0;  // every bit left is stale
      }
    }
    AdvanceScope(const AdvanceScope&) = delete;
    AdvanceScope& operator=(const AdvanceScope&) = delete;
    TimerWheel* w;
  };

  [[noreturn, gnu::cold]] static void die(const char* msg) noexcept {
    std::fprintf(stderr, "%s\n", msg);
    std::abort();
  }

  // The tag left in a fired node's prev: odd, so it never equals a real node's address.
  TimerNode* fire_mark() const noexcept {
    return reinterpret_cast<TimerNode*>(static_cast<uintptr_t>((epoch_ << 1) | 1));
  }

  // ceil(when / tick) for when > 0: the first tick at which when has passed.
  uint64_t expiry_tick(int64_t when) const noexcept {
    const uint64_t w = static_cast<uint64_t>(when);
    const uint64_t q = w / tick_;
    return q + (q * tick_ != w);
  }

  // Links n (expiry tick e > elapsed_) into the slot level_for() picks.
  void insert(TimerNode* n, uint64_t e) noexcept {
    const int level = level_for(elapsed_, e);
    const unsigned slot = static_cast<unsigned>((e >> (level * kLevelBits)) & kSlotMask);
    lane_ = (lane_ + 1) & (kLanes - 1);
    list_link_tail(&slots_[level][slot][lane_], n);
    occupied_[level] |= uint64_t{1} << slot;
  }

  // The next occupied slot after elapsed_: the lowest non-empty level holds it (I2).
  bool next_slot(SlotRef* out) const noexcept {
    for (int level = 0; level < kLevels; ++level) {
      const uint64_t bits = occupied_[level];
      if (bits == 0) continue;
      const int shift = level * kLevelBits;
      const unsigned pos = static_cast<unsigned>((elapsed_ >> shift) & kSlotMask);
      const unsigned from = (pos + 1) & kSlotMask;
      const unsigned slot = (from + std::countr_zero(std::rotr(bits, static_cast<int>(from)))) &
                            static_cast<unsigned>(kSlotMask);
      const uint64_t level_span = uint64_t{1} << (shift + kLevelBits);
      uint64_t start = (elapsed_ & ~(level_span - 1)) + (uint64_t{slot} << shift);
      // Only a clamped top-level node can sit at or behind the current position: its slot
      // comes round again one level span later.
      if (start <= elapsed_) start += level_span;
      *out = SlotRef{level, slot, start};
      return true;
    }
    return false;
  }

  // Fires every node in running_ with when <= limit and re-buckets the rest (their expiry
  // tick is then past the advance's target, I1). Takes one node from each lane in turn, and
  // always the head of its lane, so fn may cancel or re-arm any node still in running_.
  template <class Fn>
  size_t run_detached(int64_t limit, Fn& fn) {
    size_t fired = 0;
    TimerNode* const mark = fire_mark();
    for (bool any = true; any;) {
      any = false;
      for (TimerNode& head : running_) {
        TimerNode* n = head.next;
        if (n == &head) continue;
        any = true;
        TimerNode* after = n->next;
        // Start fetching this lane's next node now; it is needed a whole round later.
        __builtin_prefetch(after, 1);
        head.next = after;
        after->prev = &head;
        if (n->when <= limit) {
          n->next = nullptr;
          n->prev = mark;
          --size_;
          ++fired;
          fn(n);
        } else {
          insert(n, expiry_tick(n->when));  // lazily extended, or reached a coarse slot early
        }
      }
    }
    return fired;
  }

  bool running() const noexcept {
    for (const TimerNode& head : running_) {
      if (!list_empty(&head)) return true;
    }
    return false;
  }

  static void list_init(TimerNode* head) noexcept { head->next = head->prev = head; }
  static bool list_empty(const TimerNode* head) noexcept { return head->next == head; }
  static void list_link_tail(TimerNode* head, TimerNode* n) noexcept {
    TimerNode* last = head->prev;
    n->next = head;
    n->prev = last;
    last->next = n;
    head->prev = n;
  }
  static void list_unlink(TimerNode* n) noexcept {
    n->prev->next = n->next;
    n->next->prev = n->prev;
  }
  // Moves every node of `from` (non-empty) to the tail of `to`; `from` is left empty.
  static void list_splice_tail(TimerNode* to, TimerNode* from) noexcept {
    TimerNode* first = from->next;
    TimerNode* last = from->prev;
    TimerNode* tail = to->prev;
    tail->next = first;
    first->prev = tail;
    last->next = to;
    to->prev = last;
    list_init(from);
  }

  uint64_t tick_;
  uint64_t elapsed_ = 0;
  int64_t now_ns_;
  size_t size_ = 0;
  uint64_t epoch_ = 0;  // advance() calls so far: names the fire mark of the running one
  bool in_advance_ = false;
  uint64_t occupied_[kLevels] = {};
  TimerNode due_;
  TimerNode deferred_;
  unsigned lane_ = 0;  // the lane the last insert used
  TimerNode running_[kLanes];
  TimerNode slots_[kLevels][kSlots][kLanes];
};

}  // namespace ringpoll
