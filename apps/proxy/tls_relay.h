#pragma once
// TLS in ringpoll-proxy (issue 18): termination on a listener, origination to a pool's
// upstreams, and the relay between a TLS side and the other.
//
//   termination   a listener with tls.cert: relay_client (apps/proxy/relay.h) wraps the
//                 accepted TcpStream in a TlsStream (tls/tls_stream.h) on the listener's
//                 TlsContext and runs the handshake before anything else, within
//                 tls.handshake_ms (a deadline on the shard's wheel); then the pool sees
//                 plaintext.
//   origination   a pool with tls = true: once TCP to an upstream is connected (and the
//                 PROXY header, if any, sent in clear, as haproxy and nginx do), the
//                 client handshake runs within what is left of timeouts.connect_ms,
//                 verifying the chain and tls_server_name. A failed handshake is a failed
//                 connect: the upstream's health counts it and the next upstream is tried.
//   relay         two pumps as in relay.h (half-close carried through, idle timeout,
//                 resets end both sides, a pooled buffer per direction held only while
//                 a chunk is in flight): TLS leaves nothing to splice or zero-copy in
//                 user space, so this is the copy path only.
//
// Every handshake is counted by side (client / upstream): done, resumed, or failed by
// reason (apps/proxy/metrics.h TlsFailure, mapped from tls::HandshakeError below).
//
// Reload: the TlsContext of a listener or pool belongs to its configuration generation
// (apps/proxy/proxy.h), so a reload's new certificates serve new handshakes while each
// established connection keeps the context it started with.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <span>

#include "apps/proxy/metrics.h"
#include "apps/proxy/relay_state.h"
#include "apps/proxy/settings.h"
#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/net.h"
#include "tls/tls_stream.h"

namespace ringpoll::proxy {

inline TlsFailure tls_failure_class(tls::HandshakeError e) {
  switch (e) {
    case tls::HandshakeError::kProtocolVersion:
      return TlsFailure::kVersion;
    case tls::HandshakeError::kNoSharedCipher:
      return TlsFailure::kNoSharedCipher;
    case tls::HandshakeError::kBadCertificate:
      return TlsFailure::kBadCertificate;
    case tls::HandshakeError::kTimeout:
      return TlsFailure::kTimeout;
    default:
      return TlsFailure::kOther;
  }
}

// Runs the handshake of a TlsStream attached to `tcp` on `ctx` (the server side when ctx
// is a server context) until `deadline` (0: none) and counts it on `side`. False when it
// failed (counted by reason); the TlsStream is then of no use.
template <PollerBackend P>
Task<bool> tls_handshake(Scheduler<P>& sched, tls::TlsStream<P>& t, TcpStream<P>& tcp,
                         const tls::TlsContext& ctx, std::string_view server_name, int64_t deadline,
                         TlsSide side, ShardMetrics& m) {
  if (!t.attach(sched, tcp, ctx, server_name).ok()) {
    m.tls_failed(side, TlsFailure::kOther);
    co_return false;
  }
  const tls::HandshakeError e = co_await t.handshake(deadline);
  if (e != tls::HandshakeError::kNone) {
    m.tls_failed(side, tls_failure_class(e));
    co_return false;
  }
  m.tls_done(side, t.resumed());
  co_return true;
}

namespace relay_detail {

// One side of a relayed connection: its TcpStream, and the TlsStream over it when that
// side speaks TLS (null: plain).
template <PollerBackend P>
struct StreamEnd {
  TcpStream<P>* tcp = nullptr;
  tls::TlsStream<P>* tls = nullptr;
  // Waits, holding no buffer, until a read would find something: data (plaintext or
  // ciphertext already in the TLS session need no wait), an end, an error, a deadline.
  Task<IoResult> wait_readable() {
    if (tls && tls->buffered()) co_return IoResult{};
    co_return co_await tcp->poll_fd().wait_readable();
  }
  Task<IoResult> read(std::span<std::byte> b) {
    if (tls) co_return co_await tls->read(b);
    co_return co_await tcp->read(b);
  }
  Task<IoResult> write(std::span<const std::byte> b) {
    if (tls) co_return co_await tls->write(b);
    co_return co_await tcp->write(b);
  }
  // Half-close: close_notify and FIN on a TLS side, FIN on a plain one.
  Task<Status> shutdown_write() {
    if (tls) co_return co_await tls->shutdown_write();
    co_return tcp->shutdown_write();
  }
};

// One direction, src → dst, until an end of stream, an error or the idle timeout. Its
// buffer is pooled and held only from the moment the source has something to read until
// the chunk was written (a TLS record that carries no data, e.g. a session ticket, keeps
// it until the next record with data arrives).
template <PollerBackend P>
Task<void> stream_pump(Relay<P>* r, StreamEnd<P> src, StreamEnd<P> dst, PooledBuffer* d,
                       bool upward, Joiner<P>* j) {
  for (;;) {
    if (r->idle_ns > 0) (void)src.tcp->set_read_deadline(r->last_activity + r->idle_ns);
    IoResult rd = co_await src.wait_readable();
    if (rd.ok()) {
      d->take();
      rd = co_await src.read(d->span());
    }
    if (!rd.ok()) {
      d->done();
      if (rd.err.is(Errc::kEof)) {
        (void)co_await dst.shutdown_write();  // half-close, carried through
      } else if (r->read_failed(rd.err)) {
        continue;
      }
      break;
    }
    const int64_t t0 = mono_now_ns();
    if (r->idle_ns > 0) (void)dst.tcp->set_write_deadline(t0 + r->idle_ns);
    const IoResult wr = co_await dst.write(d->span().first(rd.n));
    d->done();
    if (!wr.ok()) {
      r->write_failed(wr.err);
      break;
    }
    r->moved(rd.n, upward, t0, mono_now_ns());
  }
  if (j) j->finish();
}

// Both directions of a connected pair of which one side or both speak TLS; returns when
// both have ended.
template <PollerBackend P>
Task<void> relay_streams(Scheduler<P>& sched, StreamEnd<P> client, StreamEnd<P> up, ShardMetrics& m,
                         const ProxySettings& s) {
  const size_t cap = std::max<size_t>(s.buffer_bytes, 512);
  Relay<P> r(client.tcp, up.tcp, &m, s.idle_timeout_ns);
  Joiner<P> j{.sched = &sched};
  PooledBuffer upward(cap, &m), downward(cap, &m);
  // upstream → client in its own task; client → upstream here.
  sched.spawn(stream_pump(&r, up, client, &downward, false, &j));
  co_await stream_pump(&r, client, up, &upward, true, static_cast<Joiner<P>*>(nullptr));
  co_await j.wait();
}

}  // namespace relay_detail
}  // namespace ringpoll::proxy
