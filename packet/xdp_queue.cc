#include "xdp_queue.h"

#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xdp/xsk.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace ringpoll::packet {
namespace {

// One UMEM frame holds a full Ethernet frame (1514 B) with room to spare; 2 KiB is the
// smallest frame size the kernel accepts in aligned mode.
constexpr uint32_t kFrameSize = 2048;
// Frames kept out of the FILL ring so replies can always be sent.
constexpr uint32_t kTxReserve = 2 * kMaxBurst;

// An RX descriptor's address points past the headroom inside its frame; the frame itself
// (what the free stack holds, and what TX may fill whole) starts at the aligned base.
constexpr uint64_t frame_base(uint64_t addr) noexcept {
  return addr & ~uint64_t{kFrameSize - 1};
}

struct Mode {
  uint32_t xdp_flags;
  uint16_t bind_flags;
  const char* name;
};
constexpr Mode kModes[] = {
    {XDP_FLAGS_DRV_MODE, XDP_ZEROCOPY, "native zero-copy"},
    {XDP_FLAGS_DRV_MODE, XDP_COPY, "native copy"},
    {XDP_FLAGS_SKB_MODE, XDP_COPY, "generic copy"},
};

bool interface_mac(const std::string& iface, MacAddr* mac) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq r{};
  std::strncpy(r.ifr_name, iface.c_str(), IFNAMSIZ - 1);
  const bool ok = fd >= 0 && ioctl(fd, SIOCGIFHWADDR, &r) == 0;
  if (ok) std::memcpy(mac->data(), r.ifr_hwaddr.sa_data, mac->size());
  if (fd >= 0) ::close(fd);
  return ok;
}

}  // namespace

struct XdpQueue::Rings {
  void* area = MAP_FAILED;
  size_t area_size = 0;
  xsk_umem* umem = nullptr;
  xsk_socket* xsk = nullptr;
  xsk_ring_prod fill{};
  xsk_ring_cons comp{};
  xsk_ring_cons rx{};
  xsk_ring_prod tx{};
  std::vector<uint64_t> free;  // frames we own and nobody uses (a stack)
  bool kick_tx = false;

  std::byte* data(uint64_t addr) const noexcept {
    return static_cast<std::byte*>(xsk_umem__get_data(area, addr));
  }
  ~Rings() {
    if (xsk) xsk_socket__delete(xsk);  // detaches libxdp's program with the last socket
    if (umem) xsk_umem__delete(umem);
    if (area != MAP_FAILED) munmap(area, area_size);
  }
};

XdpQueue::XdpQueue() = default;
XdpQueue::~XdpQueue() {
  close();
}

Status XdpQueue::open(const QueueSpec& spec, std::string* why) {
  close();
  auto fail = [&](const std::string& step, int err) {
    if (why)
      *why = "AF_XDP on " + opt_.iface + " queue " + std::to_string(spec.queue) + ": " + step +
             ": " + std::strerror(err);
    r_.reset();
    return Status::from_errno(err);
  };
  if (spec.local_ip == 0) {
    if (why) *why = "the AF_XDP path needs our IPv4 address (0.0.0.0 given)";
    return Errc::kInvalidArgument;
  }
  if (if_nametoindex(opt_.iface.c_str()) == 0) return fail("no such interface", errno);
  if (!interface_mac(opt_.iface, &me_.mac)) return fail("reading its MAC address", errno);
  r_ = std::make_unique<Rings>();
  const uint32_t frames = opt_.frames < 2 * spec.ring_size ? 2 * spec.ring_size : opt_.frames;
  r_->area_size = size_t{frames} * kFrameSize;
  r_->area = mmap(nullptr, r_->area_size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (r_->area == MAP_FAILED) return fail("UMEM mmap", errno);
  xsk_umem_config uc{};
  uc.fill_size = spec.ring_size;
  uc.comp_size = spec.ring_size;
  uc.frame_size = kFrameSize;
  uc.frame_headroom = 0;
  uc.flags = 0;
  if (int e = xsk_umem__create(&r_->umem, r_->area, r_->area_size, &r_->fill, &r_->comp, &uc))
    return fail("xsk_umem__create", -e);
  int last = 0;
  for (const Mode& m : kModes) {
    if ((m.bind_flags & XDP_ZEROCOPY) && !opt_.allow_zero_copy) continue;
    if (m.xdp_flags != XDP_FLAGS_SKB_MODE && opt_.generic_only) continue;
    xsk_socket_config sc{};
    sc.rx_size = spec.ring_size;
    sc.tx_size = spec.ring_size;
    sc.libxdp_flags = 0;  // libxdp loads its redirect program on the first socket
    sc.xdp_flags = m.xdp_flags;
    sc.bind_flags = static_cast<uint16_t>(m.bind_flags | XDP_USE_NEED_WAKEUP);
    // EBUSY: the queue is still bound to a socket being released (the kernel unbinds a
    // closed AF_XDP socket asynchronously, e.g. right after a previous process or probe
    // closed it). Bounded retry: 50 x 10 ms.
    for (int tries = 0;; ++tries) {
      last = -xsk_socket__create(&r_->xsk, opt_.iface.c_str(), static_cast<uint32_t>(spec.queue),
                                 r_->umem, &r_->rx, &r_->tx, &sc);
      if (last != EBUSY || tries >= 50) break;
      r_->xsk = nullptr;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (last == 0) {
      mode_ = m.name;
      break;
    }
    r_->xsk = nullptr;
  }
  if (last != 0) return fail("xsk_socket__create (every mode refused; last error)", last);
  r_->free.reserve(frames);
  for (uint32_t i = frames; i > 0; --i) r_->free.push_back(uint64_t{i - 1} * kFrameSize);
  max_payload_ = spec.max_payload;
  me_.ip = spec.local_ip;
  me_.port = spec.local_port;
  arp_ = ArpTable{};
  stats_ = {};
  refill();
  return Status();
}

void XdpQueue::refill() noexcept {
  if (r_->free.size() <= kTxReserve) return;
  uint32_t want = static_cast<uint32_t>(r_->free.size() - kTxReserve);
  // reserve() is all or nothing: ask for no more than the ring has room for.
  const uint32_t room = xsk_prod_nb_free(&r_->fill, want);
  if (room < want) want = room;
  uint32_t idx = 0;
  const uint32_t n = want ? xsk_ring_prod__reserve(&r_->fill, want, &idx) : 0;
  for (uint32_t i = 0; i < n; ++i) {
    *xsk_ring_prod__fill_addr(&r_->fill, idx + i) = r_->free.back();
    r_->free.pop_back();
  }
  if (n) xsk_ring_prod__submit(&r_->fill, n);
  // Driver mode with need_wakeup: the driver sleeps when FILL ran dry; a recvfrom wakes it.
  if (xsk_ring_prod__needs_wakeup(&r_->fill))
    recvfrom(xsk_socket__fd(r_->xsk), nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
}

void XdpQueue::reclaim_completions() noexcept {
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_cons__peek(&r_->comp, kMaxBurst * 4, &idx);
  for (uint32_t i = 0; i < n; ++i)
    r_->free.push_back(*xsk_ring_cons__comp_addr(&r_->comp, idx + i));
  if (n) xsk_ring_cons__release(&r_->comp, n);
}

template <class Fill>
bool XdpQueue::send_frame(Fill fill) noexcept {
  if (r_->free.empty()) reclaim_completions();
  if (r_->free.empty()) return false;
  // Built in a free frame first: if the TX ring is full, the frame simply stays free.
  const uint64_t addr = r_->free.back();
  const size_t len = fill(std::span<std::byte>(r_->data(addr), kFrameSize));
  uint32_t idx = 0;
  if (len == 0 || xsk_ring_prod__reserve(&r_->tx, 1, &idx) != 1) return false;
  r_->free.pop_back();
  xdp_desc* d = xsk_ring_prod__tx_desc(&r_->tx, idx);
  d->addr = addr;
  d->len = static_cast<uint32_t>(len);
  d->options = 0;
  xsk_ring_prod__submit(&r_->tx, 1);
  r_->kick_tx = true;
  return true;
}

size_t XdpQueue::rx_burst(std::span<Datagram> out) {
  if (!r_) return 0;
  reclaim_completions();
  uint32_t idx = 0;
  const auto want = static_cast<uint32_t>(out.size() < kMaxBurst ? out.size() : kMaxBurst);
  const uint32_t n = xsk_ring_cons__peek(&r_->rx, want, &idx);
  size_t got = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const xdp_desc* d = xsk_ring_cons__rx_desc(&r_->rx, idx + i);
    std::byte* data = r_->data(d->addr);
    UdpInfo u;
    ArpInfo a;
    const FrameKind k = receive_frame({data, d->len}, me_, arp_, stats_, &u, &a);
    if (k == FrameKind::kUdp) {
      out[got++] = datagram_of(u, data, static_cast<uintptr_t>(d->addr));
      continue;  // the frame returns with release()
    }
    if (k == FrameKind::kArpRequest) {
      const bool sent = send_frame([&](std::span<std::byte> f) {
        return build_arp(f, ArpOp::kReply, me_, a.sender_mac, a.sender_ip);
      });
      ++(sent ? stats_.arp_replies : stats_.tx_dropped);
    }
    r_->free.push_back(frame_base(d->addr));
  }
  if (n) xsk_ring_cons__release(&r_->rx, n);
  stats_.rx_packets += got;
  refill();
  if (r_->kick_tx) {
    sendto(xsk_socket__fd(r_->xsk), nullptr, 0, MSG_DONTWAIT, nullptr, 0);
    r_->kick_tx = false;
  }
  return got;
}

void XdpQueue::release(std::span<Datagram> batch) noexcept {
  if (!r_) return;
  for (const Datagram& d : batch) r_->free.push_back(frame_base(d.handle));
  refill();
}

size_t XdpQueue::tx_burst(std::span<const Datagram> in) {
  if (!r_) {
    stats_.tx_dropped += in.size();
    return 0;
  }
  size_t taken = 0;
  for (const Datagram& d : in) {
    MacAddr mac;
    if (!arp_.lookup(d.peer_ip, &mac)) {
      ++stats_.tx_no_neighbor;  // dropped; ask for the peer's MAC
      send_arp_request(d.peer_ip);
      continue;
    }
    Identity from = me_;
    from.port = d.local_port != 0 ? d.local_port : me_.port;
    const bool sent = d.len <= max_payload_ && send_frame([&](std::span<std::byte> f) {
                        return build_udp(f, from, mac, d.peer_ip, d.peer_port, {d.data, d.len});
                      });
    if (sent) {
      ++taken;
    } else {
      ++stats_.tx_dropped;  // too large, TX ring full or no free frame
    }
  }
  if (r_->kick_tx) {
    // Copy mode transmits in this syscall; with need_wakeup the kernel asks for it.
    if (xsk_ring_prod__needs_wakeup(&r_->tx))
      sendto(xsk_socket__fd(r_->xsk), nullptr, 0, MSG_DONTWAIT, nullptr, 0);
    r_->kick_tx = false;
  }
  stats_.tx_packets += taken;
  return taken;
}

void XdpQueue::send_arp_request(uint32_t ip) noexcept {
  send_frame(
      [&](std::span<std::byte> f) { return build_arp(f, ArpOp::kRequest, me_, MacAddr{}, ip); });
}

void XdpQueue::ask_neighbor(uint32_t ip) noexcept {
  MacAddr mac;
  if (!r_ || arp_.lookup(ip, &mac)) return;
  send_arp_request(ip);
  if (r_->kick_tx) {
    if (xsk_ring_prod__needs_wakeup(&r_->tx))
      sendto(xsk_socket__fd(r_->xsk), nullptr, 0, MSG_DONTWAIT, nullptr, 0);
    r_->kick_tx = false;
  }
}

void XdpQueue::close() noexcept {
  r_.reset();
  mode_ = "closed";
}

}  // namespace ringpoll::packet
