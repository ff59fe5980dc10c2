// Conformance S14-S20 (waiting and waking) on the IOCP backend under Wine: the behaviours
// of tests/conformance/wait_test.cc, where a "readiness event" is a completion packet.
#include <thread>

#include "win_env.h"

namespace ringpoll::test {
namespace {

TYPED_TEST(IocpWine, S14_EachDirectionIsABinarySemaphore) {
  auto& s = this->sched();
  PollDesc* pd = s.cache().alloc();
  deadline_open(pd, 77);
  EXPECT_EQ(pd->rg.load(), kPdNil);
  TaskList out;
  pd->ready(Mode::kRead, out);
  EXPECT_EQ(pd->rg.load(), kPdReady);
  pd->ready(Mode::kRead, out);  // binary: does not stack
  EXPECT_EQ(pd->rg.load(), kPdReady);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(pd->begin_wait(Mode::kRead), PollDesc::Begin::kTookReady);
  EXPECT_EQ(pd->rg.load(), kPdNil);
  EXPECT_EQ(pd->begin_wait(Mode::kRead), PollDesc::Begin::kPark);
  EXPECT_EQ(pd->rg.load(), kPdWait);
  EXPECT_FALSE(pd->finish_wait(Mode::kRead));
  EXPECT_EQ(pd->unblock(Mode::kRead, false), nullptr);  // timeout/close never sets ready
  EXPECT_EQ(pd->rg.load(), kPdNil);
  TaskNode n;
  ASSERT_EQ(pd->begin_wait(Mode::kRead), PollDesc::Begin::kPark);
  ASSERT_TRUE(pd->commit_park(Mode::kRead, &n));
  pd->rd = -1;
  pd->publish_info();
  EXPECT_EQ(pd->unblock(Mode::kRead, false), &n);
  EXPECT_EQ(pd->rg.load(), kPdNil);
  EXPECT_FALSE(pd->finish_wait(Mode::kRead));
  EXPECT_EQ(pd->check_err(Mode::kRead), PollError::kTimeout);
  pd->rd = 0;
  pd->publish_info();
  ASSERT_EQ(pd->begin_wait(Mode::kWrite), PollDesc::Begin::kPark);
  ASSERT_TRUE(pd->commit_park(Mode::kWrite, &n));
  pd->ready(Mode::kWrite, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out.pop_front(), &n);
  EXPECT_TRUE(pd->finish_wait(Mode::kWrite));
  TaskList w;
  deadline_evict(pd, s.deadline_wheel(), w);
  deadline_check_close(pd);
  s.cache().free(pd);
}

// S15: between "prepare to wait" and the park commit, data arrives and the poller takes
// the receive's completion: the park is abandoned and the reader returns the data.
template <class P>
struct S15Injector {
  static inline Scheduler<P>* sched = nullptr;
  static inline int peer = -1;
  static inline int calls = 0;
  static inline size_t woken = 0;
  static void hook(PollDesc*, Mode m) {
    if (m != Mode::kRead) return;
    ++calls;
    g_before_park_hook.store(nullptr);
    const size_t before = sched->runnable();
    if (::send(sock(peer), "!", 1, 0) != 1) std::abort();
    for (int i = 0; i < 200 && sched->poll_io(5 * kMs) == 0; ++i) {
    }
    woken = sched->runnable() - before;
  }
};

TYPED_TEST(IocpWine, S15_ReadinessBetweenPrepareAndParkIsNotLost) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_tcp(p, f));
  S15Injector<P>::sched = &s;
  S15Injector<P>::peer = p.b;
  S15Injector<P>::calls = 0;
  g_before_park_hook.store(&S15Injector<P>::hook);
  Op r;
  s.spawn(do_read(&f, &r));
  s.run_ready();  // one pass, no poll afterwards
  g_before_park_hook.store(nullptr);
  EXPECT_EQ(S15Injector<P>::calls, 1);
  EXPECT_EQ(S15Injector<P>::woken, 0u);
  ASSERT_TRUE(r.done) << "the reader parked and lost its completion";
  EXPECT_TRUE(r.r.err.ok());
  EXPECT_EQ(std::string(r.buf, r.r.n), "!");
  EXPECT_EQ(f.pd()->rg.load(), kPdNil);
}

TYPED_TEST(IocpWine, S16_SetterAndWaiterAreSequentiallyConsistent) {
  // Dekker: the setter publishes closing/expired then reads the slot; the waiter stores
  // wait then reads the info bits; one of them must see the other. Two long-lived threads
  // (thread creation is slow under Wine) released together each round.
  auto& s = this->sched();
  PollDesc* pd = s.cache().alloc();
  constexpr int kRounds = 10000;
  std::atomic<int> round{-1};
  std::atomic<int> finished{0};
  std::atomic<bool> quit{false};
  TaskNode node;
  bool committed = false;
  TaskNode* woken = nullptr;
  bool use_deadline = false;
  auto wait_round = [&](int i) {
    while (round.load() != i && !quit.load()) std::this_thread::yield();
    return !quit.load();
  };
  std::thread waiter([&] {
    for (int i = 0; i < kRounds && wait_round(i); ++i) {
      if (pd->begin_wait(Mode::kRead) == PollDesc::Begin::kPark) {
        committed = pd->commit_park(Mode::kRead, &node);
      }
      finished.fetch_add(1);
    }
  });
  std::thread setter([&] {
    for (int i = 0; i < kRounds && wait_round(i); ++i) {
      if (use_deadline) {
        pd->rd = -1;
      } else {
        pd->closing = true;
      }
      pd->publish_info();
      woken = pd->unblock(Mode::kRead, false);
      finished.fetch_add(1);
    }
  });
  int lost = 0;
  int spurious = 0;
  for (int i = 0; i < kRounds; ++i) {
    deadline_open(pd, 5);
    use_deadline = i % 2;
    committed = false;
    woken = nullptr;
    finished.store(0);
    round.store(i);  // releases both threads (seq_cst: they see the setup above)
    while (finished.load() != 2) std::this_thread::yield();
    if (committed && woken != &node) ++lost;
    if (!committed && woken != nullptr) ++spurious;
    pd->finish_wait(Mode::kRead);
    pd->closing = true;
  }
  quit.store(true);
  waiter.join();
  setter.join();
  EXPECT_EQ(lost, 0) << "a waiter parked without the setter seeing it";
  EXPECT_EQ(spurious, 0) << "the setter woke a waiter that never parked";
  s.cache().free(pd);
}

TYPED_TEST(IocpWine, S17_OperationsClearStaleReadyBeforeTheirSyscall) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_tcp(p, f));
  // A completion port reports data only through a receive a read started, so the stale
  // notification is planted as a late packet would leave it.
  put(p.b, "abc");
  TaskList none;
  f.pd()->ready(Mode::kRead, none);
  ASSERT_EQ(f.pd()->rg.load(), kPdReady);
  // The read clears it before its WSARecv, which finds the data.
  Op r;
  s.spawn(do_read(&f, &r));
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
  EXPECT_GE(r.r.n, 1u);
  EXPECT_EQ(std::string(r.buf, r.r.n), std::string("abc").substr(0, r.r.n));
  EXPECT_EQ(f.pd()->rg.load(), kPdNil);
  if (r.r.n < 3) {
    Op rest;
    s.spawn(do_read(&f, &rest));
    ASSERT_TRUE(this->env().run_until([&] { return rest.done; }));
  }
  // The next read starts its receive, finds nothing, and parks: the stale ready did not
  // let it skip the wait.
  f.pd()->ready(Mode::kRead, none);
  Op r2;
  s.spawn(do_read(&f, &r2));
  s.run_ready();
  EXPECT_FALSE(r2.done);
  EXPECT_TRUE(parked(f.pd(), Mode::kRead));
  TaskList out;
  f.pd()->ready(Mode::kWrite, out);
  EXPECT_EQ(f.pd()->wg.load(), kPdReady);
  EXPECT_EQ(f.pd()->reset(Mode::kWrite), PollError::kNone);
  EXPECT_EQ(f.pd()->wg.load(), kPdNil);
  put(p.b, "z");
  ASSERT_TRUE(this->env().run_until([&] { return r2.done; }));
  EXPECT_EQ(std::string(r2.buf, r2.r.n), "z");
}

TYPED_TEST(IocpWine, S18_SecondConcurrentWaiterIsFatal) {
  using P = TypeParam;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto second_reader = [] {
    Env<P> e;
    if (!e.s.start().ok()) std::abort();
    FdPair p;
    tcp_pair(p);
    PollFd<P> f;
    if (!f.open(e.s, p.take_a()).ok()) std::abort();
    Op a, b;
    e.s.spawn(do_read(&f, &a));
    e.s.spawn(do_read(&f, &b));
    e.settle();
  };
  EXPECT_DEATH(second_reader(), "double wait: a second reader");
  auto second_writer = [] {
    Env<P> e;
    if (!e.s.start().ok()) std::abort();
    FdPair p;
    tcp_pair(p);
    PollFd<P> f;
    if (!f.open(e.s, p.take_a()).ok()) std::abort();
    Op a, b;
    e.s.spawn(do_write(&f, &a, kStuckWrite));
    e.s.spawn(do_write(&f, &b, kStuckWrite));
    e.settle();
  };
  EXPECT_DEATH(second_writer(), "double wait: a second writer");
}

TYPED_TEST(IocpWine, S19_ErrorPriorityClosingThenTimeoutThenEventError) {
  using P = TypeParam;
  auto& s = this->sched();
  PollDesc* pd = s.cache().alloc();
  deadline_open(pd, 9);
  pd->set_event_err(true, 0);
  EXPECT_EQ(pd->check_err(Mode::kRead), PollError::kNotPollable);
  EXPECT_EQ(pd->check_err(Mode::kWrite), PollError::kNone);
  pd->rd = -1;
  pd->wd = -1;
  pd->publish_info();
  EXPECT_EQ(pd->check_err(Mode::kRead), PollError::kTimeout);
  EXPECT_EQ(pd->check_err(Mode::kWrite), PollError::kTimeout);
  pd->closing = true;
  pd->publish_info();
  EXPECT_EQ(pd->check_err(Mode::kRead), PollError::kClosing);
  s.cache().free(pd);

  // A reader woken by close, whose deadline expires at the same moment, and whose
  // cancelled receive comes back as ECANCELED: it reports "closed".
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_tcp(p, f));
  Op r;
  ASSERT_TRUE(this->park_read(f, r));
  Status cst;
  bool closed = false;
  s.spawn(do_close(&f, &cst, &closed));
  s.run_ready(1);
  ASSERT_FALSE(r.done);
  f.pd()->rd = -1;
  f.pd()->publish_info();
  ASSERT_TRUE(this->env().run_until([&] { return r.done && closed; }));
  EXPECT_TRUE(r.r.err.closed()) << r.r.err.message();
}

TYPED_TEST(IocpWine, S20_EventsWakeTheRightDirectionsInOneList) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_tcp(p, f));
  Op r, w;
  s.spawn(do_read(&f, &r));
  s.spawn(do_write(&f, &w, kStuckWrite));
  this->env().settle();
  ASSERT_TRUE(parked(f.pd(), Mode::kRead));
  ASSERT_TRUE(parked(f.pd(), Mode::kWrite));
  // Input completes the receive: the reader only.
  put(p.b, "in");
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
  EXPECT_FALSE(w.done);
  EXPECT_TRUE(parked(f.pd(), Mode::kWrite));
  // A reset by the peer fails both operations; their completions are one batch of
  // GetQueuedCompletionStatusEx, so both tasks come back from one poll.
  Op r2;
  s.spawn(do_read(&f, &r2));
  s.run_ready();
  ASSERT_TRUE(parked(f.pd(), Mode::kRead));
  linger lg{1, 0};
  setsockopt(sock(p.b), SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&lg), sizeof lg);
  close_fd(p.take_b());
  sleep_ms(100);  // let both failures reach the port (not an assertion on time)
  int polls = 0;
  while (s.runnable() < 2 && polls < 100) {
    s.poll_io(10 * kMs);
    ++polls;
  }
  EXPECT_EQ(s.runnable(), 2u);
  EXPECT_EQ(polls, 1) << "the two completions did not come back as one list";
  this->env().settle();
  ASSERT_TRUE(r2.done);
  ASSERT_TRUE(w.done);
  EXPECT_TRUE(r2.r.err.is(Errc::kEof) || r2.r.err.sys_errno() == ECONNRESET) << r2.r.err.message();
  EXPECT_NE(w.r.err.sys_errno(), 0) << w.r.err.message();
  EXPECT_FALSE(w.r.err.timeout());
  // IOCP reports errors in the operation's own result: the event-error bit is never set,
  // and it honours the tag rule when set by hand (Go #59545).
  EXPECT_EQ(f.pd()->info.load() & kInfoEventErr, 0u);
  PollDesc* pd = f.pd();
  const uint32_t seq = pd->fdseq.load();
  pd->set_event_err(true, next_fdseq(seq));
  EXPECT_EQ(pd->info.load() & kInfoEventErr, 0u);
  pd->set_event_err(true, seq);
  EXPECT_NE(pd->info.load() & kInfoEventErr, 0u);
  pd->set_event_err(false, seq);
  EXPECT_EQ(pd->info.load() & kInfoEventErr, 0u);
}

}  // namespace
}  // namespace ringpoll::test
