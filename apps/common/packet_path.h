#pragma once
// What ringpoll-serve (--mode udp-echo) and ringpoll-proxy (UDP listeners) both take from
// the [packet] section: a queue's sizes, and the DPDK device for one queue per shard.
#include <cstdint>

#include "engine/engine.h"
#include "packet/packet_io.h"
#include "tuning/config.h"
#ifdef RINGPOLL_WITH_DPDK
#include "packet/dpdk_queue.h"
#endif

namespace ringpoll::app {

// packet.ring_size and packet.max_payload; the caller sets queue, address and port.
inline packet::QueueSpec queue_sizes(const tuning::Config& cfg) {
  packet::QueueSpec q;
  q.ring_size = static_cast<uint32_t>(cfg.packet.ring_size);
  q.max_payload = static_cast<uint32_t>(cfg.packet.max_payload);
  return q;
}

#ifdef RINGPOLL_WITH_DPDK
// The DPDK device of packet.dpdk_args / dpdk_port with one queue per shard of `e`, each
// queue's mbufs near its shard's CPU.
template <PollerBackend P>
packet::DpdkPortOptions dpdk_port_options(const tuning::Config& cfg, Engine<P>& e) {
  packet::DpdkPortOptions po;
  po.eal_args = cfg.packet.dpdk_args;
  po.port = cfg.packet.dpdk_port;
  po.queues = static_cast<int>(e.size());
  po.ring_size = static_cast<uint32_t>(cfg.packet.ring_size);
  po.mbufs = static_cast<uint32_t>(cfg.packet.dpdk_mbufs);
  for (size_t i = 0; i < e.size(); ++i) po.queue_cpus.push_back(e.shard(i).cpu());
  return po;
}
#endif

}  // namespace ringpoll::app
