// packet/frame.h: the Ethernet/ARP/IPv4/UDP code of the bypass paths, checked against
// hand-made frames and against itself (build, then classify).
#include "packet/frame.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

namespace ringpoll::packet {
namespace {

constexpr uint32_t kMe = 0x0a4d0001;    // 10.77.0.1
constexpr uint32_t kPeer = 0x0a4d0002;  // 10.77.0.2
const MacAddr kMeMac = {0x02, 0, 0, 0, 0, 0x01};
const MacAddr kPeerMac = {0x02, 0, 0, 0, 0, 0x02};

std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

// A frame from the peer to us, built by build_udp with the roles swapped.
std::vector<std::byte> frame_from_peer(std::span<const std::byte> payload, uint16_t dport) {
  std::vector<std::byte> f(2048);
  const Identity peer{kPeerMac, kPeer, 5555};
  f.resize(build_udp(f, peer, kMeMac, kMe, dport, payload));
  return f;
}

TEST(PacketFrame, ChecksumMatchesRfc1071Example) {
  // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded); the checksum
  // is its complement.
  const auto b = bytes({0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7});
  EXPECT_EQ(checksum_fold(checksum_add(0, b)), static_cast<uint16_t>(~0xddf2 & 0xffff));
  // An odd length pads the last byte with a zero on the right.
  const auto odd = bytes({0x12, 0x34, 0x56});
  EXPECT_EQ(checksum_fold(checksum_add(0, odd)), static_cast<uint16_t>(~(0x1234 + 0x5600)));
}

TEST(PacketFrame, UdpRoundTripsThroughBuildAndClassify) {
  const auto payload = bytes({'h', 'e', 'l', 'l', 'o'});
  auto f = frame_from_peer(payload, 9000);
  ASSERT_EQ(f.size(), kMinFrame);  // 47 bytes, padded to the Ethernet minimum
  const Identity me{kMeMac, kMe, 9000};
  UdpInfo u;
  ArpInfo a;
  ASSERT_EQ(classify_frame(f, me, &u, &a), FrameKind::kUdp);
  EXPECT_EQ(u.src_ip, kPeer);
  EXPECT_EQ(u.src_port, 5555);
  EXPECT_EQ(u.dst_port, 9000);
  EXPECT_EQ(u.src_mac, kPeerMac);
  ASSERT_EQ(u.payload_len, payload.size());
  EXPECT_EQ(std::memcmp(f.data() + u.payload_offset, payload.data(), payload.size()), 0);
}

TEST(PacketFrame, WrongAddressOrPortIsNotForUs) {
  const auto payload = bytes({1, 2, 3});
  auto f = frame_from_peer(payload, 9001);
  UdpInfo u;
  ArpInfo a;
  EXPECT_EQ(classify_frame(f, Identity{kMeMac, kMe, 9000}, &u, &a), FrameKind::kNotForUs);
  EXPECT_EQ(classify_frame(f, Identity{kMeMac, kMe + 1, 0}, &u, &a), FrameKind::kNotForUs);
  EXPECT_EQ(classify_frame(f, Identity{kMeMac, kMe, 0}, &u, &a), FrameKind::kUdp);  // any port
}

TEST(PacketFrame, CorruptedPayloadOrHeaderFailsTheChecksum) {
  const auto payload = bytes({1, 2, 3, 4, 5, 6, 7, 8});
  const Identity me{kMeMac, kMe, 9000};
  UdpInfo u;
  ArpInfo a;
  auto f = frame_from_peer(payload, 9000);
  f[kUdpFrameOverhead + 2] ^= std::byte{0x40};
  EXPECT_EQ(classify_frame(f, me, &u, &a), FrameKind::kBadChecksum);
  f = frame_from_peer(payload, 9000);
  f[kEthHeader + 8] = std::byte{3};  // TTL changed without fixing the header checksum
  EXPECT_EQ(classify_frame(f, me, &u, &a), FrameKind::kBadChecksum);
  // A zero UDP checksum means "not computed" and is accepted.
  f = frame_from_peer(payload, 9000);
  f[kEthHeader + kIpv4Header + 6] = std::byte{0};
  f[kEthHeader + kIpv4Header + 7] = std::byte{0};
  f[kUdpFrameOverhead + 2] ^= std::byte{0x40};
  EXPECT_EQ(classify_frame(f, me, &u, &a), FrameKind::kUdp);
}

TEST(PacketFrame, TruncatedAndFragmentedFramesAreMalformed) {
  const auto payload = bytes({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18});
  const Identity me{kMeMac, kMe, 9000};
  UdpInfo u;
  ArpInfo a;
  auto f = frame_from_peer(payload, 9000);
  EXPECT_EQ(classify_frame(std::span(f).first(kUdpFrameOverhead + 4), me, &u, &a),
            FrameKind::kMalformed);
  EXPECT_EQ(classify_frame(std::span(f).first(10), me, &u, &a), FrameKind::kMalformed);
  f[kEthHeader + 6] = std::byte{0x20};  // more fragments
  EXPECT_NE(classify_frame(f, me, &u, &a), FrameKind::kUdp);
}

TEST(PacketFrame, ArpRequestForUsIsRecognisedAndAnswerable) {
  std::array<std::byte, 64> req{};
  const Identity peer{kPeerMac, kPeer, 0};
  ASSERT_EQ(build_arp(req, ArpOp::kRequest, peer, MacAddr{}, kMe), kMinFrame);
  const Identity me{kMeMac, kMe, 9000};
  UdpInfo u;
  ArpInfo a;
  ASSERT_EQ(classify_frame(req, me, &u, &a), FrameKind::kArpRequest);
  EXPECT_EQ(a.sender_ip, kPeer);
  EXPECT_EQ(a.sender_mac, kPeerMac);
  // The reply goes to the asker and tells it our MAC.
  std::array<std::byte, 64> rep{};
  ASSERT_EQ(build_arp(rep, ArpOp::kReply, me, a.sender_mac, a.sender_ip), kMinFrame);
  EXPECT_EQ(std::memcmp(rep.data(), kPeerMac.data(), 6), 0);
  ArpInfo back;
  ASSERT_EQ(classify_frame(rep, peer, &u, &back), FrameKind::kArpOther);
  EXPECT_EQ(back.sender_mac, kMeMac);
  EXPECT_EQ(back.sender_ip, kMe);
  // A request for another address is not ours to answer.
  ASSERT_EQ(build_arp(req, ArpOp::kRequest, peer, MacAddr{}, kMe + 7), kMinFrame);
  EXPECT_EQ(classify_frame(req, me, &u, &a), FrameKind::kArpOther);
}

TEST(PacketFrame, ArpTableLearnsAndForgetsOnCollision) {
  ArpTable t;
  MacAddr m;
  EXPECT_FALSE(t.lookup(kPeer, &m));
  t.learn(kPeer, kPeerMac);
  ASSERT_TRUE(t.lookup(kPeer, &m));
  EXPECT_EQ(m, kPeerMac);
  t.learn(0, kMeMac);  // 0.0.0.0 is never learned
  EXPECT_FALSE(t.lookup(0, &m));
}

TEST(PacketFrame, PayloadThatDoesNotFitIsRefused) {
  std::array<std::byte, 100> small{};
  std::vector<std::byte> big(200);
  EXPECT_EQ(build_udp(small, Identity{kMeMac, kMe, 1}, kPeerMac, kPeer, 2, big), 0u);
}

TEST(PacketFrame, ParsesDottedQuads) {
  uint32_t ip = 0;
  ASSERT_TRUE(parse_ipv4("10.77.0.1", &ip));
  EXPECT_EQ(ip, kMe);
  EXPECT_EQ(ipv4_to_string(ip), "10.77.0.1");
  for (const char* bad : {"10.77.0", "10.77.0.256", "10.77.0.1.2", "a.b.c.d", "10.77.0.1 ", ""})
    EXPECT_FALSE(parse_ipv4(bad, &ip)) << bad;
}

}  // namespace
}  // namespace ringpoll::packet
