#pragma once
// The DPDK path of the packet contract (packet/packet_io.h); built only with
// -DRINGPOLL_WITH_DPDK=ON (library ringpoll-dpdk). This header includes no DPDK header, so
// code that uses it compiles without DPDK's flags (pkg-config libdpdk adds -march=corei7).
//
// Two levels, because DPDK sets a device up as a whole before any queue runs:
//   DpdkPort   the process's one device: starts the EAL once (arguments from the config,
//              e.g. `--no-huge --no-pci --vdev=net_ring0`), configures N RX/TX queue
//              pairs (one per shard) with an mbuf pool per queue on that shard's NUMA
//              node, and starts the device. stop() stops it (a later start() sets it up
//              again); shutdown() closes it and ends the EAL, which DPDK cannot start
//              a second time in one process.
//   DpdkQueue  one shard's queue pair: bursts of mbufs in and out, with packet/frame.h
//              for Ethernet/ARP/IPv4/UDP. The device's MAC and the configured IPv4
//              address are ours; ARP requests for that address are answered from the RX
//              path; peers' MACs are learned from what they send us, and a datagram to an
//              unknown peer is dropped (counted) while an ARP request asks for its MAC.
//
// DPDK calls are made from the shards' threads, which are not EAL lcores: mempool
// per-lcore caches are then bypassed (the pools are per queue, so there is no sharing);
// rx/tx bursts on one queue are only ever made by its shard.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "frame.h"
#include "packet_io.h"

struct rte_mbuf;
struct rte_mempool;

namespace ringpoll::packet {

struct DpdkPortOptions {
  std::string eal_args;         // split on spaces; argv[0] is supplied
  std::string port;             // device name, e.g. "net_ring0", "net_af_packet0"
  int queues = 1;               // RX/TX queue pairs (one per shard)
  uint32_t ring_size = 1024;    // descriptors per queue (the device may adjust them)
  uint32_t mbufs = 4096;        // mbufs per queue's pool
  std::vector<int> queue_cpus;  // CPU of queue i's shard (its pool's NUMA node); -1: any
};

class DpdkPort {
 public:
  // Starts the EAL (first call only) and the device. Errors name the step and carry
  // DPDK's reason in *why.
  static Status start(const DpdkPortOptions& o, std::string* why);
  // Stops the device and frees the pools (every DpdkQueue closed first); start() may
  // configure it again. shutdown() also closes the device and ends the EAL (at exit).
  static void stop() noexcept;
  static void shutdown() noexcept;
  static bool running() noexcept;
  static MacAddr mac() noexcept;
  static uint16_t port_id() noexcept;
  static int queues() noexcept;
  // The device's counters (rte_eth_stats): imissed + rx_nombuf are frames the device
  // dropped before any queue saw them.
  static uint64_t device_rx_missed() noexcept;
};

class DpdkQueue {
 public:
  static constexpr Path kPath = Path::kDpdk;

  DpdkQueue() = default;
  ~DpdkQueue() { close(); }
  DpdkQueue(const DpdkQueue&) = delete;
  DpdkQueue& operator=(const DpdkQueue&) = delete;

  // spec.queue selects the queue pair of the running DpdkPort; spec.local_ip is required.
  Status open(const QueueSpec& spec, std::string* why = nullptr);
  size_t rx_burst(std::span<Datagram> out);
  void release(std::span<Datagram> batch) noexcept;
  size_t tx_burst(std::span<const Datagram> in);
  PacketStats stats() const noexcept { return stats_; }
  void close() noexcept;

  // Sends an ARP request for `ip` unless its MAC is known: a peer about to be sent to (a
  // proxy's upstream) is resolved before its first datagram, which would else be dropped.
  void ask_neighbor(uint32_t ip) noexcept;
  // Test seam: transmits a raw Ethernet frame (ARP, a frame with a bad checksum).
  bool tx_frame(std::span<const std::byte> frame);
  const Identity& identity() const noexcept { return me_; }
  ArpTable& neighbours() noexcept { return arp_; }

 private:
  // Frames the RX path answers (ARP replies) wait here until the end of the burst.
  void flush_control() noexcept;
  // An ARP request for ip among them (none when the pool or the control list is full).
  void queue_arp_request(uint32_t ip) noexcept;
  rte_mbuf* frame_mbuf(size_t len, std::byte** data) noexcept;

  bool open_ = false;
  uint16_t port_ = 0;
  uint16_t queue_ = 0;
  uint32_t max_payload_ = 0;
  rte_mempool* pool_ = nullptr;
  Identity me_;
  ArpTable arp_;
  std::array<rte_mbuf*, kMaxBurst> control_{};
  size_t n_control_ = 0;
  PacketStats stats_;
};
static_assert(PacketQueue<DpdkQueue>);

}  // namespace ringpoll::packet
