#pragma once
// ringpoll-serve over TLS (tls.cert/tls.key, --tls-cert/--tls-key): each accepted
// connection becomes a TlsStream, runs its handshake within tls.handshake_ms, then the
// same echo or HTTP handler as plain TCP (apps/serve/handlers.h), and ends with
// close_notify. A failed handshake is counted by its class (tls::HandshakeError) and the
// connection closed; the counts are printed when the server stops.
#include <atomic>
#include <cstdio>

#include "apps/serve/handlers.h"
#include "tls/tls_stream.h"

namespace ringpoll::serve {

struct TlsCounters {
  std::atomic<uint64_t> handshakes{0};
  std::atomic<uint64_t> resumed{0};
  std::atomic<uint64_t> failed[8] = {};  // by tls::HandshakeError
};

template <PollerBackend P>
Task<void> serve_tls(TcpStream<P>& c, Scheduler<P>& s, const tls::TlsContext& ctx, bool http,
                     int64_t handshake_ns, const ServeSettings& settings, ServeCounters* k,
                     TlsCounters* tk) {
  tls::TlsStream<P> t;
  if (!t.attach(s, c, ctx).ok()) co_return;
  const tls::HandshakeError e = co_await t.handshake(detail::deadline_in(handshake_ns));
  if (e != tls::HandshakeError::kNone) {
    tk->failed[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
    co_return;
  }
  tk->handshakes.fetch_add(1, std::memory_order_relaxed);
  if (t.resumed()) tk->resumed.fetch_add(1, std::memory_order_relaxed);
  if (http) {
    co_await serve_http_on(t, settings, k);
  } else {
    co_await serve_echo_on(t, settings, k);
  }
  (void)co_await t.close();
}

// "ringpoll-serve: tls: 12 handshakes (3 resumed), failed: 1 timeout, 2 not TLS".
inline void print_tls_counters(const char* program, const TlsCounters& tk) {
  std::fprintf(stderr, "%s: tls: %llu handshakes (%llu resumed)", program,
               static_cast<unsigned long long>(tk.handshakes.load()),
               static_cast<unsigned long long>(tk.resumed.load()));
  const char* sep = ", failed: ";
  for (int i = 1; i < 8; ++i) {
    if (const uint64_t n = tk.failed[i].load(); n > 0) {
      std::fprintf(stderr, "%s%llu %s", sep, static_cast<unsigned long long>(n),
                   tls::to_string(static_cast<tls::HandshakeError>(i)));
      sep = ", ";
    }
  }
  std::fprintf(stderr, "\n");
}

}  // namespace ringpoll::serve
