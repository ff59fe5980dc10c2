#pragma once
// HeapTimers: the baseline the timer wheel is measured against. A per-P 4-ary min-heap of
// timer pointers with the lazy-modify protocol of Go 1.14-1.22 (runtime/time.go), written
// from that design for the benchmarks only; nothing in the library uses it.
//
// Go's status machine (the transitions this file implements; Go keeps the table above
// its timer code, we keep it beside the constants):
//
//   from                     operation            to
//   kNoStatus / kRemoved     add (modtimer)       kWaiting           pushed on the heap
//   kWaiting / kModifiedX    modify, later        kModifiedLater     only nextwhen is stored
//   kWaiting / kModifiedX    modify, earlier      kModifiedEarlier   nextwhen + earliest hint
//   kDeleted                 modify               kModifiedLater/Earlier (still in the heap)
//   kWaiting / kModifiedX    delete               kDeleted           stays in the heap
//   kModifiedX (at top)      run / clean          kMoving -> kWaiting  re-sifted at nextwhen
//   kDeleted (at top)        run / clean          kRemoving -> kRemoved popped
//   kWaiting (at top, due)   run                  kRunning -> kNoStatus popped, callback
//
// Every status change is a compare-and-swap and the per-P counters are atomic, because in
// Go another P may modify or delete a timer it does not own. `Atomic = false` keeps the same
// protocol with plain loads and stores, to show what the lazy heap costs without them.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace ringpoll::bench {

enum HeapTimerStatus : uint32_t {
  kNoStatus,
  kWaiting,
  kRunning,
  kDeleted,
  kRemoving,
  kRemoved,
  kModifying,
  kModifiedEarlier,
  kModifiedLater,
  kMoving,
};

// A word that is atomic in Go's protocol, or plain for the non-atomic variant.
template <class T, bool Atomic>
struct Word {
  std::atomic<T> v{};
  T load() const noexcept { return v.load(std::memory_order_acquire); }
  void store(T x) noexcept { v.store(x, std::memory_order_release); }
  bool cas(T old, T x) noexcept { return v.compare_exchange_strong(old, x); }
  void add(T d) noexcept { v.fetch_add(d); }
};
template <class T>
struct Word<T, false> {
  T v{};
  T load() const noexcept { return v; }
  void store(T x) noexcept { v = x; }
  bool cas(T old, T x) noexcept {
    if (v != old) return false;
    v = x;
    return true;
  }
  void add(T d) noexcept { v += d; }
};

template <bool Atomic>
struct HeapTimer {
  int64_t when = 0;
  int64_t nextwhen = 0;
  Word<uint32_t, Atomic> status;
};

template <bool Atomic = true>
class HeapTimers {
 public:
  using Timer = HeapTimer<Atomic>;
  static constexpr size_t kArity = 4;  // Go's timer heap is 4-ary: shallower, cache-friendlier

  // Go's modtimer: arm a new timer, re-arm a removed or deleted one, or change a pending one
  // (later: one store of nextwhen plus the status CAS; earlier: also the earliest hint).
  void modify(Timer* t, int64_t when) noexcept {
    bool was_removed = false;
    for (;;) {
      const uint32_t s = t->status.load();
      if (s == kWaiting || s == kModifiedEarlier || s == kModifiedLater) {
        if (t->status.cas(s, kModifying)) break;
      } else if (s == kNoStatus || s == kRemoved) {
        if (t->status.cas(s, kModifying)) {
          was_removed = true;
          break;
        }
      } else if (s == kDeleted) {
        if (t->status.cas(s, kModifying)) {
          deleted_.add(static_cast<uint32_t>(-1));
          break;
        }
      }
      // kRunning / kMoving / kRemoving / kModifying belong to another P in Go; never here.
    }
    if (was_removed) {
      t->when = when;
      clean();
      push(t);
      t->status.cas(kModifying, kWaiting);
      return;
    }
    t->nextwhen = when;
    uint32_t next_status = kModifiedLater;
    if (when < t->when) {
      next_status = kModifiedEarlier;
      update_modified_earliest(when);
    }
    t->status.cas(kModifying, next_status);
  }

  // Go's deltimer: mark deleted; the heap entry goes when it reaches the top or on cleanup.
  bool remove(Timer* t) noexcept {
    for (;;) {
      const uint32_t s = t->status.load();
      if (s == kWaiting || s == kModifiedLater || s == kModifiedEarlier) {
        if (t->status.cas(s, kModifying)) {
          deleted_.add(1);
          t->status.cas(kModifying, kDeleted);
          return true;
        }
      } else {
        return false;  // already deleted, removed or never added
      }
    }
  }

  // Go's checkTimers for one P: adjust modified-earlier timers, run every due timer, and
  // clear deleted ones when they are more than a quarter of the heap. Returns timers run.
  template <class Fn>
  size_t run(int64_t now, Fn&& fn) {
    size_t ran = 0;
    adjust(now);
    while (!heap_.empty()) {
      if (heap_[0]->when > now) break;
      const int r = run_top(now, fn, &ran);
      if (r != 0) break;
    }
    if (deleted_.load() > heap_.size() / 4) clear_deleted();
    return ran;
  }

  // Go's clearDeletedTimers: drop every deleted timer, apply pending modifications, rebuild.
  void clear_deleted() noexcept {
    size_t out = 0;
    for (Timer* t : heap_) {
      const uint32_t s = t->status.load();
      if (s == kDeleted) {
        t->status.cas(kDeleted, kRemoving);
        t->status.cas(kRemoving, kRemoved);
        deleted_.add(static_cast<uint32_t>(-1));
        continue;
      }
      if (s == kModifiedEarlier || s == kModifiedLater) {
        t->status.cas(s, kMoving);
        t->when = t->nextwhen;
        t->status.cas(kMoving, kWaiting);
      }
      heap_[out++] = t;
    }
    heap_.resize(out);
    modified_earliest_.store(0);
    for (size_t i = heap_.size() / kArity + 1; i-- > 0;) sift_down(i);
    update_timer0();
  }

  void reserve(size_t n) {
    heap_.reserve(n);
    moved_.reserve(n);
  }
  size_t heap_size() const noexcept { return heap_.size(); }
  uint32_t deleted() const noexcept { return deleted_.load(); }

 private:
  // Go's runtimer for the top timer: 0 = ran or changed the heap, keep going; else stop.
  template <class Fn>
  int run_top(int64_t now, Fn& fn, size_t* ran) {
    for (;;) {
      Timer* t = heap_[0];
      const uint32_t s = t->status.load();
      switch (s) {
        case kWaiting:
          if (t->when > now) return 1;
          if (!t->status.cas(s, kRunning)) continue;
          pop_top();
          t->status.cas(kRunning, kNoStatus);
          ++*ran;
          fn(t);
          return 0;
        case kDeleted:
          if (!t->status.cas(s, kRemoving)) continue;
          pop_top();
          t->status.cas(kRemoving, kRemoved);
          deleted_.add(static_cast<uint32_t>(-1));
          if (heap_.empty()) return -1;
          break;
        case kModifiedEarlier:
        case kModifiedLater:
          if (!t->status.cas(s, kMoving)) continue;
          t->when = t->nextwhen;
          pop_top();
          push(t);
          t->status.cas(kMoving, kWaiting);
          break;
        default:
          return 1;  // another P's transition in progress (never here)
      }
      if (heap_.empty() || heap_[0]->when > now) return 1;
    }
  }

  // Go's cleantimers: before an add, drop deleted and re-sift modified timers at the top.
  void clean() noexcept {
    while (!heap_.empty()) {
      Timer* t = heap_[0];
      const uint32_t s = t->status.load();
      if (s == kDeleted) {
        t->status.cas(s, kRemoving);
        pop_top();
        t->status.cas(kRemoving, kRemoved);
        deleted_.add(static_cast<uint32_t>(-1));
      } else if (s == kModifiedEarlier || s == kModifiedLater) {
        t->status.cas(s, kMoving);
        t->when = t->nextwhen;
        pop_top();
        push(t);
        t->status.cas(kMoving, kWaiting);
      } else {
        return;
      }
    }
  }

  // Go's adjusttimers: once the earliest "modified earlier" time has come, walk the heap,
  // drop deleted timers and move every modified one to its new place.
  void adjust(int64_t now) noexcept {
    const int64_t first = modified_earliest_.load();
    if (first == 0 || first > now) return;
    modified_earliest_.store(0);
    moved_.clear();
    for (size_t i = 0; i < heap_.size(); ++i) {
      Timer* t = heap_[i];
      const uint32_t s = t->status.load();
      if (s == kDeleted) {
        t->status.cas(s, kRemoving);
        i = remove_at(i) - 1;
        t->status.cas(kRemoving, kRemoved);
        deleted_.add(static_cast<uint32_t>(-1));
      } else if (s == kModifiedEarlier || s == kModifiedLater) {
        t->status.cas(s, kMoving);
        t->when = t->nextwhen;
        i = remove_at(i) - 1;
        moved_.push_back(t);
      }
    }
    for (Timer* t : moved_) {
      push(t);
      t->status.cas(kMoving, kWaiting);
    }
  }

  void update_modified_earliest(int64_t when) noexcept {
    for (;;) {
      const int64_t old = modified_earliest_.load();
      if (old != 0 && old < when) return;
      if (modified_earliest_.cas(old, when)) return;
    }
  }

  void push(Timer* t) {
    heap_.push_back(t);
    num_timers_.add(1);
    sift_up(heap_.size() - 1);
    if (heap_[0] == t) update_timer0();
  }
  void pop_top() noexcept {
    Timer* last = heap_.back();
    heap_.pop_back();
    num_timers_.add(static_cast<uint32_t>(-1));
    if (!heap_.empty()) {
      heap_[0] = last;
      sift_down(0);
    }
    update_timer0();
  }
  // Go's dodeltimer: remove index i; returns the smallest index whose entry changed (the
  // caller's walk resumes there).
  size_t remove_at(size_t i) noexcept {
    const size_t last = heap_.size() - 1;
    size_t smallest_changed = i;
    if (i != last) heap_[i] = heap_[last];
    heap_.pop_back();
    num_timers_.add(static_cast<uint32_t>(-1));
    if (i != last) {
      smallest_changed = sift_up(i);
      sift_down(i);
    }
    if (i == 0) update_timer0();
    return smallest_changed;
  }
  void update_timer0() noexcept { timer0_when_.store(heap_.empty() ? 0 : heap_[0]->when); }

  size_t sift_up(size_t i) noexcept {
    Timer* t = heap_[i];
    const int64_t when = t->when;
    while (i > 0) {
      const size_t p = (i - 1) / kArity;
      if (when >= heap_[p]->when) break;
      heap_[i] = heap_[p];
      i = p;
    }
    heap_[i] = t;
    return i;
  }
  void sift_down(size_t i) noexcept {
    const size_t n = heap_.size();
    if (i >= n) return;
    Timer* t = heap_[i];
    const int64_t when = t->when;
    for (;;) {
      const size_t c = i * kArity + 1;
      if (c >= n) break;
      size_t best = c;
      int64_t best_when = heap_[c]->when;
      const size_t end = c + kArity < n ? c + kArity : n;
      for (size_t k = c + 1; k < end; ++k) {
        const int64_t w = heap_[k]->when;
        if (w < best_when) {
          best = k;
          best_when = w;
        }
      }
      if (best_when >= when) break;
      heap_[i] = heap_[best];
      i = best;
    }
    heap_[i] = t;
  }

  std::vector<Timer*> heap_;
  std::vector<Timer*> moved_;  // adjust()'s scratch list, kept to avoid reallocating
  Word<uint32_t, Atomic> deleted_;
  Word<uint32_t, Atomic> num_timers_;
  Word<int64_t, Atomic> modified_earliest_;
  Word<int64_t, Atomic> timer0_when_;
};

}  // namespace ringpoll::bench
