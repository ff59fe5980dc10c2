// ringpoll-proxy: the PROXY protocol writer, the upstream pools, the metrics page, and the
// relay end to end on every Linux backend (in-process engine, blocking upstreams and
// clients on their own threads): payloads intact both ways, half-close, upstream down,
// retry, connect and idle timeouts, a slow reader, reload, PROXY headers, the admin page
// (apps/http's parser: 400, 431, one answer per connection) and the connection limit.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "apps/proxy/from_config.h"
#include "apps/proxy/metrics.h"
#include "apps/proxy/pool.h"
#include "apps/proxy/proxy.h"
#include "apps/proxy/proxy_protocol.h"
#include "proxy/proxy_rig.h"
#include "proxy/proxy_test_helpers.h"
#include "support/fairness.h"
#include "support/stop_join.h"
#include "support/test_env.h"
#include "support/tls_hello.h"
#include "tuning/config.h"
#include "uring/uring_completion.h"

namespace ringpoll::test {
namespace {

using proxy::Balance;
using proxy::Pool;
using proxy::PoolSettings;
using proxy::ProxyError;
using proxy::ProxySettings;

constexpr size_t kLargest = sized_for_build(100u << 20, 16u << 20);  // each way

sockaddr_storage v4(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  sockaddr_storage s{};
  std::memcpy(&s, &a, sizeof a);
  return s;
}
sockaddr_storage v6(const char* ip, uint16_t port) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  inet_pton(AF_INET6, ip, &a.sin6_addr);
  sockaddr_storage s{};
  std::memcpy(&s, &a, sizeof a);
  return s;
}
std::string str(const sockaddr_storage& s) {
  SocketAddress a;
  a.ss = s;
  a.len = s.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  return a.to_string();
}

// ---- PROXY protocol ----

TEST(ProxyProtocol, V1TextForIpv4AndIpv6) {
  char out[proxy::kProxyV1MaxBytes];
  size_t n =
      proxy::write_proxy_v1(v4("192.0.2.1", 56324), v4("198.51.100.7", 443), out, sizeof out);
  EXPECT_EQ(std::string(out, n), "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
  n = proxy::write_proxy_v1(v6("2001:db8::1", 1), v6("::1", 65535), out, sizeof out);
  EXPECT_EQ(std::string(out, n), "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
  // Mixed families are written as IPv6, the IPv4 side mapped.
  n = proxy::write_proxy_v1(v4("10.0.0.1", 5), v6("::1", 6), out, sizeof out);
  EXPECT_EQ(std::string(out, n), "PROXY TCP6 ::ffff:10.0.0.1 ::1 5 6\r\n");
  sockaddr_storage unix_like{};
  unix_like.ss_family = AF_UNIX;
  n = proxy::write_proxy_v1(unix_like, v4("1.2.3.4", 1), out, sizeof out);
  EXPECT_EQ(std::string(out, n), "PROXY UNKNOWN\r\n");
  // Too small a buffer: nothing written, 0 returned.
  EXPECT_EQ(proxy::write_proxy_v1(v4("1.2.3.4", 1), v4("1.2.3.4", 2), out, 10), 0u);
}

TEST(ProxyProtocol, V2BinaryLayout) {
  uint8_t out[proxy::kProxyV2MaxBytes];
  const size_t n =
      proxy::write_proxy_v2(v4("192.0.2.1", 0x1234), v4("198.51.100.7", 443), out, sizeof out);
  ASSERT_EQ(n, 28u);
  const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  EXPECT_EQ(std::memcmp(out, sig, 12), 0);
  EXPECT_EQ(out[12], 0x21);  // version 2, PROXY
  EXPECT_EQ(out[13], 0x11);  // TCP over IPv4
  EXPECT_EQ(out[14], 0);
  EXPECT_EQ(out[15], 12);
  const uint8_t addrs[12] = {192, 0, 2, 1, 198, 51, 100, 7, 0x12, 0x34, 0x01, 0xBB};
  EXPECT_EQ(std::memcmp(out + 16, addrs, 12), 0);
  EXPECT_EQ(proxy::write_proxy_v2(v6("::1", 1), v6("::2", 2), out, sizeof out), 52u);
  EXPECT_EQ(out[13], 0x21);  // TCP over IPv6
  EXPECT_EQ(proxy::write_proxy_v2(v6("::1", 1), v6("::2", 2), out, 51), 0u);
}

TEST(ProxyProtocol, WrittenHeadersParseBack) {
  const sockaddr_storage pairs[][2] = {
      {v4("127.0.0.1", 40000), v4("127.0.0.2", 80)},
      {v6("2001:db8::5", 7), v6("fe80::1", 8)},
  };
  for (const auto& p : pairs) {
    uint8_t buf[proxy::kProxyHeaderMaxBytes];
    for (int version : {1, 2}) {
      const size_t n =
          version == 1 ? proxy::write_proxy_v1(p[0], p[1], reinterpret_cast<char*>(buf), sizeof buf)
                       : proxy::write_proxy_v2(p[0], p[1], buf, sizeof buf);
      ASSERT_GT(n, 0u);
      sockaddr_storage s, d;
      // Every prefix asks for more; the whole header parses to the same addresses.
      for (size_t k = 1; k < n; ++k)
        EXPECT_EQ(proxy::parse_proxy_header(buf, k, &s, &d), 0) << "v" << version << " k=" << k;
      ASSERT_EQ(proxy::parse_proxy_header(buf, n, &s, &d), static_cast<long>(n));
      EXPECT_EQ(str(s), str(p[0]));
      EXPECT_EQ(str(d), str(p[1]));
    }
  }
  sockaddr_storage s, d;
  const char* bad[] = {"GET / HTTP/1.1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                       "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "PROXY TCP9 a b 1 2\r\n",
                       "PROXY TCP4 ::1 ::1 1 2\r\n"};
  for (const char* b : bad)
    EXPECT_EQ(
        proxy::parse_proxy_header(reinterpret_cast<const uint8_t*>(b), std::strlen(b), &s, &d), -1)
        << b;
}

// ---- pools ----

PoolSettings pool_of(int n, Balance b) {
  PoolSettings s;
  s.name = std::string("p");  // not = "p": GCC 12 -O3 warns falsely (-Wrestrict)
  s.balance = b;
  for (int i = 0; i < n; ++i) {
    SocketAddress a;
    parse_address("127.0.0.1:" + std::to_string(1000 + i), &a);
    s.upstreams.push_back(a);
  }
  s.fail_threshold = 2;
  s.eject_ns = 1000;
  return s;
}

TEST(ProxyPool, RoundRobinVisitsEachInTurn) {
  Pool p(pool_of(3, Balance::kRoundRobin));
  std::vector<int> seen(3);
  for (int i = 0; i < 30; ++i) {
    proxy::Upstream* u = p.acquire(0);
    ++seen[u->address().port() - 1000];
    p.release(u);
  }
  EXPECT_EQ(seen, (std::vector<int>{10, 10, 10}));
}

TEST(ProxyPool, LeastConnectionsPicksTheIdlest) {
  Pool p(pool_of(3, Balance::kLeastConn));
  proxy::Upstream* a = p.acquire(0);
  proxy::Upstream* b = p.acquire(0);
  proxy::Upstream* c = p.acquire(0);
  EXPECT_TRUE(a != b && b != c && a != c) << "equal loads rotate";
  p.release(b);
  EXPECT_EQ(p.acquire(0), b);  // the only one with 0 open
  EXPECT_EQ(a->active() + b->active() + c->active(), 3);
}

TEST(ProxyPool, ConsecutiveFailuresEjectUntilTheEjectTimeEnds) {
  Pool p(pool_of(2, Balance::kRoundRobin));
  proxy::Upstream* bad = &p.at(0);
  p.connect_failed(bad, 100);
  EXPECT_TRUE(bad->healthy(100)) << "one failure is below the threshold of 2";
  p.connect_succeeded(bad);
  p.connect_failed(bad, 100);
  EXPECT_TRUE(bad->healthy(100)) << "a success resets the count";
  p.connect_failed(bad, 100);
  EXPECT_FALSE(bad->healthy(100));
  EXPECT_EQ(bad->ejections(), 1u);
  EXPECT_EQ(p.healthy_count(100), 1u);
  for (int i = 0; i < 5; ++i) {
    proxy::Upstream* u = p.acquire(500);
    EXPECT_EQ(u, &p.at(1)) << "the ejected upstream is skipped";
    p.release(u);
  }
  EXPECT_TRUE(bad->healthy(100 + 1000)) << "back after eject_ns";
  // Everything ejected: the pool still picks, the one whose ejection ends first.
  p.connect_failed(&p.at(1), 200);
  p.connect_failed(&p.at(1), 200);
  p.connect_failed(bad, 300);
  p.connect_failed(bad, 300);
  proxy::Upstream* u = p.acquire(400);
  EXPECT_EQ(u, &p.at(1));
  p.release(u);
  // Active probes: a failed probe ejects at once, a good one restores.
  p.probe_result(bad, true, 400);
  EXPECT_TRUE(bad->healthy(400));
  p.probe_result(bad, false, 400);
  EXPECT_FALSE(bad->healthy(400));
  // The retry path: avoid what was tried when something else is left.
  p.probe_result(bad, true, 400);
  p.probe_result(&p.at(1), true, 400);
  std::vector<const proxy::Upstream*> tried{bad};
  for (int i = 0; i < 4; ++i) {
    u = p.acquire(400, tried);
    EXPECT_EQ(u, &p.at(1));
    p.release(u);
  }
}

TEST(ProxyMetrics, PrometheusTextHasCountersHealthAndACumulativeHistogram) {
  proxy::Metrics m(2);
  m.shard(0).add(m.shard(0).accepted, 3);
  m.shard(1).add(m.shard(1).accepted, 4);
  m.shard(1).error(ProxyError::kIdleTimeout);
  m.shard(0).relay_latency(3'000);      // 3 µs: first bucket
  m.shard(1).relay_latency(150'000);    // 150 µs
  m.shard(1).relay_latency(9'000'000);  // 9 s: +Inf
  Pool p(pool_of(1, Balance::kRoundRobin));
  const std::string t = m.render({&p}, 0);
  EXPECT_NE(t.find("ringpoll_proxy_connections_total 7\n"), std::string::npos) << t;
  EXPECT_NE(t.find("ringpoll_proxy_errors_total{kind=\"idle_timeout\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("ringpoll_proxy_shard_connections_total{shard=\"1\"} 4\n"), std::string::npos);
  EXPECT_NE(t.find("ringpoll_proxy_upstream_healthy{pool=\"p\",upstream=\"127.0.0.1:1000\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("ringpoll_proxy_relay_latency_seconds_bucket{le=\"5e-06\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("ringpoll_proxy_relay_latency_seconds_bucket{le=\"0.0002\"} 2\n"),
            std::string::npos);
  EXPECT_NE(t.find("ringpoll_proxy_relay_latency_seconds_bucket{le=\"+Inf\"} 3\n"),
            std::string::npos);
  EXPECT_NE(t.find("ringpoll_proxy_relay_latency_seconds_count 3\n"), std::string::npos);
}

// How often `what` occurs in s.
size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(ProxyMetrics, UringCountersRenderOneLineEachPerShardAndNothingWithoutShards) {
  EXPECT_EQ(proxy::render_uring({}), "") << "other backends have no such section";
  std::vector<UringCompletionPoller::Counters> c(2);
  c[0].nobufs = 1;
  c[0].recv_rearms = 2;
  c[0].buffers_free = 3;
  c[0].buffers_held = 4;
  c[1].conns_at_bound = 5;
  c[1].bound_pauses = 6;
  c[1].starved_reads = 7;
  c[1].zc_sends = 8;
  c[0].zc_loopback = 9;
  c[1].attached_recvs = 10;
  const std::string t = proxy::render_uring(c);
  for (const char* want : {
           "ringpoll_uring_recv_nobufs_total{shard=\"0\"} 1\n",
           "ringpoll_uring_recv_rearms_total{shard=\"0\"} 2\n",
           "ringpoll_uring_buffers_free{shard=\"0\"} 3\n",
           "ringpoll_uring_buffers_held{shard=\"0\"} 4\n",
           "ringpoll_uring_conns_at_bound{shard=\"1\"} 5\n",
           "ringpoll_uring_bound_pauses_total{shard=\"1\"} 6\n",
           "ringpoll_uring_starved_reads_total{shard=\"1\"} 7\n",
           "ringpoll_uring_zc_sends_total{shard=\"1\"} 8\n",
           "ringpoll_uring_zc_sends_total{shard=\"0\"} 0\n",
           "ringpoll_uring_zc_loopback_total{shard=\"0\"} 9\n",
           "ringpoll_uring_attached_recvs_total{shard=\"1\"} 10\n",
           "# TYPE ringpoll_uring_conns_at_bound gauge\n",
           "# TYPE ringpoll_uring_bound_pauses_total counter\n",
           "# HELP ringpoll_uring_starved_reads_total Reads received straight into the "
           "application's buffer while the buffer ring was dry.\n",
       })
    EXPECT_NE(t.find(want), std::string::npos) << want << "in:\n" << t;
  EXPECT_EQ(count_of(t, "# TYPE "), 11u) << t;
  EXPECT_EQ(count_of(t, "{shard="), 22u) << t;
}

TEST(ProxyConfig, HttpLimitsReachTheAdminEndpointsParser) {
  tuning::Config c = one_pool_config();
  c.limits.max_request_line = 300;
  c.limits.max_header_bytes = 2048;
  ProxySettings s;
  std::string why;
  ASSERT_TRUE(proxy::settings_from_config(c, &s, &why)) << why;
  EXPECT_EQ(s.http_limits.max_request_line, 300u);
  EXPECT_EQ(s.http_limits.max_header_bytes, 2048u);
}

ProxySettings settings_for(std::vector<SocketAddress> ups, int proxy_protocol = 0) {
  return main_listener_settings(std::move(ups), proxy_protocol);
}

// A backend, and whether the relay splices (readiness backends) or copies.
template <class B, bool Splice>
struct Relaying {
  using P = B;
  static constexpr bool kSplice = Splice;
};
struct RelayingName {
  template <class R>
  static std::string GetName(int i) {
    return BackendName::GetName<typename R::P>(i) + (R::kSplice ? "_splice" : "");
  }
};

// The proxy in-process (ProxyRig), relaying as R says (splice or copy).
template <class R>
struct Rig : ProxyRig<typename R::P> {
  explicit Rig(ProxySettings s) : ProxyRig<typename R::P>(with_splice(std::move(s))) {}
  static ProxySettings with_splice(ProxySettings s) {
    s.splice = R::kSplice;
    return s;
  }
};

template <class R>
class ProxyRelay : public ::testing::Test {
 protected:
  using P = typename R::P;
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
};
using RelayBackends = ::testing::Types<Relaying<EpollPoller, false>, Relaying<UringPoller, false>,
                                       Relaying<UringCompletionPoller, false>,
                                       Relaying<EpollPoller, true>, Relaying<UringPoller, true>>;
TYPED_TEST_SUITE(ProxyRelay, RelayBackends, RelayingName);

TYPED_TEST(ProxyRelay, PayloadsArriveIntactBothWays) {
  // The upstream checks what the client sent and sends its own stream back at the same
  // time; the client does the mirror image. Each side half-closes when done sending.
  std::atomic<size_t> up_size{0};
  std::mutex mu;
  std::vector<size_t> upstream_got;
  TestUpstream up([&](int fd) {
    const size_t n = up_size.load();
    std::thread tx([&, fd, n] {
      send_stream(fd, 2, n);
      ::shutdown(fd, SHUT_WR);
    });
    const size_t got = check_stream(fd, 1);
    tx.join();
    std::lock_guard<std::mutex> l(mu);
    upstream_got.push_back(got);
  });
  Rig<TypeParam> rig(settings_for({up.address()}));
  ASSERT_TRUE(rig.started);
  const size_t sizes[] = {0, 1, 4095, 65536 + 7, 1u << 20, kLargest};
  for (size_t i = 0; i < std::size(sizes); ++i) {
    const size_t n = sizes[i];
    up_size.store(n + 3);  // the two directions differ in length
    const int c = connect_to(rig.addr);
    ASSERT_GE(c, 0);
    std::thread tx([&, c, n] {
      send_stream(c, 1, n);
      ::shutdown(c, SHUT_WR);
    });
    const size_t got = check_stream(c, 2);
    tx.join();
    ::close(c);
    EXPECT_EQ(got, n + 3) << "upstream -> client, " << n << " bytes (SIZE_MAX: corrupted)";
    ASSERT_TRUE(wait_for([&] {
      std::lock_guard<std::mutex> l(mu);
      return upstream_got.size() == i + 1;
    }));
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(upstream_got.back(), n) << "client -> upstream (SIZE_MAX: corrupted)";
  }
  EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
  EXPECT_EQ(rig.errors(ProxyError::kReset), 0u);
}

TYPED_TEST(ProxyRelay, HalfCloseIsCarriedThroughBothWays) {
  // The upstream answers only after it has seen the client's end of stream: that end
  // must reach it while the client's read side stays open for the answer.
  TestUpstream up([](int fd) {
    const std::string got = recv_all(fd);
    const std::string answer = "got " + std::to_string(got.size()) + ": " + got;
    send_all(fd, answer.data(), answer.size());
    ::shutdown(fd, SHUT_WR);
    recv_all(fd);
  });
  Rig<TypeParam> rig(settings_for({up.address()}));
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  ASSERT_TRUE(send_all(c, "ping", 4));
  ::shutdown(c, SHUT_WR);
  EXPECT_EQ(recv_all(c), "got 4: ping");  // ...and then EOF, carried the other way
  ::close(c);
}

TYPED_TEST(ProxyRelay, UpstreamDownClosesTheClientPromptly) {
  ProxySettings s = settings_for({dead_address()});
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  EXPECT_TRUE(closed_within(c, 10));
  ::close(c);
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kNoUpstream) == 1; }));
  EXPECT_EQ(rig.errors(ProxyError::kConnectFailed), 1u);
}

TYPED_TEST(ProxyRelay, RetriesAnotherUpstreamAndEjectsTheDeadOne) {
  TestUpstream up(echo);
  ProxySettings s = settings_for({dead_address(), up.address()});
  s.pools[0].fail_threshold = 1;
  s.pools[0].eject_ns = 60 * kSec;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  for (int i = 0; i < 4; ++i) {
    const int c = connect_to(rig.addr);
    ASSERT_GE(c, 0);
    ASSERT_TRUE(send_all(c, "abc", 3));
    ::shutdown(c, SHUT_WR);
    EXPECT_EQ(recv_all(c), "abc") << "connection " << i;
    ::close(c);
  }
  EXPECT_EQ(up.accepted(), 4);
  // One failed connect ejected the dead upstream; nothing tried it again.
  EXPECT_EQ(rig.errors(ProxyError::kConnectFailed), 1u);
  EXPECT_EQ(rig.errors(ProxyError::kNoUpstream), 0u);
  auto pools = rig.px->pools();
  EXPECT_FALSE(pools[0]->at(0).healthy(mono_now_ns()));
  EXPECT_TRUE(pools[0]->at(1).healthy(mono_now_ns()));
}

TYPED_TEST(ProxyRelay, ConnectTimeoutCountsAndClosesTheClient) {
  const FullListener full;  // the connect neither succeeds nor fails
  ProxySettings s = settings_for({full.at});
  s.connect_timeout_ns = 200 * kMs;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  EXPECT_TRUE(closed_within(c, 10));
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kNoUpstream) == 1; }));
  EXPECT_EQ(rig.errors(ProxyError::kConnectTimeout), 1u);
  ::close(c);
}

TYPED_TEST(ProxyRelay, IdleTimeoutClosesASilentConnection) {
  TestUpstream up(echo);
  ProxySettings s = settings_for({up.address()});
  s.idle_timeout_ns = 300 * kMs;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  ASSERT_TRUE(send_all(c, "x", 1));
  EXPECT_EQ(recv_all(c, 1), "x");
  EXPECT_TRUE(closed_within(c, 10)) << "nothing moved for the idle timeout";
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kIdleTimeout) == 1; }));
  ::close(c);
}

TYPED_TEST(ProxyRelay, TrafficOneWayKeepsTheOtherDirectionAlive) {
  // The client never sends; the upstream trickles a byte every 20 ms for 1.2 s, far past
  // the 400 ms idle timeout of the silent direction.
  TestUpstream up([](int fd) {
    for (int i = 0; i < 60; ++i) {
      if (!send_all(fd, "t", 1)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::shutdown(fd, SHUT_WR);
    recv_all(fd);
  });
  ProxySettings s = settings_for({up.address()});
  s.idle_timeout_ns = 400 * kMs;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  EXPECT_EQ(recv_all(c), std::string(60, 't'));
  EXPECT_EQ(rig.errors(ProxyError::kIdleTimeout), 0u);
  ::close(c);
}

TYPED_TEST(ProxyRelay, ASlowReaderStopsTheSenderAndMemoryStaysBounded) {
  // The upstream sends 256 MiB as fast as it can; the client reads nothing for a while.
  // Backpressure must stop the upstream after what the kernel buffers plus the proxy's
  // fixed buffer hold; then every byte still arrives, in order.
  constexpr size_t kTotal = 256u << 20;
  std::atomic<size_t> sent{0};
  TestUpstream up([&](int fd) {
    Stream st(7);
    char buf[16384];
    size_t left = kTotal;
    while (left > 0) {
      const size_t k = std::min(left, sizeof buf);
      st.fill(buf, k);
      if (!send_all(fd, buf, k)) return;
      left -= k;
      sent.fetch_add(k);
    }
    ::shutdown(fd, SHUT_WR);
    recv_all(fd);
  });
  ProxySettings s = settings_for({up.address()});
  s.buffer_bytes = 16384;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  // Let the sender run into the wall, then look: stalled well short of the total.
  size_t last = 0;
  ASSERT_TRUE(wait_for([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const size_t now = sent.load();
    const bool stalled = now == last && now > 0;
    last = now;
    return stalled;
  }));
  EXPECT_LT(sent.load(), 64u << 20) << "the proxy kept reading from the upstream";
  const uint64_t relayed = rig.px->metrics().total_bytes_down();
  EXPECT_LE(relayed, sent.load());
  // Now read: everything arrives intact.
  EXPECT_EQ(check_stream(c, 7), kTotal);
  ::close(c);
}

TYPED_TEST(ProxyRelay, ReloadKeepsEstablishedConnectionsOnTheOldPool) {
  // Each upstream greets with its letter, then echoes.
  auto greeter = [](char letter) {
    return [letter](int fd) {
      send_all(fd, &letter, 1);
      echo(fd);
    };
  };
  TestUpstream a(greeter('A')), b(greeter('B'));
  ProxySettings s = settings_for({a.address()});
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const int c1 = connect_to(rig.addr);
  ASSERT_GE(c1, 0);
  EXPECT_EQ(recv_all(c1, 1), "A");

  ProxySettings next = settings_for({b.address()});
  next.listeners[0].listen = rig.addr;  // same listener
  std::string why;
  ASSERT_TRUE(rig.px->reload(next, &why)) << why;
  EXPECT_EQ(rig.px->reloads(), 1u);

  const int c2 = connect_to(rig.addr);
  ASSERT_GE(c2, 0);
  EXPECT_EQ(recv_all(c2, 1), "B") << "new connections use the new pool";
  // The established connection still relays to A.
  ASSERT_TRUE(send_all(c1, "still here", 10));
  EXPECT_EQ(recv_all(c1, 10), "still here");
  ::close(c1);
  ::close(c2);
  EXPECT_EQ(a.accepted(), 1);
}

// A listener that a reload adds, removes or moves (issue 20): the new ones bind before the
// old ones stop; connections queued on a removed or moved-away listener (connected and
// written before the reload, accepted after) are served; a client looping on a kept
// listener sees no refusal; a new listener that cannot bind fails the reload as a whole.
TYPED_TEST(ProxyRelay, ReloadAddsRemovesAndMovesListenersAndLosesNoConnection) {
  TestUpstream up(echo);
  ProxySettings s = settings_for({up.address()});
  s.listeners[0].name = "keep";
  for (const char* name : {"gone", "mover"}) {
    s.listeners.push_back(s.listeners[0]);
    s.listeners.back().name = name;
  }
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const SocketAddress keep = rig.px->address(0), gone = rig.px->address(1),
                      mover = rig.px->address(2);
  auto ping = [](const SocketAddress& at) {
    const int c = connect_to(at);
    if (c < 0) return -1;
    const timeval limit{5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    return send_all(c, "ping", 4) ? c : (::close(c), -1);
  };
  auto pong = [](int c) {
    const bool good = c >= 0 && recv_all(c, 4) == "ping";
    if (c >= 0) ::close(c);
    return good;
  };
  // A client loop on the kept listener, throughout.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread loop([&] {
    for (int i = 0; i < 100000 && !stop.load(); ++i) (pong(ping(keep)) ? ok : failed).fetch_add(1);
  });
  StopAndJoin join(stop, loop);
  ASSERT_TRUE(wait_for([&] { return ok.load() > 50; }));
  // Removed: the shard is held busy, so connections to "gone" queue unaccepted, and the
  // reload's stop reaches the shard before its accept loop can take them.
  std::thread busy(
      [&] { Engine<typename TypeParam::P>::call(rig.e.shard(0), [] { usleep(400'000); }); });
  usleep(50'000);
  std::vector<int> queued;
  for (int i = 0; i < 6; ++i) queued.push_back(ping(gone));
  ProxySettings next = s;
  next.listeners = {s.listeners[0], s.listeners[2]};
  next.listeners[0].listen = keep;
  next.listeners[1].listen = mover;
  std::string why, changes;
  const bool reloaded = rig.px->reload(next, &why, &changes);
  busy.join();
  ASSERT_TRUE(reloaded) << why;
  EXPECT_EQ(changes, "removed 'gone'");
  for (size_t i = 0; i < queued.size(); ++i)
    EXPECT_TRUE(pong(queued[i])) << "queued connection " << i << " was not served";
  EXPECT_LT(connect_to(gone), 0) << "the removed listener is closed";
  // Moved and added: the new ones bind first; what was sent to the old address is served.
  queued.clear();
  for (int i = 0; i < 6; ++i) queued.push_back(ping(mover));
  parse_address("127.0.0.2:0", &next.listeners[1].listen);
  next.listeners.push_back(s.listeners[0]);
  next.listeners[2].name = "fresh";
  ASSERT_TRUE(rig.px->reload(next, &why, &changes)) << why;
  EXPECT_EQ(changes, "added 'fresh'; moved 'mover'");
  for (size_t i = 0; i < queued.size(); ++i)
    EXPECT_TRUE(pong(queued[i])) << "connection " << i << " to the moved listener";
  ASSERT_EQ(rig.px->listeners(), 3u);
  EXPECT_EQ(rig.px->address(0).to_string(), keep.to_string());
  EXPECT_EQ(rig.px->address(1).to_string().rfind("127.0.0.2:", 0), 0u);
  EXPECT_TRUE(pong(ping(rig.px->address(1)))) << "the moved listener serves";
  EXPECT_TRUE(pong(ping(rig.px->address(2)))) << "the added listener serves";
  EXPECT_LT(connect_to(mover), 0) << "the moved listener's old address is closed";

  // A new listener that cannot bind: the reload fails and nothing changes.
  uint16_t taken_port = 0;
  const int taken = listen_on(&taken_port);
  ProxySettings bad = next;
  bad.listeners[0].listen = keep;
  bad.listeners[1].listen = rig.px->address(1);
  bad.listeners[2].listen = rig.px->address(2);
  bad.listeners.push_back(s.listeners[0]);
  bad.listeners.back().name = "blocked";
  parse_address("127.0.0.1:" + std::to_string(taken_port), &bad.listeners.back().listen);
  EXPECT_FALSE(rig.px->reload(bad, &why));
  EXPECT_NE(why.find("listener 'blocked'"), std::string::npos) << why;
  EXPECT_NE(why.find("nothing changed"), std::string::npos) << why;
  EXPECT_EQ(rig.px->listeners(), 3u);
  EXPECT_TRUE(pong(ping(rig.px->address(2)))) << "still serving the last good config";
  ::close(taken);
  const int before = ok.load();
  EXPECT_TRUE(wait_for([&] { return ok.load() > before + 20; }));
  stop = true;
  loop.join();
  EXPECT_EQ(failed.load(), 0) << "of " << ok.load() << " connections on the kept listener";
  EXPECT_EQ(rig.px->reloads(), 2u);
}

TYPED_TEST(ProxyRelay, ProxyProtocolHeaderNamesTheClient) {
  for (int version : {1, 2}) {
    std::mutex mu;
    std::string seen_src, seen_dst;
    std::atomic<bool> done{false};
    TestUpstream up([&](int fd) {
      uint8_t buf[256];
      size_t have = 0;
      sockaddr_storage src, dst;
      long n = 0;
      while (n == 0 && have < sizeof buf) {
        const ssize_t k = ::recv(fd, buf + have, 1, 0);  // byte by byte: never past the header
        if (k <= 0) break;
        have += static_cast<size_t>(k);
        n = proxy::parse_proxy_header(buf, have, &src, &dst);
      }
      {
        std::lock_guard<std::mutex> l(mu);
        if (n > 0) {
          seen_src = str(src);
          seen_dst = str(dst);
        }
      }
      done.store(true);
      echo(fd);
    });
    Rig<TypeParam> rig(settings_for({up.address()}, version));
    ASSERT_TRUE(rig.started);
    const int c = connect_to(rig.addr);
    ASSERT_GE(c, 0);
    sockaddr_storage me{};
    socklen_t len = sizeof me;
    getsockname(c, reinterpret_cast<sockaddr*>(&me), &len);
    ASSERT_TRUE(send_all(c, "after", 5));
    EXPECT_EQ(recv_all(c, 5), "after") << "the header is not echoed back to the client";
    ASSERT_TRUE(wait_for([&] { return done.load(); }));
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(seen_src, str(me)) << "v" << version;
    EXPECT_EQ(seen_dst, rig.addr.to_string()) << "v" << version;
    ::close(c);
  }
}

std::string http_get(const SocketAddress& at, const std::string& path) {
  const int c = connect_to(at);
  if (c < 0) return "connect failed";
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  send_all(c, req.data(), req.size());
  std::string r = recv_all(c);
  ::close(c);
  return r;
}

TYPED_TEST(ProxyRelay, AdminEndpointServesMetrics) {
  TestUpstream up(echo);
  Rig<TypeParam> rig(settings_for({up.address()}));
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  const int c = connect_to(rig.addr);
  ASSERT_TRUE(send_all(c, "12345", 5));
  ::shutdown(c, SHUT_WR);
  EXPECT_EQ(recv_all(c), "12345");
  ::close(c);
  ASSERT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
  const std::string m = http_get(rig.px->admin_address(), "/metrics");
  EXPECT_EQ(m.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << m;
  EXPECT_NE(m.find("ringpoll_proxy_connections_total 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("ringpoll_proxy_bytes_total{direction=\"client_to_upstream\"} 5\n"),
            std::string::npos);
  EXPECT_NE(m.find("ringpoll_proxy_upstream_healthy{pool=\"main\",upstream=\"" +
                   up.address().to_string() + "\"} 1\n"),
            std::string::npos);
  // io_uring completion mode adds its buffer-ring counters, read on each shard; the
  // buffers all came back once the connection ended.
  const bool ring = std::is_base_of_v<UringCompletionPoller, typename TypeParam::P>;
  const size_t at_free = m.find("ringpoll_uring_buffers_free{shard=\"0\"} ");
  EXPECT_EQ(at_free != std::string::npos, ring) << m;
  if (ring && at_free != std::string::npos) {
    EXPECT_NE(m.find("ringpoll_uring_recv_nobufs_total{shard=\"0\"} 0\n"), std::string::npos) << m;
    const std::string want = "ringpoll_uring_buffers_free{shard=\"0\"} " +
                             std::to_string(UringCompletionOptions{}.buf_count) + "\n";
    EXPECT_NE(m.find(want), std::string::npos) << m;
  }
  EXPECT_EQ(http_get(rig.px->admin_address(), "/nope").rfind("HTTP/1.1 404", 0), 0u);
}

// How an admin connection ended, seen from the client.
enum class Ending { kEof, kReset, kTimeout };
const char* to_string(Ending e) {
  return e == Ending::kEof ? "end of stream" : e == Ending::kReset ? "reset" : "no end within 3 s";
}

// Sends `bytes` to the admin endpoint in one go and reads what comes back until the
// endpoint closes (each read bounded by 3 s); *how: how the connection ended.
std::string admin_raw(const SocketAddress& at, const std::string& bytes, Ending* how) {
  *how = Ending::kTimeout;
  const int c = connect_to(at);
  if (c < 0) return "connect failed";
  timeval tv{3, 0};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string r;
  if (send_all(c, bytes.data(), bytes.size())) {
    char buf[4096];
    for (;;) {
      const ssize_t k = ::recv(c, buf, sizeof buf, 0);
      if (k < 0 && errno == EINTR) continue;
      if (k > 0) {
        r.append(buf, static_cast<size_t>(k));
        continue;
      }
      if (k == 0) *how = Ending::kEof;
      if (k < 0 && errno == ECONNRESET) *how = Ending::kReset;
      break;
    }
  }
  ::close(c);
  return r;
}

TYPED_TEST(ProxyRelay, AdminEndpointRefusesAMalformedRequestWith400AndCloses) {
  // apps/http's parser: a header line without a colon, or a bare LF, is 400, even after a
  // request line naming /metrics.
  TestUpstream up(echo);
  Rig<TypeParam> rig(settings_for({up.address()}));
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  for (const std::string bad : {"GET /metrics HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
                                "GET /metrics HTTP/1.1\nHost: x\n\n"}) {
    Ending how;
    const std::string r = admin_raw(rig.px->admin_address(), bad, &how);
    EXPECT_EQ(r.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << r;
    EXPECT_NE(r.find("\r\nConnection: close\r\n"), std::string::npos) << r;
    EXPECT_EQ(r.find("ringpoll_proxy_"), std::string::npos) << "metrics served for:\n" << bad;
    EXPECT_EQ(how, Ending::kEof) << to_string(how);
  }
}

TYPED_TEST(ProxyRelay, AdminEndpointRefusesHeadersOverTheConfiguredLimitWith431) {
  // limits.max_header_bytes applies to the admin endpoint as to ringpoll-serve. The
  // endpoint answers while part of the header is still unread, then drops the rest
  // before closing: the client sees its answer and an end of stream, not a reset.
  TestUpstream up(echo);
  ProxySettings s = settings_for({up.address()});
  s.http_limits.max_header_bytes = 1024;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  auto with_header = [](size_t n) {
    return "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(n, 'a') + "\r\n\r\n";
  };
  Ending how;
  std::string r = admin_raw(rig.px->admin_address(), with_header(900), &how);
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << "under the limit:\n" << r;
  // Over the configured 1024 but under the parser's default (16384).
  r = admin_raw(rig.px->admin_address(), with_header(8 * 1024), &how);
  EXPECT_EQ(r.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("\r\nConnection: close\r\n"), std::string::npos) << r;
  EXPECT_EQ(how, Ending::kEof) << to_string(how);
}

TYPED_TEST(ProxyRelay, AdminEndpointAnswersOneRequestPerConnection) {
  // No keep-alive on the admin endpoint: the first of two pipelined requests is answered
  // with "Connection: close", the second is not, and the connection ends cleanly.
  TestUpstream up(echo);
  Rig<TypeParam> rig(settings_for({up.address()}));
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  Ending how;
  const std::string r = admin_raw(
      rig.px->admin_address(),
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &how);
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("\r\nConnection: close\r\n"), std::string::npos) << r;
  EXPECT_EQ(count_of(r, "HTTP/1.1 "), 1u) << r;
  EXPECT_TRUE(r.ends_with("\r\n\r\nok\n")) << r;
  EXPECT_EQ(how, Ending::kEof) << to_string(how);
}

TYPED_TEST(ProxyRelay, ConnectionsOverTheLimitAreClosedAtOnce) {
  TestUpstream up(echo);
  ProxySettings s = settings_for({up.address()});
  s.max_connections = 1;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const int c1 = connect_to(rig.addr);
  ASSERT_TRUE(send_all(c1, "a", 1));
  EXPECT_EQ(recv_all(c1, 1), "a");
  const int c2 = connect_to(rig.addr);
  EXPECT_TRUE(closed_within(c2, 10));
  EXPECT_EQ(rig.errors(ProxyError::kLimit), 1u);
  ASSERT_TRUE(send_all(c1, "b", 1));
  EXPECT_EQ(recv_all(c1, 1), "b") << "the first connection is unaffected";
  ::close(c1);
  ::close(c2);
}

TYPED_TEST(ProxyRelay, ActiveHealthChecksEjectAndRestore) {
  // An upstream that is down at first: the checker ejects it without any client traffic,
  // then restores it once something listens there again.
  uint16_t port = 0;
  int l = listen_on(&port);
  ::close(l);
  SocketAddress at;
  parse_address("127.0.0.1:" + std::to_string(port), &at);
  ProxySettings s = settings_for({at});
  s.pools[0].check_interval_ns = 20 * kMs;
  s.pools[0].check_timeout_ns = 500 * kMs;
  s.pools[0].eject_ns = 60 * kSec;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  EXPECT_TRUE(wait_for([&] { return !rig.px->pools()[0]->at(0).healthy(mono_now_ns()); }));
  // Listen again on the same port (SO_REUSEADDR: the port was just closed).
  l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ASSERT_EQ(bind(l, at.sa(), at.len), 0) << strerror(errno);
  ASSERT_EQ(listen(l, 128), 0);
  EXPECT_TRUE(wait_for([&] { return rig.px->pools()[0]->at(0).healthy(mono_now_ns()); }));
  ::close(l);
}

// Connections waiting in the accept queue of the IPv4 listener on `port` (the rx_queue
// column of its LISTEN line in /proc/net/tcp), or -1 when no such listener is found. Zero
// after a connect returned means the server has accepted it.
int accept_queue_length(uint16_t port) {
  FILE* f = fopen("/proc/net/tcp", "r");
  if (!f) return -1;
  char line[512];
  int n = -1;
  while (fgets(line, sizeof line, f)) {
    unsigned lport = 0, st = 0, txq = 0, rxq = 0;
    if (sscanf(line, " %*d: %*8x:%x %*8x:%*x %x %x:%x", &lport, &st, &txq, &rxq) == 4 &&
        lport == port && st == 0x0A /* TCP_LISTEN */) {
      n = static_cast<int>(rxq);
      break;
    }
  }
  fclose(f);
  return n;
}

TYPED_TEST(ProxyRelay, DestroyedWithoutShutdownEndsItsTasksWhileTheEngineRuns) {
  // Destroyed with no shutdown() while the engine runs on: a relayed connection, a health
  // check asleep between probes and an admin request waiting for its request line all
  // end before the proxy's memory goes. Under ASan, a check left behind is a use after
  // free when it wakes (within the interval, while the engine still runs).
  TestUpstream up(echo);
  ProxySettings s = settings_for({up.address()});
  s.pools[0].check_interval_ns = 200 * kMs;
  s.pools[0].check_timeout_ns = 500 * kMs;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  const int c = connect_to(rig.addr);
  ASSERT_TRUE(send_all(c, "a", 1));
  EXPECT_EQ(recv_all(c, 1), "a");
  const int admin = connect_to(rig.px->admin_address());  // sends nothing: parked in read
  ASSERT_GE(admin, 0);
  // Wait for the states the test is about: the admin server has accepted the request (its
  // listener's accept queue is empty again), and the check has probed the upstream (a
  // second connection there, after the relay's) and so sleeps between probes.
  const uint16_t admin_port = rig.px->admin_address().port();
  EXPECT_TRUE(wait_for([&] { return accept_queue_length(admin_port) == 0; }))
      << "the admin server did not accept the request (accept queue "
      << accept_queue_length(admin_port) << ")";
  EXPECT_TRUE(wait_for([&] { return up.accepted() >= 2; }))
      << "the health check never probed the upstream";
  const int64_t t0 = mono_now_ns();
  rig.px.reset();
  // Well inside the 5 s the server allows aborted handlers: the relay's other direction
  // ends with the aborted client instead of waiting for the upstream.
  EXPECT_LT(mono_now_ns() - t0, 3 * kSec) << "the relay outlived its aborted client";
  EXPECT_TRUE(closed_within(c, 2)) << "the relayed connection was left open";
  EXPECT_TRUE(closed_within(admin, 2)) << "the admin request was left open";
  ::close(c);
  ::close(admin);
  usleep(400'000);  // past the check's interval: it must not wake into freed memory
  EXPECT_EQ(Engine<typename TypeParam::P>::call(rig.e.shard(0), [] { return 7; }), 7);
}

// ---- Fairness (DESIGN.md "Fairness"): one peer that stops reading stalls nobody else ----

// While one peer of a relayed connection does not read, 20 other clients of the shard
// (and the admin endpoint, on the same shard) are served with a p99 under 100 ms.
template <class R>
void expect_shard_serves_others(Rig<R>& rig) {
  const ProbeResult pr = probe(rig.addr, ProbeKind::kEcho, 20, 10);
  EXPECT_EQ(pr.answered, pr.asked) << "other clients of the shard were not served";
  EXPECT_LT(pr.p99_ms, kServedP99Ms) << "max " << pr.max_ms << " ms";
  std::string m;
  EXPECT_EQ(admin_get(rig.px->admin_address(), "/metrics", &m), 200)
      << "the admin endpoint stalled";
  if (std::is_base_of_v<UringCompletionPoller, typename R::P>) {
    EXPECT_NE(m.find("ringpoll_uring_buffers_held{shard=\"0\"} "), std::string::npos) << m;
    // The stalled connection's receives stop at its bound of the shard's buffers — or, a
    // stream that turned bulk, it left the buffer ring (it holds none of them).
    const bool at_bound =
        m.find("ringpoll_uring_conns_at_bound{shard=\"0\"} 0\n") == std::string::npos;
    const bool detached =
        m.find("ringpoll_uring_detached_recvs_total{shard=\"0\"} 0\n") == std::string::npos;
    EXPECT_TRUE(at_bound || detached)
        << "no connection at its bound nor off the ring while one peer does not read:\n"
        << m;
  }
}

TYPED_TEST(ProxyRelay, AClientThatStopsReadingStallsNobodyElse) {
  TestUpstream up(echo);
  Rig<TypeParam> rig(settings_for({up.address()}));
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  const int slow = connect_to(rig.addr);
  ASSERT_GE(slow, 0);
  const Flood f =
      flood_until_blocked(slow, Stream(9), size_t{256} << 20, std::chrono::milliseconds(300));
  ASSERT_TRUE(f.blocked) << "the proxy took " << f.sent
                         << " bytes from a client that reads nothing";
  expect_shard_serves_others(rig);
  // The client reads at last: the upstream's echo of every byte, in order.
  EXPECT_EQ(check_stream_n(slow, 9, f.sent), f.sent);
  ::close(slow);
}

TYPED_TEST(ProxyRelay, AnUpstreamThatStopsReadingStallsNobodyElse) {
  // The first upstream connection reads nothing until released, then checks every byte;
  // later ones echo.
  std::atomic<bool> release{false};
  std::atomic<size_t> want{0}, got{0};
  std::atomic<int> conns{0};
  TestUpstream up([&](int fd) {
    if (conns.fetch_add(1) > 0) return echo(fd);
    for (int i = 0; i < 3000 && !release.load(); ++i) usleep(10'000);
    got = check_stream_n(fd, 11, want.load());
    ::shutdown(fd, SHUT_WR);
  });
  Rig<TypeParam> rig(settings_for({up.address()}));
  ASSERT_TRUE(rig.started);
  ASSERT_TRUE(rig.start_admin());
  const int slow = connect_to(rig.addr);
  ASSERT_GE(slow, 0);
  const Flood f =
      flood_until_blocked(slow, Stream(11), size_t{256} << 20, std::chrono::milliseconds(300));
  ASSERT_TRUE(f.blocked) << "the proxy took " << f.sent
                         << " bytes for an upstream that reads nothing";
  expect_shard_serves_others(rig);
  want = f.sent;
  release = true;
  EXPECT_TRUE(closed_within(slow, 20)) << "the upstream never finished reading";
  EXPECT_EQ(got.load(), f.sent) << "bytes were lost or changed on the way";
  ::close(slow);
}

// ---- SNI routing (apps/proxy/sni.h) ----

// Pools "a", "b" and the listener's own "main", one upstream each; routes by server name.
ProxySettings sni_settings(const SocketAddress& a, const SocketAddress& b, const SocketAddress& m) {
  ProxySettings s = settings_for({m});
  PoolSettings pa, pb;
  pa.name = "a";
  pa.upstreams = {a};
  pb.name = "b";
  pb.upstreams = {b};
  s.pools.push_back(pa);
  s.pools.push_back(pb);
  s.listeners[0].sni = {{"api.example.com", "a"}, {"*.b.example", "b"}};
  return s;
}

// Sends the hello (one byte per write when `trickle`) and a payload after it, half-closes,
// and returns what came back.
std::string hello_round_trip(const SocketAddress& at, const std::string& hello, bool trickle) {
  const int c = connect_to(at);
  if (c < 0) return "connect failed";
  const int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (trickle) {
    for (char ch : hello) {
      if (!send_all(c, &ch, 1)) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  } else {
    send_all(c, hello.data(), hello.size());
  }
  send_all(c, "after the hello", 15);
  ::shutdown(c, SHUT_WR);
  std::string back = recv_all(c);
  ::close(c);
  return back;
}

TYPED_TEST(ProxyRelay, SniRoutesPickThePoolByServerNameAndPassEveryByte) {
  TestUpstream a(echo), b(echo), main(echo);
  Rig<TypeParam> rig(sni_settings(a.address(), b.address(), main.address()));
  ASSERT_TRUE(rig.started);
  struct Case {
    std::string sni;
    size_t fragment;
    bool trickle;
    const TestUpstream* to;
  };
  const Case cases[] = {
      {"api.example.com", 16384, false, &a}, {"API.Example.Com", 16384, false, &a},
      {"api.example.com", 7, true, &a},      {"x.b.example", 16384, false, &b},
      {"deep.x.b.example", 50, false, &b},   {"b.example", 16384, false, &main},
      {"other.org", 16384, false, &main},    {"", 16384, false, &main},
  };
  int want_a = 0, want_b = 0, want_main = 0;
  for (const Case& k : cases) {
    HelloSpec h;
    h.sni = k.sni;
    h.alpn = {"h2"};
    h.fragment = k.fragment;
    h.extra = {{51, std::string(1200, '\x07')}};  // a large key share: a hello over 1 KiB
    const std::string hello = client_hello(h);
    (k.to == &a ? want_a : k.to == &b ? want_b : want_main)++;
    EXPECT_EQ(hello_round_trip(rig.addr, hello, k.trickle), hello + "after the hello")
        << "server name '" << k.sni << "': every byte, the hello first, comes back";
    EXPECT_TRUE(wait_for([&] {
      return a.accepted() + b.accepted() + main.accepted() == want_a + want_b + want_main;
    }));
    EXPECT_EQ(a.accepted(), want_a) << k.sni;
    EXPECT_EQ(b.accepted(), want_b) << k.sni;
    EXPECT_EQ(main.accepted(), want_main) << k.sni;
  }
  EXPECT_EQ(rig.px->metrics().total(&proxy::ShardMetrics::sni_routed), want_a + want_b);
  EXPECT_EQ(rig.px->metrics().total(&proxy::ShardMetrics::sni_default), want_main);
  EXPECT_EQ(rig.errors(ProxyError::kBadHello) + rig.errors(ProxyError::kNotTls), 0u);
}

TYPED_TEST(ProxyRelay, SniListenerClosesWhatIsNotAHelloWithoutAnUpstream) {
  TestUpstream a(echo), b(echo), main(echo);
  ProxySettings s = sni_settings(a.address(), b.address(), main.address());
  s.hello_timeout_ns = 300'000'000;
  Rig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  auto closed_after = [&](const std::string& bytes) {
    const int c = connect_to(rig.addr);
    if (c < 0) return false;
    send_all(c, bytes.data(), bytes.size());
    const bool closed = closed_within(c, 10);
    ::close(c);
    return closed;
  };
  EXPECT_TRUE(closed_after("GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"));
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kNotTls) == 1; }));
  HelloSpec bad;
  bad.sni = "api.example.com.";  // a trailing dot: not a host name TLS allows
  EXPECT_TRUE(closed_after(client_hello(bad)));
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kBadHello) == 1; }));
  EXPECT_TRUE(closed_after(std::string("\x16\x03\x01\x00\x04\x01\x00\x40\x01", 9)));  // 16 KiB+1
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kBadHello) == 2; }));
  // Half a hello, then silence: closed at the hello deadline.
  HelloSpec good;
  good.sni = "api.example.com";
  const std::string half = client_hello(good).substr(0, 40);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(closed_after(half));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_TRUE(wait_for([&] { return rig.errors(ProxyError::kHelloTimeout) == 1; }));
  EXPECT_EQ(a.accepted() + b.accepted() + main.accepted(), 0) << "no upstream saw those bytes";
  EXPECT_TRUE(wait_for([&] { return rig.px->metrics().total_active() == 0; }));
  // And a good client is still served.
  const std::string hello = client_hello(good);
  EXPECT_EQ(hello_round_trip(rig.addr, hello, false), hello + "after the hello");
  EXPECT_EQ(a.accepted(), 1);
}

}  // namespace
}  // namespace ringpoll::test
