// Conformance S14-S20: waiting and waking. On the IOCP backend (Windows, under Wine) a
// "readiness event" is a completion packet.
#include <atomic>
#include <thread>
#include <vector>

#include "conformance/conformance.h"

namespace ringpoll::test {
namespace {

TEST(CONFORMANCE_CORE_SUITE, S14_EachDirectionIsABinarySemaphore) {
  PollCache cache(-1);
  TimerWheel wheel(TimerWheel::kDefaultTickNs, mono_now_ns());
  PollDesc* pd = cache.alloc();
  deadline_open(pd, 77);
  EXPECT_EQ(pd->rg.load(), kPdNil);
  TaskList out;
  pd->ready(Mode::kRead, out);  // readiness with nobody waiting: ready
  EXPECT_EQ(pd->rg.load(), kPdReady);
  pd->ready(Mode::kRead, out);  // binary: a second notification does not stack
  EXPECT_EQ(pd->rg.load(), kPdReady);
  EXPECT_TRUE(out.empty());
  TaskNode n;
  // A waiter takes the pending ready without parking.
  EXPECT_EQ(pd->park(Mode::kRead, &n, false).state, PollDesc::Parking::kReady);
  EXPECT_EQ(pd->rg.load(), kPdNil);
  // Nothing pending: nil -> the task parks.
  ASSERT_EQ(pd->park(Mode::kRead, &n, false).state, PollDesc::Parking::kParked);
  EXPECT_EQ(pd->rg.load(), reinterpret_cast<uintptr_t>(&n));
  // A parked task woken by a timeout: the slot goes to nil and the waiter learns why from
  // the info bits.
  pd->rd = -1;
  pd->publish_info();
  EXPECT_EQ(pd->unblock(Mode::kRead, false), &n);
  EXPECT_EQ(pd->rg.load(), kPdNil);
  EXPECT_EQ(pd->woken(Mode::kRead, false), PollError::kTimeout);
  // Timeout or close with nobody waiting leaves nil (only readiness sets ready).
  EXPECT_EQ(pd->unblock(Mode::kRead, false), nullptr);
  EXPECT_EQ(pd->rg.load(), kPdNil);
  // With a timeout already set, a waiter does not park at all...
  EXPECT_EQ(pd->park(Mode::kRead, &n, false).state, PollDesc::Parking::kError);
  EXPECT_EQ(pd->rg.load(), kPdNil);
  // ...unless it waits for a cancelled operation's completion (waitio, S24).
  ASSERT_EQ(pd->park(Mode::kRead, &n, true).state, PollDesc::Parking::kParked);
  EXPECT_EQ(pd->unblock(Mode::kRead, false), &n);
  EXPECT_EQ(pd->woken(Mode::kRead, true), PollError::kNone);
  // A parked task woken by readiness: the slot goes to ready, the waiter sees ready.
  pd->rd = 0;
  pd->publish_info();
  ASSERT_EQ(pd->park(Mode::kWrite, &n, false).state, PollDesc::Parking::kParked);
  pd->ready(Mode::kWrite, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out.pop_front(), &n);
  EXPECT_EQ(pd->wg.load(), kPdReady);
  EXPECT_EQ(pd->woken(Mode::kWrite, false), PollError::kNone);
  EXPECT_EQ(pd->wg.load(), kPdNil);
  TaskList w;
  deadline_evict(pd, wheel, w);
  deadline_check_close(pd);
  cache.free(pd);
}

// S15: the hook runs inside the reader's wait, after "prepare" and before the park commit.
// It makes the socket readable for real and lets the backend deliver the event then (on
// IOCP: data arrives and the poller takes the receive's completion; the park is abandoned
// and the reader returns the data).
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
#ifdef _WIN32  // Winsock send; the completion needs a moment to reach the port
    if (::send(sock(peer), "!", 1, 0) != 1) std::abort();
    for (int i = 0; i < 200 && sched->poll_io(5 * kMs) == 0; ++i) {
#else
    if (::send(peer, "!", 1, MSG_NOSIGNAL) != 1) std::abort();
    for (int i = 0; i < 100 && sched->poll_io(0) == 0; ++i) {
#endif
    }
    woken = sched->runnable() - before;
  }
};

TYPED_TEST(CONFORMANCE_SUITE, S15_ReadinessBetweenPrepareAndParkIsNotLost) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
  this->env().settle();
  S15Injector<P>::sched = &s;
  S15Injector<P>::peer = p.b;
  S15Injector<P>::calls = 0;
  g_before_park_hook.store(&S15Injector<P>::hook);
  Op r;
  s.spawn(do_read(&f, &r));
  s.run_ready();  // one pass, no poll afterwards
  g_before_park_hook.store(nullptr);
  EXPECT_EQ(S15Injector<P>::calls, 1);
  EXPECT_EQ(S15Injector<P>::woken, 0u);  // nobody was parked yet to be woken
  ASSERT_TRUE(r.done) << "the reader parked and lost the readiness event (or completion)";
  EXPECT_TRUE(r.r.err.ok());
  EXPECT_EQ(std::string(r.buf, r.r.n), "!");
  EXPECT_EQ(f.pd()->rg.load(), kPdNil);
}

TYPED_TEST(CONFORMANCE_SUITE, S16_SetterAndWaiterAreSequentiallyConsistent) {
  // Dekker: the setter publishes closing/expired then reads the slot; the waiter stores
  // wait then reads the info bits. At least one must see the other, so a waiter can never
  // park unseen, and a setter never wakes a waiter that did not park. Two real threads,
  // many rounds: two long-lived threads (thread creation is slow under Wine) released
  // together each round.
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
      committed = pd->park(Mode::kRead, &node, false).state == PollDesc::Parking::kParked;
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
    (void)pd->woken(Mode::kRead, false);
    pd->closing = true;
  }
  quit.store(true);
  waiter.join();
  setter.join();
  EXPECT_EQ(lost, 0) << "a waiter parked without the setter seeing it";
  EXPECT_EQ(spurious, 0) << "the setter woke a waiter that never parked";
  s.cache().free(pd);
}

TYPED_TEST(CONFORMANCE_SUITE, S17_OperationsClearStaleReadyBeforeTheirSyscall) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
#ifdef _WIN32
  // A completion port reports data only through a receive a read started, so the stale
  // notification is planted as a late packet would leave it.
#else
  this->env().settle();
  // A level-triggered backend reports readiness only for a direction a waiter armed; a
  // stale ready arises there when an earlier reader armed it and left another way (e.g. it
  // timed out). Arm as that reader did.
  if constexpr (P::kLevelTriggered) s.backend().arm(f.pd(), Mode::kRead);
  if constexpr (P::kCompletion) {
    // A completion backend reports data only through a request a read started: prime it
    // with a first read (the multishot recv stays armed). Single-shot mode leaves no
    // request behind, so the stale notification is planted as a late completion would.
    put(p.b, "p");
    Op prime;
    s.spawn(do_read(&f, &prime));
    ASSERT_TRUE(this->env().run_until([&] { return prime.done; }));
    ASSERT_EQ(prime.r.n, 1u);
  }
#endif
  put(p.b, "abc");
#ifdef _WIN32
  TaskList none;
  f.pd()->ready(Mode::kRead, none);
  ASSERT_EQ(f.pd()->rg.load(), kPdReady);
  // The read clears it before its WSARecv, which finds the data.
#else
  if constexpr (P::kCompletion) {
    if (!s.backend().multishot_recv()) {
      TaskList none;
      f.pd()->ready(Mode::kRead, none);
    }
  }
  ASSERT_TRUE(this->env().run_until([&] { return f.pd()->rg.load() == kPdReady; }));
  // The read finds data at its first syscall; the ready it found on entry was cleared
  // before the syscall (so it cannot let a later wait skip its park).
#endif
  Op r;
  s.spawn(do_read(&f, &r));
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
#ifdef _WIN32
  EXPECT_GE(r.r.n, 1u);
  EXPECT_EQ(std::string(r.buf, r.r.n), std::string("abc").substr(0, r.r.n));
#else
  EXPECT_EQ(r.r.n, 3u);
#endif
  EXPECT_EQ(f.pd()->rg.load(), kPdNil);
#ifdef _WIN32
  if (r.r.n < 3) {
    Op rest;
    s.spawn(do_read(&f, &rest));
    ASSERT_TRUE(this->env().run_until([&] { return rest.done; }));
  }
  // The next read starts its receive, finds nothing, and parks: the stale ready did not
  // let it skip the wait.
  f.pd()->ready(Mode::kRead, none);
#else
  // The next read tries its syscall, finds nothing, and parks (after the short read above,
  // a backend with kShortReadDrains parks it before the syscall: the same end state).
#endif
  Op r2;
  s.spawn(do_read(&f, &r2));
  s.run_ready();
  EXPECT_FALSE(r2.done);
  EXPECT_TRUE(parked(f.pd(), Mode::kRead));
  // The PollDesc primitive itself.
  TaskList out;
  f.pd()->ready(Mode::kWrite, out);
  EXPECT_EQ(f.pd()->wg.load(), kPdReady);
  EXPECT_EQ(f.pd()->reset(Mode::kWrite), PollError::kNone);
  EXPECT_EQ(f.pd()->wg.load(), kPdNil);
  put(p.b, "z");
  ASSERT_TRUE(this->env().run_until([&] { return r2.done; }));
  EXPECT_EQ(std::string(r2.buf, r2.r.n), "z");
}

TYPED_TEST(CONFORMANCE_SUITE, S18_SecondConcurrentWaiterIsFatal) {
  using P = TypeParam;
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto second_reader = [] {
    Env<P> e;
    if (!e.s.start().ok()) std::abort();
    FdPair p;
    connected_pair(p);
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
    connected_pair(p);
    PollFd<P> f;
    if (!f.open(e.s, p.take_a()).ok()) std::abort();
    block_writes(f.fd());
    Op a, b;
    e.s.spawn(do_write(&f, &a, kStuckWrite));
    e.s.spawn(do_write(&f, &b, kStuckWrite));
    e.settle();
  };
  EXPECT_DEATH(second_writer(), "double wait: a second writer");
}

// The priority itself lives in PollDesc::check_err and touches no backend: one plain
// test. Through a backend: below (close and deadline) and event_inject_test.cc (an
// injected error-only event).
TEST(CONFORMANCE_CORE_SUITE, S19_ErrorPriorityClosingThenTimeoutThenEventError) {
  PollCache cache(-1);
  PollDesc* pd = cache.alloc();
  deadline_open(pd, 9);
  pd->set_event_err(true, 0);
  EXPECT_EQ(pd->check_err(Mode::kRead), PollError::kNotPollable);
  EXPECT_EQ(pd->check_err(Mode::kWrite), PollError::kNone);  // readers only
  pd->rd = -1;
  pd->wd = -1;
  pd->publish_info();
  EXPECT_EQ(pd->check_err(Mode::kRead), PollError::kTimeout);
  EXPECT_EQ(pd->check_err(Mode::kWrite), PollError::kTimeout);
  pd->closing = true;
  pd->publish_info();
  EXPECT_EQ(pd->check_err(Mode::kRead), PollError::kClosing);
  EXPECT_EQ(pd->check_err(Mode::kWrite), PollError::kClosing);
  cache.free(pd);
}

// Through the API: an expired deadline, then close: the waiter-to-be sees "closed" (on
// IOCP its cancelled receive comes back as ECANCELED: still "closed").
TYPED_TEST(CONFORMANCE_SUITE, S19_CloseWinsOverADeadlineExpiringWithIt) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
  Op r;
  ASSERT_TRUE(this->park_read(f, r));
  Status cst;
  bool closed = false;
  s.spawn(do_close(&f, &cst, &closed));
  s.run_ready(1);  // close evicts: the reader is queued
  ASSERT_FALSE(r.done);
  f.pd()->rd = -1;  // a deadline expiring at the same moment
  f.pd()->publish_info();
  ASSERT_TRUE(this->env().run_until([&] { return r.done && closed; }));
  EXPECT_TRUE(r.r.err.closed()) << r.r.err.message();
}

// Reads f until an error or EOF ends it, counting the bytes (the peer of a writer).
template <class P>
Task<void> read_until_end(PollFd<P>* f, size_t* got, Status* end, bool* done) {
  std::vector<std::byte> buf(size_t{64} << 10);
  for (;;) {
    const IoResult r = co_await f->read(std::span(buf));
    *got += r.n;
    if (!r.ok()) {
      *end = r.err;
      break;
    }
  }
  *done = true;
}

TYPED_TEST(CONFORMANCE_SUITE, S20_EventsWakeTheRightDirectionsInOneList) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  Op r, w;
  ASSERT_TRUE(this->park_reader_and_writer(p, f, r, w));
  // Input wakes the reader only.
  put(p.b, "in");
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
  EXPECT_FALSE(w.done);
  EXPECT_TRUE(parked(f.pd(), Mode::kWrite));
  // Output wakes the writer only: a write parked on a full socket resumes when the peer
  // reads, and finishes with every byte sent, while a reader on the same descriptor
  // stays parked.
  {
    FdPair q;
    PollFd<P> fq, peer;
    ASSERT_TRUE(this->open_pair(q, fq));
    ASSERT_TRUE(peer.open(s, q.take_b()).ok());
    block_writes(fq.fd());
    Op qr, qw;
    s.spawn(do_read(&fq, &qr));
    s.spawn(do_write(&fq, &qw, kStuckWrite));
    this->env().settle();
    ASSERT_TRUE(parked(fq.pd(), Mode::kRead));
    ASSERT_TRUE(parked(fq.pd(), Mode::kWrite));
    ASSERT_FALSE(qw.done);
    size_t got = 0;
    Status end;
    bool drained = false;
    s.spawn(read_until_end(&peer, &got, &end, &drained));
    ASSERT_TRUE(this->env().run_until([&] { return qw.done; }));
    EXPECT_TRUE(qw.r.ok()) << qw.r.err.message();
    EXPECT_EQ(qw.r.n, kStuckWrite);
    EXPECT_FALSE(qr.done) << "output readiness woke the reader";
    EXPECT_TRUE(parked(fq.pd(), Mode::kRead));
    // Close ends the reader; the peer then reads everything up to EOF.
    Status cst;
    bool closed = false;
    s.spawn(do_close(&fq, &cst, &closed));
    ASSERT_TRUE(this->env().run_until([&] { return qr.done && closed && drained; }));
    EXPECT_TRUE(qr.r.err.closed()) << qr.r.err.message();
    EXPECT_TRUE(end.is(Errc::kEof)) << end.message();
    EXPECT_GE(got, kStuckWrite);
  }
  // Hang-up wakes reader and writer, from one poll, as one list.
  Op r2;
  s.spawn(do_read(&f, &r2));
  s.run_ready();
  ASSERT_TRUE(parked(f.pd(), Mode::kRead));
#ifdef _WIN32
  // A reset by the peer fails both operations; their completions are one batch of
  // GetQueuedCompletionStatusEx, so both tasks come back from one poll.
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
#else
  close_fd(p.take_b());
  int polls = 0;
  while (s.runnable() == 0 && polls < 100) {
    s.poll_io(10 * kMs);
    ++polls;
  }
  EXPECT_EQ(s.runnable(), 2u);
  this->env().settle();
  EXPECT_TRUE(r2.done);
  EXPECT_TRUE(w.done);
#endif
  // Unread data in the closed peer turns its close into a reset; either ends the read.
  EXPECT_TRUE(r2.r.err.is(Errc::kEof) || r2.r.err.sys_errno() == ECONNRESET) << r2.r.err.message();
#ifdef _WIN32
  EXPECT_NE(w.r.err.sys_errno(), 0) << w.r.err.message();
  EXPECT_FALSE(w.r.err.timeout());
  // IOCP reports errors in the operation's own result: the event-error bit is never set,
  // and it honours the tag rule when set by hand (Go #59545).
  EXPECT_EQ(f.pd()->info.load() & kInfoEventErr, 0u);
  PollDesc* pd = f.pd();
#else
  EXPECT_EQ(w.r.err.sys_errno(), EPIPE) << w.r.err.message();
  // That the bit is set only when error is the sole event is checked through each
  // backend's dispatch with injected events (event_inject_test.cc): no real socket gives
  // an error-only event on demand. Here: the tag rule for the bit itself (Go #59545).
  PollDesc* pd = f.pd();
#endif
  const uint32_t seq = pd->fdseq.load();
#ifdef _WIN32
  pd->set_event_err(true, next_fdseq(seq));
  EXPECT_EQ(pd->info.load() & kInfoEventErr, 0u);
#endif
  pd->set_event_err(true, seq);
  EXPECT_NE(pd->info.load() & kInfoEventErr, 0u);
  pd->set_event_err(false, seq);
  EXPECT_EQ(pd->info.load() & kInfoEventErr, 0u);
}

}  // namespace
}  // namespace ringpoll::test
