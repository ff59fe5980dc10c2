#pragma once
// What ringpoll-proxy's two UDP modes share: the flow key (a client's address and port),
// what a new flow is given (UdpPick: the pool of the current configuration generation,
// the idle timeout, the flow bound), the admission of a new flow (the bound over all
// shards, then an upstream from the pool) and its bookkeeping in the metrics. The kernel
// mode (apps/proxy/udp.h) keeps a socket per flow; the packet-path mode
// (apps/proxy/udp_relay.h) a local port per flow on the shard's packet queue.
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include "apps/proxy/metrics.h"
#include "apps/proxy/pool.h"
#include "engine/engine.h"
#include "engine/net.h"

namespace ringpoll::proxy {

// A client's address and port, as the flow table's key.
struct FlowKey {
  std::array<uint8_t, 16> addr{};
  uint16_t port = 0;  // network order, as in sockaddr
  uint16_t family = 0;
  bool operator==(const FlowKey&) const = default;

  static FlowKey of(const sockaddr_storage& ss) {
    FlowKey k;
    k.family = ss.ss_family;
    if (ss.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
      std::memcpy(k.addr.data(), &a->sin_addr, 4);
      k.port = a->sin_port;
    } else if (ss.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
      std::memcpy(k.addr.data(), &a->sin6_addr, 16);
      k.port = a->sin6_port;
    }
    return k;
  }
  // An IPv4 client as the packet paths see it (address and port in host order); equal to
  // of() of the same client's sockaddr_in.
  static FlowKey v4(uint32_t ip, uint16_t port) {
    FlowKey k;
    k.family = AF_INET;
    const uint32_t n = htonl(ip);
    std::memcpy(k.addr.data(), &n, 4);
    k.port = htons(port);
    return k;
  }
};
struct FlowKeyHash {
  size_t operator()(const FlowKey& k) const noexcept {
    uint64_t a, b;
    std::memcpy(&a, k.addr.data(), 8);
    std::memcpy(&b, k.addr.data() + 8, 8);
    uint64_t h = a * 0x9E3779B97F4A7C15ull ^ b;
    h ^= (static_cast<uint64_t>(k.port) << 16 | k.family) * 0xC2B2AE3D27D4EB4Full;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

// What a new flow uses: the pool, kept alive by `hold` (the configuration generation).
struct UdpPick {
  std::shared_ptr<const void> hold;
  Pool* pool = nullptr;
  int64_t idle_ns = 0;
  size_t max_flows = 0;
};
using UdpPickFn = std::function<UdpPick()>;

// Admission of a new flow on shard metrics `m`: at most p.max_flows flows at once over all
// shards (a new client over the bound is dropped and counted, UdpDrop::kFlowLimit), then
// an upstream from the pool, counted active until Pool::release. nullptr: dropped.
inline Upstream* admit_flow(const Metrics& all, ShardMetrics& m, const UdpPick& p, int64_t now) {
  if (all.total(&ShardMetrics::udp_flows_active) >= static_cast<int64_t>(p.max_flows)) {
    m.drop(UdpDrop::kFlowLimit);
    return nullptr;
  }
  return p.pool->acquire(now);
}
inline void flow_opened(ShardMetrics& m) {
  m.add(m.udp_flows_created);
  m.gauge(m.udp_flows_active, 1);
}
inline void flow_closed(ShardMetrics& m, Pool* pool, Upstream* u) {
  pool->release(u);
  m.gauge(m.udp_flows_active, -1);
}

// The shutdown both modes share. For every shard state in `shards` (shard i at index i)
// not yet stopped: marks it stopped and runs stop(state) on that shard's thread; then
// waits up to wait_ns until busy(state) is false for all (their tasks have ended).
template <PollerBackend P, class States, class Stop, class Busy>
void stop_shards(Engine<P>& e, States& shards, Stop stop, Busy busy, int64_t wait_ns) {
  for (size_t i = 0; i < shards.size(); ++i) {
    auto& st = *shards[i];
    if (st.stopped) continue;
    Engine<P>::call(e.shard(i), [&] {
      st.stopped = true;
      stop(st);
    });
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(wait_ns);
  for (auto& st : shards) {
    while (busy(*st) && std::chrono::steady_clock::now() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// A UDP listener of either mode, as ProxyServer holds it.
class UdpService {
 public:
  virtual ~UdpService() = default;
  virtual SocketAddress address() const = 0;
  // Ends every flow and stops receiving; waits up to wait_ns for the listener's tasks.
  // Returns the number of flows that were open. From a thread outside the engine, while
  // the engine runs.
  virtual size_t shutdown(int64_t wait_ns) = 0;
};

}  // namespace ringpoll::proxy
