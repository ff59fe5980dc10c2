#pragma once
// UdpRelay: one shard's flow table for ringpoll-proxy's UDP mode on a packet path (DPDK,
// AF_XDP: packet/packet_io.h). No sockets and no engine here: the shard's packet queue
// hands it batches of datagrams addressed to our IPv4 address (any port), and it answers
// on the same queue. apps/proxy/udp_bypass.h attaches it to a shard's loop; the unit
// tests drive it with a fake queue.
//
//   - a datagram to the listen port is from a client. Its flow (client address:port) is
//     found, or opened as in the kernel mode (apps/proxy/udp_flow.h: the flow bound, then
//     an upstream from the pool) with a local port of its own taken from this shard's
//     slice of the flow-port range (packet.udp_port_base, packet.udp_port_count). It is
//     sent to the flow's upstream from our address and that flow port (affinity: the
//     same upstream for as long as the flow lives);
//   - a datagram to a flow port is a reply: accepted only from that flow's upstream
//     address and port, and sent to the flow's client from our listen address:port;
//   - a datagram to a flow port of another shard's slice (a device hashed the upstream's
//     reply to our queue) is handed to that shard (set_handoff), which relays it;
//   - anything else (a port no flow holds, another sender) is dropped: UdpDrop::kStray.
//
// Idle flows: flows are kept in order of their last datagram (either direction); expire()
// ends those idle for their idle_ns; the owner calls it from a timer on the shard's wheel
// (next_expiry() says when). A flow's port returns to the back of the free list, so a
// port is reused as late as possible (a late reply to an ended flow is a stray drop, not
// a datagram for a stranger). After a reload that changes udp_idle_ms, flows of both
// timeouts share one order, so one under the shorter timeout may outlive it by up to the
// longer one.
//
// Sends never wait: what the queue does not take (TX ring full, no MAC known for the
// peer yet: the path asks ARP and drops, as it does for udp-echo) is counted as
// UdpDrop::kSendUpstream / kSendClient. Per datagram nothing is allocated; per flow the
// Flow record (and the hash-table node).
#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

#include "apps/proxy/udp_flow.h"
#include "packet/packet_io.h"

namespace ringpoll::proxy {

struct UdpRelaySpec {
  uint32_t listen_ip = 0;  // host order
  uint16_t listen_port = 0;
  uint16_t first_port = 0;  // this shard's flow ports: [first_port, first_port + ports)
  uint32_t ports = 0;
  // The whole range, split between `shards` shards in order; this is shard `shard`.
  uint16_t range_first = 0;
  uint32_t range_ports = 0;
  uint32_t shards = 1;
  uint32_t shard = 0;
};

// Shard `shard` of `shards`: its slice of the flow-port range [base, base + count); an
// empty slice (count < shards) has ports == 0.
UdpRelaySpec relay_slice(uint32_t listen_ip, uint16_t listen_port, uint16_t base, uint32_t count,
                         size_t shard, size_t shards);

class UdpRelay {
 public:
  struct Flow {
    FlowKey key;
    uint32_t client_ip = 0;  // host order
    uint16_t client_port = 0;
    uint16_t port = 0;  // ours
    uint32_t up_ip = 0;
    uint16_t up_port = 0;
    std::shared_ptr<const void> hold;
    Pool* pool = nullptr;
    Upstream* upstream = nullptr;
    int64_t idle_ns = 0;
    int64_t last = 0;
    Flow* older = nullptr;  // activity order
    Flow* newer = nullptr;
  };

  // A reply that reached this shard for a flow port of shard `owner`: hand it over (the
  // datagram is valid only during the call); false when it could not be (counted as
  // UdpDrop::kSendClient). Unset, such a reply is a stray.
  using Handoff = std::function<bool(const packet::Datagram&, size_t owner)>;

  UdpRelay(const UdpRelaySpec& spec, Metrics& all, ShardMetrics& m, UdpPickFn pick);
  ~UdpRelay() { close_all(); }
  UdpRelay(const UdpRelay&) = delete;
  UdpRelay& operator=(const UdpRelay&) = delete;

  // One received batch at time `now`: clients' datagrams to their upstreams, upstreams'
  // replies to their clients, each direction as one TX burst on q.
  template <packet::PacketQueue Q>
  void on_batch(std::span<const packet::Datagram> in, Q& q, int64_t now) {
    while (!in.empty()) {
      const size_t n = in.size() < packet::kMaxBurst ? in.size() : packet::kMaxBurst;
      Bursts b;
      for (const packet::Datagram& d : in.first(n)) route(d, now, &b);
      send(q, b.up.data(), b.n_up, true);
      send(q, b.down.data(), b.n_down, false);
      in = in.subspan(n);
    }
  }

  // Ends the flows idle at `now`; returns how many.
  size_t expire(int64_t now);
  // When the oldest flow goes idle (absolute ns), or -1 with no flow.
  int64_t next_expiry() const noexcept { return oldest_ ? oldest_->last + oldest_->idle_ns : -1; }
  // Ends every flow (shutdown); returns how many were open.
  size_t close_all();

  void set_handoff(Handoff h) { handoff_ = std::move(h); }
  // The shard whose slice holds flow port `port`, or -1 when it is outside the range.
  int owner_of(uint16_t port) const noexcept;

  size_t flows() const noexcept { return by_client_.size(); }
  size_t free_ports() const noexcept { return free_.size(); }
  const UdpRelaySpec& spec() const noexcept { return spec_; }
  // Lookups, for tests: nullptr when there is no such flow.
  const Flow* flow_of_client(uint32_t ip, uint16_t port) const;
  const Flow* flow_of_port(uint16_t port) const;

 private:
  struct Bursts {
    std::array<packet::Datagram, packet::kMaxBurst> up, down;
    size_t n_up = 0, n_down = 0;
  };
  void route(const packet::Datagram& d, int64_t now, Bursts* b);
  Flow* open_flow(uint32_t ip, uint16_t port, const FlowKey& key, int64_t now);
  void end_flow(Flow* f);
  void touch(Flow* f, int64_t now) noexcept;
  void unlink(Flow* f) noexcept;

  template <packet::PacketQueue Q>
  void send(Q& q, const packet::Datagram* d, size_t n, bool up) {
    if (n == 0) return;
    const size_t taken = q.tx_burst(std::span<const packet::Datagram>(d, n));
    // The queue says how many it took, not which: the bytes counted are those of the
    // first `taken` (a full TX ring refuses the tail; a missing neighbour any of them).
    uint64_t bytes = 0;
    for (size_t i = 0; i < taken; ++i) bytes += d[i].len;
    m_.add(up ? m_.udp_datagrams_up : m_.udp_datagrams_down, taken);
    m_.add(up ? m_.udp_bytes_up : m_.udp_bytes_down, bytes);
    for (size_t i = taken; i < n; ++i) m_.drop(up ? UdpDrop::kSendUpstream : UdpDrop::kSendClient);
  }

  UdpRelaySpec spec_;
  Metrics& all_;
  ShardMetrics& m_;
  UdpPickFn pick_;
  Handoff handoff_;
  std::unordered_map<FlowKey, Flow*, FlowKeyHash> by_client_;
  std::vector<Flow*> by_port_;  // index: port - first_port
  std::deque<uint16_t> free_;   // free flow ports, the longest free first
  Flow* oldest_ = nullptr;
  Flow* newest_ = nullptr;
};

}  // namespace ringpoll::proxy
