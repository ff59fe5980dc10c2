#include "apps/proxy/from_config.h"

namespace ringpoll::proxy {

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
  s.nodelay = cfg.socket.nodelay;
  s.keepalive = cfg.socket.keepalive;
  s.reuseport = cfg.socket.reuseport;
  s.backlog = static_cast<int>(cfg.socket.backlog);
  s.splice = cfg.proxy.splice == tuning::SpliceMode::kOn;
  s.udp_idle_ns = cfg.proxy.udp_idle_ms * kMs;
  s.udp_max_flows = static_cast<size_t>(cfg.proxy.udp_max_flows);
  *out = std::move(s);
  return true;
}

}  // namespace ringpoll::proxy
