// Conformance S21-S27: close and lifetime.
#include <sys/mman.h>

#include "conformance/conformance.h"
#include "support/alloc_counter.h"

namespace ringpoll::test {
namespace {

TYPED_TEST(Conformance, S21_CloseWakesBothWaitersWithClosed) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  unix_pair(p);
  PollFd<P> f;
  ASSERT_TRUE(f.open(s, p.take_a()).ok());
  fill_send_buffer(f.fd());
  ASSERT_TRUE(f.set_deadline(mono_now_ns() + 10 * kSec).ok());
  PollDesc* pd = f.pd();
  const uint32_t r0 = pd->rseq, w0 = pd->wseq;
  Op r, w;
  s.spawn(do_read(&f, &r));
  s.spawn(do_write(&f, &w, 1 << 20));
  this->env().settle();
  ASSERT_TRUE(parked(pd, Mode::kRead));
  ASSERT_TRUE(parked(pd, Mode::kWrite));
  ASSERT_TRUE(pd->timer.linked());
  Status cst;
  bool closed = false;
  s.spawn(do_close(&f, &cst, &closed));
  s.run_ready(1);
  EXPECT_TRUE(pd->closing);
  EXPECT_EQ(pd->rseq, r0 + 1);
  EXPECT_EQ(pd->wseq, w0 + 1);
  EXPECT_FALSE(pd->timer.linked());  // both timers stopped
  EXPECT_EQ(s.runnable(), 2u);       // both waiters woken
  ASSERT_TRUE(this->env().run_until([&] { return r.done && w.done && closed; }));
  for (const Status& e : {r.r.err, w.r.err}) {
    EXPECT_TRUE(e.closed()) << e.message();
    EXPECT_FALSE(e.timeout());
    EXPECT_EQ(e.sys_errno(), 0);
  }
  EXPECT_TRUE(cst.ok());
  // Operations after close fail at once with "closed".
  Op r2;
  s.spawn(do_read(&f, &r2));
  s.run_ready();
  ASSERT_TRUE(r2.done);
  EXPECT_TRUE(r2.r.err.closed());
  // A second close is an error too.
  Status c2;
  bool closed2 = false;
  s.spawn(do_close(&f, &c2, &closed2));
  s.run_ready();
  EXPECT_TRUE(closed2);
  EXPECT_TRUE(c2.closed());
}

TYPED_TEST(Conformance, S22_CloseReturnsAfterInFlightOperationsLeave) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  unix_pair(p);
  PollFd<P> f;
  ASSERT_TRUE(f.open(s, p.take_a()).ok());
  const int fd = f.fd();
  std::vector<std::string> order;
  Op r;
  auto reader = [](PollFd<P>* f, Op* op, std::vector<std::string>* order) -> Task<void> {
    op->r = co_await f->read(std::span(reinterpret_cast<std::byte*>(op->buf), 16));
    order->push_back("reader left");
    op->done = true;
  };
  auto closer = [](PollFd<P>* f, std::vector<std::string>* order, bool* done) -> Task<void> {
    Status st = co_await f->close();
    order->push_back(st.ok() ? "close returned" : "close failed");
    *done = true;
  };
  s.spawn(reader(&f, &r, &order));
  this->env().settle();
  ASSERT_TRUE(parked(f.pd(), Mode::kRead));
  bool closed = false;
  s.spawn(closer(&f, &order, &closed));
  s.run_ready(1);  // the closer evicts and waits; the reader has not left yet
  EXPECT_FALSE(closed);
  EXPECT_GE(fcntl(fd, F_GETFD), 0) << "the fd was closed while an operation was in flight";
  ASSERT_TRUE(this->env().run_until([&] { return closed; }));
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], "reader left");
  EXPECT_EQ(order[1], "close returned");
  // The last reference closed the fd.
  errno = 0;
  EXPECT_EQ(fcntl(fd, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_EQ(f.fd(), -1);
}

TYPED_TEST(Conformance, S23_BufferIsTheCallersAgainWhenTheOperationReturns) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  unix_pair(p);
  PollFd<P> f;
  ASSERT_TRUE(f.open(s, p.take_a()).ok());
  ASSERT_TRUE(f.set_read_deadline(mono_now_ns() + 10 * kMs).ok());
  Op r;
  std::memset(r.buf, '#', sizeof r.buf);
  s.spawn(do_read(&f, &r, sizeof r.buf));
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
  ASSERT_TRUE(r.r.err.timeout());
  // Data arriving after the operation returned must not land in its buffer.
  put(p.b, "after-timeout");
  this->env().settle();
  usleep(10'000);
  this->env().settle();
  for (char c : r.buf) ASSERT_EQ(c, '#');
  // Nothing was lost either: the next read gets it (from the kernel, or from the queue a
  // completion backend's multishot recv keeps).
  ASSERT_TRUE(f.set_read_deadline(0).ok());
  Op next;
  s.spawn(do_read(&f, &next, sizeof next.buf));
  ASSERT_TRUE(this->env().run_until([&] { return next.done; }));
  EXPECT_EQ(std::string(next.buf, next.r.n), "after-timeout");
  // The same after close.
  Op r2;
  std::memset(r2.buf, '#', sizeof r2.buf);
  s.spawn(do_read(&f, &r2, sizeof r2.buf));
  this->env().settle();
  ASSERT_TRUE(parked(f.pd(), Mode::kRead));
  Status cst;
  bool closed = false;
  s.spawn(do_close(&f, &cst, &closed));
  ASSERT_TRUE(this->env().run_until([&] { return r2.done && closed; }));
  EXPECT_TRUE(r2.r.err.closed());
  EXPECT_EQ(r2.r.n, 0u);
  for (char c : r2.buf) ASSERT_EQ(c, '#');
}

TYPED_TEST(Conformance, S24_AnOperationThatFinishedFirstIsASuccess) {
  // On a readiness backend the "operation" that can finish first is the readiness: a
  // reader woken by data keeps that result even if its deadline expires before it runs
  // (Go: netpollblock returns true and the read succeeds). Completion backends add their
  // cancel-then-wait test in their own suite.
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  unix_pair(p);
  PollFd<P> f;
  ASSERT_TRUE(f.open(s, p.take_a()).ok());
  Op r;
  s.spawn(do_read(&f, &r));
  this->env().settle();
  ASSERT_TRUE(parked(f.pd(), Mode::kRead));
  const int64_t dl = mono_now_ns() + 200 * kMs;  // set while waiting: a slow box cannot
  ASSERT_TRUE(f.set_read_deadline(dl).ok());     // expire it before the reader parks
  put(p.b, "won");
  for (int i = 0; i < 100 && s.runnable() == 0; ++i) s.poll_io(10 * kMs);
  ASSERT_EQ(s.runnable(), 1u);  // readiness delivered, reader queued, not yet run
  sleep_until_ns(dl + 10 * kMs);
  s.fire_timers();  // the deadline expires before the reader runs
  EXPECT_EQ(f.pd()->rd, -1);
  s.run_ready();
  ASSERT_TRUE(r.done);
  EXPECT_TRUE(r.r.err.ok()) << r.r.err.message();
  EXPECT_EQ(std::string(r.buf, r.r.n), "won");
}

TYPED_TEST(Conformance, S25_PollDescsAreTypeStableAndNeverUnmapped) {
  auto& s = this->sched();
  PollCache& c = s.cache();
  PollDesc* pd = c.alloc();
  deadline_open(pd, 3);
  const uint32_t seq = pd->fdseq.load();
  EXPECT_TRUE(c.owns(pd));
  pd->closing = true;
  c.free(pd);
  // Freed memory is still a PollDesc: readable, with the next generation.
  EXPECT_EQ(pd->fdseq.load(), next_fdseq(seq));
  EXPECT_EQ((pd->info.load() >> kInfoFdSeqShift) & kFdSeqMask, next_fdseq(seq));
  // The free list hands the same descriptor back (type-stable reuse).
  PollDesc* again = c.alloc();
  EXPECT_EQ(again, pd);
  again->closing = true;
  c.free(again);
  // Blocks are not returned when a cache goes away: they stay mapped, and the next
  // cache on the same node reuses them.
  void* block = nullptr;
  {
    PollCache tmp(-1);
    PollDesc* x = tmp.alloc();
    block = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(x) & ~uintptr_t{4095});
    x->closing = true;
    tmp.free(x);
  }
  unsigned char vec = 0;
  EXPECT_EQ(mincore(block, 4096, &vec), 0) << "the block was unmapped";
  PollCache next(-1);
  PollDesc* y = next.alloc();
  EXPECT_TRUE(next.owns(y));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(y) & ~uintptr_t{4095}, reinterpret_cast<uintptr_t>(block));
  y->closing = true;
  next.free(y);
}

TYPED_TEST(Conformance, S26_EventsWithAnOldTagAreDropped) {
  // A real stale event: epoll keeps watching an open file description after the fd that
  // registered it is closed, as long as a dup keeps it open. The descriptor is freed (its
  // fdseq bumped) and reused for another socket; the old file's event still carries the
  // old tag and must wake nobody. Backends whose kernel drops a registration with its fd
  // (kqueue, event ports, pollset) keep the old fd open instead: the registration is just
  // as live and just as stale.
  using P = TypeParam;
  auto& s = this->sched();
  FdPair old_pair;
  unix_pair(old_pair);
  int err = 0;
  PollDesc* pd = s.open(old_pair.a, &err);
  ASSERT_NE(pd, nullptr);
  const uint32_t old_seq = pd->fdseq.load();
  // A completion backend registers no readiness at open: its request tagged with the
  // descriptor's generation is the multishot recv a reader's first read arms.
  [[maybe_unused]] typename FdStateOf<P>::type st{};
  if constexpr (P::kCompletion) {
    if (!s.backend().multishot_recv()) {
      // Single-shot completion mode tags no kernel request with a generation: each
      // operation pins its descriptor until its completion is reaped, so a descriptor is
      // never freed under one. Check that invariant instead.
      TaskList w;
      deadline_evict(pd, s.deadline_wheel(), w);
      deadline_check_close(pd);
      s.close(pd);
      FdPair q;
      unix_pair(q);
      PollFd<P> g;
      ASSERT_TRUE(g.open(s, q.take_a()).ok());
      const uint32_t seq = g.pd()->fdseq.load();
      Op r;
      s.spawn(do_read(&g, &r));
      this->env().settle();
      Status cst;
      bool closed = false;
      s.spawn(do_close(&g, &cst, &closed));
      s.run_ready(1);  // close evicts; the read's recv is still in the kernel
      EXPECT_EQ(g.pd()->fdseq.load(), seq) << "freed while an operation was in flight";
      ASSERT_TRUE(this->env().run_until([&] { return closed && r.done; }));
      EXPECT_TRUE(r.r.err.closed());
      return;
    }
    s.backend().attach(pd, &st, old_pair.a);
    s.backend().arm_recv(&st);
  }
  this->env().settle();  // the registration is live in the kernel (io_uring submits lazily)
  const int keep = dup(old_pair.a);  // keeps the file description alive
  ASSERT_GE(keep, 0);
  // A level-triggered backend registers interest when a waiter arms it: arm for reading,
  // as a reader's wait on the old descriptor would have.
  if constexpr (P::kLevelTriggered) s.backend().arm(pd, Mode::kRead);
  // Free the descriptor without deregistering (as if the event raced with close).
  TaskList w;
  deadline_evict(pd, s.deadline_wheel(), w);
  s.cache().free(pd);
  if constexpr (kWatchOutlivesFdClose<P>) ::close(old_pair.take_a());
  FdPair fresh;
  unix_pair(fresh);
  PollFd<P> f2;
  ASSERT_TRUE(f2.open(s, fresh.take_a()).ok());
  PollDesc* pd2 = f2.pd();
  ASSERT_EQ(pd2, pd);  // the same memory, a new generation
  ASSERT_NE(pd2->fdseq.load(), old_seq);
  Op r;
  s.spawn(do_read(&f2, &r));
  this->env().settle();
  ASSERT_TRUE(parked(pd2, Mode::kRead));
  put(old_pair.b, "stale");  // an event on the OLD file, tagged with old_seq
  int events = 0;
  for (int i = 0; i < 50 && events == 0; ++i) events = s.poll_io(10 * kMs);
  EXPECT_GT(events, 0) << "the stale event never arrived, the test proves nothing";
  EXPECT_EQ(s.runnable(), 0u) << "a stale event woke the new descriptor's waiter";
  EXPECT_TRUE(parked(pd2, Mode::kRead));
  // The event-error bit honours the tag as well.
  pd2->set_event_err(true, old_seq);
  EXPECT_EQ(pd2->info.load() & kInfoEventErr, 0u);
  // A current event is delivered.
  put(fresh.b, "fresh");
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
  EXPECT_EQ(std::string(r.buf, r.r.n), "fresh");
  ::close(keep);
}

TYPED_TEST(Conformance, S27_SettingADeadlineAllocatesNothing) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  unix_pair(p);
  PollFd<P> f;
  ASSERT_TRUE(f.open(s, p.take_a()).ok());
  // Warm up: first use of any lazily built state happens outside the window.
  ASSERT_TRUE(f.set_deadline(mono_now_ns() + kSec).ok());
  ASSERT_TRUE(f.set_deadline(0).ok());
  alloc_counting(true);
  const size_t before = alloc_count();
  int64_t now = mono_now_ns();
  for (int i = 0; i < 10000; ++i) {
    (void)f.set_read_deadline(now + kSec + i * kMs);           // extend
    (void)f.set_write_deadline(now + 2 * kSec - i * 100'000);  // move earlier
    if (i % 7 == 0) (void)f.set_deadline(0);                   // clear
    if (i % 11 == 0) (void)f.set_read_deadline(now - 1);       // expire
  }
  s.fire_timers();
  const size_t allocs = alloc_count() - before;
  alloc_counting(false);
  EXPECT_EQ(allocs, 0u);
  // The counter itself works (the test can fail).
  alloc_counting(true);
  const size_t b2 = alloc_count();
  int* volatile probe = new int(5);  // volatile: the pair must not be elided
  EXPECT_EQ(alloc_count() - b2, 1u);
  alloc_counting(false);
  delete probe;
}

}  // namespace
}  // namespace ringpoll::test
