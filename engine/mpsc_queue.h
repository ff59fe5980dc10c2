#pragma once
// MpscQueue<T>: a bounded multi-producer, single-consumer ring (Vyukov's bounded queue
// with per-cell sequence numbers). try_push fails when full — the caller applies
// backpressure, nothing is dropped; only the owning shard pops.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "../poller/errors.h"

namespace ringpoll {

template <class T>
class MpscQueue {
 public:
  explicit MpscQueue(size_t capacity) {
    size_t cap = 2;
    while (cap < capacity) cap <<= 1;
    cells_ = std::make_unique<Cell[]>(cap);
    mask_ = cap - 1;
    for (size_t i = 0; i < cap; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }
  MpscQueue(const MpscQueue&) = delete;
  MpscQueue& operator=(const MpscQueue&) = delete;

  // Any thread. False when the queue is full.
  bool try_push(const T& v) noexcept {
    size_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      Cell& c = cells_[pos & mask_];
      const size_t seq = c.seq.load(std::memory_order_acquire);
      const auto dif = static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos);
      if (dif == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          c.value = v;
          // Publishes the value. seq_cst, not just release: the producer next loads the
          // consumer's `sleeping` flag (Shard::notify), and the consumer stores `sleeping`
          // then checks has_item(). With a release store the producer's load could be
          // ordered before this store (x86 store buffer: StoreLoad), both sides would miss
          // each other, and the job would sit in a sleeping shard's inbox with no wake:
          // seen once as a hang of the cross-shard round-trip benchmark.
          c.seq.store(pos + 1, std::memory_order_seq_cst);
          return true;
        }
      } else if (dif < 0) {
        return false;  // full
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
  }
  // The owning thread only.
  bool try_pop(T& out) noexcept {
    Cell& c = cells_[head_ & mask_];
    const size_t seq = c.seq.load(std::memory_order_acquire);
    if (static_cast<intptr_t>(seq) - static_cast<intptr_t>(head_ + 1) < 0) return false;
    out = c.value;
    c.seq.store(head_ + mask_ + 1, std::memory_order_release);
    ++head_;
    return true;
  }
  // The owning thread only: is a pushed item visible (seq_cst, pairs with the sleeping
  // flag protocol in Shard).
  bool has_item() const noexcept {
    const Cell& c = cells_[head_ & mask_];
    return static_cast<intptr_t>(c.seq.load(std::memory_order_seq_cst)) -
               static_cast<intptr_t>(head_ + 1) >=
           0;
  }
  size_t capacity() const noexcept { return mask_ + 1; }

 private:
  struct Cell {
    std::atomic<size_t> seq{0};
    T value{};
  };
  std::unique_ptr<Cell[]> cells_;
  size_t mask_ = 0;
  alignas(64) std::atomic<size_t> tail_{0};
  alignas(64) size_t head_ = 0;
};

}  // namespace ringpoll
