#pragma once
// The [tls] section as the options of a server TlsContext (tls/tls_context.h). A header of
// its own so that only the programs with a TLS listener see OpenSSL's headers.
#include "../tls/tls_context.h"
#include "config.h"

namespace ringpoll::tuning {

// tls.cert/tls.key as the one default certificate, min_version, the lists, the ticket
// key life. Meaningful when tls.cert is set.
tls::TlsOptions tls_server_options(const Config& cfg);

// A [[proxy.listener]]'s tls keys as server options: its pairs, SNI pairs, version and
// lists, with [tls]'s groups and ticket_rotate_s (one ticket policy per process).
tls::TlsOptions listener_tls_options(const Config& cfg, const ListenerTls& t);
// A [[proxy.pool]]'s tls keys as client options (its CA file and verification).
tls::TlsOptions pool_tls_options(const ProxyPool& p);

}  // namespace ringpoll::tuning
