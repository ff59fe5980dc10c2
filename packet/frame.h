#pragma once
// Ethernet frames for the bypass paths (DPDK, AF_XDP): the little of a network stack a
// UDP server needs when the kernel is not there — Ethernet II, ARP for our one IPv4
// address, IPv4 without options or fragments, UDP. Checksums are computed in software
// (the virtual devices here offer no offload; a real NIC's offload is future work).
// Plain C++: no DPDK or libxdp headers, so the default build tests it.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "packet_io.h"

namespace ringpoll::packet {

using MacAddr = std::array<uint8_t, 6>;
inline constexpr MacAddr kBroadcastMac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

inline constexpr size_t kEthHeader = 14;
inline constexpr size_t kIpv4Header = 20;  // we send no options
inline constexpr size_t kUdpHeader = 8;
inline constexpr size_t kUdpFrameOverhead = kEthHeader + kIpv4Header + kUdpHeader;
inline constexpr size_t kArpFrame = 42;  // Ethernet + ARP for IPv4, before padding
inline constexpr size_t kMinFrame = 60;  // Ethernet minimum without the FCS

// What a received frame is, for the caller of classify_frame.
enum class FrameKind {
  kUdp,          // an IPv4/UDP datagram to our address and port: *udp is filled
  kArpRequest,   // an ARP request for our address: answer it (build_arp)
  kArpOther,     // another ARP (a reply, or a request for someone else); sender learned
  kNotForUs,     // IPv4 to another address or port, or another IP protocol
  kBadChecksum,  // IPv4 header or UDP checksum wrong
  kMalformed,    // truncated, bad lengths, IPv4 fragment
  kOther,        // not IPv4 or ARP
};

struct UdpInfo {
  MacAddr src_mac{};
  uint32_t src_ip = 0;  // host order
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  size_t payload_offset = 0;
  size_t payload_len = 0;
};

struct ArpInfo {
  MacAddr sender_mac{};
  uint32_t sender_ip = 0;
};

// Who we are on the wire.
struct Identity {
  MacAddr mac{};
  uint32_t ip = 0;    // host order
  uint16_t port = 0;  // 0: any UDP port
};

// The Internet checksum (RFC 1071) of `b` added to `sum`, unfolded.
uint32_t checksum_add(uint32_t sum, std::span<const std::byte> b) noexcept;
uint16_t checksum_fold(uint32_t sum) noexcept;

FrameKind classify_frame(std::span<const std::byte> frame, const Identity& me, UdpInfo* udp,
                         ArpInfo* arp) noexcept;

// Writes an Ethernet/IPv4/UDP frame into `out`; returns its length (padded to kMinFrame),
// 0 when it does not fit.
size_t build_udp(std::span<std::byte> out, const Identity& me, const MacAddr& dst_mac,
                 uint32_t dst_ip, uint16_t dst_port, std::span<const std::byte> payload) noexcept;

enum class ArpOp : uint16_t { kRequest = 1, kReply = 2 };
// Writes an ARP frame (request: to broadcast, target MAC zero); returns its length or 0.
size_t build_arp(std::span<std::byte> out, ArpOp op, const Identity& me, const MacAddr& target_mac,
                 uint32_t target_ip) noexcept;

class ArpTable;

// The receive step both bypass paths share: classifies a frame, learns the sender's MAC
// from UDP and ARP, and counts what is not delivered in *st (bad checksum, foreign,
// malformed, other protocols). The caller delivers kUdp (*udp) and answers kArpRequest
// (*arp: who asked); every other kind needs nothing more.
FrameKind receive_frame(std::span<const std::byte> frame, const Identity& me, ArpTable& arp,
                        PacketStats& st, UdpInfo* udp, ArpInfo* who) noexcept;

// The Datagram a kUdp frame starting at `frame` delivers; `handle` is the path's buffer.
inline Datagram datagram_of(const UdpInfo& u, std::byte* frame, uintptr_t handle) noexcept {
  return Datagram{u.src_ip,
                  u.src_port,
                  u.dst_port,
                  static_cast<uint32_t>(u.payload_len),
                  frame + u.payload_offset,
                  handle};
}

// Neighbours learned from received frames: direct-mapped, fixed size, no allocation. A
// collision replaces the older entry; a miss costs one ARP request.
class ArpTable {
 public:
  static constexpr size_t kSlots = 256;
  void learn(uint32_t ip, const MacAddr& mac) noexcept;
  bool lookup(uint32_t ip, MacAddr* mac) const noexcept;

 private:
  struct Entry {
    uint32_t ip = 0;  // 0: empty (0.0.0.0 is never a peer)
    MacAddr mac{};
  };
  static size_t slot(uint32_t ip) noexcept { return (ip * 2654435761u) >> 24; }
  std::array<Entry, kSlots> e_{};
};

}  // namespace ringpoll::packet
