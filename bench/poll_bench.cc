// Micro-benchmarks of the poller core, each beside a baseline in the same binary:
//   PollDesc park/unpark round trip   vs a mutex-guarded wait slot
//   PollCache alloc/free              vs new/delete of the same struct
//   deadline extend / set with clock  through the PollDesc deadline logic on the wheel
#include <benchmark/benchmark.h>

#include <mutex>
#include <random>
#include <vector>

#include "engine/clock.h"
#include "engine/deadline.h"
#include "engine/scheduler.h"
#include "epoll/epoll_poller.h"
#include "poller/poll_cache.h"

namespace ringpoll {
namespace {

// One park/unpark: the waiter prepares and commits its park, readiness unblocks it, the
// waiter resumes and consumes the notification (netpollblock + netpollready).
void BM_PollDesc_ParkUnpark(benchmark::State& st) {
  PollCache c(-1);
  PollDesc* pd = c.alloc();
  deadline_open(pd, 3);
  TaskNode node;
  TaskList out;
  for (auto _ : st) {
    if (pd->park(Mode::kRead, &node, false).state != PollDesc::Parking::kParked) std::abort();
    pd->ready(Mode::kRead, out);
    benchmark::DoNotOptimize(out.pop_front());
    if (pd->woken(Mode::kRead, false) != PollError::kNone) std::abort();
  }
  st.SetItemsProcessed(st.iterations());
  pd->closing = true;
  c.free(pd);
}
BENCHMARK(BM_PollDesc_ParkUnpark);

// Baseline: the same protocol with a mutex around a plain slot.
void BM_MutexSlot_ParkUnpark(benchmark::State& st) {
  std::mutex mu;
  TaskNode* slot = nullptr;
  bool ready = false;
  TaskNode node;
  for (auto _ : st) {
    {
      std::lock_guard<std::mutex> l(mu);
      slot = &node;
    }
    TaskNode* woken;
    {
      std::lock_guard<std::mutex> l(mu);
      woken = slot;
      slot = nullptr;
      ready = true;
    }
    benchmark::DoNotOptimize(woken);
    {
      std::lock_guard<std::mutex> l(mu);
      if (!ready) std::abort();
      ready = false;
    }
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_MutexSlot_ParkUnpark);

// The full round trip through a coroutine: park in Scheduler::wait, readiness, resume.
Task<void> waiter_loop(Scheduler<EpollPoller>* s, PollDesc* pd, const bool* stop) {
  while (!*stop) {
    (void)co_await s->wait(pd, Mode::kRead);
  }
}
void BM_Coroutine_ParkUnpark(benchmark::State& st) {
  Scheduler<EpollPoller> s;
  if (!s.start().ok()) {
    st.SkipWithError("epoll init failed");
    return;
  }
  PollDesc* pd = s.cache().alloc();
  deadline_open(pd, 3);
  bool stop = false;
  s.spawn(waiter_loop(&s, pd, &stop));
  s.run_ready();  // parks
  TaskList out;
  for (auto _ : st) {
    pd->ready(Mode::kRead, out);
    s.make_ready(out);
    s.run_ready();  // resumes, loops, parks again
  }
  st.SetItemsProcessed(st.iterations());
  stop = true;
  pd->ready(Mode::kRead, out);
  s.make_ready(out);
  s.run_ready();
}
BENCHMARK(BM_Coroutine_ParkUnpark);

// Alloc/free in batches of 64 (a burst of accepts, then closes).
constexpr int kBatch = 64;
void BM_PollCache_AllocFree(benchmark::State& st) {
  PollCache c(PollCache::current_numa_node());
  PollDesc* pds[kBatch];
  for (auto _ : st) {
    for (auto& p : pds) p = c.alloc();
    benchmark::DoNotOptimize(pds);
    for (auto* p : pds) c.free(p);
  }
  st.SetItemsProcessed(st.iterations() * kBatch);
}
BENCHMARK(BM_PollCache_AllocFree);

void BM_NewDelete_AllocFree(benchmark::State& st) {
  PollDesc* pds[kBatch];
  for (auto _ : st) {
    for (auto& p : pds) p = new PollDesc();
    benchmark::DoNotOptimize(pds);
    for (auto* p : pds) delete p;
  }
  st.SetItemsProcessed(st.iterations() * kBatch);
}
BENCHMARK(BM_NewDelete_AllocFree);

// Deadline logic through the PollDesc (rd/rseq/info) on a wheel holding 10k other
// deadlines: the per-read idle-timeout refresh, and the same with the clock read.
struct DeadlineFixture {
  PollCache cache{-1};
  TimerWheel wheel{1'000'000, mono_now_ns()};
  std::vector<PollDesc*> others;
  PollDesc* pd;
  TaskList woken;
  DeadlineFixture() {
    std::mt19937_64 rng(7);
    const int64_t now = mono_now_ns();
    for (int i = 0; i < 10000; ++i) {
      PollDesc* o = cache.alloc();
      deadline_open(o, i);
      deadline_set_at(o, now + 1'000'000'000 + static_cast<int64_t>(rng() % 60'000'000'000),
                      Mode::kRead, now, wheel, woken);
      others.push_back(o);
    }
    pd = cache.alloc();
    deadline_open(pd, 99999);
  }
};

void BM_Deadline_ExtendHot(benchmark::State& st) {
  DeadlineFixture f;
  const int64_t now = mono_now_ns();
  int64_t d = now + 30'000'000'000;
  deadline_set_at(f.pd, d, Mode::kRead, now, f.wheel, f.woken);
  for (auto _ : st) {
    d += 1000;
    deadline_set_at(f.pd, d, Mode::kRead, now, f.wheel, f.woken);
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_Deadline_ExtendHot);

void BM_Deadline_SetWithClock(benchmark::State& st) {
  DeadlineFixture f;
  for (auto _ : st) {
    const int64_t now = mono_now_ns();
    deadline_set_at(f.pd, now + 30'000'000'000, Mode::kRead, now, f.wheel, f.woken);
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_Deadline_SetWithClock);

}  // namespace
}  // namespace ringpoll
