// Timer wheel vs Go 1.14-1.22's lazy 4-ary heap (bench/heap_timer_baseline.h).
//
// Every benchmark comes as a pair (or triple): BM_Wheel_<X>, BM_Heap_<X> (Go's protocol with
// its atomics, as Go runs it) and BM_HeapNoAtomics_<X> (the same protocol with plain loads
// and stores, to separate the data structure from Go's cross-P synchronisation). Each runs
// with kPopulation other timers armed, the idle timeouts of a busy shard. Items processed
// are timers, so the reported items/s inverts to ns per timer.
//
// Batched benchmarks (FirstArm, Cancel, Expire1M, Arm1M) time only their phase with a
// steady clock read around a whole batch (UseManualTime): the clock's cost is amortised over
// the batch, and the untimed phase (the undo) needs no PauseTiming in the loop.
#include <benchmark/benchmark.h>

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <vector>

#include "bench/heap_timer_baseline.h"
#include "engine/clock.h"
#include "engine/timer_wheel.h"

namespace ringpoll {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000 * kMs;
constexpr int64_t kStartNs = 1'000 * kSec;   // a monotonic clock some time after boot
constexpr size_t kPopulation = 10'000;       // other armed timers: a busy shard's sockets
constexpr int64_t kIdleTimeout = 30 * kSec;  // what a proxy re-arms on every read
constexpr size_t kBatch = 2'048;             // per timed batch: clock cost amortised to < 1%
constexpr size_t kMillion = 1'000'000;
constexpr int64_t kExpireSpread = 10 * kSec;  // Expire1M: deadlines spread over 10 s

// Uniform adapter over the three implementations.
struct WheelImpl {
  using Node = TimerNode;
  TimerWheel w{TimerWheel::kDefaultTickNs, kStartNs};
  void arm(Node* n, int64_t when) noexcept { w.arm(n, when); }
  void cancel(Node* n) noexcept { w.cancel(n); }
  template <class Fn>
  size_t advance(int64_t now, Fn&& fn) {
    return w.advance(now, fn);
  }
  void after_cancel_batch() noexcept {}
};

template <bool Atomic>
struct HeapImpl {
  using Node = bench::HeapTimer<Atomic>;
  bench::HeapTimers<Atomic> h;
  HeapImpl() { h.reserve(2 * kMillion); }
  void arm(Node* n, int64_t when) noexcept { h.modify(n, when); }
  void cancel(Node* n) noexcept { h.remove(n); }
  template <class Fn>
  size_t advance(int64_t now, Fn&& fn) {
    return h.run(now, fn);
  }
  // Go leaves deleted timers in the heap; drop them so the next arm is a real first arm.
  void after_cancel_batch() noexcept { h.clear_deleted(); }
};

// The million-timer benchmarks keep their nodes in transparent huge pages, as a server's
// descriptor slab would: with 4 KiB pages a random walk over 24 MiB of nodes pays a TLB miss
// on top of nearly every cache miss, for the wheel and the heap alike.
constexpr size_t kHugePage = size_t{2} << 20;  // x86-64 transparent huge page

template <class T>
class HugeArray {
 public:
  explicit HugeArray(size_t n) : n_(n) {
    const size_t bytes = (n * sizeof(T) + kHugePage - 1) / kHugePage * kHugePage;
    void* p = std::aligned_alloc(kHugePage, bytes);
    if (p == nullptr) throw std::bad_alloc();
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP this is ordinary memory
    data_ = static_cast<T*>(p);
    for (size_t i = 0; i < n; ++i) new (&data_[i]) T();
  }
  ~HugeArray() {
    for (size_t i = 0; i < n_; ++i) data_[i].~T();
    std::free(data_);
  }
  HugeArray(const HugeArray&) = delete;
  HugeArray& operator=(const HugeArray&) = delete;
  T& operator[](size_t i) noexcept { return data_[i]; }

 private:
  size_t n_;
  T* data_;
};

// Random deadlines in [kStartNs + lo, kStartNs + hi).
std::vector<int64_t> random_whens(size_t n, int64_t lo, int64_t hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> d(kStartNs + lo, kStartNs + hi - 1);
  std::vector<int64_t> out(n);
  for (int64_t& x : out) x = d(rng);
  return out;
}

// The background population, armed once per benchmark run.
template <class Impl>
struct Population {
  std::vector<typename Impl::Node> nodes = std::vector<typename Impl::Node>(kPopulation);
  explicit Population(Impl& impl) {
    const std::vector<int64_t> whens = random_whens(kPopulation, 1 * kSec, 60 * kSec, 1);
    for (size_t i = 0; i < kPopulation; ++i) impl.arm(&nodes[i], whens[i]);
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Push one armed timer's deadline later: the per-read idle-timeout refresh.
template <class Impl>
void ExtendHot(benchmark::State& state) {
  auto impl = std::make_unique<Impl>();
  Population<Impl> pop(*impl);
  typename Impl::Node hot;
  int64_t when = kStartNs + kIdleTimeout;
  impl->arm(&hot, when);
  for (auto _ : state) {
    when += 1'000;  // a read 1 us later pushes the deadline 1 us later
    impl->arm(&hot, when);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// The same with the clock read that precedes it in set_deadline.
template <class Impl>
void SetDeadlineWithClock(benchmark::State& state) {
  auto impl = std::make_unique<Impl>();
  Population<Impl> pop(*impl);
  typename Impl::Node hot;
  impl->arm(&hot, mono_now_ns() + kIdleTimeout);
  for (auto _ : state) {
    impl->arm(&hot, mono_now_ns() + kIdleTimeout);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// Arm a timer that is not armed (a new connection's first deadline).
template <class Impl>
void FirstArm(benchmark::State& state) {
  auto impl = std::make_unique<Impl>();
  Population<Impl> pop(*impl);
  std::vector<typename Impl::Node> batch(kBatch);
  const std::vector<int64_t> whens = random_whens(kBatch, 1 * kSec, 60 * kSec, 2);
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < kBatch; ++i) impl->arm(&batch[i], whens[i]);
    state.SetIterationTime(seconds_since(t0));
    for (size_t i = 0; i < kBatch; ++i) impl->cancel(&batch[i]);
    impl->after_cancel_batch();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBatch));
}

// Cancel an armed timer (a connection closed before its deadline).
template <class Impl>
void Cancel(benchmark::State& state) {
  auto impl = std::make_unique<Impl>();
  Population<Impl> pop(*impl);
  std::vector<typename Impl::Node> batch(kBatch);
  const std::vector<int64_t> whens = random_whens(kBatch, 1 * kSec, 60 * kSec, 3);
  for (auto _ : state) {
    for (size_t i = 0; i < kBatch; ++i) impl->arm(&batch[i], whens[i]);
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < kBatch; ++i) impl->cancel(&batch[i]);
    state.SetIterationTime(seconds_since(t0));
    impl->after_cancel_batch();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBatch));
}

// A million timers at random deadlines over 10 s, then the clock in 1 ms steps until all
// fired. The timed phase is the expiry (with its cascades); arming is Arm1M.
template <class Impl>
void Expire1M(benchmark::State& state) {
  auto impl = std::make_unique<Impl>();
  HugeArray<typename Impl::Node> nodes(kMillion);
  std::vector<int64_t> offsets(kMillion);
  std::mt19937_64 rng(4);
  for (int64_t& x : offsets) x = 1 + static_cast<int64_t>(rng() % kExpireSpread);
  int64_t base = kStartNs;
  double expire_seconds = 0;
  size_t fired_total = 0;
  for (auto _ : state) {
    for (size_t i = 0; i < kMillion; ++i) impl->arm(&nodes[i], base + offsets[i]);
    size_t fired = 0;
    auto count = [&fired](auto*) { ++fired; };
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t t = base + kMs; t <= base + kExpireSpread; t += kMs) impl->advance(t, count);
    const double s = seconds_since(t0);
    state.SetIterationTime(s);
    expire_seconds += s;
    if (fired != kMillion) state.SkipWithError("not every timer fired");
    fired_total += fired;
    base += kExpireSpread + kSec;
  }
  state.SetItemsProcessed(static_cast<int64_t>(fired_total));
  state.counters["ns_per_timer"] = expire_seconds * 1e9 / static_cast<double>(fired_total);
}

// Arming a million fresh timers (random deadlines over 10 s) into an empty structure.
template <class Impl>
void Arm1M(benchmark::State& state) {
  HugeArray<typename Impl::Node> nodes(kMillion);
  std::vector<int64_t> offsets(kMillion);
  std::mt19937_64 rng(5);
  for (int64_t& x : offsets) x = 1 + static_cast<int64_t>(rng() % kExpireSpread);
  double arm_seconds = 0;
  for (auto _ : state) {
    auto impl = std::make_unique<Impl>();
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < kMillion; ++i) impl->arm(&nodes[i], kStartNs + offsets[i]);
    const double s = seconds_since(t0);
    state.SetIterationTime(s);
    arm_seconds += s;
    for (size_t i = 0; i < kMillion; ++i) impl->cancel(&nodes[i]);
    impl->after_cancel_batch();
  }
  const double items = static_cast<double>(state.iterations() * kMillion);
  state.SetItemsProcessed(static_cast<int64_t>(items));
  state.counters["ns_per_timer"] = arm_seconds * 1e9 / items;
}

// The clock read alone, for reading SetDeadlineWithClock: what is left is the timer's share.
void BM_ClockGettime(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(mono_now_ns());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_ClockGettime);

using GoHeap = HeapImpl<true>;
using PlainHeap = HeapImpl<false>;

// BM_Wheel_<X>, BM_Heap_<X>, BM_HeapNoAtomics_<X>.
#define RINGPOLL_TIMER_BENCH(X, ...)               \
  void BM_Wheel_##X(benchmark::State& s) {         \
    X<WheelImpl>(s);                               \
  }                                                \
  void BM_Heap_##X(benchmark::State& s) {          \
    X<GoHeap>(s);                                  \
  }                                                \
  void BM_HeapNoAtomics_##X(benchmark::State& s) { \
    X<PlainHeap>(s);                               \
  }                                                \
  BENCHMARK(BM_Wheel_##X) __VA_ARGS__;             \
  BENCHMARK(BM_Heap_##X) __VA_ARGS__;              \
  BENCHMARK(BM_HeapNoAtomics_##X) __VA_ARGS__

RINGPOLL_TIMER_BENCH(ExtendHot);
RINGPOLL_TIMER_BENCH(SetDeadlineWithClock);
RINGPOLL_TIMER_BENCH(FirstArm, ->UseManualTime());
RINGPOLL_TIMER_BENCH(Cancel, ->UseManualTime());
// A few seconds each: the million-timer runs are long enough to be stable in 2 iterations.
RINGPOLL_TIMER_BENCH(Expire1M, ->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond));
RINGPOLL_TIMER_BENCH(Arm1M, ->UseManualTime()->Iterations(2)->Unit(benchmark::kMillisecond));

}  // namespace
}  // namespace ringpoll
