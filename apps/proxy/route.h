#pragma once
// Route: what one client connection of ringpoll-proxy is relayed with (apps/proxy/relay.h),
// fixed when it is accepted.
#include <memory>
#include <string>
#include <vector>

#include "apps/proxy/pool.h"
#include "apps/proxy/settings.h"

namespace ringpoll::proxy {

// An SNI route of a listener, resolved to its pool in one configuration generation.
struct SniTarget {
  std::string pattern;
  Pool* pool = nullptr;
};

// Its generation's settings and the pool of the listener that accepted it, both kept alive
// by `hold` for as long as it lasts (a reload makes a new generation; established
// connections drain on their own).
struct Route {
  const ProxySettings* s = nullptr;
  Pool* pool = nullptr;
  int proxy_protocol = 0;  // the listener's: 0 off, 1 v1, 2 v2
  // The listener's SNI routes (apps/proxy/sni.h); null or empty: no ClientHello is read.
  const std::vector<SniTarget>* sni = nullptr;
  // The listener's TLS context when it terminates TLS (apps/proxy/tls_relay.h); null: plain.
  const tls::TlsContext* tls = nullptr;
  // The listener's name (for a move to an upgrade's successor, apps/proxy/relay_move.h).
  const std::string* listener = nullptr;
  std::shared_ptr<const void> hold;
};

}  // namespace ringpoll::proxy
