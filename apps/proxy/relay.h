#pragma once
// relay_client<P>: one client connection of ringpoll-proxy, from accept to close. The
// listeners of ProxyServer (apps/proxy/proxy.h) start it on the shard that accepted the
// client, with the Route of the configuration generation current at that moment:
//
//   0. on a TLS listener, the handshake with the client (apps/proxy/tls_relay.h); on a
//      listener with SNI routes instead, read the TLS ClientHello and let its server name
//      choose the pool (apps/proxy/sni.h); those bytes go to the upstream first;
//   1. pick an upstream from the listener's pool and connect, within the connect
//      timeout; a failed connect counts against that upstream's health and the next
//      upstream is tried (up to max_attempts) — nothing has been read from the client yet,
//      so a retry loses nothing. When every attempt fails the client is closed at once;
//   2. optionally write a PROXY protocol header to the upstream (apps/proxy/proxy_protocol.h);
//      for a pool with tls = true, then the handshake with the upstream (a failed one is
//      a failed connect, as in step 1);
//   3. relay (when either side speaks TLS: the copy relay of apps/proxy/tls_relay.h):
//      two pumps, one per direction. A pump takes a buffer from its shard's
//      RelayBuffers (apps/proxy/buffer_pool.h) only once its source has data and gives it
//      back once the chunk was written, so an idle connection holds none. A pump reads
//      only after its previous chunk was fully written, so a slow receiver stops the
//      reading from the sender (TCP flow control carries the backpressure back) and the
//      proxy never holds more than 2 × buffer_bytes per connection. An end of stream on
//      one side becomes shutdown(SHUT_WR) on the other (half-close carried through); the
//      connection ends when both directions have ended. A reset, or nothing moving either
//      way for the idle timeout (a read deadline on the wheel, re-armed from the last
//      activity of either direction), aborts both sides. A direction that carries a
//      stream turns bulk (below: spliced on readiness backends, off the provided-buffer
//      ring in io_uring completion mode); memory stays within one buffer (plus, spliced,
//      one pipe of the same size) per direction.
//
// Everything it does is counted in the shard's ShardMetrics (apps/proxy/metrics.h); the
// upstream's health is the pool's (apps/proxy/pool.h), which the health checks of
// apps/proxy/health.h update too.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "apps/proxy/buffer_pool.h"
#include "apps/proxy/metrics.h"
#include "apps/proxy/pool.h"
#include "apps/proxy/proxy_protocol.h"
#include "apps/proxy/relay_record.h"
#include "apps/proxy/relay_state.h"
#include "apps/proxy/route.h"
#include "apps/proxy/settings.h"
#include "apps/proxy/sni.h"
#include "engine/engine.h"
#include "engine/net.h"
// Windows seam: the mingw-w64 build has no OpenSSL, so the TLS relay (termination and
// origination) is compiled out there; tuning/config.cc refuses every TLS key on Windows,
// naming it, so no listener or pool asks for it. RINGPOLL_PROXY_TLS marks the places.
#ifdef _WIN32
#define RINGPOLL_PROXY_TLS 0
#else
#define RINGPOLL_PROXY_TLS 1
#include "apps/proxy/tls_relay.h"
#endif

namespace ringpoll::proxy {

namespace relay_detail {

template <PollerBackend P>
Task<bool> send_proxy_header(TcpStream<P>& client, TcpStream<P>& up, int version) {
  sockaddr_storage src{}, dst{};
  socklen_t sl = sizeof src, dl = sizeof dst;
  if (getpeername(client.fd(), reinterpret_cast<sockaddr*>(&src), &sl) < 0) src = {};
  if (getsockname(client.fd(), reinterpret_cast<sockaddr*>(&dst), &dl) < 0) dst = {};
  uint8_t hdr[kProxyHeaderMaxBytes];
  const size_t n = version == 1 ? write_proxy_v1(src, dst, reinterpret_cast<char*>(hdr), sizeof hdr)
                                : write_proxy_v2(src, dst, hdr, sizeof hdr);
  if (n == 0) co_return false;
  const IoResult w = co_await up.write(std::as_bytes(std::span<const uint8_t>(hdr, n)));
  co_return w.ok();
}

// Bulk streams. A direction whose reads keep filling its buffer carries a stream, not
// messages: it turns bulk (once; it stays bulk) and its bytes stop passing through user
// space copies of 4 KiB. On a readiness backend a bulk direction splices socket → pipe →
// socket; in io_uring completion mode it leaves the shard's provided-buffer ring
// (PollFd::detach_recv) and each read is one recv straight into the relay buffer, sent on
// with send_zc (at or above io_uring.zc_threshold). Messages below kBulkReadBytes never
// turn a connection bulk, so the small-message path is the copy path it always was.
//
// A read this large (or the whole buffer, if smaller) counts as filling it: at 16 KiB and
// above splice and zero-copy sends pay for their set-up (the README's proxy rows: copying
// wins at 64 B-4 KiB; zc_threshold is 16 KiB for the same reason).
inline constexpr size_t kBulkReadBytes = 16384;
// So many filling reads in a row make a stream (one large message is not one).
inline constexpr int kBulkStreak = 4;
// A bulk direction between two sockets that are always ready never parks; it yields to
// the shard after this many chunks (1 MiB at the 64 KiB default) so the other
// connections of the shard keep their turn (DESIGN.md "Fairness").
inline constexpr int kBulkChunksPerYield = 16;

inline void close_pipe(int (&p)[2]) {
  if (p[0] >= 0) ::close(p[0]);
  if (p[1] >= 0) ::close(p[1]);
  p[0] = p[1] = -1;
}
// A pipe for one direction, sized to the relay buffer (the memory bound); false when the
// process is out of descriptors (the direction then copies).
inline bool open_pipe(int (&p)[2], size_t cap) {
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
    p[0] = p[1] = -1;
    return false;
  }
  (void)fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(cap));
  return true;
}

// One direction's means. Its copy buffer is held only while a chunk is in flight
// (RelayBuffers, apps/proxy/buffer_pool.h): taken when the source has data, given back once
// the chunk was written, so an idle direction holds none. A bulk direction on a readiness
// backend moves its bytes through its pipe instead (which never holds more than one chunk:
// it is emptied before the next read, so neither splice can block on it); a bulk direction
// in completion mode keeps its buffer while it streams (its reads land there directly).
struct Direction : PooledBuffer, Carry {
  int pipe[2] = {-1, -1};
  bool adaptive = false;
  bool bulk = false;
  size_t bulk_cap = 0;  // proxy.bulk_buffer_bytes: a bulk direction's buffer (or pipe)
  int streak = 0;
  Direction(size_t c, ShardMetrics* mm) : PooledBuffer(c, mm) {}
  ~Direction() { close_pipe(pipe); }
  bool piped() const { return pipe[0] >= 0; }
  // Turning bulk: the stream's buffer (or pipe) from now on has bulk_cap bytes.
  void grow() noexcept {
    done();
    if (bulk_cap > cap) cap = bulk_cap;
  }
  // Counts a read of n bytes; true when the direction has just become a stream.
  bool filled(size_t n) {
    if (n < std::min(cap, kBulkReadBytes)) {
      streak = 0;
      return false;
    }
    return ++streak >= kBulkStreak;
  }
};

// splice(2) into a socket cannot take MSG_NOSIGNAL: a peer's reset raises SIGPIPE, whose
// default action ends the process. Before its first pipe the relay has the process ignore
// it (the write then fails with EPIPE, as every send here does) — unless the program
// installed a handler of its own, which is left alone.
inline void ignore_sigpipe() {
#ifndef _WIN32  // Windows raises no SIGPIPE
  static const bool done = [] {
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      (void)signal(SIGPIPE, SIG_IGN);
    }
    return true;
  }();
  (void)done;
#endif
}

// True when the client reset its connection before the proxy took it (a connect-and-reset
// flood's shape): one non-blocking peek, which reports the reset. A client that only
// half-closed (FIN, no data) is not gone: the upstream may speak first.
inline bool reset_before_accept(int fd) {
  char b;
  return ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && (errno == ECONNRESET || errno == EPIPE);
}

// The direction turns bulk (see above); src is the socket it reads. `fresh`: counted (not
// a direction that was bulk before its relay hibernated, splicing again).
template <PollerBackend P>
void go_bulk(Direction& d, TcpStream<P>* src, ShardMetrics& m, Relay<P>* r, bool fresh = true) {
  d.grow();
  d.bulk = true;
  if (fresh) m.add(m.bulk_streams);
  if constexpr (P::kCompletion) {
    src->poll_fd().detach_recv();
    ++r->pinned;  // its reads land in its own buffer: no hibernation while it streams
  } else {
    ignore_sigpipe();
    (void)open_pipe(d.pipe, d.cap);  // out of descriptors: it goes on copying
  }
}

// A bulk direction in completion mode that found its socket empty: its stream may have gone
// quiet (a database connection after its dump, a keep-alive connection after a download).
// A read submitted now would hold the direction's own buffer for as long as the quiet
// lasts, so it gives the buffer back and returns to the shard's ring instead, and an idle
// connection holds no bulk buffer; four full reads in a row make it bulk again. Only an
// adaptive direction (proxy.relay = "auto"): a forced splice stays as configured.
template <PollerBackend P>
void leave_bulk(Direction& d, TcpStream<P>* src, Relay<P>* r) {
  d.done();
  d.cap = d.pool_cap;
  d.bulk = false;
  d.streak = 0;
  --r->pinned;
  src->poll_fd().attach_recv();
}

// socket → pipe, at most one chunk (readiness backends).
template <PollerBackend P>
Task<IoResult> splice_in(TcpStream<P>* src, int pipe_wr, size_t len) {
  IoResult r = co_await src->poll_fd().ready_op(Mode::kRead, [pipe_wr, len](int fd) {
    return ::splice(fd, nullptr, pipe_wr, nullptr, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  });
  if (r.ok() && r.n == 0) r.err = Errc::kEof;
  co_return r;
}
// pipe → socket, all n bytes the pipe holds (readiness backends).
template <PollerBackend P>
Task<IoResult> splice_out(TcpStream<P>* dst, int pipe_rd, size_t n) {
  size_t done = 0;
  while (done < n) {
    const size_t left = n - done;
    const IoResult w = co_await dst->poll_fd().ready_op(Mode::kWrite, [pipe_rd, left](int fd) {
      // No SPLICE_F_MORE: like MSG_MORE it corks the socket, and a small reply then
      // waits for the cork timer (measured: 120 requests/s, p50 416 ms).
      return ::splice(pipe_rd, nullptr, fd, nullptr, left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    });
    done += w.n;
    if (!w.ok()) co_return IoResult{done, w.err};
  }
  co_return IoResult{done, Status()};
}

// One copied chunk's read on a readiness backend: the system call itself takes the buffer,
// and gives it back on EAGAIN (the direction waits holding nothing). A chunk shorter than
// the buffer emptied the socket, so the direction's next read parks before its system
// call (the engine's short-read rule, engine/readiness_op.h): one recv per message.
struct RecvInto {
  Direction* d;
  ssize_t operator()(int fd) const {
    d->take();
    const ssize_t n = ::recv(fd, d->buf, d->cap, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      d->done();
      errno = EAGAIN;
    }
    return n;
  }
  bool drained(size_t n) const noexcept { return n < d->cap; }
};
inline RecvInto recv_into(Direction* d) {
  return RecvInto{d};
}

// Writes what a direction carried over (Carry::pending) before its first read.
template <PollerBackend P>
Task<bool> write_pending(Relay<P>* r, TcpStream<P>* dst, Direction* d, bool upward) {
  const int64_t t0 = mono_now_ns();
  if (r->idle_ns > 0) (void)dst->set_write_deadline(t0 + r->idle_ns);
  const IoResult w = co_await dst->write(std::span<const std::byte>(d->pending));
  if (!w.ok()) {
    r->write_failed(w.err);
    co_return false;
  }
  r->moved(d->pending.size(), upward, t0, mono_now_ns());
  std::vector<std::byte>().swap(d->pending);
  co_return true;
}

// One direction, src → dst, until an end of stream, an error or the idle timeout.
template <PollerBackend P>
Task<void> pump(Scheduler<P>* sched, Relay<P>* r, TcpStream<P>* src, TcpStream<P>* dst,
                Direction* d, bool upward, Joiner<P>* j) {
  ShardMetrics& m = *r->m;
  int chunks = 0;
  uint32_t pokes = r->pokes;
  bool armed = false;  // a read deadline is set on src
  for (;;) {
    // Between two reads: where a move parks the pump (apps/proxy/relay_move.h).
    const bool moved = co_await r->park();  // (a local: engine/task.h's GCC 12 note)
    if (moved) break;                       // moved: the sockets are the successor's now
    r->restore_read_deadline(src, &pokes);
    if (!d->pending.empty() && !co_await write_pending(r, dst, d, upward)) break;
    if (d->eof_pending) {
      (void)dst->shutdown_write();  // the end of stream carried with the bytes before it
      d->ended = true;
      break;
    }
    // The idle timeout's deadline, or the hibernation's if earlier (Relay::read_deadline).
    if (const int64_t dl = r->read_deadline(); dl > 0 || armed) {
      (void)src->set_read_deadline(dl);
      armed = dl > 0;
    }
    bool piped = false;
    IoResult rd;
    if constexpr (!P::kCompletion) piped = d->piped();
    // The copied read is written out here rather than in a coroutine of its own: an idle
    // direction waits in it, and a frame per direction is memory per idle connection.
    if (piped) {
      rd = co_await splice_in(src, d->pipe[1], d->cap);
    } else if constexpr (!P::kCompletion) {
      rd = co_await src->poll_fd().ready_op(Mode::kRead, recv_into(d));
      if (rd.ok() && rd.n == 0) rd.err = Errc::kEof;  // a read system call's 0
    } else {
      // Wait until data is there, then take the buffer — except a bulk direction, whose
      // detached reads land in it directly. An adaptive bulk direction reads by looking
      // without waiting: data there is read at once (no request to submit); none means the
      // stream may have gone quiet, and it leaves bulk rather than wait holding its buffer
      // (even after a read that filled the buffer: a stream may end on a full read).
      // The look waits until the ring owes the socket nothing more: until the detach's
      // cancel has completed, the multishot recv may still deliver bytes that a look would
      // overtake. It waits for them holding no buffer, then reads what they queued.
      const bool look = d->bulk && d->adaptive;
      if (look && !src->poll_fd().receives_directly()) {
        rd = co_await src->poll_fd().wait_readable();
        if (rd.ok() && src->poll_fd().receives_directly()) continue;
      }
      if (!rd.ok()) {
        // the wait failed (deadline, close): handled below
      } else if (look && src->poll_fd().receives_directly()) {
        d->take();
        const ssize_t n = ::recv(src->fd(), d->buf, d->cap, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          leave_bulk(*d, src, r);
          continue;
        }
        rd = n > 0 ? IoResult{static_cast<size_t>(n), Status()}
                   : IoResult{0, n == 0 ? Status(Errc::kEof) : Status::from_errno(errno)};
      } else {
        if (!d->bulk) rd = co_await src->poll_fd().wait_readable();
        if (d->bulk || rd.ok()) {
          d->take();
          rd = co_await src->read(d->span());
        }
      }
    }
    if (!rd.ok()) {
      if (rd.err.is(Errc::kEof)) {
        (void)dst->shutdown_write();  // half-close, carried through
        d->ended = true;
      } else if (rd.err.timeout() && pokes != r->pokes) {
        continue;  // woken to park (or the park was called off): nothing was read
      } else {
        if (!upward && !rd.err.timeout() && !rd.err.closed()) r->upstream_reset = true;
        if (r->read_failed(rd.err)) continue;
      }
      break;
    }
    const int64_t t0 = mono_now_ns();
    if (r->idle_ns > 0) (void)dst->set_write_deadline(t0 + r->idle_ns);
    IoResult wr;
    if (piped) {
      wr = co_await splice_out(dst, d->pipe[0], rd.n);
    } else {
      wr = co_await dst->write(d->span().first(rd.n));
      if (!d->bulk) d->done();  // the buffer goes back between chunks
    }
    const int64_t t1 = mono_now_ns();
    if (!wr.ok()) {
      if (upward && !wr.err.timeout() && !wr.err.closed()) r->upstream_reset = true;
      r->write_failed(wr.err);
      break;
    }
    r->moved(rd.n, upward, t0, t1);
    if (!d->bulk) {
      if (d->adaptive && d->filled(rd.n)) go_bulk(*d, src, m, r);
    } else if (++chunks == kBulkChunksPerYield) {
      chunks = 0;
      co_await sched->yield();
    }
  }
  d->done();
  --r->running;
  r->settle_hibernation();  // the other pump parked for a hibernation: it ends too
  if (j) j->finish();
}

// How relay() returned: both directions ended (or failed); moved to an upgrade's successor;
// or hibernating (the caller waits for either side without pump tasks, relay_loop).
enum class RelayEnd : uint8_t { kEnded, kMoved, kHibernated };

// What a hibernating relay keeps of its pumps between two relay() calls over the same
// sockets: the last activity (its idle deadline counts on), which directions have ended
// (half-close: their pumps do not start again) and which were spliced (readiness
// backends: they splice again, with a new pipe). Nothing else: a relay hibernates only
// with no bytes in flight, none carried, no buffer held.
struct Slumber {
  int64_t last_activity = 0;
  int64_t idle_ns = 0;
  bool ended[2] = {false, false};  // client → upstream, upstream → client
  bool bulk[2] = {false, false};
  bool woke = false;  // relay() starts from this state (set once it hibernated)
};

// Both directions of a connected pair; returns when both have ended, or — a relay with an
// origin, which may move (apps/proxy/relay_move.h) — once it moved (kMoved: the sockets are
// the successor's; closing them here is only this process's close), or, given `sl`, once
// nothing moved for s.hibernate_ns (kHibernated: *sl says how to start again). `from`: a
// relay an upgrade's predecessor handed over, carried on from its state. *upstream_reset
// (if given) is set when the upstream reset the connection (outlier detection).
template <PollerBackend P>
Task<RelayEnd> relay(Scheduler<P>& sched, TcpStream<P>& client, TcpStream<P>& up, ShardMetrics& m,
                     const ProxySettings& s, const RelayOrigin* origin = nullptr,
                     RelayRecord* from = nullptr, bool* upstream_reset = nullptr,
                     Slumber* sl = nullptr) {
  const size_t cap = std::max<size_t>(s.buffer_bytes, 512);
  Relay<P> r(&client, &up, &m,
             from             ? from->idle_ns
             : sl && sl->woke ? sl->idle_ns
                              : s.idle_timeout_ns);
  r.sched = &sched;
  Joiner<P> j{.sched = &sched};
  Direction upward(cap, &m), downward(cap, &m);
  const bool waking = sl && sl->woke;
  if (waking) r.last_activity = sl->last_activity;
  // Both sockets must be waitable without a buffer (not on IOCP, not without multishot
  // receives), and the caller must be one that waits (relay_loop).
  if (sl && client.poll_fd().waits_without_buffer() && up.poll_fd().waits_without_buffer())
    r.hibernate_ns = s.hibernate_ns;
  Direction* dirs[2] = {&upward, &downward};
  TcpStream<P>* srcs[2] = {&client, &up};
  for (int i = 0; i < 2; ++i) {
    dirs[i]->adaptive = s.adaptive;
    dirs[i]->bulk_cap = s.bulk_buffer_bytes;
    dirs[i]->ended = waking && sl->ended[i];
    if (dirs[i]->ended) continue;
    if (s.splice || (waking && sl->bulk[i])) go_bulk(*dirs[i], srcs[i], m, &r, !waking);
  }
  if (from) {
    r.last_activity = mono_now_ns() - (from->idle_ns - from->idle_left_ns);
    for (auto [d, c] : {std::pair{&upward, &from->up}, std::pair{&downward, &from->down}}) {
      d->pending = std::move(c->pending);
      d->eof_pending = c->ended;
    }
  }
  const bool up_live = !upward.ended, down_live = !downward.ended;
  r.running = int{up_live} + int{down_live};
  r.carry[0] = &upward;
  r.carry[1] = &downward;
  r.origin = origin;
  MovableRelays<P> movable(origin ? &r : nullptr);
  // upstream → client in its own task; client → upstream here (or only the one still live).
  // The pumps' frames end when the relay hibernates: short-lived (engine/task.h). Made
  // in a block of its own, so that no scope is open across a suspension.
  Task<void> side, here;
  {
    ShortLivedFrames short_lived;
    if (up_live && down_live) side = pump(&sched, &r, &up, &client, &downward, false, &j);
    if (up_live) {
      here = pump(&sched, &r, &client, &up, &upward, true, static_cast<Joiner<P>*>(nullptr));
    } else if (down_live) {
      here = pump(&sched, &r, &up, &client, &downward, false, static_cast<Joiner<P>*>(nullptr));
    }
  }
  if (up_live && down_live) sched.spawn(std::move(side));
  if (up_live || down_live) co_await here;
  if (up_live && down_live) co_await j.wait();
  if (upstream_reset && r.upstream_reset) *upstream_reset = true;
  if (r.was_moved) co_return RelayEnd::kMoved;
  if (r.hibernated && !r.failed && sl) {
    sl->last_activity = r.last_activity;
    sl->idle_ns = r.idle_ns;
    for (int i = 0; i < 2; ++i) {
      sl->ended[i] = dirs[i]->ended;
      sl->bulk[i] = !P::kCompletion && dirs[i]->bulk;
    }
    sl->woke = true;
    co_return RelayEnd::kHibernated;
  }
  co_return RelayEnd::kEnded;
}

// A hibernating relay: no pump task. The wait on the client runs in relay_loop's frame,
// the one on the upstream (when both directions are live) in a small task of its own;
// whichever returns first wakes the other (its read deadline expires at once). Listed on
// its shard so that an upgrade's move wakes it first (apps/proxy/relay_move.h).
template <PollerBackend P>
struct Sleeper {
  TcpStream<P>* client;
  TcpStream<P>* upstream;
  const RelayOrigin* origin;
  Joiner<P> j;
  Status up_err;
  bool woken = false;
  bool for_move = false;  // woken by a move: it is to relay (and park) again at once
  void wake() {
    if (woken) return;
    woken = true;
    (void)client->set_read_deadline(1);
    (void)upstream->set_read_deadline(1);
  }
};
template <PollerBackend P>
using SleepingRelays = ShardList<Sleeper<P>>;

template <PollerBackend P>
Task<void> watch_upstream(Sleeper<P>* z) {
  const IoResult w = co_await z->upstream->poll_fd().wait_readable();
  z->up_err = w.err;
  z->wake();
  z->j.finish();
}

// An upstream of a pool, connected — for a TLS pool with its handshake done.
template <PollerBackend P>
struct UpstreamConn {
  std::unique_ptr<TcpStream<P>> tcp;
#if RINGPOLL_PROXY_TLS
  std::unique_ptr<tls::TlsStream<P>> tls;  // over tcp, for a pool with tls = true
#endif
  Upstream* u = nullptr;
};

// Connects an upstream of route.pool: TCP within the connect timeout, the PROXY header if
// the listener sends one (in clear, before any TLS), then for a TLS pool the handshake
// within what is left of the connect timeout. A failed connect or handshake counts against
// that upstream's health and the next one is tried (up to max_attempts): nothing has been
// read from the client yet, so a retry loses nothing. False when the client is to be
// closed (counted).
template <PollerBackend P>
Task<bool> connect_upstream(Scheduler<P>& sched, TcpStream<P>& client, const Route& route,
                            ShardMetrics& m, UpstreamConn<P>* out) {
  const ProxySettings& s = *route.s;
  Pool* pool = route.pool;
  const PoolSettings& ps = pool->settings();
  std::vector<const Upstream*> tried;
  PickHint hint{Engine<P>::current()->id(), 0};
  if (ps.balance == Balance::kMaglev) hint.key = peer_key(client.fd());
  const size_t attempts = static_cast<size_t>(std::max(s.max_attempts, 1));
  for (size_t a = 0; a < attempts; ++a) {
    Upstream* cand = pool->acquire(mono_now_ns(), tried, hint);
    if (!cand) break;  // an empty set (names that resolve to nothing)
    if (std::find(tried.begin(), tried.end(), cand) != tried.end()) {
      pool->release(cand);  // every upstream was tried
      break;
    }
    const int64_t deadline = mono_now_ns() + s.connect_timeout_ns;
    std::unique_ptr<TcpStream<P>> up;
    const Status st =
        co_await TcpStream<P>::connect(sched, cand->address(), s.connect_timeout_ns, &up);
    bool ok = st.ok();
    if (!ok) m.error(st.timeout() ? ProxyError::kConnectTimeout : ProxyError::kConnectFailed);
    if (ok && s.nodelay) (void)up->set_nodelay(true);  // before the header and handshake
    if (ok && s.keepalive) (void)up->set_keepalive(true);
    if (ok && route.proxy_protocol != 0 &&
        !co_await send_proxy_header(client, *up, route.proxy_protocol)) {
      m.error(ProxyError::kReset);  // as a reset mid-stream: the client is closed
      (void)co_await up->close();
      pool->release(cand);
      co_return false;
    }
#if RINGPOLL_PROXY_TLS
    std::unique_ptr<tls::TlsStream<P>> t;
    if (ok && ps.tls) {
      t = std::make_unique<tls::TlsStream<P>>();
      ok = co_await tls_handshake(sched, *t, *up, *ps.tls, ps.tls_server_name, deadline,
                                  TlsSide::kUpstream, m);
      if (!ok) m.error(ProxyError::kConnectFailed);
    }
#else
    (void)deadline;
#endif
    if (ok) {
      pool->connect_succeeded(cand);
      out->tcp = std::move(up);
#if RINGPOLL_PROXY_TLS
      out->tls = std::move(t);
#endif
      out->u = cand;
      co_return true;
    }
#if RINGPOLL_PROXY_TLS
    t.reset();
#endif
    if (up) (void)co_await up->close();
    pool->connect_failed(cand, mono_now_ns(), hint.shard);
    pool->release(cand);
    tried.push_back(cand);
  }
  m.error(ProxyError::kNoUpstream);
  co_return false;
}

}  // namespace relay_detail

namespace relay_detail {

// relay_client's path for a client that needs more than a plain relay: on a TLS listener its
// handshake first, on a listener with SNI routes the ClientHello read first; connect an
// upstream of route.pool (retrying others), send the PROXY header if asked, relay both
// ways (through the TLS relay when either side speaks TLS), close the upstream.
template <PollerBackend P>
Task<void> relay_client_tls(TcpStream<P>& client, Route route, ShardMetrics& m) {
  auto* shard = Engine<P>::current();
  Scheduler<P>& sched = shard->sched();
  const ProxySettings& s = *route.s;
#if RINGPOLL_PROXY_TLS
  tls::TlsStream<P> ctls;  // a terminating listener's session with the client
  if (route.tls) {
    const int64_t hs = s.tls_handshake_ns;
    if (!co_await tls_handshake(sched, ctls, client, *route.tls, {},
                                hs > 0 ? mono_now_ns() + hs : 0, TlsSide::kClient, m))
      co_return;  // counted; the server closes the client
  }
#endif
  std::vector<std::byte> early;  // what was read to route the client, for the upstream
  if (route.sni && !route.sni->empty() && !co_await route_by_sni(client, &route, m, &early))
    co_return;
  if (relay_detail::reset_before_accept(client.fd())) {
    m.error(ProxyError::kReset);  // no upstream connect for a peer that is not there
    co_return;
  }
  relay_detail::UpstreamConn<P> up;
  if (!co_await relay_detail::connect_upstream(sched, client, route, m, &up)) co_return;
#if RINGPOLL_PROXY_TLS
  relay_detail::StreamEnd<P> up_end{up.tcp.get(), up.tls.get()};
#else
  TcpStream<P>* up_end = up.tcp.get();
#endif
  bool ok = true;
  if (!early.empty()) {
#if RINGPOLL_PROXY_TLS
    const IoResult w = co_await up_end.write(std::span<const std::byte>(early));
#else
    const IoResult w = co_await up_end->write(std::span<const std::byte>(early));
#endif
    ok = w.ok();
    if (!ok) m.error(ProxyError::kReset);
    m.add(m.bytes_up, w.n);
    std::vector<std::byte>().swap(early);  // not held for the connection's life
  }
#if RINGPOLL_PROXY_TLS
  if (ok && (route.tls || up.tls)) {
    relay_detail::StreamEnd<P> client_end{&client, route.tls ? &ctls : nullptr};
    co_await relay_detail::relay_streams(sched, client_end, up_end, m, s);
  } else if (ok) {
#else
  if (ok) {
#endif
    // A plain relay after SNI routing may move to an upgrade's successor
    // (apps/proxy/relay_move.h); it does not hibernate (this frame holds the set-up's state).
    const relay_detail::RelayOrigin origin{
        route.listener ? std::string_view(*route.listener) : std::string_view(),
        route.pool->settings().name, up.u->label()};
    bool reset = false;
    const relay_detail::RelayEnd e = co_await relay_detail::relay(
        sched, client, *up.tcp, m, s, route.listener ? &origin : nullptr, nullptr, &reset);
    if (e == relay_detail::RelayEnd::kMoved) m.add(m.moved_out);
    // Outlier detection: a reset counts as a failure of that upstream.
    if (reset) route.pool->stream_reset(up.u, mono_now_ns(), shard->id());
  }
#if RINGPOLL_PROXY_TLS
  if (route.tls) (void)co_await ctls.close();  // close_notify, unless sent already
  if (up.tls) (void)co_await up.tls->close();
  up.tls.reset();
#endif
  (void)co_await up.tcp->close();
  route.pool->release(up.u);
}

}  // namespace relay_detail

namespace relay_detail {

// The one coroutine of a plain relayed connection, from accept to close — its frame is
// what a hibernating relay holds, with one small wait (watch_upstream), so what only the
// set-up needs lives elsewhere (relay_client_tls, connect_upstream).
//
// A new client (rec null): connect an upstream of route.pool (retrying others), send the
// PROXY header if asked; a TLS listener, SNI routes or a TLS pool take relay_client_tls
// instead. A relay an upgrade's predecessor handed over (rec: its record, upstream_fd: its
// upstream's descriptor): the bytes it had buffered are written first, a direction that had
// ended sends its FIN, the idle deadline counts on from where it was, and the upstream is
// counted in route.pool again when that pool still has it.
//
// Then relay() and, between two of its runs, the hibernation: a relay quiet for
// s.hibernate_ns ends its pumps (their frames freed, ringpoll_proxy_relays_hibernating) and
// waits here for either side to have data (or an end of stream, or an error), its idle
// timeout, a close (the server's shutdown) or an upgrade's move; then it relays on from
// where it was. Either kind may move on to an upgrade's successor. The server that
// accepted (or adopted) the client closes it when this returns.
template <PollerBackend P>
Task<void> relay_conn(TcpStream<P>& client, Route route, Metrics& metrics, int upstream_fd,
                      std::unique_ptr<RelayRecord> rec) {
  auto* shard = Engine<P>::current();
  Scheduler<P>& sched = shard->sched();
  ShardMetrics& m = metrics.shard(static_cast<size_t>(shard->id()));
  m.add(rec ? m.adopted : m.accepted);
  ActiveCount active(&m);
  const ProxySettings& s = *route.s;
  UpstreamConn<P> up;
  if (rec) {
    up.tcp = std::make_unique<TcpStream<P>>();
    if (!up.tcp->adopt(sched, upstream_fd).ok()) {
      detail::close_socket(upstream_fd);
      m.error(ProxyError::kReset);
      co_return;
    }
    up.u = route.pool ? route.pool->hold(rec->upstream) : nullptr;
  } else {
    if (s.max_connections > 0 && metrics.total_active() > static_cast<int64_t>(s.max_connections)) {
      m.error(ProxyError::kLimit);
      co_return;
    }
    if (s.keepalive) (void)client.set_keepalive(true);
#if RINGPOLL_PROXY_TLS
    if (route.tls || (route.sni && !route.sni->empty()) || route.pool->settings().tls) {
      co_await relay_client_tls(client, std::move(route), m);
      co_return;
    }
#endif
    if (reset_before_accept(client.fd())) {
      m.error(ProxyError::kReset);  // no upstream connect for a peer that is not there
      co_return;
    }
    const bool connected = co_await connect_upstream(sched, client, route, m, &up);
    if (!connected) co_return;
  }
  // A plain relay may move to an upgrade's successor (apps/proxy/relay_move.h).
  const RelayOrigin origin =
      rec ? RelayOrigin{rec->listener, rec->pool, rec->upstream}
          : RelayOrigin{route.listener ? std::string_view(*route.listener) : std::string_view(),
                        route.pool->settings().name, up.u->label()};
  const RelayOrigin* movable = rec || route.listener ? &origin : nullptr;
  TcpStream<P>& u = *up.tcp;
  bool reset = false;
  Slumber sl;
  RelayEnd e;
  for (;;) {
    {
      Task<RelayEnd> relaying;  // its frame is freed at this block's end, before any wait
      {
        ShortLivedFrames short_lived;  // engine/task.h: it ends when the relay hibernates
        relaying =
            relay(sched, client, u, m, s, movable, sl.woke ? nullptr : rec.get(), &reset, &sl);
      }
      e = co_await relaying;
    }
    if (e != RelayEnd::kHibernated) break;
    if (Relay<P>::moves_running()) continue;  // a move began meanwhile: relay, to park for it
    m.gauge(m.hibernating, 1);
    m.add(m.hibernations);
    const bool both = !sl.ended[0] && !sl.ended[1];
    Sleeper<P> z{&client, &u, movable, Joiner<P>{.sched = &sched}, Status(), false, false};
    SleepingRelays<P> listed(movable ? &z : nullptr);
    const int64_t dl = sl.idle_ns > 0 ? sl.last_activity + sl.idle_ns : 0;
    (void)client.set_read_deadline(dl);
    (void)u.set_read_deadline(dl);
    if (both) sched.spawn(watch_upstream(&z));
    // The client's side, or the upstream's alone when the client's direction has ended.
    PollFd<P>& first = sl.ended[0] ? u.poll_fd() : client.poll_fd();
    const IoResult w = co_await first.wait_readable();
    const Status err = w.err;
    z.wake();
    if (both) co_await z.j.wait();
    m.gauge(m.hibernating, -1);
    const bool timed_out = err.timeout() || (both && z.up_err.timeout());
    const bool idle = !z.for_move && timed_out && sl.idle_ns > 0 &&
                      mono_now_ns() >= sl.last_activity + sl.idle_ns;
    if (err.closed() || (both && z.up_err.closed()) || idle) {
      if (idle) m.error(ProxyError::kIdleTimeout);
      client.poll_fd().abort();
      u.poll_fd().abort();
      e = RelayEnd::kEnded;
      break;
    }
    (void)client.set_read_deadline(0);  // the pumps arm their own
    (void)u.set_read_deadline(0);
  }
  if (e == RelayEnd::kMoved) m.add(m.moved_out);
  // Outlier detection: a reset counts as a failure of that upstream.
  if (reset && up.u) route.pool->stream_reset(up.u, mono_now_ns(), shard->id());
  (void)co_await u.close();
  if (up.u) route.pool->release(up.u);
}

}  // namespace relay_detail

// One client connection of a listener (relay_detail::relay_conn; relay_client_tls for TLS
// and SNI routing).
template <PollerBackend P>
Task<void> relay_client(TcpStream<P>& client, Route route, Metrics& metrics) {
  return relay_detail::relay_conn<P>(client, std::move(route), metrics, -1, nullptr);
}

// A plain L4 relay an upgrade's predecessor handed over (apps/proxy/relay_move.h): the
// client (the server's stream, as for an accepted one), the upstream's descriptor and the
// record of its state (relay_detail::relay_conn).
template <PollerBackend P>
Task<void> relay_adopted(TcpStream<P>& client, int upstream_fd, Route route, RelayRecord rec,
                         Metrics& metrics) {
  return relay_detail::relay_conn<P>(client, std::move(route), metrics, upstream_fd,
                                     std::make_unique<RelayRecord>(std::move(rec)));
}

}  // namespace ringpoll::proxy
