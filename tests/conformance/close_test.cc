// Conformance S21-S27: close and lifetime. On Windows (the IOCP backend under Wine) with
// IOCP's cancel-then-wait (Go's execIO) in S23/S24.
#include <cstring>
#include <string>
#include <vector>
#ifndef _WIN32
#include <fcntl.h>
#include <sys/mman.h>
#endif

#include "conformance/conformance.h"

namespace ringpoll::test {
namespace {

#ifdef _WIN32
bool socket_alive(int fd) {
  int type = 0;
  int len = sizeof type;
  return getsockopt(sock(fd), SOL_SOCKET, SO_TYPE, reinterpret_cast<char*>(&type), &len) == 0;
}
#endif

TYPED_TEST(CONFORMANCE_SUITE, S21_CloseWakesBothWaitersWithClosed) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
  block_writes(f.fd());
  ASSERT_TRUE(f.set_deadline(mono_now_ns() + 10 * kSec).ok());
  PollDesc* pd = f.pd();
  const uint32_t r0 = pd->rseq, w0 = pd->wseq;
  Op r, w;
  s.spawn(do_read(&f, &r));
  s.spawn(do_write(&f, &w, kStuckWrite));
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
#ifdef _WIN32
  EXPECT_GE(s.backend().counters().cancels, 2u);  // both operations were cancelled
#endif
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

TYPED_TEST(CONFORMANCE_SUITE, S22_CloseReturnsAfterInFlightOperationsLeave) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
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
#ifdef _WIN32
  EXPECT_TRUE(socket_alive(fd)) << "the socket was closed while an operation was in flight";
#else
  EXPECT_GE(fcntl(fd, F_GETFD), 0) << "the fd was closed while an operation was in flight";
#endif
  ASSERT_TRUE(this->env().run_until([&] { return closed; }));
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], "reader left");
  EXPECT_EQ(order[1], "close returned");
#ifdef _WIN32
  EXPECT_FALSE(socket_alive(fd)) << "the last reference did not close the socket";
#else
  // The last reference closed the fd.
  errno = 0;
  EXPECT_EQ(fcntl(fd, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
#endif
  EXPECT_EQ(f.fd(), -1);
}

TYPED_TEST(CONFORMANCE_SUITE, S23_BufferIsTheCallersAgainWhenTheOperationReturns) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
  ASSERT_TRUE(f.set_read_deadline(mono_now_ns() + 10 * kMs).ok());
  Op r;
  std::memset(r.buf, '#', sizeof r.buf);
  s.spawn(do_read(&f, &r, sizeof r.buf));
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
  ASSERT_TRUE(r.r.err.timeout());
  // Data arriving after the operation returned must not land in its buffer (on IOCP: the
  // cancelled WSARecv was reaped before the read returned).
  put(p.b, "after-timeout");
  this->env().settle();
#ifdef _WIN32
  sleep_ms(20);
#else
  sleep_ms(10);
#endif
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

TYPED_TEST(CONFORMANCE_SUITE, S24_AnOperationThatFinishedFirstIsASuccess) {
  // On a readiness backend the "operation" that can finish first is the readiness: a
  // reader woken by data keeps that result even if its deadline expires before it runs
  // (Go: netpollblock returns true and the read succeeds). Completion backends add their
  // cancel-then-wait test in their own suite (IOCP: part 2 below).
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
  // 1. The completion is reaped, then the deadline expires before the reader runs.
  // 1. The readiness (on IOCP: the completion) is reaped, then the deadline expires before
  // the reader runs.
  Op r;
  ASSERT_TRUE(this->park_read(f, r));
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
#ifdef _WIN32

  // 2. The race of execIO: the receive has finished in the kernel (its packet waits in the
  // port) when the deadline wakes the reader; CancelIoEx finds nothing to cancel, and the
  // packet's success is the result. Whether the kernel finished first is up to it, so
  // each attempt checks the invariant (a timeout leaves the data in the socket; a success
  // returns it) and the loop looks for one success.
  bool saw_race_won = false;
  for (int attempt = 0; attempt < 10 && !saw_race_won; ++attempt) {
    ASSERT_TRUE(f.set_read_deadline(0).ok());
    Op q;
    ASSERT_TRUE(this->park_read(f, q));
    const std::string msg = "race" + std::to_string(attempt);
    put(p.b, msg.c_str());
    sleep_ms(20 * (attempt + 1));  // the kernel completes the receive meanwhile
    ASSERT_TRUE(f.set_read_deadline(mono_now_ns() - 1).ok());  // wakes the reader now
    ASSERT_TRUE(this->env().run_until([&] { return q.done; }));
    if (q.r.ok()) {
      EXPECT_EQ(std::string(q.buf, q.r.n), msg);
      saw_race_won = true;
    } else {
      ASSERT_TRUE(q.r.err.timeout()) << q.r.err.message();
      ASSERT_TRUE(f.set_read_deadline(0).ok());
      Op again;
      s.spawn(do_read(&f, &again));
      ASSERT_TRUE(this->env().run_until([&] { return again.done; }));
      EXPECT_EQ(std::string(again.buf, again.r.n), msg) << "a cancelled receive lost data";
    }
  }
  EXPECT_TRUE(saw_race_won) << "no attempt had the completion win the race";
#endif
}

TEST(CONFORMANCE_CORE_SUITE, S25_PollDescsAreTypeStableAndNeverUnmapped) {
  PollCache c(-1);
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
#ifdef _WIN32
  MEMORY_BASIC_INFORMATION mbi{};
  ASSERT_NE(VirtualQuery(block, &mbi, sizeof mbi), 0u);
  EXPECT_EQ(mbi.State, static_cast<DWORD>(MEM_COMMIT)) << "the block was released";
#else
  unsigned char vec = 0;
  EXPECT_EQ(mincore(block, 4096, &vec), 0) << "the block was unmapped";
#endif
  PollCache next(-1);
  PollDesc* y = next.alloc();
  EXPECT_TRUE(next.owns(y));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(y) & ~uintptr_t{4095}, reinterpret_cast<uintptr_t>(block));
  y->closing = true;
  next.free(y);
}

TYPED_TEST(CONFORMANCE_SUITE, S26_EventsWithAnOldTagAreDropped) {
  // A real stale event: epoll keeps watching an open file description after the fd that
  // registered it is closed, as long as a dup keeps it open. The descriptor is freed (its
  // fdseq bumped) and reused for another socket; the old file's event still carries the
  // old tag and must wake nobody. Backends whose kernel drops a registration with its fd
  // (kqueue, event ports, pollset) keep the old fd open instead: the registration is just
  // as live and just as stale.
  using P = TypeParam;
  auto& s = this->sched();
  FdPair old_pair;
  connected_pair(old_pair);
  int err = 0;
  PollDesc* pd = s.open(old_pair.a, &err);
  ASSERT_NE(pd, nullptr);
  const uint32_t old_seq = pd->fdseq.load();
  // The event-error bit honours the tag as well (Go #59545): on the descriptor reused with
  // a new generation, an error event tagged with the old one leaves the bit clear, while
  // one with its own tag sets it.
  auto expect_old_tag_error_dropped = [old_seq](PollDesc* reused) {
    const uint32_t seq = reused->fdseq.load();
    ASSERT_NE(seq, old_seq);
    reused->set_event_err(true, old_seq);
    EXPECT_EQ(reused->info.load() & kInfoEventErr, 0u);
    reused->set_event_err(true, seq);
    EXPECT_NE(reused->info.load() & kInfoEventErr, 0u);
    reused->set_event_err(false, seq);
    EXPECT_EQ(reused->info.load() & kInfoEventErr, 0u);
  };
#ifdef _WIN32
  // On IOCP a real stale completion: a receive is in flight on a socket whose PollDesc is
  // freed (as if its completion raced with close) and reused for another socket. The
  // packet carries the socket's key, the old (pd, fdseq) tag, and must wake nobody and
  // touch nothing.
  typename P::Op stale{pd, Mode::kRead};
  char stale_buf[16] = {};
  s.backend().submit_recv(&stale, old_pair.a, stale_buf, sizeof stale_buf);
  ASSERT_FALSE(stale.done);
#else
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
      PollFd<P> g;
      ASSERT_TRUE(this->open_pair(q, g));
      ASSERT_EQ(g.pd(), pd);  // the same memory, a new generation
      expect_old_tag_error_dropped(g.pd());
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
#endif
  TaskList w;
  deadline_evict(pd, s.deadline_wheel(), w);
  s.cache().free(pd);
#ifndef _WIN32
  if constexpr (kWatchOutlivesFdClose<P>) close_fd(old_pair.take_a());
#endif
  FdPair fresh;
  PollFd<P> f2;
  ASSERT_TRUE(this->open_pair(fresh, f2));
  PollDesc* pd2 = f2.pd();
  ASSERT_EQ(pd2, pd);  // the same memory, a new generation
  ASSERT_NE(pd2->fdseq.load(), old_seq);
  Op r;
  s.spawn(do_read(&f2, &r));
  this->env().settle();
  ASSERT_TRUE(parked(pd2, Mode::kRead));
#ifdef _WIN32
  const uint64_t dropped0 = s.backend().counters().stale_dropped;
  put(old_pair.b, "stale");
  for (int i = 0; i < 100 && s.backend().counters().stale_dropped == dropped0; ++i) {
    s.poll_io(10 * kMs);
  }
  EXPECT_EQ(s.backend().counters().stale_dropped, dropped0 + 1)
      << "the stale completion never arrived, the test proves nothing";
  EXPECT_EQ(s.runnable(), 0u) << "a stale completion woke the new descriptor's waiter";
  EXPECT_FALSE(stale.done) << "a stale completion was delivered to its operation";
#else
  put(old_pair.b, "stale");  // an event on the OLD file, tagged with old_seq
  int events = 0;
  for (int i = 0; i < 50 && events == 0; ++i) events = s.poll_io(10 * kMs);
  EXPECT_GT(events, 0) << "the stale event never arrived, the test proves nothing";
  EXPECT_EQ(s.runnable(), 0u) << "a stale event woke the new descriptor's waiter";
#endif
  EXPECT_TRUE(parked(pd2, Mode::kRead));
#ifdef _WIN32
  EXPECT_EQ(std::string(stale_buf, 5), "stale");  // it did complete in the kernel
#endif
  expect_old_tag_error_dropped(pd2);
  // A current event is delivered.
  put(fresh.b, "fresh");
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
  EXPECT_EQ(std::string(r.buf, r.r.n), "fresh");
#ifndef _WIN32
  close_fd(keep);
#endif
}

TYPED_TEST(CONFORMANCE_SUITE, S27_SettingADeadlineAllocatesNothing) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
  // Warm up: first use of any lazily built state happens outside the window.
  ASSERT_TRUE(f.set_deadline(mono_now_ns() + kSec).ok());
  ASSERT_TRUE(f.set_deadline(0).ok());
  alloc_counting(true);
  const size_t before = alloc_count();
  const int64_t now = mono_now_ns();
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
