#include "apps/proxy/udp_relay.h"

#include <arpa/inet.h>

namespace ringpoll::proxy {

UdpRelaySpec relay_slice(uint32_t listen_ip, uint16_t listen_port, uint16_t base, uint32_t count,
                         size_t shard, size_t shards) {
  UdpRelaySpec s;
  s.listen_ip = listen_ip;
  s.listen_port = listen_port;
  const uint64_t lo = uint64_t{count} * shard / shards;
  const uint64_t hi = uint64_t{count} * (shard + 1) / shards;
  s.first_port = static_cast<uint16_t>(base + lo);
  s.ports = static_cast<uint32_t>(hi - lo);
  s.range_first = base;
  s.range_ports = count;
  s.shards = static_cast<uint32_t>(shards);
  s.shard = static_cast<uint32_t>(shard);
  return s;
}

int UdpRelay::owner_of(uint16_t port) const noexcept {
  const uint32_t off = static_cast<uint16_t>(port - spec_.range_first);
  if (port < spec_.range_first || off >= spec_.range_ports) return -1;
  for (uint32_t i = 0; i < spec_.shards; ++i) {
    if (off < uint64_t{spec_.range_ports} * (i + 1) / spec_.shards) return static_cast<int>(i);
  }
  return -1;
}

UdpRelay::UdpRelay(const UdpRelaySpec& spec, Metrics& all, ShardMetrics& m, UdpPickFn pick)
    : spec_(spec), all_(all), m_(m), pick_(std::move(pick)), by_port_(spec.ports, nullptr) {
  for (uint32_t i = 0; i < spec.ports; ++i)
    free_.push_back(static_cast<uint16_t>(spec.first_port + i));
}

void UdpRelay::route(const packet::Datagram& d, int64_t now, Bursts* b) {
  if (d.local_port == spec_.listen_port) {
    const FlowKey key = FlowKey::v4(d.peer_ip, d.peer_port);
    Flow* f;
    if (auto it = by_client_.find(key); it != by_client_.end()) {
      f = it->second;
    } else {
      f = open_flow(d.peer_ip, d.peer_port, key, now);
      if (!f) return;
    }
    touch(f, now);
    b->up[b->n_up++] = packet::Datagram{f->up_ip, f->up_port, f->port, d.len, d.data, 0};
    return;
  }
  const uint32_t i = static_cast<uint16_t>(d.local_port - spec_.first_port);
  const bool mine = d.local_port >= spec_.first_port && i < spec_.ports;
  if (!mine && handoff_) {
    const int owner = owner_of(d.local_port);
    if (owner >= 0 && static_cast<uint32_t>(owner) != spec_.shard) {
      if (!handoff_(d, static_cast<size_t>(owner))) m_.drop(UdpDrop::kSendClient);
      return;
    }
  }
  Flow* f = mine ? by_port_[i] : nullptr;
  if (!f || d.peer_ip != f->up_ip || d.peer_port != f->up_port) {
    m_.drop(UdpDrop::kStray);
    return;
  }
  touch(f, now);
  b->down[b->n_down++] =
      packet::Datagram{f->client_ip, f->client_port, spec_.listen_port, d.len, d.data, 0};
}

UdpRelay::Flow* UdpRelay::open_flow(uint32_t ip, uint16_t port, const FlowKey& key, int64_t now) {
  UdpPick p = pick_();
  Upstream* u = admit_flow(all_, m_, p, now);
  if (!u) return nullptr;
  const SocketAddress& ua = u->address();
  if (ua.family() != AF_INET) {  // the config refuses these on a packet path
    p.pool->release(u);
    m_.drop(UdpDrop::kUpstreamOpen);
    return nullptr;
  }
  if (free_.empty()) {
    p.pool->release(u);
    m_.drop(UdpDrop::kNoPort);
    return nullptr;
  }
  auto* f = new Flow;
  f->key = key;
  f->client_ip = ip;
  f->client_port = port;
  f->port = free_.front();
  free_.pop_front();
  f->up_ip = ntohl(reinterpret_cast<const sockaddr_in*>(ua.sa())->sin_addr.s_addr);
  f->up_port = ua.port();
  f->hold = std::move(p.hold);
  f->pool = p.pool;
  f->upstream = u;
  f->idle_ns = p.idle_ns;
  f->last = now;
  by_client_.emplace(key, f);
  by_port_[f->port - spec_.first_port] = f;
  flow_opened(m_);
  return f;
}

void UdpRelay::unlink(Flow* f) noexcept {
  (f->older ? f->older->newer : oldest_) = f->newer;
  (f->newer ? f->newer->older : newest_) = f->older;
  f->older = f->newer = nullptr;
}

void UdpRelay::touch(Flow* f, int64_t now) noexcept {
  f->last = now;
  if (newest_ == f) return;
  if (f->older || f->newer || oldest_ == f) unlink(f);
  f->older = newest_;
  (newest_ ? newest_->newer : oldest_) = f;
  newest_ = f;
}

void UdpRelay::end_flow(Flow* f) {
  unlink(f);
  by_client_.erase(f->key);
  by_port_[f->port - spec_.first_port] = nullptr;
  free_.push_back(f->port);
  flow_closed(m_, f->pool, f->upstream);
  delete f;
}

size_t UdpRelay::expire(int64_t now) {
  size_t n = 0;
  while (oldest_ && oldest_->last + oldest_->idle_ns <= now) {
    end_flow(oldest_);
    m_.add(m_.udp_flows_expired);
    ++n;
  }
  return n;
}

size_t UdpRelay::close_all() {
  size_t n = 0;
  while (oldest_) {
    end_flow(oldest_);
    ++n;
  }
  return n;
}

const UdpRelay::Flow* UdpRelay::flow_of_client(uint32_t ip, uint16_t port) const {
  auto it = by_client_.find(FlowKey::v4(ip, port));
  return it == by_client_.end() ? nullptr : it->second;
}

const UdpRelay::Flow* UdpRelay::flow_of_port(uint16_t port) const {
  const uint32_t i = static_cast<uint16_t>(port - spec_.first_port);
  return port >= spec_.first_port && i < spec_.ports ? by_port_[i] : nullptr;
}

}  // namespace ringpoll::proxy
