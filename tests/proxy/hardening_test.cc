// ringpoll-proxy under abuse (issue 22): admission limits per listener and per client
// address answered by a reset at accept and counted, a connection flood that leaves
// established connections served, the engine's stall detector on the admin page, and an
// io_uring shard that restarts its ring (dropped completions, ENOMEM on the new ring's
// setup) with connections open. The proxy runs in-process on one shard; clients are blocking
// sockets bound to 127.0.0.x source addresses (every 127/8 address is loopback on Linux).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "apps/common/fd_limit.h"
#include "apps/proxy/from_config.h"
#include "apps/proxy/metrics.h"
#include "apps/proxy/proxy.h"
#include "engine/server.h"
#include "epoll/epoll_poller.h"
#include "poller/internal/test_seams.h"
#include "proxy/proxy_rig.h"
#include "proxy/proxy_test_helpers.h"
#include "support/echo_engine.h"
#include "support/fairness.h"
#include "support/fd_count.h"
#include "support/test_env.h"
#include "tuning/config.h"
#include "uring/uring_completion.h"
#include "uring/uring_poller.h"

namespace ringpoll::test {
namespace {

using proxy::ProxyError;
using proxy::ProxySettings;

ProxySettings one_listener(const SocketAddress& up, AcceptLimits limits) {
  ProxySettings s = main_listener_settings({up});
  s.listeners[0].limits = limits;
  return s;
}

// Scheduler options with the stall detector at `ns`.
SchedulerOptions stall_after(int64_t ns) {
  SchedulerOptions o;
  o.stall_threshold_ns = ns;
  return o;
}

// A connection to `at` from source address `src` (127.0.0.x), or -1.
int connect_from(const char* src, const SocketAddress& at) {
  const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, src, &a.sin_addr);
  if (bind(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::connect(c, at.sa(), at.len) != 0) {
    ::close(c);
    return -1;
  }
  return c;
}

// True when one byte sent on fd comes back through the proxy and its echoing upstream.
bool echoes(int fd) {
  std::string buf;
  return fd >= 0 && send_all(fd, "x", 1) && fill_to(fd, &buf, 1, 2000) && buf == "x";
}

// What a backend keeps open for a thread's life (this thread's io_uring waker ring,
// uring/uring_ring.cc) is not a leak of a test's: a rig started and stopped first opens it,
// before the test counts descriptors. False when the rig did not start.
template <class P>
bool warmed_up() {
  EchoEngine<EpollPoller> up;
  ProxyRig<P> warm(one_listener(up.address(), AcceptLimits{}));
  return warm.started;
}

// The listener keys reach the TcpServer's limits; on a UDP listener they are refused.
TEST(ProxyLimitsConfig, ListenerKeysBecomeAcceptLimitsAndUdpRefusesThem) {
  tuning::Config c = one_pool_config();
  tuning::ProxyListener& l = c.proxy.listeners[0];
  l.max_connections = 10;
  l.max_conn_rate = 20;
  l.max_client_connections = 3;
  l.max_client_conn_rate = 4;
  ProxySettings s;
  std::string why;
  ASSERT_TRUE(proxy::settings_from_config(c, &s, &why)) << why;
  EXPECT_EQ(s.listeners[0].limits, (AcceptLimits{10, 20, 3, 4}));
  c.proxy.listeners[0].protocol = tuning::ListenerProtocol::kUdp;
  EXPECT_FALSE(proxy::settings_from_config(c, &s, &why));
  EXPECT_NE(why.find("proxy.listener 'l': max_connections"), std::string::npos) << why;
  EXPECT_NE(why.find("TCP listeners only"), std::string::npos) << why;
}

template <class P>
class ProxyHardening : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
};
using HardBackends = ::testing::Types<EpollPoller, UringCompletionPoller>;
// BackendName: names without '-', which a --gtest_filter (ctest's) reads as "except".
TYPED_TEST_SUITE(ProxyHardening, HardBackends, BackendName);

TYPED_TEST(ProxyHardening, ListenerConnectionLimitResetsTheExtraAndCountsIt) {
  TestUpstream up(echo);
  AcceptLimits l;
  l.max_connections = 2;
  ProxyRig<TypeParam> rig(one_listener(up.address(), l));
  ASSERT_TRUE(rig.started);
  const int a = connect_to(rig.addr), b = connect_to(rig.addr);
  ASSERT_TRUE(echoes(a));
  ASSERT_TRUE(echoes(b));
  const int c = connect_to(rig.addr);
  EXPECT_TRUE(closed_within(c, 5)) << "a third connection over max_connections 2 stayed open";
  EXPECT_EQ(rig.errors(ProxyError::kRefusedConnections), 1u);
  EXPECT_TRUE(echoes(a)) << "the admitted connections are unaffected";
  ::close(a);
  // Once one closed, a new connection is admitted again.
  ASSERT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 1; }));
  const int d = connect_to(rig.addr);
  EXPECT_TRUE(echoes(d));
  EXPECT_EQ(rig.errors(ProxyError::kRefusedConnections), 1u);
  for (int fd : {b, c, d}) ::close(fd);
}

TYPED_TEST(ProxyHardening, PerClientConnectionLimitLeavesOtherClientsServed) {
  TestUpstream up(echo);
  AcceptLimits l;
  l.max_per_client = 2;
  ProxyRig<TypeParam> rig(one_listener(up.address(), l));
  ASSERT_TRUE(rig.started);
  std::vector<int> mine;
  for (int i = 0; i < 2; ++i) {
    mine.push_back(connect_from("127.0.0.2", rig.addr));
    ASSERT_TRUE(echoes(mine.back()));
  }
  const int over = connect_from("127.0.0.2", rig.addr);
  EXPECT_TRUE(closed_within(over, 5)) << "127.0.0.2's third connection stayed open";
  EXPECT_EQ(rig.errors(ProxyError::kRefusedClientConnections), 1u);
  // Another address has its own count.
  const int other1 = connect_from("127.0.0.3", rig.addr);
  const int other2 = connect_from("127.0.0.3", rig.addr);
  EXPECT_TRUE(echoes(other1));
  EXPECT_TRUE(echoes(other2));
  EXPECT_EQ(rig.errors(ProxyError::kRefusedClientConnections), 1u);
  // A closed connection gives its place back to its address.
  ::close(mine[0]);
  ASSERT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 3; }));
  mine[0] = connect_from("127.0.0.2", rig.addr);
  EXPECT_TRUE(echoes(mine[0]));
  for (int fd : {mine[0], mine[1], over, other1, other2}) ::close(fd);
}

// Opens `n` connections from src as fast as it can; returns how many were served (an echo
// came back) and closes them all.
int burst(const char* src, const SocketAddress& at, int n) {
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) fds.push_back(connect_from(src, at));
  int served = 0;
  for (int fd : fds) served += echoes(fd) ? 1 : 0;
  for (int fd : fds) ::close(fd);
  return served;
}

TYPED_TEST(ProxyHardening, PerClientRateLimitRefusesTheBurstBeyondIt) {
  TestUpstream up(echo);
  AcceptLimits l;
  l.max_client_rate = 5;  // a burst of 5, then 5 per second
  ProxyRig<TypeParam> rig(one_listener(up.address(), l));
  ASSERT_TRUE(rig.started);
  const auto t0 = std::chrono::steady_clock::now();
  const int served = burst("127.0.0.4", rig.addr, 20);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // 5 at once, plus at most 5 per second the burst took.
  EXPECT_GE(served, 5);
  EXPECT_LE(served, 5 + static_cast<int>(secs * 5) + 1) << "in " << secs << " s";
  EXPECT_EQ(rig.errors(ProxyError::kRefusedClientRate), static_cast<uint64_t>(20 - served));
  // Another address has a bucket of its own.
  EXPECT_GE(burst("127.0.0.5", rig.addr, 5), 5);
}

TYPED_TEST(ProxyHardening, ListenerRateLimitCountsAndReloadLiftsIt) {
  TestUpstream up(echo);
  AcceptLimits l;
  l.max_rate = 4;
  ProxyRig<TypeParam> rig(one_listener(up.address(), l));
  ASSERT_TRUE(rig.started);
  const int served = burst("127.0.0.6", rig.addr, 16) + burst("127.0.0.7", rig.addr, 4);
  EXPECT_LT(served, 20);
  EXPECT_EQ(rig.errors(ProxyError::kRefusedRate), static_cast<uint64_t>(20 - served));
  // A reload with no limit admits everything from then on.
  std::string why;
  ASSERT_TRUE(rig.px->reload(one_listener(up.address(), AcceptLimits{}), &why)) << why;
  const uint64_t before = rig.errors(ProxyError::kRefusedRate);
  EXPECT_EQ(burst("127.0.0.6", rig.addr, 16), 16);
  EXPECT_EQ(rig.errors(ProxyError::kRefusedRate), before);
}

TYPED_TEST(ProxyHardening, UnderAConnectionFloodEstablishedConnectionsStayServed) {
  // A flooder opens and drops connections from 127.0.0.8 as fast as it can for 1.5 s; its
  // rate limit resets nearly all of them at accept. Meanwhile 10 established clients
  // from other addresses make echo round trips: every one answered, p99 under 100 ms.
  TestUpstream up(echo);
  AcceptLimits l;
  l.max_client_rate = 50;
  ProxyRig<TypeParam> rig(one_listener(up.address(), l));
  ASSERT_TRUE(rig.started);
  std::atomic<bool> stop{false};
  std::atomic<int> attempts{0};
  std::thread flood([&] {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    while (!stop.load() && std::chrono::steady_clock::now() < end) {
      const int fd = connect_from("127.0.0.8", rig.addr);
      if (fd >= 0) ::close(fd);
      attempts.fetch_add(1);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const ProbeResult pr = probe(rig.addr, ProbeKind::kEcho, 10, 30);
  stop.store(true);
  flood.join();
  EXPECT_EQ(pr.answered, pr.asked) << "established clients were not served";
  EXPECT_LT(pr.p99_ms, kServedP99Ms) << "max " << pr.max_ms << " ms";
  EXPECT_GT(rig.errors(ProxyError::kRefusedClientRate), 0u)
      << attempts.load() << " flood connections, none refused";
}

// Runs fn on this thread while shard 0 is held busy (it polls nothing): at least hold_ns,
// and until fn has returned, however long a loaded machine makes fn take.
template <class P, class F>
void while_shard_held(Engine<P>& e, int64_t hold_ns, F fn) {
  std::atomic<bool> held{false}, fn_done{false};
  std::thread hold([&] {
    Engine<P>::call(e.shard(0), [&] {
      held.store(true);
      const int64_t end = mono_now_ns() + hold_ns;
      while (mono_now_ns() < end || !fn_done.load()) {
      }
    });
  });
  while (!held.load()) std::this_thread::yield();
  fn();  // (an assertion failing in fn returns from fn only)
  fn_done.store(true);
  hold.join();
}

// Opens n connections from src and resets each one (SO_LINGER 0) before the held shard
// can accept it: the shape of a connect-and-reset flood.
template <class P>
void resets_before_accept(Engine<P>& e, const char* src, const SocketAddress& at, int n) {
  while_shard_held(e, 300 * kMs, [&] {
    for (int i = 0; i < n; ++i) {
      const int fd = connect_from(src, at);
      const linger lg{1, 0};
      (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      ::close(fd);
    }
  });
}

TYPED_TEST(ProxyHardening, ConnectionsResetBeforeTheAcceptCostNoUpstreamConnect) {
  // With per-client limits on, a connection whose client is gone has no address to count:
  // admitted uncounted, a reset flood would pass every per-client limit. It is closed at
  // accept as "refused_gone". Without limits the relay sees the reset before connecting.
  TestUpstream up(echo);
  AcceptLimits l;
  l.max_client_rate = 1000;
  ProxyRig<TypeParam> rig(one_listener(up.address(), l));
  ASSERT_TRUE(rig.started);
  resets_before_accept(rig.e, "127.0.0.10", rig.addr, 20);
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kRefusedGone) == 20; }, 5))
      << rig.errors(ProxyError::kRefusedGone) << " of 20 counted refused_gone";
  EXPECT_EQ(rig.errors(ProxyError::kRefusedClientRate), 0u);
  ProxyRig<TypeParam> open(one_listener(up.address(), AcceptLimits{}));
  ASSERT_TRUE(open.started);
  resets_before_accept(open.e, "127.0.0.11", open.addr, 20);
  EXPECT_TRUE(wait_for([&] { return open.errors(ProxyError::kReset) == 20; }, 5))
      << open.errors(ProxyError::kReset) << " of 20 counted reset";
  EXPECT_EQ(up.accepted(), 0) << "the upstream was connected for clients that were gone";
  const int c = connect_from("127.0.0.10", rig.addr);
  EXPECT_TRUE(echoes(c)) << "a live client of the same address is served";
  ::close(c);
}

TYPED_TEST(ProxyHardening, AFullAcceptQueueDoesNotHoldTheShardsOtherConnections) {
  // 2,000 connections queue up while the shard is held; an established client's request
  // waits beside them. The accept loop yields every few accepts, so the request is
  // answered before the queue is worked off (without the yield, every accept — each one
  // refused by the per-client rate — ran first).
  TestUpstream up(echo);
  AcceptLimits l;
  l.max_client_rate = 1;
  ProxyRig<TypeParam> rig(one_listener(up.address(), l));
  ASSERT_TRUE(rig.started);
  const int c = connect_from("127.0.0.13", rig.addr);
  ASSERT_TRUE(echoes(c));
  std::vector<int> queued;
  while_shard_held(rig.e, 500 * kMs, [&] {
    for (int i = 0; i < 2000; ++i) queued.push_back(connect_from("127.0.0.14", rig.addr));
    ASSERT_EQ(::send(c, "x", 1, 0), 1);
  });
  char b;
  ASSERT_EQ(::recv(c, &b, 1, 0), 1);
  const uint64_t refused_then = rig.errors(ProxyError::kRefusedClientRate);
  EXPECT_LT(refused_then, 1999u) << "the request waited for the whole accept queue";
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kRefusedClientRate) == 1999; }, 10))
      << rig.errors(ProxyError::kRefusedClientRate);
  for (int fd : queued) ::close(fd);
  ::close(c);
}

TYPED_TEST(ProxyHardening, AdminPageCountsAShardStall) {
  TestUpstream up(echo);
  ProxyRig<TypeParam> rig(one_listener(up.address(), AcceptLimits{}), stall_after(50 * kMs));
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  std::string m;
  ASSERT_EQ(admin_get(rig.px->admin_address(), "/metrics", &m), 200);
  EXPECT_NE(m.find("ringpoll_shard_stalls_total{shard=\"0\"} 0\n"), std::string::npos) << m;
  testing::internal::CaptureStderr();
  Engine<TypeParam>::call(rig.e.shard(0), [] {
    const int64_t end = mono_now_ns() + 200 * kMs;  // the shard polls nothing meanwhile
    while (mono_now_ns() < end) {
    }
  });
  // The call's answer leaves from inside the job, before the loop looks at the time
  // after it: the count (and the log line) follow within moments.
  const bool counted = wait_for(
      [&] {
        return admin_get(rig.px->admin_address(), "/metrics", &m) == 200 &&
               m.find("ringpoll_shard_stalls_total{shard=\"0\"} 1\n") != std::string::npos;
      },
      5);
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(counted) << m;
  EXPECT_NE(log.find("ringpoll: stall: shard 0"), std::string::npos) << log;
  const int c = connect_to(rig.addr);
  EXPECT_TRUE(echoes(c)) << "the proxy serves on after the stall";
  ::close(c);
}

TYPED_TEST(ProxyHardening, AdminPageShowsTheAdaptivePollController) {
  // engine.busy_poll_us = "auto": each shard's controller state is on the metrics page,
  // updated as the shard goes idle and wakes; a fixed setting shows none.
  TestUpstream up(echo);
  SchedulerOptions sched;
  sched.busy_poll_ns = kBusyPollAuto;
  ProxyRig<TypeParam> rig(one_listener(up.address(), AcceptLimits{}), sched);
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  const int c = connect_to(rig.addr);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(echoes(c));
  ::close(c);
  std::string m;
  ASSERT_EQ(admin_get(rig.px->admin_address(), "/metrics", &m), 200);
  for (const char* want : {"ringpoll_shard_poll_mode{shard=\"0\",mode=\"",
                           "ringpoll_shard_poll_spin_seconds{shard=\"0\"} ",
                           "ringpoll_shard_poll_gap_seconds{shard=\"0\"} ",
                           "ringpoll_shard_poll_idle_budget_used_ratio{shard=\"0\"} ",
                           "ringpoll_shard_poll_wasted_seconds_total{shard=\"0\"} "})
    EXPECT_NE(m.find(want), std::string::npos) << want << " missing from\n" << m;
  // The gap estimate was set by the idle periods the echoes and this request left (it
  // reads 0 until the controller's first step).
  EXPECT_EQ(m.find("ringpoll_shard_poll_gap_seconds{shard=\"0\"} 0\n"), std::string::npos) << m;

  ProxyRig<TypeParam> fixed(one_listener(up.address(), AcceptLimits{}));
  ASSERT_TRUE(fixed.started);
  ASSERT_TRUE(fixed.start_admin());
  ASSERT_EQ(admin_get(fixed.px->admin_address(), "/metrics", &m), 200);
  EXPECT_EQ(m.find("ringpoll_shard_poll_mode"), std::string::npos) << m;
}

TYPED_TEST(ProxyHardening, TwentyThousandIdleConnectionsHoldNoRelayBuffer) {
  // 20,000 proxied connections at once (the CI-sized version of bench/hardening/scale.py's
  // 100,000), from four source addresses: every one is relayed, an idle one holds no relay buffer,
  // and when they close the proxy's connection count and the process's descriptors come
  // back to where they were.
  // A process may raise its hard descriptor limit only with CAP_SYS_RESOURCE, which even
  // root lacks in some containers (this machine's CI: hard limit 20,000). The test then
  // runs as many connections as that limit holds (about 4,700 here), and says so;
  // RINGPOLL_TEST_CONNECTIONS sets the count.
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  const uint64_t hard = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : rl.rlim_max;
  const int fit = static_cast<int>(std::min<uint64_t>(20000, hard > 1024 ? (hard - 1024) / 4 : 0));
  const char* env = std::getenv("RINGPOLL_TEST_CONNECTIONS");
  const int kConns = env ? std::atoi(env) : fit;
  ASSERT_GE(kConns, 1000) << "the hard descriptor limit (" << hard << ") leaves room for " << kConns
                          << " connections; the test needs 1,000 at least";
  if (kConns < 20000)
    std::printf("note: %d connections, not 20,000: the hard RLIMIT_NOFILE is %llu\n", kConns,
                static_cast<unsigned long long>(hard));
  // The clients', the proxy's two and the upstream's descriptor per connection.
  const app::FdLimit lim =
      app::raise_fd_limit(4 * static_cast<uint64_t>(kConns) + 1024, "this test");
  ASSERT_TRUE(lim.problem.empty()) << lim.problem;
  ASSERT_TRUE(warmed_up<TypeParam>());
  const int fds_before = open_fds();
  {
    EchoEngine<EpollPoller> up;
    ASSERT_TRUE(up.ok());
    ProxySettings s = one_listener(up.address(), AcceptLimits{});
    s.backlog = 65535;
    s.idle_timeout_ns = 0;
    ProxyRig<TypeParam> rig(s);
    ASSERT_TRUE(rig.started);
    std::vector<int> fds;
    fds.reserve(kConns);
    const char* srcs[] = {"127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13"};
    for (int i = 0; i < kConns; ++i) {
      const int fd = connect_from(srcs[i % 4], rig.addr);
      ASSERT_GE(fd, 0) << "connection " << i << ": " << std::strerror(errno);
      fds.push_back(fd);
    }
    // Every connection reaches the upstream: all are relayed (under the sanitizers the
    // proxy takes seconds to accept and connect them all), then one byte each way on every
    // 50th.
    ASSERT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == kConns; }, 120))
        << rig.px->metrics().total_active() << " active";
    for (int i = 0; i < kConns; i += 50) ASSERT_TRUE(echoes(fds[i])) << "connection " << i;
    const auto& m = rig.px->metrics();
    EXPECT_TRUE(wait_for([&] { return m.total(&proxy::ShardMetrics::relay_buffers) == 0; }, 5))
        << m.total(&proxy::ShardMetrics::relay_buffers)
        << " relay buffers held by idle connections";
    for (int fd : fds) ::close(fd);
    EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }, 30))
        << rig.px->metrics().total_active() << " still active";
    EXPECT_EQ(rig.errors(ProxyError::kReset) + rig.errors(ProxyError::kNoUpstream), 0u);
  }
  EXPECT_EQ(open_fds(), fds_before) << "descriptors leaked";
}

// ---- Ring restart (uring/uring_poller.h, "Restart") ----

// The io_uring setups a restart made (their SQ entries) and how many more fail with ENOMEM
// (the g_uring_setup_hook seam; -1: all of them).
std::atomic<int> g_setups{0};
std::atomic<int> g_enomem_left{0};
std::array<std::atomic<unsigned>, 32> g_setup_entries{};
int fail_setups_with_enomem(unsigned entries) {
  const int i = g_setups.fetch_add(1);
  if (i < static_cast<int>(g_setup_entries.size())) g_setup_entries[i].store(entries);
  if (g_enomem_left.load() < 0) return ENOMEM;
  if (g_enomem_left.load() == 0) return 0;
  g_enomem_left.fetch_sub(1);
  return ENOMEM;
}

// Installs the setup hook for a scope: the first `enomem` setups fail (-1: every one).
struct EnomemSetups {
  explicit EnomemSetups(int enomem) {
    g_setups = 0;
    g_enomem_left = enomem;
    g_uring_setup_hook.store(fail_setups_with_enomem);
  }
  ~EnomemSetups() { g_uring_setup_hook.store(nullptr); }
};

TEST(RingRestart, DroppedCompletionsRestartTheRingThroughEnomemAndLoseNothing) {
  // A proxy on io_uring readiness mode relays 50 open connections, each of its relays
  // parked on the ring's polls. The kernel reports dropped completions (EBADR, injected);
  // the shard restarts its ring, whose setup meets ENOMEM six times (a smaller ring each
  // time, then a pause). Afterwards every connection still echoes (no waiter was lost), a
  // new one is accepted, the process holds as many descriptors as before (the old ring's
  // went with it), the admin page counts the restart and the retries, and once everything
  // closed the descriptors are back where they started. An application's restart
  // (Scheduler::restart_backend) does the same.
  if (!UringPoller::available().ok) GTEST_SKIP() << UringPoller::available().why;
  ASSERT_TRUE(warmed_up<UringPoller>());
  const int fds_before = open_fds();
  {
    EchoEngine<EpollPoller> up;
    ASSERT_TRUE(up.ok());
    ProxyRig<UringPoller> rig(one_listener(up.address(), AcceptLimits{}));
    ASSERT_TRUE(rig.started);
    ASSERT_TRUE(rig.start_admin());
    using E = Engine<UringPoller>;
    auto restarts = [&] { return rig.e.shard(0).sched().backend().ring_restarts(); };
    constexpr int kConns = 50;
    std::vector<int> fds;
    for (int i = 0; i < kConns; ++i) {
      fds.push_back(connect_to(rig.addr));
      ASSERT_TRUE(echoes(fds.back())) << "connection " << i;
    }
    const int fds_open = open_fds();

    testing::internal::CaptureStderr();
    {
      EnomemSetups enomem(6);
      g_uring_wait_fail_errno.store(EBADR);
      E::call(rig.e.shard(0), [] {});  // the shard wakes; its next wait meets EBADR
      EXPECT_TRUE(wait_for([&] { return restarts() == 1; }, 5));
      g_uring_wait_fail_errno.store(0);
    }
    const std::string log = testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("ring restarted (the kernel dropped completions (EBADR)): "),
              std::string::npos)
        << log;
    // Six setups failed, each asking for half the entries of the one before down to 8,
    // then the same 8 again; the seventh succeeded.
    ASSERT_EQ(g_setups.load(), 7);
    for (int i = 1; i < 7; ++i) {
      const unsigned prev = g_setup_entries[i - 1].load();
      EXPECT_EQ(g_setup_entries[i].load(), prev / 2 >= 8 ? prev / 2 : prev) << "setup " << i;
    }
    EXPECT_EQ(g_setup_entries[6].load(), 8u);
    EXPECT_EQ(rig.e.shard(0).sched().backend().ring_setup_retries(), 6u);

    for (int i = 0; i < kConns; ++i) EXPECT_TRUE(echoes(fds[i])) << "connection " << i;
    const int late = connect_to(rig.addr);
    EXPECT_TRUE(echoes(late)) << "the listener accepts after the restart";
    ::close(late);
    EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == kConns; }));
    EXPECT_EQ(open_fds(), fds_open) << "the restart leaked or lost descriptors";

    // The application asks for one (Scheduler::restart_backend): full size, no retries.
    EXPECT_TRUE(E::call(rig.e.shard(0), [] { return E::current()->sched().restart_backend(); }));
    EXPECT_EQ(restarts(), 2u);
    for (int i = 0; i < kConns; ++i) EXPECT_TRUE(echoes(fds[i])) << "connection " << i;
    EXPECT_EQ(open_fds(), fds_open);

    std::string m;
    ASSERT_EQ(admin_get(rig.px->admin_address(), "/metrics", &m), 200);
    EXPECT_NE(m.find("ringpoll_shard_ring_restarts_total{shard=\"0\"} 2\n"), std::string::npos)
        << m;
    EXPECT_NE(m.find("ringpoll_shard_ring_setup_retries_total{shard=\"0\"} 6\n"), std::string::npos)
        << m;
    for (int fd : fds) ::close(fd);
    EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }))
        << rig.px->metrics().total_active() << " still active";
    EXPECT_EQ(rig.errors(ProxyError::kReset), 0u);
  }
  EXPECT_EQ(open_fds(), fds_before) << "descriptors leaked";
}

TEST(RingRestartDeathTest, ARingThatCannotBeSetUpAgainStopsTheProcessSayingWhy) {
  // Every setup of the restart fails with ENOMEM: after the smaller rings and the bounded
  // retries the process stops, naming the errno and the memlock limit, instead of running
  // a shard that can serve none of its descriptors.
  if (!UringPoller::available().ok) GTEST_SKIP() << UringPoller::available().why;
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the engine runs threads
  EXPECT_DEATH(
      {
        using E = Engine<UringPoller>;
        EngineOptions o;
        o.shards = 1;
        o.pin = false;
        E e(o);
        if (!e.start().ok()) std::abort();
        EnomemSetups enomem(-1);
        E::call(e.shard(0), [] { E::current()->sched().restart_backend(); });
      },
      "ring restart \\(asked by the application\\) failed after 10 retries: io_uring_setup "
      "failed with ENOMEM.*RLIMIT_MEMLOCK.*could not be set up again");
}

}  // namespace
}  // namespace ringpoll::test
