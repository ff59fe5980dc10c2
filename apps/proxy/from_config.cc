#include "apps/proxy/from_config.h"

#include <netinet/in.h>

#include "apps/proxy/http_metrics.h"
#ifndef _WIN32  // Windows seam: no OpenSSL there; its config refuses the TLS keys
#include "tls/tls_context.h"
#include "tuning/tls_options.h"
#endif

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

// The routes of HTTP listener `name`, in file order; with none, one default route to the
// listener's own pool. Plus the [http] knobs.
bool http_routes(const tuning::Config& cfg, const ProxySettings& s, const std::string& name,
                 const std::string& pool, HttpSettings* out, std::string* why) {
  constexpr int64_t kMs = 1'000'000;
  HttpSettings h;
  h.x_forwarded = cfg.http.x_forwarded;
  h.forwarded = cfg.http.forwarded;
  h.via = cfg.http.via;
  h.max_idle_per_upstream = static_cast<size_t>(cfg.http.max_idle_per_upstream);
  h.max_requests_per_connection = static_cast<uint32_t>(cfg.http.max_requests_per_connection);
  h.upstream_idle_ns = cfg.http.upstream_idle_ms * kMs;
  for (const tuning::ProxyRoute& r : cfg.proxy.routes) {
    if (r.listener != name) continue;
    HttpRoute hr;
    hr.name = r.name;
    hr.host = r.host;
    hr.path_prefix = r.path_prefix;
    hr.method = r.method;
    hr.pool = r.pool;
    hr.pool_index = pool_index(s, r.pool);
    hr.connect_timeout_ns = r.connect_ms * kMs;
    hr.header_read_ns = r.header_read_ms * kMs;
    hr.response_header_ns = r.response_header_ms * kMs;
    hr.idle_ns = r.idle_ms * kMs;
    h.routes.push_back(std::move(hr));
  }
  if (h.routes.empty()) {
    HttpRoute d;
    d.name = "default";
    d.pool = pool;
    d.pool_index = pool_index(s, pool);
    d.connect_timeout_ns = cfg.timeouts.connect_ms * kMs;
    d.header_read_ns = cfg.timeouts.header_read_ms * kMs;
    d.idle_ns = cfg.timeouts.idle_ms * kMs;
    h.routes.push_back(std::move(d));
  }
  for (const HttpRoute& r : h.routes) {
    if (r.pool_index < 0) {
      *why = "proxy.route '" + r.name + "': no pool named '" + r.pool + "'";
      return false;
    }
  }
  *out = std::move(h);
  return true;
}

}  // namespace

bool settings_from_config(const tuning::Config& cfg, ProxySettings* out, std::string* why) {
  ProxySettings s;
  constexpr int64_t kMs = 1'000'000;
  for (const tuning::ProxyPool& p : cfg.proxy.pools) {
    PoolSettings ps;
    ps.name = p.name;
    ps.balance = p.balance == tuning::Balance::kLeastConn ? Balance::kLeastConn
                 : p.balance == tuning::Balance::kMaglev  ? Balance::kMaglev
                                                          : Balance::kRoundRobin;
    ps.hash.source = p.hash_key.source == tuning::HashSource::kHeader   ? HashSource::kHeader
                     : p.hash_key.source == tuning::HashSource::kCookie ? HashSource::kCookie
                                                                        : HashSource::kClient;
    ps.hash.name = p.hash_key.name;
    for (const std::string& u : p.upstreams) {
      SocketAddress a;
      std::string w;
      UpstreamName n;
      if (parse_address(u, &a, &w).ok()) {
        ps.upstreams.push_back(a);
      } else if (parse_upstream_name(u, &n, &w)) {
        ps.names.push_back(n);
      } else {
        *why = "proxy.pool '" + p.name + "': upstream: " + w;
        return false;
      }
    }
    if (ps.upstreams.empty() && ps.names.empty()) {
      *why = "proxy.pool '" + p.name + "': no upstreams";
      return false;
    }
    constexpr int64_t kSec = 1000 * kMs;
    ps.resolve_min_ttl_ns = p.resolve_min_ttl_s * kSec;
    ps.resolve_max_ttl_ns = p.resolve_max_ttl_s * kSec;
    ps.slow_start_ns = p.slow_start_ms * kMs;
    ps.fail_threshold = static_cast<int>(p.fail_threshold);
    ps.eject_ns = p.eject_ms * kMs;
    ps.max_eject_ns = p.max_eject_ms * kMs;
    ps.max_ejection_percent = static_cast<int>(p.max_ejection_percent);
    ps.check_interval_ns = p.check_interval_ms * kMs;
    ps.check_timeout_ns = p.check_timeout_ms * kMs;
#ifndef _WIN32
    if (p.tls) {
      std::string w;
      ps.tls = tls::TlsContext::client(tuning::pool_tls_options(p), &w);
      if (!ps.tls) {
        *why = "proxy.pool '" + p.name + "': tls: " + w;
        return false;
      }
      ps.tls_server_name = p.tls_server_name;
    }
#endif
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
    ls.limits.max_connections = static_cast<size_t>(l.max_connections);
    ls.limits.max_rate = static_cast<uint32_t>(l.max_conn_rate);
    ls.limits.max_per_client = static_cast<size_t>(l.max_client_connections);
    ls.limits.max_client_rate = static_cast<uint32_t>(l.max_client_conn_rate);
    if (ls.udp && ls.limits != AcceptLimits{}) {
      *why = "proxy.listener '" + l.name +
             "': max_connections, max_conn_rate, max_client_connections and "
             "max_client_conn_rate apply to TCP listeners only (udp_max_flows bounds UDP)";
      return false;
    }
    ls.http = l.protocol == tuning::ListenerProtocol::kHttp;
    if (ls.http && !http_routes(cfg, s, l.name, l.pool, &ls.http_settings, why)) return false;
    for (const std::string& r : l.sni_routes) {  // "PATTERN=POOL", checked by tuning/
      const size_t eq = r.find('=');
      ls.sni.push_back({r.substr(0, eq), r.substr(eq + 1)});
      if (pool_index(s, ls.sni.back().pool) < 0) {
        *why = "proxy.listener '" + l.name + "': sni route '" + r + "': no pool named '" +
               ls.sni.back().pool + "'";
        return false;
      }
    }
#ifndef _WIN32
    if (!l.tls.cert.empty()) {
      // The files are read now: a reload builds a new context, and the connections
      // established before keep the one they started with (their generation holds it).
      tls::TlsOptions to = tuning::listener_tls_options(cfg, l.tls);
      // An HTTP listener offers http/1.1 by ALPN unless told otherwise (the config allows
      // only HTTP/1.x there): a client that offers h2 and http/1.1 then knows which.
      if (l.protocol == tuning::ListenerProtocol::kHttp && to.alpn.empty()) to.alpn = {"http/1.1"};
      ls.tls = tls::TlsContext::server(to, &w);
      if (!ls.tls) {
        *why = "proxy.listener '" + l.name + "': tls: " + w;
        return false;
      }
    }
#endif
    s.listeners.push_back(std::move(ls));
  }
  size_t slots = 0;
  for (const ListenerSettings& l : s.listeners)
    if (l.http) slots += l.http_settings.routes.size() + 1;
  if (slots > kMaxHttpRouteSlots) {
    *why = "too many [[proxy.route]] tables: " + std::to_string(slots) +
           " metric slots (routes + 1 per HTTP listener), at most " +
           std::to_string(kMaxHttpRouteSlots);
    return false;
  }
  if (s.listeners.empty()) {
    *why = "no [[proxy.listener]] configured (or use --listen and --upstream)";
    return false;
  }
  s.resolvers = cfg.proxy.resolvers;
  s.buffer_bytes = static_cast<size_t>(cfg.limits.buffer_bytes);
  s.connect_timeout_ns = cfg.timeouts.connect_ms * kMs;
  s.idle_timeout_ns = cfg.timeouts.idle_ms * kMs;
  s.hello_timeout_ns = cfg.timeouts.header_read_ms * kMs;
  s.tls_handshake_ns = cfg.tls.handshake_ms * kMs;
  s.drain_ns = cfg.timeouts.drain_ms * kMs;
  s.max_connections = static_cast<size_t>(cfg.limits.max_connections);
  s.http_limits.max_request_line = static_cast<size_t>(cfg.limits.max_request_line);
  s.http_limits.max_header_bytes = static_cast<size_t>(cfg.limits.max_header_bytes);
  s.access_log.path = cfg.http.access_log;
  s.access_log.json = cfg.http.access_log_format == tuning::AccessLogFormat::kJson;
  s.access_log.buffer_bytes = static_cast<size_t>(cfg.http.access_log_buffer_kib) * 1024;
  s.nodelay = cfg.socket.nodelay;
  s.keepalive = cfg.socket.keepalive;
  s.reuseport = cfg.socket.reuseport;
  s.allow_shared_port = cfg.socket.allow_shared_port;
  s.backlog = static_cast<int>(cfg.socket.backlog);
  s.splice = cfg.proxy.splice == tuning::SpliceMode::kOn;
  s.adaptive = cfg.proxy.splice == tuning::SpliceMode::kAuto;
  s.bulk_buffer_bytes = static_cast<size_t>(cfg.proxy.bulk_buffer_bytes);
  s.hibernate_ns = cfg.proxy.hibernate_after_ms * kMs;
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
