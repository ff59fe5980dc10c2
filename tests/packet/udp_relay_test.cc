// ringpoll-proxy's UDP flow table on a packet path (apps/proxy/udp_relay.h) with no
// device: a fake queue records what the relay transmits. Flow ports and their demux,
// affinity, strays, idle expiry, the flow bound, an exhausted port slice, refused sends.
#include "apps/proxy/udp_relay.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace ringpoll::proxy {
namespace {

using packet::Datagram;

constexpr uint32_t kUs = 0x0a000001;      // 10.0.0.1: our address
constexpr uint32_t kUp = 0x0a000009;      // 10.0.0.9: the upstreams' host
constexpr uint32_t kClient = 0x0a000002;  // 10.0.0.2
constexpr uint16_t kListen = 9000;
constexpr uint16_t kBase = 40000;

struct Sent {
  Datagram d;
  std::string payload;
};

// What the relay needs of a queue: tx_burst (the rest is never called).
struct FakeQueue {
  static constexpr packet::Path kPath = packet::Path::kKernel;
  Status open(const packet::QueueSpec&) { return Status(); }
  size_t rx_burst(std::span<Datagram>) { return 0; }
  void release(std::span<Datagram>) {}
  size_t tx_burst(std::span<const Datagram> in) {
    const size_t n = std::min(in.size(), room);
    for (size_t i = 0; i < n; ++i)
      sent.push_back({in[i], std::string(reinterpret_cast<const char*>(in[i].data), in[i].len)});
    room -= n;
    return n;
  }
  packet::PacketStats stats() const { return {}; }
  void close() {}
  size_t room = SIZE_MAX;
  std::vector<Sent> sent;
};
static_assert(packet::PacketQueue<FakeQueue>);

SocketAddress addr(const std::string& s) {
  SocketAddress a;
  std::string why;
  EXPECT_TRUE(parse_address(s, &a, &why).ok()) << why;
  return a;
}

class UdpRelayTest : public ::testing::Test {
 protected:
  UdpRelayTest() : metrics_(1), pool_(settings()) {}
  static PoolSettings settings() {
    PoolSettings p;
    p.name = "main";
    p.upstreams = {addr("10.0.0.9:7001"), addr("10.0.0.9:7002")};
    return p;
  }
  UdpRelay& relay(uint32_t ports = 16) {
    const UdpRelaySpec spec = relay_slice(kUs, kListen, kBase, ports, 0, 1);
    relay_ = std::make_unique<UdpRelay>(spec, metrics_, metrics_.shard(0), [this] {
      UdpPick p;
      p.pool = &pool_;
      p.idle_ns = idle_ns_;
      p.max_flows = max_flows_;
      return p;
    });
    return *relay_;
  }
  // One datagram from ip:port to our port `to`, at time `now`.
  void deliver(uint32_t ip, uint16_t port, uint16_t to, std::string payload, int64_t now) {
    Datagram d{ip,
               port,
               to,
               static_cast<uint32_t>(payload.size()),
               reinterpret_cast<std::byte*>(payload.data()),
               0};
    relay_->on_batch(std::span<const Datagram>(&d, 1), q_, now);
  }
  uint64_t drops(UdpDrop d) const { return metrics_.total_udp_drops(d); }
  int64_t gauge() const { return metrics_.total(&ShardMetrics::udp_flows_active); }

  Metrics metrics_;
  Pool pool_;
  int64_t idle_ns_ = 1000;
  size_t max_flows_ = 100;
  FakeQueue q_;
  std::unique_ptr<UdpRelay> relay_;
};

TEST_F(UdpRelayTest, ClientsGetAFlowPortAndKeepTheirUpstream) {
  relay();
  deliver(kClient, 5000, kListen, "a1", 10);
  deliver(kClient, 5001, kListen, "b1", 11);
  deliver(kClient, 5000, kListen, "a2", 12);
  ASSERT_EQ(q_.sent.size(), 3u);
  const Datagram& a1 = q_.sent[0].d;
  const Datagram& b1 = q_.sent[1].d;
  const Datagram& a2 = q_.sent[2].d;
  EXPECT_EQ(a1.peer_ip, kUp);
  EXPECT_EQ(b1.peer_ip, kUp);
  EXPECT_NE(a1.peer_port, b1.peer_port);  // round robin over the two upstreams
  EXPECT_EQ(a2.peer_port, a1.peer_port);  // affinity
  EXPECT_EQ(a2.local_port, a1.local_port);
  EXPECT_NE(a1.local_port, b1.local_port);
  EXPECT_GE(a1.local_port, kBase);
  EXPECT_LT(a1.local_port, kBase + 16);
  EXPECT_EQ(q_.sent[2].payload, "a2");
  EXPECT_EQ(relay_->flows(), 2u);
  EXPECT_EQ(gauge(), 2);
  EXPECT_EQ(pool_.at(0).active() + pool_.at(1).active(), 2);

  // The upstream's reply to a's flow port goes to a, from the listen port.
  deliver(kUp, a1.peer_port, a1.local_port, "reply", 13);
  ASSERT_EQ(q_.sent.size(), 4u);
  EXPECT_EQ(q_.sent[3].d.peer_ip, kClient);
  EXPECT_EQ(q_.sent[3].d.peer_port, 5000);
  EXPECT_EQ(q_.sent[3].d.local_port, kListen);
  EXPECT_EQ(q_.sent[3].payload, "reply");
  const ShardMetrics& m = metrics_.shard(0);
  EXPECT_EQ(m.udp_datagrams_up.load(), 3u);
  EXPECT_EQ(m.udp_datagrams_down.load(), 1u);
  EXPECT_EQ(m.udp_bytes_up.load(), 6u);
  EXPECT_EQ(m.udp_bytes_down.load(), 5u);
  EXPECT_EQ(m.udp_flows_created.load(), 2u);
}

TEST_F(UdpRelayTest, RepliesFromAnotherSenderOrToAnUnheldPortAreStrays) {
  relay();
  deliver(kClient, 5000, kListen, "x", 1);
  ASSERT_EQ(q_.sent.size(), 1u);
  const Datagram up = q_.sent[0].d;
  deliver(kUp, static_cast<uint16_t>(up.peer_port + 1), up.local_port, "wrong port", 2);
  deliver(kUp + 1, up.peer_port, up.local_port, "wrong host", 3);
  deliver(kUp, up.peer_port, static_cast<uint16_t>(up.local_port + 1), "no flow", 4);
  deliver(kUp, up.peer_port, 1234, "not a flow port", 5);
  deliver(kUp, up.peer_port, static_cast<uint16_t>(kBase + 16), "just past the slice", 6);
  EXPECT_EQ(q_.sent.size(), 1u);
  EXPECT_EQ(drops(UdpDrop::kStray), 5u);
}

TEST_F(UdpRelayTest, IdleFlowsExpireAndFreeTheirPortAndUpstream) {
  relay();
  deliver(kClient, 5000, kListen, "a", 0);
  deliver(kClient, 5001, kListen, "b", 500);
  const uint16_t port_a = q_.sent[0].d.local_port;
  EXPECT_EQ(relay_->next_expiry(), 1000);
  deliver(kClient, 5000, kListen, "a again", 600);  // a is now the newest
  EXPECT_EQ(relay_->next_expiry(), 1500);
  EXPECT_EQ(relay_->expire(1499), 0u);
  EXPECT_EQ(relay_->expire(1500), 1u);  // b
  EXPECT_EQ(relay_->flow_of_client(kClient, 5001), nullptr);
  ASSERT_NE(relay_->flow_of_client(kClient, 5000), nullptr);
  // A reply counts as activity too.
  deliver(kUp, q_.sent[0].d.peer_port, port_a, "r", 1550);
  EXPECT_EQ(relay_->expire(1600), 0u);
  EXPECT_EQ(relay_->expire(2550), 1u);
  EXPECT_EQ(relay_->flows(), 0u);
  EXPECT_EQ(relay_->next_expiry(), -1);
  EXPECT_EQ(relay_->free_ports(), 16u);
  EXPECT_EQ(gauge(), 0);
  EXPECT_EQ(metrics_.total(&ShardMetrics::udp_flows_expired), 2);
  EXPECT_EQ(pool_.at(0).active() + pool_.at(1).active(), 0);
  // The freed port is not the first one handed out again, and a late reply to it is a stray.
  deliver(kClient, 5002, kListen, "c", 3000);
  EXPECT_NE(q_.sent.back().d.local_port, port_a);
  deliver(kUp, q_.sent[0].d.peer_port, port_a, "late", 3001);
  EXPECT_EQ(drops(UdpDrop::kStray), 1u);
}

TEST_F(UdpRelayTest, OverTheFlowBoundNewClientsAreDroppedAndCounted) {
  max_flows_ = 2;
  relay();
  deliver(kClient, 5000, kListen, "a", 0);
  deliver(kClient, 5001, kListen, "b", 0);
  deliver(kClient, 5002, kListen, "c", 0);
  deliver(kClient, 5002, kListen, "c", 0);
  EXPECT_EQ(q_.sent.size(), 2u);
  EXPECT_EQ(drops(UdpDrop::kFlowLimit), 2u);
  EXPECT_EQ(relay_->flows(), 2u);
  deliver(kClient, 5000, kListen, "a", 1);  // existing flows still pass
  EXPECT_EQ(q_.sent.size(), 3u);
  relay_->expire(2000);
  deliver(kClient, 5002, kListen, "c", 2001);
  EXPECT_EQ(q_.sent.size(), 4u);
  EXPECT_EQ(relay_->flows(), 1u);
}

TEST_F(UdpRelayTest, AnExhaustedPortSliceDropsAndReleasesTheUpstream) {
  relay(1);
  deliver(kClient, 5000, kListen, "a", 0);
  deliver(kClient, 5001, kListen, "b", 0);
  EXPECT_EQ(q_.sent.size(), 1u);
  EXPECT_EQ(drops(UdpDrop::kNoPort), 1u);
  EXPECT_EQ(pool_.at(0).active() + pool_.at(1).active(), 1);
  EXPECT_EQ(gauge(), 1);
}

TEST_F(UdpRelayTest, SendsTheQueueRefusesAreCountedAndTheFlowStays) {
  relay();
  q_.room = 0;
  deliver(kClient, 5000, kListen, "a", 0);
  EXPECT_EQ(drops(UdpDrop::kSendUpstream), 1u);
  EXPECT_EQ(relay_->flows(), 1u);
  q_.room = 1;
  deliver(kClient, 5000, kListen, "a", 1);
  const Datagram up = q_.sent.back().d;
  q_.room = 0;
  deliver(kUp, up.peer_port, up.local_port, "r", 2);
  EXPECT_EQ(drops(UdpDrop::kSendClient), 1u);
  EXPECT_EQ(metrics_.shard(0).udp_datagrams_up.load(), 1u);
  EXPECT_EQ(metrics_.shard(0).udp_datagrams_down.load(), 0u);
}

TEST_F(UdpRelayTest, ABatchLargerThanABurstIsSentInBursts) {
  max_flows_ = 1000;
  relay(256);
  std::vector<std::string> payloads;
  std::vector<Datagram> in;
  for (int i = 0; i < 150; ++i) payloads.push_back(std::string(1, 'p').append(std::to_string(i)));
  for (int i = 0; i < 150; ++i) {
    in.push_back(Datagram{kClient, static_cast<uint16_t>(6000 + i), kListen,
                          static_cast<uint32_t>(payloads[i].size()),
                          reinterpret_cast<std::byte*>(payloads[i].data()), 0});
  }
  relay_->on_batch(std::span<const Datagram>(in), q_, 0);
  ASSERT_EQ(q_.sent.size(), 150u);
  for (int i = 0; i < 150; ++i) EXPECT_EQ(q_.sent[i].payload, payloads[i]);
  EXPECT_EQ(relay_->flows(), 150u);
  EXPECT_EQ(drops(UdpDrop::kFlowLimit), 0u);
}

TEST_F(UdpRelayTest, CloseAllEndsEveryFlow) {
  relay();
  deliver(kClient, 5000, kListen, "a", 0);
  deliver(kClient, 5001, kListen, "b", 0);
  EXPECT_EQ(relay_->close_all(), 2u);
  EXPECT_EQ(gauge(), 0);
  EXPECT_EQ(metrics_.total(&ShardMetrics::udp_flows_expired), 0);
  EXPECT_EQ(pool_.at(0).active() + pool_.at(1).active(), 0);
}

TEST_F(UdpRelayTest, RepliesToAnotherShardsPortsAreHandedToIt) {
  // Shard 0 of 2 over ports 40000..40015: 40008.. belong to shard 1.
  relay_ = std::make_unique<UdpRelay>(relay_slice(kUs, kListen, kBase, 16, 0, 2), metrics_,
                                      metrics_.shard(0), [this] {
                                        UdpPick p;
                                        p.pool = &pool_;
                                        p.idle_ns = idle_ns_;
                                        p.max_flows = max_flows_;
                                        return p;
                                      });
  EXPECT_EQ(relay_->owner_of(kBase), 0);
  EXPECT_EQ(relay_->owner_of(kBase + 7), 0);
  EXPECT_EQ(relay_->owner_of(kBase + 8), 1);
  EXPECT_EQ(relay_->owner_of(kBase + 15), 1);
  EXPECT_EQ(relay_->owner_of(kBase + 16), -1);
  EXPECT_EQ(relay_->owner_of(kBase - 1), -1);
  // Without a handoff such a reply is a stray.
  deliver(kUp, 7001, kBase + 9, "r0", 0);
  EXPECT_EQ(drops(UdpDrop::kStray), 1u);
  std::vector<std::pair<size_t, std::string>> handed;
  bool accept = true;
  relay_->set_handoff([&](const Datagram& d, size_t owner) {
    handed.emplace_back(owner, std::string(reinterpret_cast<const char*>(d.data), d.len));
    EXPECT_EQ(d.local_port, kBase + 9);
    EXPECT_EQ(d.peer_port, 7001);
    return accept;
  });
  deliver(kUp, 7001, kBase + 9, "r1", 1);
  ASSERT_EQ(handed.size(), 1u);
  EXPECT_EQ(handed[0].first, 1u);
  EXPECT_EQ(handed[0].second, "r1");
  accept = false;  // the owner's inbox is full
  deliver(kUp, 7001, kBase + 9, "r2", 2);
  EXPECT_EQ(drops(UdpDrop::kSendClient), 1u);
  // Its own ports and ports outside the range are not handed over.
  deliver(kUp, 7001, kBase + 3, "own", 3);
  deliver(kUp, 7001, kBase + 40, "outside", 4);
  EXPECT_EQ(handed.size(), 2u);
  EXPECT_EQ(drops(UdpDrop::kStray), 3u);
  EXPECT_TRUE(q_.sent.empty());
}

TEST(UdpRelaySlice, ShardsSplitTheFlowPortsWithoutOverlap) {
  uint32_t next = kBase;
  for (size_t i = 0; i < 3; ++i) {
    const UdpRelaySpec s = relay_slice(kUs, kListen, kBase, 10, i, 3);
    EXPECT_EQ(s.first_port, next);
    next += s.ports;
    EXPECT_GE(s.ports, 3u);
  }
  EXPECT_EQ(next, kBase + 10u);
  EXPECT_EQ(relay_slice(kUs, kListen, kBase, 1, 0, 2).ports, 0u);
  EXPECT_EQ(relay_slice(kUs, kListen, kBase, 1, 1, 2).ports, 1u);
  const UdpRelaySpec top = relay_slice(kUs, kListen, 65535, 1, 0, 1);
  EXPECT_EQ(top.first_port, 65535);
  EXPECT_EQ(top.ports, 1u);
}

}  // namespace
}  // namespace ringpoll::proxy
