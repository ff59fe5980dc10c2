#pragma once
// SNI routing without terminating TLS (what nginx calls ssl_preread): on a listener with
// `sni_routes`, the proxy reads the client's first bytes until they hold a whole TLS
// ClientHello (apps/proxy/client_hello.h), picks the pool of the first route whose pattern
// matches the server name (the listener's own pool when none does, or when the client sent
// no name), and hands every byte it read to the upstream before relaying the rest. The TLS
// session itself is between the client and the upstream; the proxy never decrypts.
//
// Bounded: the hello must arrive within timeouts.header_read_ms and within
// kMaxClientHelloWire bytes. A client that sends something that is not TLS, a malformed
// hello, or not enough of one in time is closed without an upstream, and counted by reason
// (ProxyError::kNotTls, kBadHello, kHelloTimeout).
#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "apps/proxy/client_hello.h"
#include "apps/proxy/metrics.h"
#include "apps/proxy/route.h"
#include "engine/host_name.h"
#include "engine/net.h"

namespace ringpoll::proxy {

// Reads the ClientHello into *early and points route->pool at the chosen pool. False when
// the client is to be closed (counted in m).
template <PollerBackend P>
Task<bool> route_by_sni(TcpStream<P>& client, Route* route, ShardMetrics& m,
                        std::vector<std::byte>* early) {
  const int64_t limit = route->s->hello_timeout_ns;
  if (limit > 0) (void)client.set_read_deadline(mono_now_ns() + limit);
  // Most hellos fit in 2 KiB; larger ones grow the buffer up to the bound.
  early->resize(2048);
  size_t have = 0;
  ClientHello hello;
  std::string why;
  HelloStatus st = HelloStatus::kNeedMore;
  while (st == HelloStatus::kNeedMore) {
    if (have == early->size()) {
      if (have >= kMaxClientHelloWire) {
        st = HelloStatus::kTooLarge;
        break;
      }
      early->resize(std::min(2 * have, kMaxClientHelloWire));
    }
    const IoResult r = co_await client.read(std::span(*early).subspan(have));
    have += r.n;
    if (!r.ok()) {
      // A client that left, or was aborted by a shutdown, is nobody's error.
      if (r.err.timeout()) m.error(ProxyError::kHelloTimeout);
      co_return false;
    }
    st = read_client_hello(std::span(early->data(), have), &hello, &why);
  }
  (void)client.set_read_deadline(0);
  if (st != HelloStatus::kDone) {
    m.error(st == HelloStatus::kNotTls ? ProxyError::kNotTls : ProxyError::kBadHello);
    co_return false;
  }
  early->resize(have);
  for (const SniTarget& t : *route->sni) {
    if (!host_pattern_matches(t.pattern, hello.server_name)) continue;
    route->pool = t.pool;
    m.add(m.sni_routed);
    co_return true;
  }
  m.add(m.sni_default);
  co_return true;
}

}  // namespace ringpoll::proxy
