#pragma once
// The AF_XDP path of the packet contract (packet/packet_io.h); built only with
// -DRINGPOLL_WITH_XDP=ON (library ringpoll-xdp, libxdp + libbpf from Debian). No libxdp
// header is included here: the rings live behind a pointer allocated at open().
//
// An AF_XDP socket is bound to one queue of one interface; an XDP program (libxdp's
// default, which it loads on the first socket) redirects that queue's frames into the
// socket's RX ring, and frames written to its TX ring leave through the interface. Memory
// is one UMEM per shard: `frames` buffers of 2 KiB, handed to the kernel through the FILL
// ring (to receive into) and back through the COMPLETION ring (after sending). Frames
// the kernel owns are not ours to touch; a free-frame stack tracks the rest.
//
// Modes, tried in order until the kernel accepts one (mode() says which ran):
//   native + zero-copy  the driver DMAs into the UMEM (real NICs with AF_XDP support)
//   native + copy       the driver's XDP hook, frames copied into the UMEM
//   generic (skb) copy  any interface, after the kernel's skb allocation (veth here)
// The rest is the DPDK path's: packet/frame.h for Ethernet/ARP/IPv4/UDP.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "frame.h"
#include "packet_io.h"

namespace ringpoll::packet {

struct XdpOptions {
  std::string iface;       // interface name
  uint32_t frames = 4096;  // UMEM frames per queue (RX fill + TX in flight)
  bool allow_zero_copy = true;
  // Only the generic (skb) hook: for virtual interfaces, whose native hook may attach
  // but not deliver (veth without an XDP program on its peer).
  bool generic_only = false;
};

class XdpQueue {
 public:
  static constexpr Path kPath = Path::kXdp;

  XdpQueue();
  ~XdpQueue();
  XdpQueue(const XdpQueue&) = delete;
  XdpQueue& operator=(const XdpQueue&) = delete;

  // Must precede open(): which interface, how much memory.
  void set_options(XdpOptions o) { opt_ = std::move(o); }
  // spec.queue is the interface's queue id; spec.local_ip is required. Errors say which
  // step failed and why (EPERM: not root / no CAP_BPF+CAP_NET_RAW).
  Status open(const QueueSpec& spec, std::string* why = nullptr);
  size_t rx_burst(std::span<Datagram> out);
  void release(std::span<Datagram> batch) noexcept;
  size_t tx_burst(std::span<const Datagram> in);
  PacketStats stats() const noexcept { return stats_; }
  void close() noexcept;

  // Sends an ARP request for `ip` unless its MAC is known: a peer about to be sent to (a
  // proxy's upstream) is resolved before its first datagram, which would else be dropped.
  void ask_neighbor(uint32_t ip) noexcept;

  const char* mode() const noexcept { return mode_; }
  const Identity& identity() const noexcept { return me_; }

 private:
  struct Rings;  // libxdp's rings and the UMEM
  // Sends one frame built by `fill` (returns its length; 0: nothing to send).
  template <class Fill>
  bool send_frame(Fill fill) noexcept;
  void send_arp_request(uint32_t ip) noexcept;
  void reclaim_completions() noexcept;
  void refill() noexcept;

  XdpOptions opt_;
  std::unique_ptr<Rings> r_;
  const char* mode_ = "closed";
  uint32_t max_payload_ = 0;
  Identity me_;
  ArpTable arp_;
  PacketStats stats_;
};
static_assert(PacketQueue<XdpQueue>);

}  // namespace ringpoll::packet
