#pragma once
// What one ringpoll-proxy configuration asks for, in the proxy's own terms (built from a
// tuning::Config by settings_from_config, or from --listen/--upstream in the quick form).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/proxy/access_log.h"
#include "apps/proxy/http_settings.h"
#include "apps/proxy/pool.h"
#include "engine/accept_limits.h"
#include "engine/net.h"
#include "packet/packet_io.h"

namespace ringpoll::proxy {

struct ListenerSettings {
  std::string name;
  SocketAddress listen;
  std::string pool;        // the name of a PoolSettings
  int proxy_protocol = 0;  // 0: off, 1: v1 text, 2: v2 binary
  bool udp = false;        // datagrams: per-client flows (apps/proxy/udp.h)
  // Admission limits at accept, per listener and per client address (TCP listeners;
  // engine/accept_limits.h). They change on reload.
  AcceptLimits limits;
  bool http = false;  // HTTP/1.1 requests routed by http.routes (apps/proxy/http_relay.h)
  HttpSettings http_settings;
  // TLS pass-through routing by server name (apps/proxy/sni.h), first match wins; a client
  // no route matches goes to `pool`. Empty: no ClientHello is read.
  struct SniRoute {
    std::string pattern;  // engine/host_name.h
    std::string pool;
  };
  std::vector<SniRoute> sni;
  // TLS termination (apps/proxy/tls_relay.h): the server context its clients' handshakes
  // use, built from the files when the configuration (or a reload) is read. Null: plain.
  std::shared_ptr<const tls::TlsContext> tls;
};

struct ProxySettings {
  std::vector<ListenerSettings> listeners;
  std::vector<PoolSettings> pools;
  // Nameservers for the pools' names ("ADDR:PORT"; apps/proxy/resolver.h); empty: the
  // system's (/etc/resolv.conf).
  std::vector<std::string> resolvers;
  size_t buffer_bytes = 65536;  // per direction per connection: the memory bound
  int64_t connect_timeout_ns = 5'000'000'000;
  int64_t idle_timeout_ns = 60'000'000'000;  // 0: none
  // SNI routing: the whole ClientHello must arrive within this (timeouts.header_read_ms).
  int64_t hello_timeout_ns = 10'000'000'000;  // 0: none
  // TLS listeners: the handshake must be done within this (tls.handshake_ms); 0: none.
  int64_t tls_handshake_ns = 10'000'000'000;
  int64_t drain_ns = 5'000'000'000;
  int max_attempts = 3;        // upstreams tried per client before it is closed
  size_t max_connections = 0;  // 0: unlimited
  bool nodelay = true;
  bool keepalive = false;
  bool reuseport = true;
  bool allow_shared_port = false;  // socket.allow_shared_port
  int backlog = 4096;
  // How the relay moves bulk streams (apps/proxy/relay.h). splice: every direction is
  // bulk from its first byte. adaptive: a direction starts copying and turns bulk when its
  // reads keep filling the buffer. Bulk is splice(2) through a pipe on readiness
  // backends, and receives straight into the relay buffer (off the provided-buffer ring)
  // with zero-copy sends in io_uring completion mode. Neither: always copy.
  bool splice = false;
  bool adaptive = true;
  // A bulk direction's buffer (completion mode) or pipe (readiness backends), bytes; not
  // below buffer_bytes. One per bulk direction, held while it streams.
  size_t bulk_buffer_bytes = 1048576;
  // A plain relay (not TLS, not HTTP) with nothing moving either way for this long
  // hibernates: its tasks end and their frames are freed; two small waits (one per live
  // direction) stand in for them until either side has data, an idle timeout, a close or
  // an upgrade's move (apps/proxy/relay.h). 0: never.
  int64_t hibernate_ns = 1'000'000'000;
  // UDP listeners: a flow (one client address and port) ends after this long with no
  // datagram either way; at most udp_max_flows flows at once, the rest are dropped.
  int64_t udp_idle_ns = 30'000'000'000;
  size_t udp_max_flows = 65536;
  // UDP listeners on a packet path (packet.path = dpdk or xdp, apps/proxy/udp_bypass.h):
  // each flow gets a local port from [udp_port_base, udp_port_base + udp_port_count).
  packet::Path udp_path = packet::Path::kKernel;
  uint16_t udp_port_base = 40000;
  uint32_t udp_port_count = 8192;
  // The admin endpoint's request parser (apps/proxy/admin.h): limits.max_request_line and
  // limits.max_header_bytes, as ringpoll-serve has them.
  http::ParserLimits http_limits;
  // HTTP listeners' access log (apps/proxy/access_log.h); off unless configured. It is
  // opened at start and changes on restart only.
  AccessLogSettings access_log;
};

// Index of the pool a listener names, or -1.
inline int pool_index(const ProxySettings& s, const std::string& name) {
  for (size_t i = 0; i < s.pools.size(); ++i)
    if (s.pools[i].name == name) return static_cast<int>(i);
  return -1;
}

}  // namespace ringpoll::proxy
