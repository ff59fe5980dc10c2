// ringpoll-proxy --protocol udp on a packet path (apps/proxy/udp_bypass.h), end to end:
// the built binary owns the root-side end of a veth pair (DPDK net_af_packet, or AF_XDP)
// as 10.77.0.1; inside the namespace (10.77.0.2) two kernel UDP echo upstreams and kernel
// clients. Checks payloads (1..1400 bytes) come back intact, each client keeps one flow
// port and one upstream, idle flows expire and free their place, the flow bound drops
// and counts, and bad frames are dropped and counted (Prometheus text from --admin).
// The config checks need no device and run in every build.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "netns.h"
#include "packet/frame.h"
#ifdef RINGPOLL_WITH_XDP
#include "packet/xdp_queue.h"
#endif

namespace ringpoll::packet::test {
namespace {

constexpr uint32_t kProxyIp = 0x0a4d0001;  // 10.77.0.1: the path's address
constexpr uint32_t kNsIp = 0x0a4d0002;     // 10.77.0.2: clients and upstreams
constexpr uint16_t kListen = 9000;
constexpr int kPortBase = 41000;
constexpr int kPortCount = 64;

// Runs `cmd` through the shell with stderr joined to stdout; its output and exit code.
int run_capture(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string proxy_cmd(const std::string& args) {
  return std::string(RINGPOLL_PROXY_BIN) + " --protocol udp " + args;
}

TEST(ProxyUdpPath, ConfigErrorsNameTheKey) {
  struct Case {
    std::string args, want;
  };
  const Case cases[] = {
      {"--listen 10.77.0.1:9000 --upstream 10.77.0.2:7001 --set packet.path=dpdk --set "
       "packet.udp_port_base=65000 --set packet.udp_port_count=1000",
       "packet.udp_port_count"},
      {"--listen 10.77.0.1:41000 --upstream 10.77.0.2:7001 --set packet.path=xdp --set "
       "packet.udp_port_base=41000",
       "listen port 41000 is one of the flow ports (packet.udp_port_base"},
      {"--listen 0.0.0.0:9000 --upstream 10.77.0.2:7001 --set packet.path=dpdk",
       "needs an IPv4 address of ours"},
      {"--listen 10.77.0.1:9000 --upstream [::1]:7001 --set packet.path=xdp",
       "reaches IPv4 upstreams only"},
  };
  for (const Case& c : cases) {
    std::string out;
    EXPECT_EQ(run_capture(proxy_cmd(c.args), &out), 2) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.want), std::string::npos) << c.args << "\n" << out;
  }
}

// Builds that lack a path only (with both, both are tested end to end below).
#if !(defined(RINGPOLL_WITH_DPDK) && defined(RINGPOLL_WITH_XDP))
TEST(ProxyUdpPath, APathTheBuildLacksIsRefused) {
#ifdef RINGPOLL_WITH_DPDK
  const std::string path = "xdp", want = "this build has no AF_XDP";
#else
  const std::string path = "dpdk", want = "this build has no DPDK";
#endif
  std::string out;
  EXPECT_EQ(run_capture(proxy_cmd("--listen 10.77.0.1:9000 --upstream 10.77.0.2:7001 --set "
                                  "engine.shards=1 --set packet.path=" +
                                  path),
                        &out),
            2)
      << out;
  EXPECT_NE(out.find(want), std::string::npos) << out;
}
#endif

#if defined(RINGPOLL_WITH_DPDK) || defined(RINGPOLL_WITH_XDP)

// A kernel UDP echo upstream inside the namespace on 10.77.0.2:port (zero UDP checksums:
// see echo_round_trips). Counts what it echoes by source port (one per proxy flow).
class NsEcho {
 public:
  NsEcho(const VethPair& veth, uint16_t port, uint32_t ip = kNsIp) {
    t_ = std::thread([this, &veth, port, ip] { veth.run_inside([&] { serve(ip, port); }); });
    for (int i = 0; i < 1000 && !ready_.load() && !failed_.load(); ++i) usleep(2000);
  }
  ~NsEcho() {
    stop_.store(true);
    t_.join();
  }
  bool ready() const { return ready_.load(); }
  std::map<uint16_t, int> sources() const {
    std::lock_guard<std::mutex> l(mu_);
    return src_;
  }
  int foreign() const { return foreign_.load(); }

 private:
  void serve(uint32_t ip, uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one);
    timeval tv{0, 20'000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(ip);
    at.sin_port = htons(port);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) {
      failed_.store(true);
      ::close(fd);
      return;
    }
    ready_.store(true);
    char buf[2048];
    while (!stop_.load()) {
      sockaddr_in from{};
      socklen_t len = sizeof from;
      const ssize_t n = recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (ntohl(from.sin_addr.s_addr) == kProxyIp) {
          ++src_[ntohs(from.sin_port)];
        } else {
          foreign_.fetch_add(1);
        }
      }
      sendto(fd, buf, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
    ::close(fd);
  }

  std::thread t_;
  std::atomic<bool> ready_{false}, failed_{false}, stop_{false};
  mutable std::mutex mu_;
  std::map<uint16_t, int> src_;
  std::atomic<int> foreign_{0};
};

// A kernel UDP client socket in the calling thread's namespace: zero UDP checksums (see
// echo_round_trips), receives time out after timeout_ms (< 1000).
int client_socket(int timeout_ms) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one);
  timeval tv{0, timeout_ms * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}
void to_proxy(int fd, const void* p, size_t n) {
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(kProxyIp);
  to.sin_port = htons(kListen);
  sendto(fd, p, n, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
}

// `clients` kernel sockets inside the namespace, one after the other; each sends `n`
// datagrams to the proxy (sizes 1, 1400, then spread over 1..1400; the bytes differ per
// client and datagram) and waits for each echo, sending again once after 500 ms without
// one. Returns how many echoes came back intact.
int proxy_round_trips(const VethPair& veth, int clients, int n, int salt = 0) {
  int ok = 0;
  veth.run_inside([&] {
    for (int c = 0; c < clients; ++c) {
      const int fd = client_socket(500);
      for (int i = 0; i < n; ++i) {
        const size_t size = i == 0 ? 1 : i == 1 ? 1400 : 1 + (i * 397 + c * 131) % 1400;
        std::string msg(size, '\0');
        for (size_t k = 0; k < size; ++k)
          msg[k] = static_cast<char>((c + salt) * 7 + i * 13 + static_cast<int>(k) * 3);
        bool echoed = false;
        for (int attempt = 0; attempt < 2 && !echoed; ++attempt) {
          to_proxy(fd, msg.data(), msg.size());
          char buf[2048];
          for (;;) {  // a late echo of an earlier datagram is skipped
            const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
            if (got < 0) break;
            if (got == static_cast<ssize_t>(size) && std::memcmp(buf, msg.data(), size) == 0) {
              echoed = true;
              break;
            }
          }
        }
        ok += echoed;
      }
      ::close(fd);
    }
  });
  return ok;
}

// One datagram from a new client inside the namespace; true when an echo arrives within
// wait_ms.
bool one_datagram(const VethPair& veth, int wait_ms) {
  bool echoed = false;
  veth.run_inside([&] {
    const int fd = client_socket(wait_ms);
    to_proxy(fd, "over", 4);
    char buf[16];
    echoed = ::recv(fd, buf, sizeof buf, 0) == 4;
    ::close(fd);
  });
  return echoed;
}

// GET /metrics from the admin endpoint on 127.0.0.1:port.
std::string scrape(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    (void)::write(fd, req, sizeof req - 1);
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// The value of sample `name` (with its labels) in Prometheus text, or -1.
int64_t sample(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::atoll(text.c_str() + at + name.size() + 2);
}
std::string drops(const char* reason) {
  return std::string("ringpoll_proxy_udp_drops_total{reason=\"") + reason + "\"}";
}

// Waits until sample `name` is `want` (at_least: at least `want`).
bool wait_for_sample(int admin, const std::string& name, int64_t want, int secs = 10,
                     bool at_least = false) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(secs);
  while (std::chrono::steady_clock::now() < end) {
    const int64_t v = sample(scrape(admin), name);
    if (v == want || (at_least && v > want)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// ringpoll-proxy: UDP on 10.77.0.1:9000 to the two namespace upstreams, on `path`, one
// shard, flow ports 41000..41063, admin on loopback. The admin port, or 0 (with a
// gtest failure).
int start_proxy(Child& proxy, const std::string& path, const std::vector<std::string>& sets,
                const std::vector<std::string>& upstreams = {"10.77.0.2:7001", "10.77.0.2:7002"}) {
  std::vector<std::string> args = {
      "--listen",   "10.77.0.1:9000",
      "--protocol", "udp",
      "--admin",    "127.0.0.1:0",
      "--set",      "packet.path=" + path,
      "--set",      "engine.shards=1",
      "--set",      "engine.pin=false",
      "--set",      "packet.udp_port_base=" + std::to_string(kPortBase),
      "--set",      "packet.udp_port_count=" + std::to_string(kPortCount)};
  for (const std::string& u : upstreams) {
    args.push_back("--upstream");
    args.push_back(u);
  }
  for (const std::string& s : sets) {
    args.push_back("--set");
    args.push_back(s);
  }
  EXPECT_TRUE(proxy.start(RINGPOLL_PROXY_BIN, args));
  const std::string line = proxy.read_line(20000);
  EXPECT_TRUE(line.starts_with("ringpoll-proxy: listening on 10.77.0.1:9000 (main udp")) << line;
  EXPECT_NE(line.find("udp path " + path), std::string::npos) << line;
  const std::string admin = "admin on 127.0.0.1:";
  const size_t at = line.find(admin);
  EXPECT_NE(at, std::string::npos) << line;
  return at == std::string::npos ? 0 : std::atoi(line.c_str() + at + admin.size());
}

// `clients` clients (an even number), twenty datagrams each: every echo intact; each
// client one flow port (so one upstream), the two upstreams shared evenly (round robin,
// per shard); the metrics agree.
void relays_with_affinity(const VethPair& veth, const std::string& path,
                          const std::vector<std::string>& sets, int clients = 4) {
  NsEcho up1(veth, 7001), up2(veth, 7002);
  ASSERT_TRUE(up1.ready() && up2.ready());
  Child proxy;
  const int admin = start_proxy(proxy, path, sets);
  ASSERT_GT(admin, 0);
  EXPECT_EQ(proxy_round_trips(veth, clients, 20), clients * 20);
  const auto s1 = up1.sources(), s2 = up2.sources();
  EXPECT_EQ(s1.size() + s2.size(), static_cast<size_t>(clients));
  EXPECT_GE(s1.size(), 1u);
  EXPECT_GE(s2.size(), 1u);
  for (const auto* s : {&s1, &s2}) {
    for (const auto& [port, n] : *s) {
      EXPECT_GE(port, kPortBase);
      EXPECT_LT(port, kPortBase + kPortCount);
      EXPECT_EQ(s1.count(port) + s2.count(port), 1u) << port;  // one upstream per flow
      EXPECT_GE(n, 20) << port;                                // all of one client's
    }
  }
  EXPECT_EQ(up1.foreign() + up2.foreign(), 0);
  const std::string m = scrape(admin);
  EXPECT_EQ(sample(m, "ringpoll_proxy_udp_flows_active"), clients) << m;
  EXPECT_EQ(sample(m, "ringpoll_proxy_udp_flows_total"), clients) << m;
  EXPECT_GE(sample(m, "ringpoll_proxy_udp_datagrams_total{direction=\"client_to_upstream\"}"),
            clients * 20);
  EXPECT_GE(sample(m, "ringpoll_proxy_udp_datagrams_total{direction=\"upstream_to_client\"}"),
            clients * 20);
  EXPECT_EQ(sample(m, drops("stray")), 0) << m;
  EXPECT_EQ(proxy.stop(SIGTERM), 0);
}

// The inner end's MAC, read inside the namespace.
MacAddr inner_mac(const VethPair& veth) {
  MacAddr mac{};
  veth.run_inside([&] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq r{};
    std::strncpy(r.ifr_name, veth.inner().c_str(), IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFHWADDR, &r) == 0) std::memcpy(mac.data(), r.ifr_hwaddr.sa_data, 6);
    ::close(fd);
  });
  return mac;
}
MacAddr outer_mac(const VethPair& veth) {
  MacAddr mac{};
  std::ifstream in("/sys/class/net/" + veth.outer() + "/address");
  std::string text;
  in >> text;
  unsigned b[6] = {};
  if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) ==
      6) {
    for (int i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(b[i]);
  }
  return mac;
}

// Raw frames from inside the namespace to the proxy: a datagram to the listen port with
// a wrong UDP checksum, one whose IPv4 length runs past the frame, a TCP segment, and a
// frame of an unknown EtherType. Returns how many were sent.
int send_bad_frames(const VethPair& veth) {
  const MacAddr src = inner_mac(veth), dst = outer_mac(veth);
  int sent = 0;
  veth.run_inside([&] {
    const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = static_cast<int>(if_nametoindex(veth.inner().c_str()));
    to.sll_halen = 6;
    std::memcpy(to.sll_addr, dst.data(), 6);
    const Identity me{src, kNsIp, 5555};
    const std::string payload = "bad";
    std::vector<std::vector<std::byte>> frames;
    std::vector<std::byte> f(128);
    const size_t len = build_udp(f, me, dst, kProxyIp, kListen, std::as_bytes(std::span(payload)));
    f.resize(len);
    auto bad_sum = f;
    bad_sum[kEthHeader + kIpv4Header + 6] ^= std::byte{0x5a};
    frames.push_back(bad_sum);
    auto long_ip = f;
    long_ip[kEthHeader + 2] = std::byte{0x05};  // total length 0x05xx > the frame
    frames.push_back(long_ip);
    auto tcp = f;  // (its IPv4 header checksum is then wrong too)
    tcp[kEthHeader + 9] = std::byte{6};
    frames.push_back(tcp);
    auto other = f;
    other[12] = std::byte{0x88};
    other[13] = std::byte{0xb5};  // IEEE local experimental EtherType
    frames.push_back(other);
    for (const auto& fr : frames) {
      sent += sendto(fd, fr.data(), fr.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
              static_cast<ssize_t>(fr.size());
    }
    ::close(fd);
  });
  return sent;
}

// Idle flows expire (udp_idle_ms = 1000) and give their place back; over the bound of two
// flows a new client is dropped and counted; bad frames are dropped and counted, and the
// proxy still relays after them.
void expiry_bound_and_bad_frames(const VethPair& veth, const std::string& path,
                                 std::vector<std::string> sets) {
  NsEcho up1(veth, 7001), up2(veth, 7002);
  ASSERT_TRUE(up1.ready() && up2.ready());
  sets.push_back("proxy.udp_idle_ms=1000");
  sets.push_back("proxy.udp_max_flows=2");
  Child proxy;
  const int admin = start_proxy(proxy, path, sets);
  ASSERT_GT(admin, 0);
  EXPECT_EQ(proxy_round_trips(veth, 2, 5), 10);
  EXPECT_FALSE(one_datagram(veth, 200));  // a third flow: over the bound
  std::string m = scrape(admin);
  EXPECT_EQ(sample(m, "ringpoll_proxy_udp_flows_active"), 2) << m;
  EXPECT_GE(sample(m, drops("flow_limit")), 1) << m;
  // Both flows go idle and end; their ports and the bound are free again.
  EXPECT_TRUE(wait_for_sample(admin, "ringpoll_proxy_udp_flows_expired_total", 2));
  m = scrape(admin);
  EXPECT_EQ(sample(m, "ringpoll_proxy_udp_flows_active"), 0) << m;
  EXPECT_EQ(proxy_round_trips(veth, 2, 5, /*salt=*/1), 10);
  m = scrape(admin);
  EXPECT_EQ(sample(m, "ringpoll_proxy_udp_flows_total"), 4) << m;

  const int relayed = static_cast<int>(up1.sources().size() + up2.sources().size());
  ASSERT_EQ(send_bad_frames(veth), 4);
  // The bad checksum and the TCP segment (its header checksum no longer matches); the
  // long IPv4 length and the other EtherType (and whatever else the namespace's kernel
  // sends: IPv6 neighbour discovery) as bad frames.
  EXPECT_TRUE(wait_for_sample(admin, drops("bad_checksum"), 2, 5, true)) << scrape(admin);
  m = scrape(admin);
  EXPECT_GE(sample(m, drops("bad_frame")), 2) << m;
  // Nothing of them reached an upstream, and the proxy still relays.
  EXPECT_EQ(static_cast<int>(up1.sources().size() + up2.sources().size()), relayed);
  EXPECT_EQ(up1.foreign() + up2.foreign(), 0);
  EXPECT_TRUE(wait_for_sample(admin, "ringpoll_proxy_udp_flows_active", 0));
  EXPECT_EQ(proxy_round_trips(veth, 1, 5, /*salt=*/2), 5);
  EXPECT_EQ(proxy.stop(SIGTERM), 0);
}

// An upstream on another address of the namespace, whose MAC the path learns from no
// client: the proxy asks for it when its queue opens, so even the very first datagram of
// each new flow gets through (no resend).
void upstream_resolved_at_start(const VethPair& veth, const std::string& path,
                                const std::vector<std::string>& sets) {
  constexpr uint32_t kOther = 0x0a4d0003;  // 10.77.0.3
  ASSERT_EQ(
      std::system(("ip -n " + veth.netns() + " addr add 10.77.0.3/24 dev " + veth.inner()).c_str()),
      0);
  NsEcho up(veth, 7003, kOther);
  ASSERT_TRUE(up.ready());
  Child proxy;
  const int admin = start_proxy(proxy, path, sets, {"10.77.0.3:7003"});
  ASSERT_GT(admin, 0);
  int ok = 0;
  for (int c = 0; c < 4; ++c) ok += one_datagram(veth, 900);
  EXPECT_EQ(ok, 4);
  const std::string m = scrape(admin);
  EXPECT_EQ(sample(m, drops("send_upstream")), 0) << m;
  EXPECT_EQ(sample(m, "ringpoll_proxy_udp_flows_total"), 4) << m;
  EXPECT_EQ(up.sources().size(), 4u);
  EXPECT_EQ(proxy.stop(SIGTERM), 0);
}

#endif

#ifdef RINGPOLL_WITH_DPDK
std::vector<std::string> dpdk_sets(const VethPair& veth, const std::string& vdev_extra = "") {
  const std::string args = std::string("--no-huge --no-pci --no-shconf --no-telemetry -m 64 ") +
                           "--vdev=net_af_packet0,iface=" + veth.outer() + vdev_extra +
                           " --log-level=lib.eal:error";
  return {"packet.dpdk_port=net_af_packet0", "packet.dpdk_args=\"" + args + "\""};
}

TEST(ProxyUdpDpdk, RelaysClientsWithAffinityOverAVethPair) {
  VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  relays_with_affinity(veth, "dpdk", dpdk_sets(veth));
}

// Two shards on two queue pairs of net_af_packet (its PACKET_FANOUT hash picks the queue
// per 4-tuple): an upstream's reply may reach the other shard, which hands it over.
TEST(ProxyUdpDpdk, TwoShardsRelayRepliesThatReachTheOtherShard) {
  VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  std::vector<std::string> sets = dpdk_sets(veth, ",qpairs=2");
  sets.push_back("engine.shards=2");
  relays_with_affinity(veth, "dpdk", sets, 8);
}

TEST(ProxyUdpDpdk, UpstreamOnAnotherAddressIsResolvedAtStart) {
  VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  upstream_resolved_at_start(veth, "dpdk", dpdk_sets(veth));
}

TEST(ProxyUdpDpdk, IdleExpiryFlowBoundAndBadFrames) {
  VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  expiry_bound_and_bad_frames(veth, "dpdk", dpdk_sets(veth));
}
#endif

#ifdef RINGPOLL_WITH_XDP
// False (with the reason) where the kernel refuses AF_XDP: the test skips, as
// xdp_queue_test.cc does.
bool xdp_allowed(const VethPair& veth, std::string* why) {
  XdpQueue probe;
  probe.set_options(XdpOptions{veth.outer(), 256, true});
  QueueSpec spec;
  spec.local_ip = kProxyIp;
  spec.ring_size = 64;
  const Status st = probe.open(spec, why);
  return !(st.sys_errno() == EPERM || st.sys_errno() == EOPNOTSUPP);
}

TEST(ProxyUdpXdp, RelaysClientsWithAffinityOverAVethPair) {
  VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  if (!xdp_allowed(veth, &why)) GTEST_SKIP() << "AF_XDP is not allowed here: " << why;
  relays_with_affinity(veth, "xdp", {"packet.xdp_iface=" + veth.outer()});
}

TEST(ProxyUdpXdp, UpstreamOnAnotherAddressIsResolvedAtStart) {
  VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  if (!xdp_allowed(veth, &why)) GTEST_SKIP() << "AF_XDP is not allowed here: " << why;
  upstream_resolved_at_start(veth, "xdp", {"packet.xdp_iface=" + veth.outer()});
}

TEST(ProxyUdpXdp, IdleExpiryFlowBoundAndBadFrames) {
  VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  if (!xdp_allowed(veth, &why)) GTEST_SKIP() << "AF_XDP is not allowed here: " << why;
  expiry_bound_and_bad_frames(veth, "xdp", {"packet.xdp_iface=" + veth.outer()});
}
#endif

}  // namespace
}  // namespace ringpoll::packet::test
