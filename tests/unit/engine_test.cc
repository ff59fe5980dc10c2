// The sharded engine: shards on their own threads, cross-shard submit_to with
// backpressure, call/post from outside, stop and join. Runs under TSan in CI.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <thread>

#include "engine/poll_fd.h"
#include "epoll/epoll_poller.h"
#include "uring/uring_poller.h"

namespace ringpoll {
namespace {

template <class P>
class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
};
using EngineBackends = ::testing::Types<EpollPoller, UringPoller>;
struct Name {
  template <class P>
  static std::string GetName(int) {
    return P::kName;
  }
};
TYPED_TEST_SUITE(EngineTest, EngineBackends, Name);

bool wait_for(const std::atomic<bool>& flag, int ms) {
  for (int i = 0; i < ms && !flag.load(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return flag.load();
}

TYPED_TEST(EngineTest, ShardsRunOnTheirOwnThreadsAndCallReachesThem) {
  using E = Engine<TypeParam>;
  EngineOptions o;
  o.shards = 2;
  E e(o);
  ASSERT_TRUE(e.start().ok());
  ASSERT_EQ(e.size(), 2u);
  for (size_t i = 0; i < e.size(); ++i) {
    const int id = E::call(e.shard(i), [] { return E::current()->id(); });
    EXPECT_EQ(id, static_cast<int>(i));
  }
  EXPECT_EQ(E::current(), nullptr);  // the test thread is not a shard
  e.stop();
  e.join();
}

template <class P>
Task<void> ping_pong(typename Engine<P>::Shard* target, int rounds, std::atomic<int>* sum,
                     std::atomic<bool>* done) {
  using E = Engine<P>;
  for (int i = 0; i < rounds; ++i) {
    const int v = co_await E::submit_to(*target, [i] { return E::current()->id() * 1000 + i; });
    sum->fetch_add(v - i);
  }
  done->store(true);
}

TYPED_TEST(EngineTest, SubmitToRunsOnTheTargetAndResumesTheCaller) {
  using P = TypeParam;
  using E = Engine<P>;
  EngineOptions o;
  o.shards = 2;
  E e(o);
  ASSERT_TRUE(e.start().ok());
  std::atomic<int> sum{0};
  std::atomic<bool> done{false};
  constexpr int kRounds = 2000;
  auto* target = &e.shard(1);
  ASSERT_TRUE(E::post(e.shard(0), [&, target] {
    E::current()->sched().spawn(ping_pong<P>(target, kRounds, &sum, &done));
  }));
  ASSERT_TRUE(wait_for(done, 20000));
  EXPECT_EQ(sum.load(), kRounds * 1000);  // every call ran on shard 1
  e.stop();
  e.join();
}

TYPED_TEST(EngineTest, AFullInboxAppliesBackpressureAndDropsNothing) {
  using P = TypeParam;
  using E = Engine<P>;
  EngineOptions o;
  o.shards = 2;
  o.inbox_capacity = 2;  // 200 concurrent callers into a 2-slot inbox
  E e(o);
  ASSERT_TRUE(e.start().ok());
  constexpr int kCallers = 200;
  std::atomic<int> ran{0};
  std::atomic<int> finished{0};
  std::atomic<bool> all{false};
  auto* target = &e.shard(1);
  auto caller = [](typename E::Shard* t, std::atomic<int>* ran, std::atomic<int>* fin,
                   std::atomic<bool>* all) -> Task<void> {
    co_await E::submit_to(*t, [ran] { ran->fetch_add(1); });
    if (fin->fetch_add(1) + 1 == kCallers) all->store(true);
  };
  ASSERT_TRUE(E::post(e.shard(0), [&, target] {
    for (int i = 0; i < kCallers; ++i)
      E::current()->sched().spawn(caller(target, &ran, &finished, &all));
  }));
  ASSERT_TRUE(wait_for(all, 20000)) << finished.load() << " of " << kCallers;
  EXPECT_EQ(ran.load(), kCallers);
  e.stop();
  e.join();
}

TYPED_TEST(EngineTest, StopWakesIdleShards) {
  using E = Engine<TypeParam>;
  EngineOptions o;
  o.shards = 2;
  E e(o);
  ASSERT_TRUE(e.start().ok());
  // Both shards have nothing to do and are about to block (or blocked) in poll: each set
  // its `sleeping` flag, which it does only right before the blocking wait.
  for (int i = 0; i < 5000 && !(e.shard(0).sleeping.load() && e.shard(1).sleeping.load()); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(e.shard(0).sleeping.load() && e.shard(1).sleeping.load())
      << "the idle shards never went to sleep in poll";
  // stop() must wake them: a shard left asleep would hold join() forever, so wait for it
  // with a bound and end the process with a message instead of hanging until ctest's.
  auto stopped = std::async(std::launch::async, [&] {
    e.stop();
    e.join();
  });
  if (stopped.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    ADD_FAILURE() << "stop() left an idle shard asleep in poll: join() did not return in 5 s";
    std::fflush(nullptr);
    std::_Exit(1);
  }
}

}  // namespace
}  // namespace ringpoll

namespace ringpoll {
namespace {

// A scheduler destroyed while a task is parked in a read on a descriptor the task owns:
// the pending read's frame goes first, then the task's PollFd closes, which must not wake
// the freed waiter (ASan checks this in CI).
Task<void> owner_reader(Scheduler<EpollPoller>* s, int fd, PollDesc** pd, bool* returned) {
  PollFd<EpollPoller> f;
  if (!f.open(*s, fd).ok()) co_return;
  *pd = f.pd();
  std::array<std::byte, 8> b;
  (void)co_await f.read(b);
  *returned = true;
}

TEST(SchedulerTeardown, DestroyingASchedulerWithAParkedReaderIsSafe) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  bool returned = false;
  PollDesc* pd = nullptr;
  {
    Scheduler<EpollPoller> s;
    ASSERT_TRUE(s.start().ok());
    s.spawn(owner_reader(&s, sv[0], &pd, &returned));
    s.run_ready();
    ASSERT_NE(pd, nullptr);
    ASSERT_GT(pd->rg.load(), kPdWait);  // parked
    EXPECT_EQ(s.runnable(), 0u);
  }  // ~Scheduler destroys the parked task; its PollFd closes the socket
  EXPECT_FALSE(returned);
  char c;
  EXPECT_EQ(::recv(sv[1], &c, 1, 0), 0);  // the peer sees the close
  ::close(sv[1]);
}

}  // namespace
}  // namespace ringpoll
