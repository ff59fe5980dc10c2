// ringpoll-proxy's UDP mode (apps/proxy/udp.h) on the kernel path, on every Linux
// backend: UDP upstreams on loopback threads, clients on the test thread, the proxy on a
// one-shard engine. Every wait is bounded (receive timeouts, wait_for).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "apps/proxy/from_config.h"
#include "apps/proxy/metrics.h"
#include "apps/proxy/proxy.h"
#include "proxy/proxy_rig.h"
#include "proxy/proxy_test_helpers.h"
#include "support/test_env.h"
#include "tuning/config.h"
#include "uring/uring_completion.h"

namespace ringpoll::test {
namespace {

using proxy::ProxySettings;
using proxy::ShardMetrics;
using proxy::UdpDrop;

constexpr int64_t kMs = 1'000'000;

ProxySettings udp_settings(const std::vector<SocketAddress>& ups) {
  ProxySettings s;
  proxy::PoolSettings p;
  p.name = "main";
  p.upstreams = ups;
  s.pools.push_back(p);
  proxy::ListenerSettings l;
  l.name = "main";
  l.pool = "main";
  l.udp = true;
  std::string why;
  EXPECT_TRUE(parse_address("127.0.0.1:0", &l.listen, &why).ok());
  s.listeners.push_back(l);
  return s;
}

template <class P>
struct UdpRig : ProxyRig<P> {
  using ProxyRig<P>::ProxyRig;
  int64_t total(std::atomic<int64_t> ShardMetrics::*c) { return this->px->metrics().total(c); }
  int64_t total(std::atomic<uint64_t> ShardMetrics::*c) { return this->px->metrics().total(c); }
  uint64_t drops(UdpDrop d) { return this->px->metrics().total_udp_drops(d); }
};

template <class P>
class ProxyUdp : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
};
using UdpBackends = SocketBackendTypes;
TYPED_TEST_SUITE(ProxyUdp, UdpBackends, BackendName);

TYPED_TEST(ProxyUdp, DatagramsArriveIntactBothWays) {
  UdpUpstream up('A');
  UdpRig<TypeParam> rig(udp_settings({up.address()}));
  ASSERT_TRUE(rig.started);
  UdpClient c;
  for (size_t n : {size_t{0}, size_t{1}, size_t{100}, size_t{1472}, size_t{9000}, size_t{65000}}) {
    std::string msg(n, '\0');
    for (size_t i = 0; i < n; ++i) msg[i] = static_cast<char>((i * 31 + n) & 0xff);
    EXPECT_EQ(c.ask(rig.addr, msg), cat("A", msg)) << n << " bytes";
  }
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_created), 1);
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_active), 1);
  EXPECT_EQ(rig.total(&ShardMetrics::udp_datagrams_up), 6);
  // The proxy counts a reply just after sending it: the client may see it first.
  EXPECT_TRUE(wait_for([&] { return rig.total(&ShardMetrics::udp_datagrams_down) == 6; }));
  EXPECT_EQ(rig.total(&ShardMetrics::udp_bytes_up), 0 + 1 + 100 + 1472 + 9000 + 65000);
  EXPECT_EQ(rig.total(&ShardMetrics::udp_bytes_down), 6 + 0 + 1 + 100 + 1472 + 9000 + 65000);
  const std::string text = rig.px->metrics().render(rig.px->pools(), mono_now_ns());
  EXPECT_NE(text.find("ringpoll_proxy_udp_flows_active 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("ringpoll_proxy_udp_datagrams_total{direction=\"client_to_upstream\"} 6\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ringpoll_proxy_udp_drops_total{reason=\"flow_limit\"} 0\n"),
            std::string::npos)
      << text;
}

TYPED_TEST(ProxyUdp, TwoClientsGetIndependentFlows) {
  UdpUpstream up('A');
  UdpRig<TypeParam> rig(udp_settings({up.address()}));
  ASSERT_TRUE(rig.started);
  UdpClient a, b;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(a.ask(rig.addr, cat("a", std::to_string(i))), cat("Aa", std::to_string(i)));
    EXPECT_EQ(b.ask(rig.addr, cat("b", std::to_string(i))), cat("Ab", std::to_string(i)));
  }
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_active), 2);
  EXPECT_EQ(up.sources(), 2u) << "each flow has its own socket towards the upstream";
  EXPECT_EQ(rig.px->pools()[0]->at(0).active(), 2);
}

TYPED_TEST(ProxyUdp, AClientStaysOnItsUpstream) {
  UdpUpstream x('X'), y('Y');
  UdpRig<TypeParam> rig(udp_settings({x.address(), y.address()}));
  ASSERT_TRUE(rig.started);
  UdpClient a, b;
  const std::string ta = a.ask(rig.addr, "first").substr(0, 1);
  const std::string tb = b.ask(rig.addr, "first").substr(0, 1);
  ASSERT_FALSE(ta.empty());
  ASSERT_FALSE(tb.empty());
  EXPECT_NE(ta, tb) << "round robin: the second client's flow goes to the other upstream";
  for (int i = 0; i < 100; ++i) {
    const std::string m = std::to_string(i);
    ASSERT_EQ(a.ask(rig.addr, m), cat(ta, m));
    ASSERT_EQ(b.ask(rig.addr, m), cat(tb, m));
  }
  EXPECT_EQ(x.datagrams(), 101u);
  EXPECT_EQ(y.datagrams(), 101u);
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_created), 2);
}

TYPED_TEST(ProxyUdp, AnIdleFlowExpiresAndTheNextDatagramMakesANewOne) {
  UdpUpstream up('A');
  ProxySettings s = udp_settings({up.address()});
  s.udp_idle_ns = 1 * kSec;  // well above the 60 ms gaps below, on a loaded machine too
  UdpRig<TypeParam> rig(std::move(s));
  ASSERT_TRUE(rig.started);
  UdpClient c;
  // Traffic within the idle time keeps the flow.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(c.ask(rig.addr, "x"), "Ax");
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
  }
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_created), 1);
  EXPECT_TRUE(wait_for([&] { return rig.total(&ShardMetrics::udp_flows_active) == 0; }, 5));
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_expired), 1);
  EXPECT_EQ(rig.px->pools()[0]->at(0).active(), 0) << "the expired flow left its upstream";
  EXPECT_EQ(c.ask(rig.addr, "again"), "Aagain");
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_created), 2);
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_active), 1);
  EXPECT_EQ(up.sources(), 2u) << "the new flow has a new socket";
}

TYPED_TEST(ProxyUdp, OverTheFlowBoundDatagramsAreDroppedAndCounted) {
  UdpUpstream up('A');
  ProxySettings s = udp_settings({up.address()});
  s.udp_max_flows = 1;
  UdpRig<TypeParam> rig(std::move(s));
  ASSERT_TRUE(rig.started);
  UdpClient a, b(300);
  EXPECT_EQ(a.ask(rig.addr, "1"), "A1");
  EXPECT_EQ(b.ask(rig.addr, "2"), "") << "a second flow is over the bound";
  EXPECT_EQ(b.ask(rig.addr, "3"), "");
  EXPECT_EQ(rig.drops(UdpDrop::kFlowLimit), 2u);
  EXPECT_EQ(a.ask(rig.addr, "4"), "A4") << "the existing flow still works";
  EXPECT_EQ(rig.total(&ShardMetrics::udp_flows_active), 1);
  EXPECT_EQ(up.datagrams(), 2u);
}

// ---- configuration ----

std::optional<tuning::ConfigError> load(const std::string& text, tuning::Config* c) {
  return tuning::apply_toml(text, "x.toml", c);
}

TEST(ProxyUdpConfig, ProtocolAndFlowKeysReachTheSettings) {
  tuning::Config c;
  const auto e = load(
      "[proxy]\nudp_idle_ms = 1500\nudp_max_flows = 7\n[[proxy.pool]]\nname = \"p\"\n"
      "upstreams = [\"127.0.0.1:9\"]\n[[proxy.listener]]\nname = \"u\"\nlisten = "
      "\"127.0.0.1:0\"\npool = \"p\"\nprotocol = \"udp\"\n",
      &c);
  ASSERT_FALSE(e.has_value()) << e->to_string();
  ProxySettings s;
  std::string why;
  ASSERT_TRUE(proxy::settings_from_config(c, &s, &why)) << why;
  ASSERT_EQ(s.listeners.size(), 1u);
  EXPECT_TRUE(s.listeners[0].udp);
  EXPECT_EQ(s.udp_idle_ns, 1500 * kMs);
  EXPECT_EQ(s.udp_max_flows, 7u);
  // Printed and read back, the same config.
  tuning::Config back;
  ASSERT_FALSE(load(tuning::print_config(c), &back).has_value());
  EXPECT_TRUE(back == c);
  // Defaults: TCP, 30 s, 65536.
  tuning::Config d;
  EXPECT_EQ(d.proxy.udp_idle_ms, 30000);
  EXPECT_EQ(d.proxy.udp_max_flows, 65536);
}

TEST(ProxyUdpConfig, BadValuesNameTheFileLineAndKey) {
  const std::string pool = "[[proxy.pool]]\nname = \"p\"\nupstreams = [\"127.0.0.1:9\"]\n";
  const std::string head =
      cat(pool, "[[proxy.listener]]\nname = \"u\"\nlisten = \"127.0.0.1:0\"\npool = \"p\"\n");
  struct Case {
    std::string text;
    int line;
    const char* key;
    const char* says;
  } cases[] = {
      {cat(head, "protocol = \"sctp\"\n"), 8, "proxy.listener[0].protocol", "sctp"},
      {cat(head, "protocol = \"udp\"\nproxy_protocol = \"v2\"\n"), 9,
       "proxy.listener[0].proxy_protocol", "TCP"},
      {"[proxy]\nudp_max_flows = 0\n", 2, "proxy.udp_max_flows", ""},
      {"[proxy]\nudp_idle_ms = 0\n", 2, "proxy.udp_idle_ms", ""},
      {"[proxy]\nudp_flows = 3\n", 2, "proxy.udp_flows", ""},
  };
  for (const Case& k : cases) {
    tuning::Config c;
    const auto e = load(k.text, &c);
    ASSERT_TRUE(e.has_value()) << k.key;
    EXPECT_EQ(e->file, "x.toml") << e->to_string();
    EXPECT_EQ(e->line, k.line) << e->to_string();
    EXPECT_EQ(e->key, k.key) << e->to_string();
    EXPECT_NE(e->message.find(k.says), std::string::npos) << e->to_string();
  }
}

}  // namespace
}  // namespace ringpoll::test
