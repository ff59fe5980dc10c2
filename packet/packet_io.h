#pragma once
// The packet-I/O contract: UDP datagrams in bursts, beside the socket contract.
//
// Why a second contract. The socket API (engine/net.h) parks a task on a PollDesc until
// the kernel says a descriptor is ready. A kernel-bypass device (DPDK, AF_XDP) has no
// descriptor to wait on: its queues are rings in user memory that somebody must look at.
// So a packet queue is not waited on, it is polled: the shard that owns a queue pair
// looks at it every loop iteration (engine/scheduler.h, PollSource), takes whatever has
// arrived as one batch, and transmits its answers as one burst — the shape of Go's
// netpoll handing back a gList, with the queue in place of the kernel. When the queue
// stays empty the loop backs off (spins, then blocks in the backend for 1 us doubling up
// to a cap) and keeps serving its timers, sockets and cross-shard inbox meanwhile.
//
// The contract, checked by the PacketQueue concept below. Every call is made on the
// owning shard's thread; nothing here blocks or allocates after open().
//
//   open(spec)        set up this shard's RX/TX queue pair (bounded rings)
//   rx_burst(out)     fill out[0..n) with received datagrams, n <= out.size(); each
//                     Datagram's payload stays valid until release() of that batch
//   release(batch)    hand the RX buffers of a batch back to the queue
//   tx_burst(in)      queue datagrams for sending; the payload is copied (the caller's
//                     buffers are free on return); returns how many were taken — the
//                     rest were dropped and counted (a full TX ring is never waited on)
//   stats()           the counters below: nothing is dropped without being counted
//   close()           stop and release everything; idempotent
//
// Three paths implement it: kernel (packet/kernel_queue.h: a UDP socket per shard,
// recvmmsg/sendmmsg), DPDK (packet/dpdk_queue.h, -DRINGPOLL_WITH_DPDK=ON) and AF_XDP
// (packet/xdp_queue.h, -DRINGPOLL_WITH_XDP=ON). The bypass paths see Ethernet frames;
// packet/frame.h turns them into datagrams (IPv4/UDP, ARP answered for our address, checksums in
// software).
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "../poller/errors.h"

namespace ringpoll::packet {

// Largest burst a queue hands out or takes in one call (DPDK's customary 32, doubled).
inline constexpr size_t kMaxBurst = 64;

// One UDP datagram over IPv4. Addresses and ports in host byte order.
struct Datagram {
  uint32_t peer_ip = 0;
  uint16_t peer_port = 0;
  uint16_t local_port = 0;
  uint32_t len = 0;
  std::byte* data = nullptr;  // payload; RX: owned by the queue until release()
  uintptr_t handle = 0;       // the path's buffer (mbuf, frame, slot); opaque to callers
};

struct PacketStats {
  uint64_t rx_packets = 0;  // datagrams handed to the caller
  uint64_t tx_packets = 0;  // datagrams accepted for sending
  uint64_t rx_dropped = 0;  // dropped on receive: ring overrun, truncated, not for us
  uint64_t rx_bad_checksum = 0;
  uint64_t tx_dropped = 0;      // TX ring full, payload too large, no buffer
  uint64_t tx_no_neighbor = 0;  // bypass paths: no MAC known for the peer (an ARP asked)
  uint64_t arp_replies = 0;     // bypass paths: ARP requests for our address answered
  uint64_t other_frames = 0;    // bypass paths: frames that are not IPv4/UDP or ARP
};

enum class Path { kKernel, kDpdk, kXdp };
const char* to_string(Path p) noexcept;

// What a shard's queue pair is opened with (tuning/ fills it from the [packet] section).
struct QueueSpec {
  int queue = 0;                // queue index = shard index
  uint32_t local_ip = 0;        // our IPv4 address, host order (0: any, kernel path only)
  uint16_t local_port = 0;      // UDP port we serve
  uint32_t ring_size = 1024;    // RX and TX descriptors per queue
  uint32_t max_payload = 2048;  // largest datagram payload accepted either way
  bool reuseport = true;        // kernel path: one socket per shard on the same port
  int numa_node = -1;           // where the queue's buffers live (-1: the caller's node)
};

template <class Q>
concept PacketQueue = requires(Q q, const Q cq, const QueueSpec& spec, std::span<Datagram> batch,
                               std::span<const Datagram> out) {
  { Q::kPath } -> std::convertible_to<Path>;
  { q.open(spec) } -> std::same_as<Status>;
  { q.rx_burst(batch) } -> std::same_as<size_t>;
  { q.release(batch) } -> std::same_as<void>;
  { q.tx_burst(out) } -> std::same_as<size_t>;
  { cq.stats() } -> std::same_as<PacketStats>;
  { q.close() } -> std::same_as<void>;
};

// Parses "a.b.c.d" into a host-order address; false on anything else.
bool parse_ipv4(std::string_view text, uint32_t* out) noexcept;
std::string ipv4_to_string(uint32_t ip);

}  // namespace ringpoll::packet
