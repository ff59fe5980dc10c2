#include "apps/proxy/from_config.h"

#include <netinet/in.h>

namespace ringpoll::proxy {

namespace {

// UDP listeners on a packet path: one, on an IPv4 address of ours and a port outside the
// flow ports, relaying to IPv4 upstreams.
bool check_packet_path(const ProxySettings& s, std::string* why) {
  if (s.udp_path == packet::Path::kKernel) return true;
  const std::string path = std::string("packet.path = \"") + packet::to_string(s.udp_path) + "\"";
  const ListenerSettings* first = nullptr;
  for (const ListenerSettings& l : s.listeners) {
    if (!l.udp) continue;
    const std::string where = "proxy.listener '" + l.name + "': ";
    if (first) {
      *why = where + path + " serves one UDP listener ('" + first->name + "' is one already)";
      return false;
    }
    first = &l;
    const auto* a = reinterpret_cast<const sockaddr_in*>(l.listen.sa());
    if (l.listen.family() != AF_INET || a->sin_addr.s_addr == 0 || l.listen.port() == 0) {
      *why = where + "listen: " + path + " needs an IPv4 address of ours and a port (not " +
             l.listen.to_string() + ")";
      return false;
    }
    const uint32_t port = l.listen.port();
    if (port >= s.udp_port_base && port < s.udp_port_base + s.udp_port_count) {
      *why = where + "listen port " + std::to_string(port) +
             " is one of the flow ports (packet.udp_port_base " + std::to_string(s.udp_port_base) +
             ", packet.udp_port_count " + std::to_string(s.udp_port_count) + ")";
      return false;
    }
    const int k = pool_index(s, l.pool);
    for (const SocketAddress& u : s.pools[static_cast<size_t>(k)].upstreams) {
      if (u.family() != AF_INET) {
        *why = "proxy.pool '" + l.pool + "': upstream " + u.to_string() + ": " + path +
               " reaches IPv4 upstreams only";
        return false;
      }
    }
  }
  return true;
}

}  // namespace

bool settings_from_config(const tuning::Config& cfg, ProxySettings* out, std::string* why) {
  ProxySettings s;
  constexpr int64_t kMs = 1'000'000;
  for (const tuning::ProxyPool& p : cfg.proxy.pools) {
    PoolSettings ps;
    ps.name = p.name;
    ps.balance =
        p.balance == tuning::Balance::kLeastConn ? Balance::kLeastConn : Balance::kRoundRobin;
    for (const std::string& u : p.upstreams) {
      SocketAddress a;
      std::string w;
      if (!parse_address(u, &a, &w).ok()) {
        *why = "proxy.pool '" + p.name + "': upstream: " + w;
        return false;
      }
      ps.upstreams.push_back(a);
    }
    if (ps.upstreams.empty()) {
      *why = "proxy.pool '" + p.name + "': no upstreams";
      return false;
    }
    ps.fail_threshold = static_cast<int>(p.fail_threshold);
    ps.eject_ns = p.eject_ms * kMs;
    ps.check_interval_ns = p.check_interval_ms * kMs;
    ps.check_timeout_ns = p.check_timeout_ms * kMs;
    s.pools.push_back(std::move(ps));
  }
  for (const tuning::ProxyListener& l : cfg.proxy.listeners) {
    ListenerSettings ls;
    ls.name = l.name;
    ls.pool = l.pool;
    std::string w;
    if (!parse_address(l.listen, &ls.listen, &w).ok()) {
      *why = "proxy.listener '" + l.name + "': listen: " + w;
      return false;
    }
    if (pool_index(s, l.pool) < 0) {
      *why = "proxy.listener '" + l.name + "': no pool named '" + l.pool + "'";
      return false;
    }
    ls.proxy_protocol = l.proxy_protocol == tuning::ProxyProtocol::kV1   ? 1
                        : l.proxy_protocol == tuning::ProxyProtocol::kV2 ? 2
                                                                         : 0;
    ls.udp = l.protocol == tuning::ListenerProtocol::kUdp;
    s.listeners.push_back(std::move(ls));
  }
  if (s.listeners.empty()) {
    *why = "no [[proxy.listener]] configured (or use --listen and --upstream)";
    return false;
  }
  s.buffer_bytes = static_cast<size_t>(cfg.limits.buffer_bytes);
  s.connect_timeout_ns = cfg.timeouts.connect_ms * kMs;
  s.idle_timeout_ns = cfg.timeouts.idle_ms * kMs;
  s.drain_ns = cfg.timeouts.drain_ms * kMs;
  s.max_connections = static_cast<size_t>(cfg.limits.max_connections);
  s.http_limits.max_request_line = static_cast<size_t>(cfg.limits.max_request_line);
  s.http_limits.max_header_bytes = static_cast<size_t>(cfg.limits.max_header_bytes);
  s.nodelay = cfg.socket.nodelay;
  s.keepalive = cfg.socket.keepalive;
  s.reuseport = cfg.socket.reuseport;
  s.allow_shared_port = cfg.socket.allow_shared_port;
  s.backlog = static_cast<int>(cfg.socket.backlog);
  s.splice = cfg.proxy.splice == tuning::SpliceMode::kOn;
  s.adaptive = cfg.proxy.splice == tuning::SpliceMode::kAuto;
  s.udp_idle_ns = cfg.proxy.udp_idle_ms * kMs;
  s.udp_max_flows = static_cast<size_t>(cfg.proxy.udp_max_flows);
  s.udp_path = cfg.packet.path == tuning::PacketPath::kDpdk  ? packet::Path::kDpdk
               : cfg.packet.path == tuning::PacketPath::kXdp ? packet::Path::kXdp
                                                             : packet::Path::kKernel;
  s.udp_port_base = static_cast<uint16_t>(cfg.packet.udp_port_base);
  s.udp_port_count = static_cast<uint32_t>(cfg.packet.udp_port_count);
  if (!check_packet_path(s, why)) return false;
  *out = std::move(s);
  return true;
}

}  // namespace ringpoll::proxy
