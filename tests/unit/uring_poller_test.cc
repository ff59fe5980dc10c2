// io_uring readiness mode: what the conformance suite cannot see from outside — a full
// submission queue, CQ overflow on a tiny ring, re-arming a multishot poll the kernel
// ended, the eventfd wake, and the setup flags.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <span>
#include <thread>
#include <vector>

#include "support/test_env.h"

namespace ringpoll::test {
namespace {

class UringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!UringPoller::available().ok) GTEST_SKIP() << "io_uring: " << UringPoller::available().why;
  }
};

Task<void> read_into(PollFd<UringPoller>* f, char* buf, size_t len, IoResult* out, int* done) {
  *out = co_await f->read(std::span(reinterpret_cast<std::byte*>(buf), len));
  ++*done;
}

TEST_F(UringTest, TinyRingLosesNoEventOnSqFullOrCqOverflow) {
  Env<UringPoller> e;
  UringOptions o;
  o.entries = 2;  // SQ 2, CQ 4: 64 descriptors overflow both
  e.s.backend().set_options(o);
  ASSERT_TRUE(e.s.start().ok());
  constexpr int kN = 64;
  std::vector<FdPair> pairs(kN);
  std::vector<std::unique_ptr<PollFd<UringPoller>>> fds;
  std::vector<IoResult> res(kN);
  std::vector<std::array<char, 16>> bufs(kN);
  int done = 0;
  for (int i = 0; i < kN; ++i) {
    unix_pair(pairs[i]);
    fds.push_back(std::make_unique<PollFd<UringPoller>>());
    ASSERT_TRUE(fds[i]->open(e.s, pairs[i].take_a()).ok());  // 64 SQEs into a 2-entry SQ
    e.s.spawn(read_into(fds[i].get(), bufs[i].data(), bufs[i].size(), &res[i], &done));
  }
  e.settle();
  ASSERT_EQ(done, 0);
  for (int i = 0; i < kN; ++i) put(pairs[i].b, "ping");  // 64 CQEs into a 4-entry CQ
  ASSERT_TRUE(e.run_until([&] { return done == kN; })) << done << " of " << kN << " woke";
  for (int i = 0; i < kN; ++i) {
    EXPECT_TRUE(res[i].ok()) << i;
    EXPECT_EQ(std::string(bufs[i].data(), res[i].n), "ping") << i;
  }
}

TEST_F(UringTest, MultishotPollEndedByTheKernelIsReArmed) {
  Env<UringPoller> e;
  ASSERT_TRUE(e.s.start().ok());
  FdPair p;
  unix_pair(p);
  PollFd<UringPoller> f;
  ASSERT_TRUE(f.open(e.s, p.take_a()).ok());
  e.settle();
  // Cancel the multishot poll behind the poller's back: its last CQE comes without
  // IORING_CQE_F_MORE, as when the kernel ends one.
  auto& ring = e.s.backend().ring();
  io_uring_sqe* s = ring.sqe();
  io_uring_prep_cancel64(s, tag_pointer(f.pd(), f.pd()->fdseq.load()), 0);
  io_uring_sqe_set_data64(s, kUringIgnoreData);
  const uint64_t before = e.s.backend().rearms();
  ASSERT_TRUE(e.run_until([&] { return e.s.backend().rearms() > before; }, 2 * kSec));
  EXPECT_EQ(e.s.backend().rearms(), before + 1);
  // Readiness still reaches a waiter through the new poll.
  IoResult r;
  char buf[8];
  int done = 0;
  e.s.spawn(read_into(&f, buf, sizeof buf, &r, &done));
  e.settle();
  put(p.b, "again");
  ASSERT_TRUE(e.run_until([&] { return done == 1; }));
  EXPECT_EQ(std::string(buf, r.n), "again");
}

TEST_F(UringTest, EventfdWakeCoalescesAndOnlyABlockingPollDrains) {
  Env<UringPoller> e;
  UringOptions o;
  o.msg_ring_wake = false;
  e.s.backend().set_options(o);
  ASSERT_TRUE(e.s.start().ok());
  auto& b = e.s.backend();
  EXPECT_FALSE(b.ring().wake_uses_msg_ring());
  e.settle();
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&b] {
      for (int i = 0; i < 100; ++i) b.wake();
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(b.wakes_written(), 1u);
  for (int i = 0; i < 5; ++i) e.s.poll_io(0);  // sees the wake CQE, must not drain it
  b.wake();
  EXPECT_EQ(b.wakes_written(), 1u);
  const int64_t t0 = mono_now_ns();
  e.s.poll_io(5 * kSec);  // returns at once: the wake is still pending
  EXPECT_LT(mono_now_ns() - t0, 2 * kSec);
  b.wake();
  EXPECT_EQ(b.wakes_written(), 2u);
  e.s.poll_io(5 * kSec);
  EXPECT_LT(mono_now_ns() - t0, 4 * kSec);
}

// A process that forks after one of its threads woke a ring (a pre-fork server; the
// benchmark's fresh-process measurements) must still wake rings of its own in the child.
// The thread's MSG_RING sender ring came from the parent: shared memory, and as a
// SINGLE_ISSUER ring it refuses the child's task (EEXIST), which used to be fatal.
TEST_F(UringTest, MsgRingWakeWorksInAForkedChild) {
  {
    Env<UringPoller> e;
    ASSERT_TRUE(e.s.start().ok());
    if (!e.s.backend().ring().wake_uses_msg_ring()) GTEST_SKIP() << "no MSG_RING wake here";
    e.s.backend().wake();  // this thread's sender ring exists from here on
    e.s.poll_io(5 * kSec);
    ASSERT_EQ(e.s.backend().wakes_written(), 1u);
  }
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Env<UringPoller> c;
    if (!c.s.start().ok()) _exit(2);
    c.s.backend().wake();
    const int64_t t0 = mono_now_ns();
    c.s.poll_io(5 * kSec);  // returns at once: the wake arrived
    const bool ok = c.s.backend().wakes_written() == 1 && mono_now_ns() - t0 < 2 * kSec;
    _exit(ok ? 0 : 3);
  }
  int st = 0;
  ASSERT_TRUE(wait_child(pid, &st)) << "the child did not exit within 60 s (killed)";
  ASSERT_TRUE(WIFEXITED(st)) << "the child died of signal " << WTERMSIG(st);
  EXPECT_EQ(WEXITSTATUS(st), 0) << "2: no ring in the child; 3: the wake did not arrive";
}

TEST_F(UringTest, SetupUsesTheProbedFlagsAndSaysSo) {
  Env<UringPoller> e;
  ASSERT_TRUE(e.s.start().ok());
  const std::string d = e.s.backend().describe();
  const unsigned f = e.s.backend().ring().setup_flags();
  EXPECT_EQ(d.find("SINGLE_ISSUER") != std::string::npos, (f & IORING_SETUP_SINGLE_ISSUER) != 0);
  EXPECT_EQ(d.find("DEFER_TASKRUN") != std::string::npos, (f & IORING_SETUP_DEFER_TASKRUN) != 0);
  // Turning a flag off in the options keeps it off.
  Env<UringPoller> e2;
  UringOptions o;
  o.defer_taskrun = false;
  o.single_issuer = false;
  e2.s.backend().set_options(o);
  ASSERT_TRUE(e2.s.start().ok());
  EXPECT_EQ(e2.s.backend().ring().setup_flags() & IORING_SETUP_DEFER_TASKRUN, 0u);
  EXPECT_EQ(e2.s.backend().ring().setup_flags() & IORING_SETUP_SINGLE_ISSUER, 0u);
}

}  // namespace
}  // namespace ringpoll::test
