// Conformance S28-S31: the poller loop. On Windows (the IOCP backend under Wine) there are
// no signals to interrupt a wait; an APC queued to the polling thread
// (GetQueuedCompletionStatusEx waits alertably) is the Windows form of an interrupted wait
// in S29.
#include <atomic>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>
#ifndef _WIN32
#include <pthread.h>
#include <signal.h>
#include <time.h>
#endif

#include "conformance/conformance.h"

namespace ringpoll::test {
namespace {

TYPED_TEST(CONFORMANCE_SUITE, S28_WakeUpsCoalesceAndOnlyABlockingPollDrains) {
  using P = TypeParam;
  auto& s = this->sched();
  auto& b = s.backend();
  const uint64_t w0 = b.wakes_written();
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&b] {
      for (int i = 0; i < 100; ++i) b.wake();
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(b.wakes_written(), w0 + 1) << "400 wakes must coalesce into one (packet)";
  // A non-blocking poll does not drain the pending wake (IOCP: it takes the packet but
  // puts it back: the wake is still outstanding) ...
  s.poll_io(0);
  b.wake();
  EXPECT_EQ(b.wakes_written(), w0 + 1);
  // ... a blocking one does, and returns at once because of it.
  const int64_t t0 = mono_now_ns();
  s.poll_io(-1);
  EXPECT_LT(mono_now_ns() - t0, 5 * kSec);
  b.wake();
  EXPECT_EQ(b.wakes_written(), w0 + 2);
  s.poll_io(5 * kSec);  // drains the second wake, returning early
  EXPECT_LT(mono_now_ns() - t0, 5 * kSec);
  // stop() from another thread wakes a blocked run().
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
  Op r;
  s.spawn(do_read(&f, &r));
  std::thread stopper([&s] {
    sleep_ms(50);
    s.stop();
  });
  const int64_t t1 = mono_now_ns();
  s.run();  // blocks: the reader waits forever
  stopper.join();
  EXPECT_GE(mono_now_ns() - t1, 40 * kMs);
  EXPECT_FALSE(r.done);
  Status cst;
  bool closed = false;
  s.spawn(do_close(&f, &cst, &closed));
  ASSERT_TRUE(this->env().run_until([&] { return closed && r.done; }));
}

// The calling thread's CPU time (user + system).
int64_t thread_cpu_ns() {
#ifdef _WIN32
  FILETIME created, exited, kernel, user;
  if (!GetThreadTimes(GetCurrentThread(), &created, &exited, &kernel, &user)) return 0;
  auto ns = [](const FILETIME& t) {
    return static_cast<int64_t>((uint64_t{t.dwHighDateTime} << 32) | t.dwLowDateTime) * 100;
  };
  return ns(kernel) + ns(user);
#else
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * kSec + ts.tv_nsec;
#endif
}

#ifdef _WIN32
void CALLBACK count_apc(ULONG_PTR arg) {
  reinterpret_cast<std::atomic<int>*>(arg)->fetch_add(1);
}
#else
void on_sigusr1(int) {}
#endif

TYPED_TEST(CONFORMANCE_SUITE, S29_PollWaitBlocksReturnsOrWaitsAtMostDelta) {
  auto& s = this->sched();
  // 0: returns at once.
  int64_t t0 = mono_now_ns();
  EXPECT_EQ(s.poll_io(0), 0);
  EXPECT_LT(mono_now_ns() - t0, 500 * kMs);
  // > 0: waits about that long, never less; sub-millisecond waits do not spin (they
  // sleep at least the requested time).
  for (int64_t d : {int64_t{300'000}, 5 * kMs, 20 * kMs}) {
    t0 = mono_now_ns();
    EXPECT_EQ(s.poll_io(d), 0);
    const int64_t took = mono_now_ns() - t0;
    EXPECT_GE(took, d) << "poll(" << d << " ns) returned early";
    EXPECT_LT(took, d + 2 * kSec);
  }
  // ... and never spin: over many timed waits the thread sleeps, so its CPU time stays a
  // small part of the wall time (a busy-polling wait would use all of it). The bound is
  // generous (shared machine, sanitizers); the sub-millisecond round is the one a poller
  // rounding its timeout down to 0 would spin on.
  for (const auto& [d, waits, max_share] :
       {std::tuple{20 * kMs, 20, 0.3}, std::tuple{int64_t{500'000}, 200, 0.5}}) {
    const int64_t cpu0 = thread_cpu_ns();
    t0 = mono_now_ns();
    for (int i = 0; i < waits; ++i) s.poll_io(d);
    const int64_t wall = mono_now_ns() - t0;
    const int64_t cpu = thread_cpu_ns() - cpu0;
    EXPECT_GE(wall, waits * d);
    EXPECT_LT(static_cast<double>(cpu), max_share * static_cast<double>(wall))
        << waits << " waits of " << d << " ns used " << cpu << " ns of CPU in " << wall
        << " ns: a busy spin";
  }
  // < 0: blocks until woken.
  std::atomic<int64_t> woke_at{0};
  std::thread waker([&] {
    sleep_ms(30);
    woke_at.store(mono_now_ns());
    s.backend().wake();
  });
  s.poll_io(-1);
  const int64_t back = mono_now_ns();
  waker.join();
  EXPECT_GE(back, woke_at.load());
#ifdef _WIN32
  // An interrupted timed wait (an APC queued to this thread) returns an empty list.
  HANDLE self = nullptr;
  ASSERT_TRUE(DuplicateHandle(GetCurrentProcess(), GetCurrentThread(), GetCurrentProcess(), &self,
                              0, FALSE, DUPLICATE_SAME_ACCESS));
  std::atomic<int> apcs{0};
  std::atomic<bool> done{false};
  std::thread interrupter([&] {
    for (int i = 0; i < 250 && !done.load(); ++i) {
      sleep_ms(20);
      if (!done.load()) QueueUserAPC(count_apc, self, reinterpret_cast<ULONG_PTR>(&apcs));
    }
  });
  t0 = mono_now_ns();
  const int n = s.poll_io(10 * kSec);
  const int64_t took = mono_now_ns() - t0;
  done.store(true);
  interrupter.join();
  SleepEx(0, TRUE);  // run any APC still queued before its counter goes away
  CloseHandle(self);
  EXPECT_GE(apcs.load(), 1);
#else
  // An interrupted timed wait returns with an empty list, before its timeout.
  struct sigaction sa {};
  sa.sa_handler = on_sigusr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART
  struct sigaction old {};
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  std::atomic<bool> done{false};
  const pthread_t self = pthread_self();
  std::thread signaller([&] {
    while (!done.load()) {
      sleep_ms(20);
      if (!done.load()) pthread_kill(self, SIGUSR1);
    }
  });
  t0 = mono_now_ns();
  const int n = s.poll_io(10 * kSec);
  const int64_t took = mono_now_ns() - t0;
  done.store(true);
  signaller.join();
  sigaction(SIGUSR1, &old, nullptr);
#endif
  EXPECT_EQ(n, 0);
  EXPECT_EQ(s.runnable(), 0u);
  EXPECT_LT(took, 5 * kSec) << "the interrupted wait did not return";
}

// Counts the core's arm() calls by claiming to be level-triggered (S30).
template <class P>
struct LevelCounting : P {
  static constexpr bool kLevelTriggered = true;
  int arms = 0;
  void arm(PollDesc* pd, Mode m) {
    ++arms;
    P::arm(pd, m);
  }
};

TYPED_TEST(CONFORMANCE_SUITE, S30_LevelTriggeredBackendsAreReArmedBeforeEachWait) {
  using P = TypeParam;
  // The core's half of the contract: arm() before every wait, when the backend is
  // level-triggered.
  Env<LevelCounting<P>> e;
  ASSERT_TRUE(e.s.start().ok());
  FdPair p;
  connected_pair(p);
  PollFd<LevelCounting<P>> f;
  ASSERT_TRUE(f.open(e.s, p.take_a()).ok());
  constexpr int kRounds = 50;
  for (int i = 0; i < kRounds; ++i) {
    Op r;
    e.s.spawn(do_read(&f, &r));
    e.settle();
    ASSERT_TRUE(parked(f.pd(), Mode::kRead)) << "round " << i;
    put(p.b, "x");
    ASSERT_TRUE(e.run_until([&] { return r.done; })) << "round " << i;
    ASSERT_EQ(r.r.n, 1u);
  }
  EXPECT_EQ(e.s.backend().arms, kRounds);
  // The backend's half: events keep arriving across waits (an edge-triggered or
  // multishot registration persists; a one-shot one is re-armed by arm()). IOCP has
  // nothing to re-arm (each read starts its own receive); completions keep arriving
  // across waits.
  auto& s = this->sched();
  FdPair q;
  PollFd<P> g;
  ASSERT_TRUE(this->open_pair(q, g));
  for (int i = 0; i < kRounds; ++i) {
    Op r;
    s.spawn(do_read(&g, &r));
    this->env().settle();
    put(q.b, "y");
    ASSERT_TRUE(this->env().run_until([&] { return r.done; })) << "round " << i;
  }
#ifndef _WIN32
  // io_uring's readiness backend: a multishot poll the kernel ends (its last CQE without
  // IORING_CQE_F_MORE; here a cancel behind the poller's back) is armed again, once, and
  // readiness keeps reaching a waiter through the new poll.
  if constexpr (std::is_same_v<P, UringPoller>) {
    io_uring_sqe* sqe = s.backend().ring().sqe();
    io_uring_prep_cancel64(sqe, tag_pointer(g.pd(), g.pd()->fdseq.load()), 0);
    io_uring_sqe_set_data64(sqe, kUringIgnoreData);
    const uint64_t before = s.backend().rearms();
    ASSERT_TRUE(this->env().run_until([&] { return s.backend().rearms() > before; }, 2 * kSec));
    EXPECT_EQ(s.backend().rearms(), before + 1);
    Op r;
    s.spawn(do_read(&g, &r));
    this->env().settle();
    ASSERT_TRUE(parked(g.pd(), Mode::kRead));
    put(q.b, "again");
    ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
    EXPECT_EQ(std::string(r.buf, r.r.n), "again");
  }
#endif
}

int g_aborts_left = 0;
#ifdef _WIN32
// Turns the next accepted connections into ECONNABORTED results, as a connection reset
// before AcceptEx took it would be.
void abort_accept(IocpOpKind kind, int32_t* res) {
  if (kind != IocpOpKind::kAccept || *res < 0 || g_aborts_left == 0) return;
  --g_aborts_left;
  close_fd(*res);
  *res = -ECONNABORTED;
}
#else
// Completion backends: turn the next accepted connections into ECONNABORTED completions.
void abort_accept_cqe(UringCqeKind kind, int32_t* res, uint32_t*) {
  if (kind == UringCqeKind::kRecv || *res < 0 || g_aborts_left == 0) return;
  --g_aborts_left;
  close_fd(*res);
  *res = -ECONNABORTED;
}
int accept_with_abort(int fd, sockaddr* a, socklen_t* l, int flags) {
  if (g_aborts_left > 0) {
    --g_aborts_left;
    errno = ECONNABORTED;
    return -1;
  }
  return ::accept4(fd, a, l, flags);
}
#endif

TYPED_TEST(CONFORMANCE_SUITE, S31_ZeroByteReadReturnsAtOnceAndAcceptSkipsAborted) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_pair(p, f));
  Op r;
  s.spawn(do_read(&f, &r, 0));  // nothing to read, zero-byte buffer
  s.run_ready();
  ASSERT_TRUE(r.done);
  EXPECT_TRUE(r.r.err.ok());
  EXPECT_EQ(r.r.n, 0u);
  // accept: ECONNABORTED (a connection reset before it was accepted) is retried.
  uint16_t port = 0;
  const int l = tcp_listener(&port);
  ASSERT_GE(l, 0);
  PollFd<P> lf;
  ASSERT_TRUE(lf.open(s, l).ok());
  // A completion backend's accept happens in the kernel: the abort is injected into its
  // completions instead (the aborted connection is closed, so connect a spare for each).
  std::vector<int> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(tcp_connect(port));
    ASSERT_GE(clients.back(), 0);
  }
  g_aborts_left = 3;
#ifdef _WIN32
  g_iocp_result_hook.store(&abort_accept);
#else
  g_accept4_fn = accept_with_abort;
  if constexpr (P::kCompletion) g_uring_cqe_hook.store(&abort_accept_cqe);
#endif
  Op a;
  s.spawn(do_accept(&lf, &a));
  const bool finished = this->env().run_until([&] { return a.done; });
#ifdef _WIN32
  g_iocp_result_hook.store(nullptr);
#else
  g_accept4_fn = ::accept4;
  g_uring_cqe_hook.store(nullptr);
#endif
  ASSERT_TRUE(finished);
  EXPECT_EQ(g_aborts_left, 0);
  EXPECT_TRUE(a.a.err.ok()) << a.a.err.message();
  EXPECT_GE(a.a.fd, 0);
  close_fd(a.a.fd);
  for (int c : clients) close_fd(c);
}

}  // namespace
}  // namespace ringpoll::test
