// Hibernating relays (apps/proxy/relay.h, proxy.hibernate_after_ms): a plain relay quiet for
// the hibernation time ends its pump tasks and waits with one small wait per live
// direction; data from either side wakes it and it relays on intact; its idle timeout
// still ends it; a half-closed relay sleeps on its live direction alone. On epoll,
// io_uring readiness and io_uring completion mode.
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "apps/proxy/metrics.h"
#include "apps/proxy/proxy.h"
#include "engine/allocator.h"
#include "proxy/proxy_rig.h"
#include "proxy/proxy_test_helpers.h"
#include "support/test_env.h"
#include "uring/uring_completion.h"

namespace ringpoll::test {
namespace {

using proxy::ProxySettings;
using proxy::ShardMetrics;

constexpr int64_t kMs = 1'000'000;

template <class P>
class Hibernate : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
  static ProxySettings settings(const SocketAddress& up, int64_t hibernate_ms, int64_t idle_ms) {
    ProxySettings s = main_listener_settings({up});
    s.hibernate_ns = hibernate_ms * kMs;
    s.idle_timeout_ns = idle_ms * kMs;
    return s;
  }
};
using Backends = ::testing::Types<EpollPoller, UringPoller, UringCompletionPoller>;
TYPED_TEST_SUITE(Hibernate, Backends, BackendName);

template <class P>
int64_t hibernating(const ProxyRig<P>& rig) {
  return rig.px->metrics().total(&ShardMetrics::hibernating);
}
template <class P>
int64_t hibernations(const ProxyRig<P>& rig) {
  return rig.px->metrics().total(&ShardMetrics::hibernations);
}

// Lets an upstream thread waiting on `go` on at the end of the scope.
struct Release {
  std::atomic<int>& go;
  ~Release() { go = 1; }
};
void bound(int fd) {
  const timeval tv{10, 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// Twenty echo connections go quiet, all hibernate, and each round of traffic after that
// wakes every one of them, relays intact, and lets them sleep again.
TYPED_TEST(Hibernate, QuietRelaysSleepAndWakeIntact) {
  constexpr int kConns = 20, kRounds = 3;
  TestUpstream up([](int fd) { echo(fd); });
  ProxyRig<TypeParam> rig(this->settings(up.address(), 100, 0));
  ASSERT_TRUE(rig.started);
  std::vector<int> cs;
  for (int i = 0; i < kConns; ++i) {
    const int c = connect_to(rig.addr);
    ASSERT_GE(c, 0);
    bound(c);
    cs.push_back(c);
    EXPECT_EQ(round_trip(c, "hello " + std::to_string(i)), "hello " + std::to_string(i));
  }
  for (int r = 0; r < kRounds; ++r) {
    ASSERT_TRUE(wait_for([&] { return hibernating(rig) == kConns; }, 10))
        << "round " << r << ": " << hibernating(rig) << " of " << kConns << " hibernating";
    // A message larger than one read, so the woken relay runs several rounds of its pump.
    for (int i = 0; i < kConns; ++i) {
      const std::string msg = "round " + std::to_string(r) + " conn " + std::to_string(i) +
                              std::string(100000, static_cast<char>('a' + i));
      EXPECT_EQ(round_trip(cs[static_cast<size_t>(i)], msg), msg) << "round " << r;
    }
  }
  EXPECT_TRUE(wait_for([&] { return hibernating(rig) == kConns; }, 10));
  EXPECT_GE(hibernations(rig), kConns * (kRounds + 1));
  for (int c : cs) ::close(c);
  EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
  EXPECT_EQ(hibernating(rig), 0);
  EXPECT_EQ(rig.errors(proxy::ProxyError::kReset), 0u);
}

// The upstream speaks first after the quiet (a server push, a database notification): the
// wait on the upstream's side wakes the relay, and the client gets the bytes.
TYPED_TEST(Hibernate, TheUpstreamSpeakingFirstWakesIt) {
  std::atomic<int> go{0};
  TestUpstream up([&](int fd) {
    char b[16];
    if (::recv(fd, b, sizeof b, 0) <= 0) return;  // the client's first word
    while (go.load() == 0) usleep(1000);
    const char msg[] = "pushed";
    (void)send_all(fd, msg, sizeof msg - 1);
    echo(fd);
  });
  const Release release{go};  // a failed assertion must not leave the upstream waiting
  ProxyRig<TypeParam> rig(this->settings(up.address(), 100, 0));
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  bound(c);
  ASSERT_TRUE(send_all(c, "x", 1));
  ASSERT_TRUE(wait_for([&] { return hibernating(rig) == 1; }, 10));
  go = 1;
  char b[16] = {};
  ssize_t k = 0;
  do {
    k = ::recv(c, b, 6, MSG_WAITALL);
  } while (k < 0 && errno == EINTR);
  ASSERT_EQ(k, 6);
  EXPECT_EQ(std::string(b, 6), "pushed");
  EXPECT_EQ(round_trip(c, "after"), "after");
  ::close(c);
  EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
}

// A hibernating relay still ends at its idle timeout: closed on both sides, counted.
TYPED_TEST(Hibernate, AQuietRelayStillEndsAtItsIdleTimeout) {
  TestUpstream up([](int fd) { echo(fd); });
  ProxyRig<TypeParam> rig(this->settings(up.address(), 50, 600));
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  bound(c);
  EXPECT_EQ(round_trip(c, "hi"), "hi");
  ASSERT_TRUE(wait_for([&] { return hibernations(rig) >= 1; }, 10));
  EXPECT_TRUE(closed_within(c, 5)) << "the idle timeout did not end a hibernating relay";
  ::close(c);
  EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
  EXPECT_EQ(rig.errors(proxy::ProxyError::kIdleTimeout), 1u);
  EXPECT_EQ(hibernating(rig), 0);
}

// The client half-closes (its FIN goes on to the upstream); the relay sleeps on the
// upstream's direction alone, which wakes it with the answer and then its own end.
TYPED_TEST(Hibernate, AHalfClosedRelaySleepsOnItsLiveDirection) {
  std::atomic<int> go{0};
  std::atomic<bool> saw_fin{false};
  TestUpstream up([&](int fd) {
    char b[64];
    std::string got;
    for (;;) {
      const ssize_t k = ::recv(fd, b, sizeof b, 0);
      if (k <= 0) break;
      got.append(b, static_cast<size_t>(k));
    }
    saw_fin = got == "request";
    while (go.load() == 0) usleep(1000);
    const std::string answer = "answer to " + got;
    (void)send_all(fd, answer.data(), answer.size());
    ::shutdown(fd, SHUT_WR);
  });
  const Release release{go};
  ProxyRig<TypeParam> rig(this->settings(up.address(), 100, 0));
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  bound(c);
  ASSERT_TRUE(send_all(c, "request", 7));
  ASSERT_EQ(::shutdown(c, SHUT_WR), 0);
  ASSERT_TRUE(wait_for([&] { return saw_fin.load(); }, 10)) << "the FIN did not go on";
  ASSERT_TRUE(wait_for([&] { return hibernating(rig) == 1; }, 10));
  go = 1;
  EXPECT_EQ(recv_all(c), "answer to request");  // to the upstream's end of stream
  ::close(c);
  EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
  EXPECT_EQ(rig.errors(proxy::ProxyError::kReset), 0u);
}

#ifdef RINGPOLL_WITH_MIMALLOC
// What hibernation frees is the short-lived heap's (engine/allocator.h): a running relay's
// frame and its pumps' are there, and a hibernating relay holds none of them, so a burst
// of relays that then go quiet leaves whole pages to give back. (Builds with mimalloc
// only: without it there is no such heap.)
TYPED_TEST(Hibernate, ARunningRelaysFramesAreShortLivedAndHibernationFreesThem) {
  constexpr size_t kConns = 20;
  TestUpstream up([](int fd) { echo(fd); });
  ProxyRig<TypeParam> rig(this->settings(up.address(), 300, 0));
  ASSERT_TRUE(rig.started);
  auto short_lived_blocks = [&] {
    return Engine<TypeParam>::call(rig.e.shard(0),
                                   [] { return detail::short_lived_heap_use().blocks; });
  };
  std::vector<int> cs;
  for (size_t i = 0; i < kConns; ++i) {
    const int c = connect_to(rig.addr);
    ASSERT_GE(c, 0);
    bound(c);
    cs.push_back(c);
    EXPECT_EQ(round_trip(c, "hi"), "hi");
  }
  // Running (within 300 ms of their last bytes): each relay's frame and its two pumps'.
  EXPECT_GE(short_lived_blocks(), 3 * kConns);
  ASSERT_TRUE(wait_for([&] { return hibernating(rig) == static_cast<int64_t>(kConns); }, 10));
  EXPECT_EQ(short_lived_blocks(), 0u) << "a hibernating relay kept a short-lived frame";
  for (int c : cs) EXPECT_EQ(round_trip(c, "again"), "again");
  EXPECT_GE(short_lived_blocks(), 3 * kConns) << "woken relays run in short-lived frames again";
  for (int c : cs) ::close(c);
  EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
  EXPECT_EQ(short_lived_blocks(), 0u);
}
#endif

// Off (0): a quiet relay keeps its tasks, as before the hibernation existed.
TYPED_TEST(Hibernate, ZeroTurnsItOff) {
  TestUpstream up([](int fd) { echo(fd); });
  ProxyRig<TypeParam> rig(this->settings(up.address(), 0, 0));
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  bound(c);
  EXPECT_EQ(round_trip(c, "hi"), "hi");
  usleep(300'000);
  EXPECT_EQ(hibernations(rig), 0);
  EXPECT_EQ(round_trip(c, "still"), "still");
  ::close(c);
  EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
}

}  // namespace
}  // namespace ringpoll::test
