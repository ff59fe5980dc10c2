// Conformance S28-S31: the poller loop.
#include <pthread.h>
#include <signal.h>

#include <thread>

#include "conformance/conformance.h"

namespace ringpoll::test {
namespace {

TYPED_TEST(Conformance, S28_WakeUpsCoalesceAndOnlyABlockingPollDrains) {
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
  EXPECT_EQ(b.wakes_written(), w0 + 1) << "400 wakes must coalesce into one";
  // A non-blocking poll does not drain the pending wake ...
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
  unix_pair(p);
  PollFd<P> f;
  ASSERT_TRUE(f.open(s, p.take_a()).ok());
  Op r;
  s.spawn(do_read(&f, &r));
  std::thread stopper([&s] {
    usleep(50'000);
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

void on_sigusr1(int) {}

TYPED_TEST(Conformance, S29_PollWaitBlocksReturnsOrWaitsAtMostDelta) {
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
  // < 0: blocks until woken.
  std::atomic<int64_t> woke_at{0};
  std::thread waker([&] {
    usleep(30'000);
    woke_at.store(mono_now_ns());
    s.backend().wake();
  });
  s.poll_io(-1);
  const int64_t back = mono_now_ns();
  waker.join();
  EXPECT_GE(back, woke_at.load());
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
      usleep(20'000);
      if (!done.load()) pthread_kill(self, SIGUSR1);
    }
  });
  t0 = mono_now_ns();
  const int n = s.poll_io(10 * kSec);
  const int64_t took = mono_now_ns() - t0;
  done.store(true);
  signaller.join();
  sigaction(SIGUSR1, &old, nullptr);
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

TYPED_TEST(Conformance, S30_LevelTriggeredBackendsAreReArmedBeforeEachWait) {
  using P = TypeParam;
  // The core's half of the contract: arm() before every wait, when the backend is
  // level-triggered.
  Env<LevelCounting<P>> e;
  ASSERT_TRUE(e.s.start().ok());
  FdPair p;
  unix_pair(p);
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
  // multishot registration persists; a one-shot one is re-armed by arm()).
  auto& s = this->sched();
  FdPair q;
  unix_pair(q);
  PollFd<P> g;
  ASSERT_TRUE(g.open(s, q.take_a()).ok());
  for (int i = 0; i < kRounds; ++i) {
    Op r;
    s.spawn(do_read(&g, &r));
    this->env().settle();
    put(q.b, "y");
    ASSERT_TRUE(this->env().run_until([&] { return r.done; })) << "round " << i;
  }
}

int g_aborts_left = 0;
// Completion backends: turn the next accepted connections into ECONNABORTED completions.
void abort_accept_cqe(UringCqeKind kind, int32_t* res, uint32_t*) {
  if (kind == UringCqeKind::kRecv || *res < 0 || g_aborts_left == 0) return;
  --g_aborts_left;
  ::close(*res);
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

TYPED_TEST(Conformance, S31_ZeroByteReadReturnsAtOnceAndAcceptSkipsAborted) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  unix_pair(p);
  PollFd<P> f;
  ASSERT_TRUE(f.open(s, p.take_a()).ok());
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
  g_accept4_fn = accept_with_abort;
  if constexpr (P::kCompletion) g_uring_cqe_hook.store(&abort_accept_cqe);
  Op a;
  s.spawn(do_accept(&lf, &a));
  const bool finished = this->env().run_until([&] { return a.done; });
  g_accept4_fn = ::accept4;
  g_uring_cqe_hook.store(nullptr);
  ASSERT_TRUE(finished);
  EXPECT_EQ(g_aborts_left, 0);
  EXPECT_TRUE(a.a.err.ok()) << a.a.err.message();
  EXPECT_GE(a.a.fd, 0);
  if (a.a.fd >= 0) ::close(a.a.fd);
  for (int c : clients) ::close(c);
}

}  // namespace
}  // namespace ringpoll::test
