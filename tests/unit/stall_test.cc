// The stall detector (SchedulerOptions::stall_threshold_ns, engine/stall.h) on a running
// engine: a task that keeps its shard from polling past the threshold is counted once and
// logged by name; a loop that polls in time, or a detector that is off, counts nothing.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "engine/engine.h"
#include "epoll/epoll_poller.h"

namespace ringpoll::stall_test {

using E = Engine<EpollPoller>;

// The detector names this coroutine from the test binary's symbol table.
Task<void> hog_the_shard_for_stall_test(int64_t spin_ns) {
  co_await E::current()->sched().yield();  // resumed from the run queue, by its own frame
  const int64_t end = mono_now_ns() + spin_ns;
  while (mono_now_ns() < end) {
  }
}

// Spins for spin_ns in slices of slice_ns, yielding between them.
Task<void> share_the_shard(int64_t spin_ns, int64_t slice_ns) {
  for (int64_t done = 0; done < spin_ns; done += slice_ns) {
    co_await E::current()->sched().yield();
    const int64_t end = mono_now_ns() + slice_ns;
    while (mono_now_ns() < end) {
    }
  }
}

EngineOptions one_shard(int64_t threshold_ns, int fairness_batch = 61) {
  EngineOptions o;
  o.shards = 1;
  o.pin = false;
  o.sched.stall_threshold_ns = threshold_ns;
  o.sched.fairness_batch = fairness_batch;
  return o;
}

constexpr int64_t kMs = 1'000'000;

// The shard's stall count once it is non-zero, or 0 after `ms`.
uint64_t stalls_within(E& e, int ms) {
  uint64_t n = 0;
  for (int i = 0; i < ms && n == 0; ++i) {
    n = E::call(e.shard(0), [] { return E::current()->sched().stalls(); });
    if (n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return n;
}

TEST(StallDetector, ATaskThatHogsTheShardIsCountedOnceAndLoggedByName) {
  E e(one_shard(100 * kMs));
  ASSERT_TRUE(e.start().ok());
  testing::internal::CaptureStderr();
  E::run_task(e.shard(0), [] { return hog_the_shard_for_stall_test(400 * kMs); });
  // The engine keeps serving: a call after the stall is answered.
  const uint64_t stalls = E::call(e.shard(0), [] { return E::current()->sched().stalls(); });
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(stalls, 1u) << log;
  EXPECT_NE(log.find("ringpoll: stall: shard 0 did not poll for "), std::string::npos) << log;
  EXPECT_NE(log.find("hog_the_shard_for_stall_test"), std::string::npos) << log;
  e.stop();
  e.join();
}

TEST(StallDetector, InboxJobsThatHogTheShardAreCountedToo) {
  E e(one_shard(100 * kMs));
  ASSERT_TRUE(e.start().ok());
  testing::internal::CaptureStderr();
  E::call(e.shard(0), [] {
    const int64_t end = mono_now_ns() + 300 * kMs;
    while (mono_now_ns() < end) {
    }
  });
  // The job's caller may hear back before the loop checks the time after its inbox (a
  // call's reply is sent from inside the job): ask until the count arrives, 2 s at most.
  const uint64_t stalls = stalls_within(e, 2000);
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(stalls, 1u) << log;
  EXPECT_NE(log.find("running the shard loop (inbox jobs, timers)"), std::string::npos) << log;
  e.stop();
  e.join();
}

TEST(StallDetector, ALoopThatPollsInTimeCountsNothing) {
  // 300 ms of work in 5 ms slices with a poll after every task (fairness_batch 1): the
  // loop never goes 100 ms without polling.
  E e(one_shard(100 * kMs, 1));
  ASSERT_TRUE(e.start().ok());
  E::run_task(e.shard(0), [] { return share_the_shard(300 * kMs, 5 * kMs); });
  EXPECT_EQ(E::call(e.shard(0), [] { return E::current()->sched().stalls(); }), 0u);
  e.stop();
  e.join();
}

TEST(StallDetector, OffCountsNothing) {
  E e(one_shard(0));
  ASSERT_TRUE(e.start().ok());
  E::run_task(e.shard(0), [] { return hog_the_shard_for_stall_test(300 * kMs); });
  EXPECT_EQ(E::call(e.shard(0), [] { return E::current()->sched().stalls(); }), 0u);
  e.stop();
  e.join();
}

}  // namespace ringpoll::stall_test
