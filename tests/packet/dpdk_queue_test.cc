// The DPDK path (-DRINGPOLL_WITH_DPDK=ON). Unit tests run on net_ring, DPDK's in-memory
// loopback device (what a queue transmits comes back on its own RX), without hugepages
// or a NIC; the end-to-end test runs ringpoll-serve on net_af_packet over a veth pair
// into a network namespace, where the kernel is the client. ctest runs each test in its
// own process, which matters: DPDK starts its EAL once per process.
#include "packet/dpdk_queue.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "netns.h"

namespace ringpoll::packet {
namespace {

constexpr uint32_t kMe = 0x0a4d0001;    // 10.77.0.1
constexpr uint32_t kPeer = 0x0a4d0002;  // 10.77.0.2
const MacAddr kPeerMac = {0x02, 0, 0, 0, 0, 0x02};
constexpr const char* kRingArgs =
    "--no-huge --no-pci --no-shconf --no-telemetry -m 64 "
    "--vdev=net_ring0 --log-level=lib.eal:error";

class DpdkNetRing : public ::testing::Test {
 protected:
  void SetUp() override {
    DpdkPortOptions o;
    o.eal_args = kRingArgs;
    o.port = "net_ring0";
    o.queues = 1;
    o.ring_size = 512;
    o.mbufs = 2048;
    std::string why;
    // net_ring needs no NIC and no hugepages: only a DPDK that cannot start at all here
    // (kUnavailable) skips; any other failure of start() is a failure.
    const Status st = DpdkPort::start(o, &why);
    if (st.is(Errc::kUnavailable)) GTEST_SKIP() << "DPDK cannot start here: " << why;
    ASSERT_TRUE(st.ok()) << why;
    QueueSpec spec;
    spec.local_ip = kMe;
    spec.local_port = 9000;
    spec.max_payload = 1500;
    ASSERT_TRUE(q.open(spec, &why).ok()) << why;
  }
  void TearDown() override {
    q.close();
    DpdkPort::stop();
  }
  // Drains the RX queue, keeping the datagrams' payloads.
  std::vector<std::string> drain(std::vector<Datagram>* meta = nullptr) {
    std::vector<std::string> got;
    std::array<Datagram, kMaxBurst> b;
    for (size_t n; (n = q.rx_burst(b)) > 0;) {
      for (size_t i = 0; i < n; ++i) {
        got.emplace_back(reinterpret_cast<const char*>(b[i].data), b[i].len);
        if (meta) meta->push_back(b[i]);
      }
      q.release(std::span(b.data(), n));
    }
    return got;
  }
  std::vector<std::byte> frame_from_peer(const std::string& payload) {
    std::vector<std::byte> f(2048);
    f.resize(build_udp(f, Identity{kPeerMac, kPeer, 5555}, q.identity().mac, kMe, 9000,
                       std::as_bytes(std::span(payload))));
    return f;
  }
  DpdkQueue q;
};

TEST_F(DpdkNetRing, ReceivesADatagramAndLearnsThePeer) {
  ASSERT_TRUE(q.tx_frame(frame_from_peer("hello dpdk")));
  std::vector<Datagram> meta;
  const auto got = drain(&meta);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "hello dpdk");
  EXPECT_EQ(meta[0].peer_ip, kPeer);
  EXPECT_EQ(meta[0].peer_port, 5555);
  EXPECT_EQ(meta[0].local_port, 9000);
  MacAddr m;
  ASSERT_TRUE(q.neighbours().lookup(kPeer, &m));
  EXPECT_EQ(m, kPeerMac);
  EXPECT_EQ(q.stats().rx_packets, 1u);
}

TEST_F(DpdkNetRing, TransmitsDatagramsThatParseBack) {
  // Addressed to ourselves, so the loopback brings them back as datagrams for us.
  q.neighbours().learn(kMe, q.identity().mac);
  std::vector<std::string> payloads;
  std::vector<Datagram> out;
  for (int i = 0; i < 100; ++i) payloads.push_back(std::string(1 + i * 10, char('a' + i % 26)));
  for (std::string& p : payloads) {
    Datagram d;
    d.peer_ip = kMe;
    d.peer_port = 9000;
    d.data = reinterpret_cast<std::byte*>(p.data());
    d.len = static_cast<uint32_t>(p.size());
    out.push_back(d);
  }
  ASSERT_EQ(q.tx_burst(out), 100u);
  const auto got = drain();
  ASSERT_EQ(got, payloads);  // checksums verified on the way in, order kept
  const PacketStats st = q.stats();
  EXPECT_EQ(st.tx_packets, 100u);
  EXPECT_EQ(st.rx_packets, 100u);
  EXPECT_EQ(st.rx_bad_checksum, 0u);
}

TEST_F(DpdkNetRing, AnswersArpForOurAddressOnly) {
  std::array<std::byte, kMinFrame> req{};
  build_arp(req, ArpOp::kRequest, Identity{kPeerMac, kPeer, 0}, MacAddr{}, kMe);
  ASSERT_TRUE(q.tx_frame(req));
  build_arp(req, ArpOp::kRequest, Identity{kPeerMac, kPeer, 0}, MacAddr{}, kMe + 5);
  ASSERT_TRUE(q.tx_frame(req));
  EXPECT_TRUE(drain().empty());
  EXPECT_EQ(q.stats().arp_replies, 1u);
  // The reply went out on TX and loops back: an ARP reply from our address with our MAC.
  q.neighbours() = ArpTable{};
  EXPECT_TRUE(drain().empty());
  MacAddr m;
  ASSERT_TRUE(q.neighbours().lookup(kMe, &m));
  EXPECT_EQ(m, q.identity().mac);
}

TEST_F(DpdkNetRing, BadChecksumsAndForeignFramesAreCountedNotDelivered) {
  auto f = frame_from_peer("corrupt me");
  f[kUdpFrameOverhead] ^= std::byte{1};
  ASSERT_TRUE(q.tx_frame(f));
  std::array<std::byte, kMinFrame> ipv6{};
  ipv6[12] = std::byte{0x86};
  ipv6[13] = std::byte{0xdd};
  ASSERT_TRUE(q.tx_frame(ipv6));
  EXPECT_TRUE(drain().empty());
  EXPECT_EQ(q.stats().rx_bad_checksum, 1u);
  EXPECT_EQ(q.stats().other_frames, 1u);
}

TEST_F(DpdkNetRing, UnknownPeerIsDroppedCountedAndAsked) {
  std::string p = "to nobody";
  Datagram d;
  d.peer_ip = kPeer;
  d.peer_port = 1;
  d.data = reinterpret_cast<std::byte*>(p.data());
  d.len = static_cast<uint32_t>(p.size());
  EXPECT_EQ(q.tx_burst(std::span(&d, 1)), 0u);
  EXPECT_EQ(q.stats().tx_no_neighbor, 1u);
  // The ARP request it sent loops back (a request for 10.77.0.2: not ours to answer).
  EXPECT_TRUE(drain().empty());
  EXPECT_EQ(q.stats().arp_replies, 0u);
}

TEST_F(DpdkNetRing, AFullRingDropsAndCountsInsteadOfWaiting) {
  q.neighbours().learn(kMe, q.identity().mac);
  std::string p = "x";
  std::vector<Datagram> out(64);
  for (Datagram& d : out) {
    d.peer_ip = kMe;
    d.peer_port = 9000;
    d.data = reinterpret_cast<std::byte*>(p.data());
    d.len = 1;
  }
  size_t taken = 0;
  for (int i = 0; i < 40; ++i) taken += q.tx_burst(out);  // 2560 into a bounded ring
  const PacketStats st = q.stats();
  EXPECT_LT(taken, 2560u);
  EXPECT_EQ(st.tx_dropped, 2560u - taken);
  EXPECT_EQ(drain().size(), taken);  // everything accepted arrives, nothing else
}

TEST(DpdkConfig, AMissingDeviceIsNamed) {
  DpdkPortOptions o;
  o.eal_args = kRingArgs;
  o.port = "net_nothing0";
  std::string why;
  const Status st = DpdkPort::start(o, &why);
  if (st.is(Errc::kUnavailable)) GTEST_SKIP() << "DPDK cannot start here: " << why;
  EXPECT_FALSE(st.ok());
  EXPECT_NE(why.find("no DPDK device \"net_nothing0\""), std::string::npos) << why;
}

// ---- end to end: ringpoll-serve on net_af_packet, the kernel in a namespace as client ----

TEST(DpdkAfPacket, ServeEchoesOverAVethPair) {
  test::VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  const std::string args = std::string("--no-huge --no-pci --no-shconf --no-telemetry -m 64 ") +
                           "--vdev=net_af_packet0,iface=" + veth.outer() +
                           " --log-level=lib.eal:error";
  test::serve_echo_over_veth(
      veth, "dpdk", {"packet.dpdk_port=net_af_packet0", "packet.dpdk_args=\"" + args + "\""});
}

}  // namespace
}  // namespace ringpoll::packet
