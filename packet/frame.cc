#include "packet/frame.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace ringpoll::packet {
namespace {

constexpr uint16_t kEtherIpv4 = 0x0800;
constexpr uint16_t kEtherArp = 0x0806;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kDefaultTtl = 64;
constexpr uint16_t kArpHwEthernet = 1;
constexpr uint16_t kIpv4MoreFragments = 0x2000;
constexpr uint16_t kIpv4FragmentOffset = 0x1fff;

uint16_t load16(const std::byte* p) noexcept {
  return static_cast<uint16_t>((std::to_integer<unsigned>(p[0]) << 8) |
                               std::to_integer<unsigned>(p[1]));
}
uint32_t load32(const std::byte* p) noexcept {
  return (uint32_t{load16(p)} << 16) | load16(p + 2);
}
void store16(std::byte* p, uint16_t v) noexcept {
  p[0] = static_cast<std::byte>(v >> 8);
  p[1] = static_cast<std::byte>(v & 0xff);
}
void store32(std::byte* p, uint32_t v) noexcept {
  store16(p, static_cast<uint16_t>(v >> 16));
  store16(p + 2, static_cast<uint16_t>(v & 0xffff));
}
MacAddr load_mac(const std::byte* p) noexcept {
  MacAddr m;
  std::memcpy(m.data(), p, m.size());
  return m;
}
void store_mac(std::byte* p, const MacAddr& m) noexcept {
  std::memcpy(p, m.data(), m.size());
}

void write_eth(std::byte* p, const MacAddr& dst, const MacAddr& src, uint16_t type) noexcept {
  store_mac(p, dst);
  store_mac(p + 6, src);
  store16(p + 12, type);
}

// The UDP checksum over the IPv4 pseudo-header and the UDP header + payload at `udp`.
uint16_t udp_checksum(uint32_t src, uint32_t dst, const std::byte* udp, size_t udp_len) noexcept {
  std::byte pseudo[12];
  store32(pseudo, src);
  store32(pseudo + 4, dst);
  pseudo[8] = std::byte{0};
  pseudo[9] = std::byte{kProtoUdp};
  store16(pseudo + 10, static_cast<uint16_t>(udp_len));
  uint32_t sum = checksum_add(0, pseudo);
  sum = checksum_add(sum, {udp, udp_len});
  return checksum_fold(sum);
}

FrameKind classify_arp(std::span<const std::byte> f, const Identity& me, ArpInfo* arp) noexcept {
  if (f.size() < kArpFrame) return FrameKind::kMalformed;
  const std::byte* a = f.data() + kEthHeader;
  if (load16(a) != kArpHwEthernet || load16(a + 2) != kEtherIpv4 ||
      std::to_integer<uint8_t>(a[4]) != 6 || std::to_integer<uint8_t>(a[5]) != 4)
    return FrameKind::kOther;
  const uint16_t op = load16(a + 6);
  arp->sender_mac = load_mac(a + 8);
  arp->sender_ip = load32(a + 14);
  const uint32_t target_ip = load32(a + 24);
  if (op == static_cast<uint16_t>(ArpOp::kRequest) && target_ip == me.ip)
    return FrameKind::kArpRequest;
  return FrameKind::kArpOther;
}

}  // namespace

uint32_t checksum_add(uint32_t sum, std::span<const std::byte> b) noexcept {
  size_t i = 0;
  for (; i + 1 < b.size(); i += 2) sum += load16(b.data() + i);
  if (i < b.size()) sum += std::to_integer<uint32_t>(b[i]) << 8;
  return sum;
}

uint16_t checksum_fold(uint32_t sum) noexcept {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

FrameKind classify_frame(std::span<const std::byte> f, const Identity& me, UdpInfo* udp,
                         ArpInfo* arp) noexcept {
  if (f.size() < kEthHeader) return FrameKind::kMalformed;
  const uint16_t type = load16(f.data() + 12);
  if (type == kEtherArp) return classify_arp(f, me, arp);
  if (type != kEtherIpv4) return FrameKind::kOther;
  if (f.size() < kEthHeader + kIpv4Header) return FrameKind::kMalformed;
  const std::byte* ip = f.data() + kEthHeader;
  const unsigned vihl = std::to_integer<unsigned>(ip[0]);
  const size_t ihl = (vihl & 0xf) * 4;
  const size_t total = load16(ip + 2);
  if ((vihl >> 4) != 4 || ihl < kIpv4Header || total < ihl || kEthHeader + total > f.size())
    return FrameKind::kMalformed;
  if (checksum_fold(checksum_add(0, {ip, ihl})) != 0) return FrameKind::kBadChecksum;
  if (load16(ip + 6) & (kIpv4MoreFragments | kIpv4FragmentOffset)) return FrameKind::kMalformed;
  if (std::to_integer<uint8_t>(ip[9]) != kProtoUdp) return FrameKind::kNotForUs;
  const uint32_t src = load32(ip + 12);
  const uint32_t dst = load32(ip + 16);
  if (dst != me.ip) return FrameKind::kNotForUs;
  const std::byte* u = ip + ihl;
  const size_t udp_room = total - ihl;
  if (udp_room < kUdpHeader) return FrameKind::kMalformed;
  const size_t udp_len = load16(u + 4);
  if (udp_len < kUdpHeader || udp_len > udp_room) return FrameKind::kMalformed;
  const uint16_t dport = load16(u + 2);
  if (me.port != 0 && dport != me.port) return FrameKind::kNotForUs;
  // A zero UDP checksum over IPv4 means "none" (RFC 768).
  if (load16(u + 6) != 0 && udp_checksum(src, dst, u, udp_len) != 0) return FrameKind::kBadChecksum;
  udp->src_mac = load_mac(f.data() + 6);
  udp->src_ip = src;
  udp->src_port = load16(u);
  udp->dst_port = dport;
  udp->payload_offset = kEthHeader + ihl + kUdpHeader;
  udp->payload_len = udp_len - kUdpHeader;
  return FrameKind::kUdp;
}

size_t build_udp(std::span<std::byte> out, const Identity& me, const MacAddr& dst_mac,
                 uint32_t dst_ip, uint16_t dst_port, std::span<const std::byte> payload) noexcept {
  const size_t len = kUdpFrameOverhead + payload.size();
  if (len > out.size() || len - kEthHeader > 0xffff) return 0;
  std::byte* p = out.data();
  write_eth(p, dst_mac, me.mac, kEtherIpv4);
  std::byte* ip = p + kEthHeader;
  ip[0] = std::byte{0x45};  // version 4, 5 words of header
  ip[1] = std::byte{0};
  store16(ip + 2, static_cast<uint16_t>(len - kEthHeader));
  store16(ip + 4, 0);       // identification: unused without fragments
  store16(ip + 6, 0x4000);  // don't fragment
  ip[8] = std::byte{kDefaultTtl};
  ip[9] = std::byte{kProtoUdp};
  store16(ip + 10, 0);
  store32(ip + 12, me.ip);
  store32(ip + 16, dst_ip);
  store16(ip + 10, checksum_fold(checksum_add(0, {ip, kIpv4Header})));
  std::byte* u = ip + kIpv4Header;
  const size_t udp_len = kUdpHeader + payload.size();
  store16(u, me.port);
  store16(u + 2, dst_port);
  store16(u + 4, static_cast<uint16_t>(udp_len));
  store16(u + 6, 0);
  if (!payload.empty()) std::memcpy(u + kUdpHeader, payload.data(), payload.size());
  uint16_t c = udp_checksum(me.ip, dst_ip, u, udp_len);
  store16(u + 6, c == 0 ? 0xffff : c);  // a computed 0 is sent as all ones (RFC 768)
  if (len >= kMinFrame) return len;
  if (out.size() < kMinFrame) return 0;
  std::memset(p + len, 0, kMinFrame - len);
  return kMinFrame;
}

size_t build_arp(std::span<std::byte> out, ArpOp op, const Identity& me, const MacAddr& target_mac,
                 uint32_t target_ip) noexcept {
  if (out.size() < kMinFrame) return 0;
  std::byte* p = out.data();
  const bool request = op == ArpOp::kRequest;
  write_eth(p, request ? kBroadcastMac : target_mac, me.mac, kEtherArp);
  std::byte* a = p + kEthHeader;
  store16(a, kArpHwEthernet);
  store16(a + 2, kEtherIpv4);
  a[4] = std::byte{6};
  a[5] = std::byte{4};
  store16(a + 6, static_cast<uint16_t>(op));
  store_mac(a + 8, me.mac);
  store32(a + 14, me.ip);
  store_mac(a + 18, request ? MacAddr{} : target_mac);
  store32(a + 24, target_ip);
  std::memset(p + kArpFrame, 0, kMinFrame - kArpFrame);
  return kMinFrame;
}

FrameKind receive_frame(std::span<const std::byte> frame, const Identity& me, ArpTable& arp,
                        PacketStats& st, UdpInfo* udp, ArpInfo* who) noexcept {
  const FrameKind k = classify_frame(frame, me, udp, who);
  switch (k) {
    case FrameKind::kUdp:
      arp.learn(udp->src_ip, udp->src_mac);
      break;
    case FrameKind::kArpRequest:
    case FrameKind::kArpOther:
      arp.learn(who->sender_ip, who->sender_mac);
      break;
    case FrameKind::kBadChecksum:
      ++st.rx_bad_checksum;
      break;
    case FrameKind::kOther:
      ++st.other_frames;
      break;
    case FrameKind::kNotForUs:
    case FrameKind::kMalformed:
      ++st.rx_dropped;
      break;
  }
  return k;
}

void ArpTable::learn(uint32_t ip, const MacAddr& mac) noexcept {
  if (ip == 0) return;
  e_[slot(ip)] = Entry{ip, mac};
}

bool ArpTable::lookup(uint32_t ip, MacAddr* mac) const noexcept {
  const Entry& e = e_[slot(ip)];
  if (ip == 0 || e.ip != ip) return false;
  *mac = e.mac;
  return true;
}

const char* to_string(Path p) noexcept {
  switch (p) {
    case Path::kKernel:
      return "kernel";
    case Path::kDpdk:
      return "dpdk";
    case Path::kXdp:
      return "xdp";
  }
  return "?";
}

bool parse_ipv4(std::string_view text, uint32_t* out) noexcept {
  uint32_t ip = 0;
  const char* p = text.data();
  const char* end = p + text.size();
  for (int i = 0; i < 4; ++i) {
    unsigned octet = 0;
    auto [next, ec] = std::from_chars(p, end, octet);
    if (ec != std::errc() || next == p || next - p > 3 || octet > 255) return false;
    ip = (ip << 8) | octet;
    p = next;
    if (i < 3) {
      if (p == end || *p != '.') return false;
      ++p;
    }
  }
  if (p != end) return false;
  *out = ip;
  return true;
}

std::string ipv4_to_string(uint32_t ip) {
  in_addr a{};
  a.s_addr = htonl(ip);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

}  // namespace ringpoll::packet
