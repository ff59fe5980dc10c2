#pragma once
// http_client<P, S>: one client connection of an HTTP listener of ringpoll-proxy, from
// accept to close. S is the client's stream: TcpStream<P>, or on a listener with
// tls.cert the tls::TlsStream<P> over it after its handshake (https_client, proxy.h),
// which provides the same read / write / deadline / fd calls; its half-close (close_notify,
// then FIN) is awaited, and a 101 tunnel is for plain connections only (on TLS the Upgrade
// field is removed as hop-by-hop and the request is answered as any other).
//
// Per request, in order (pipelined requests wait in the input buffer and are answered in
// the order they came):
//   1. read the head within the header-read timeout (the first request: the first route's;
//      later ones: the route of the request before) and check it with apps/http's
//      RequestParser in proxy mode: anything two parties could frame differently (request
//      smuggling) is answered 400 with Connection: close, counted by reason
//      (http::Refusal), and never reaches an upstream. A chunked body's bytes already
//      buffered are checked before the head is sent upstream too;
//   2. pick the first matching route (apps/proxy/http_message.h); none: 503; a Maglev pool
//      keyed on a header or cookie (apps/proxy/hash_key.h) hashes this request's value;
//   3. take an idle keep-alive connection to an upstream of the route's pool
//      (apps/proxy/http_upstreams.h) or connect one within the route's connect timeout,
//      trying other upstreams up to max_attempts; refused: 502, timed out: 504, every
//      upstream ejected: 503 — each answer's body says which;
//   4. send the rewritten head (hop-by-hop fields out, forwarding fields in), then the
//      body from a second task while this one reads the response, so a 100 Continue or an
//      early answer reaches the client while it is still sending;
//   5. relay the response: 1xx heads as they come, then the final head within the
//      route's response-header timeout (504 when it passes), then its body framed by
//      Content-Length, chunked (trailers included) or the upstream's close. If a reused
//      connection ends before any response byte and the request is idempotent, it is sent
//      once more on a new connection — with the body bytes already sent, which the proxy
//      holds up to kRetryBodyBytes (a larger body: 502, not retried);
//   6. return the upstream connection to the idle set when both messages completed and
//      it may carry another request; close the client when either side asked for that;
//   7. write one access-log line (apps/proxy/access_log.h), when a log is configured: for
//      every request answered, refused or relayed.
//
// Memory per client is bounded: one input buffer and one response buffer, each
// max(buffer_bytes, request-line + header limits) bytes; bodies stream through them with
// the backpressure of TCP, as in the L4 relay. HTTP/1.0 clients are served with HTTP/1.0
// and "Connection: close" upstream and a closed connection after each response.
// Upgrade (WebSocket): a request without a body whose Connection names "upgrade" and that
// has an Upgrade field goes upstream with both (Connection: upgrade); a 101 answer turns
// the two connections into a byte tunnel (the L4 relay, apps/proxy/relay.h, with
// timeouts.idle_ms), after the bytes either side sent past its head. Any other answer
// keeps the connection HTTP. A 101 to a request that did not ask is a 502.
// Binary upgrade: a plain client moves to the successor between two requests, with the
// bytes it read past the last answered one (apps/proxy/http_park.h, http_move.h); one in
// the middle of a request moves once it is answered; a tunnel drains.
#include <sys/socket.h>

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/proxy/access_log.h"
#include "apps/proxy/hash_key.h"
#include "apps/proxy/http_message.h"
#include "apps/proxy/http_metrics.h"
#include "apps/proxy/http_park.h"
#include "apps/proxy/http_upstreams.h"
#include "apps/proxy/metrics.h"
#include "apps/proxy/pool.h"
#include "apps/proxy/relay.h"
#include "apps/proxy/settings.h"
#include "engine/engine.h"
#include "engine/net.h"

namespace ringpoll::proxy {

// What one HTTP client connection is served with (see Route in relay.h for `hold`).
template <PollerBackend P>
struct HttpClientRoute {
  const ProxySettings* s = nullptr;
  const ListenerSettings* l = nullptr;
  std::vector<Pool*> pools;               // by route index
  HttpUpstreams<P>* upstreams = nullptr;  // this shard's idle connections
  size_t route_slot = 0;                  // the listener's first slot in HttpMetrics
  AccessLog* log = nullptr;               // the access log, when one is configured
  std::shared_ptr<const void> hold;
  // Set once the proxy stops (shutdown, or the old process of an upgrade): each response
  // from then on says Connection: close and the connection ends after it, so a keep-alive
  // client reconnects (to the successor) between requests instead of being cut at the
  // drain deadline.
  const std::atomic<bool>* draining = nullptr;
};

namespace http_detail {

// A fixed buffer holding [beg, end) of unconsumed bytes. Its memory comes from the shard's
// relay buffers (a pool of limits.buffer_bytes; another size is allocated on its own) and
// goes back while the connection is idle with nothing buffered (release/hold), so an idle
// keep-alive client holds no buffer (ringpoll_proxy_relay_buffers counts those held).
struct Buffer {
  relay_detail::PooledBuffer p;
  size_t cap = 0, beg = 0, end = 0;
  size_t base = 0;  // its usual size (append may grow it until the next release)
  Buffer(size_t c, size_t pool_cap, ShardMetrics* m) : p(c, m), cap(c), base(c) {
    p.pool_cap = pool_cap;
    p.take();
  }
  char* mem() const { return reinterpret_cast<char*>(p.buf); }
  void release() noexcept {
    if (beg == end) {
      beg = end = 0;
      p.done();
      p.cap = cap = base;
    }
  }
  void hold() { p.take(); }
  size_t size() const { return end - beg; }
  const char* data() const { return mem() + beg; }
  void consume(size_t n) {
    beg += n;
    if (beg == end) beg = end = 0;
  }
  // Moves what is left to the front; true when there is room after it.
  bool compact() {
    if (beg > 0) {
      std::memmove(mem(), mem() + beg, end - beg);
      end -= beg;
      beg = 0;
    }
    return end < cap;
  }
  std::span<std::byte> room(size_t max = SIZE_MAX) {
    return {reinterpret_cast<std::byte*>(mem() + end), std::min(cap - end, max)};
  }
  // Adds bytes read elsewhere (a connection moved by an upgrade, apps/proxy/http_park.h):
  // more than there is room for grows the buffer, with room to read a head after them.
  void append(std::span<const std::byte> b) {
    hold();
    compact();
    if (cap - end < b.size()) grow(end + b.size() + base);
    if (!b.empty()) std::memcpy(mem() + end, b.data(), b.size());
    end += b.size();
  }
  void grow(size_t c) {
    relay_detail::PooledBuffer bigger(c, p.m);
    bigger.pool_cap = p.pool_cap;
    bigger.take();
    if (end > beg) std::memcpy(bigger.buf, mem() + beg, end - beg);
    end -= beg;
    beg = 0;
    // The old memory goes back (to the pool, or freed) with `bigger`.
    std::swap(p.buf, bigger.buf);
    std::swap(p.cap, bigger.cap);
    std::swap(p.owned, bigger.owned);
    cap = c;
  }
};

template <class S>
auto write_text(S& s, std::string_view t) {
  return s.write(std::as_bytes(std::span(t)));
}

// True for a plain TCP client stream (the S of http_client), false for a TLS one.
template <class S>
inline constexpr bool kPlainStream = requires(S& s) {
  s.poll_fd();
};

// The client's half-close: FIN on a plain stream, close_notify then FIN on a TLS one.
template <class S>
Task<void> end_writing(S& client) {
  if constexpr (kPlainStream<S>) {
    (void)client.shutdown_write();
  } else {
    (void)co_await client.shutdown_write();
  }
  co_return;
}

// A deadline ns from now; 0 (none) when ns is 0 (timeouts.idle_ms = 0: no idle timeout).
inline int64_t deadline_after(int64_t ns) {
  return ns > 0 ? mono_now_ns() + ns : 0;
}

// The most body bytes that leave in the same write as the response head (copied behind it).
constexpr size_t kHeadWithBodyBytes = 16384;

// How long an error answer may take to leave: it is small, a client that does not take
// it within this long is not waited for.
constexpr int64_t kAnswerWriteNs = 5'000'000'000;

// Sends an error answer that says why and half-closes: the connection ends after it.
// Returns the bytes written.
template <class S>
Task<size_t> answer_and_close(S& client, int status, std::string why) {
  (void)client.set_write_deadline(mono_now_ns() + kAnswerWriteNs);
  const std::string text = error_response(status, why);
  const IoResult w = co_await write_text(client, text);
  co_await end_writing(client);
  co_return w.n;
}

inline bool idempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" || m == "TRACE";
}

// A request body the proxy keeps a copy of, so that the request can be sent again on a
// new connection when a reused one turns out closed before any response byte: 64 KiB (a
// form, a JSON document). A larger body is streamed without a copy, and such a request is
// answered 502 instead of retried.
inline constexpr size_t kRetryBodyBytes = 64 * 1024;

// The peer of fd as "ip:port" ("[v6]:port"), and its IP alone.
inline std::string peer_address(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0) return "unknown";
  SocketAddress sa;
  sa.ss = a;
  sa.len = len;
  return sa.to_string();
}
inline std::string ip_of(std::string t) {
  if (t.rfind(':') == std::string::npos) return t;
  t.resize(t.rfind(':'));
  if (!t.empty() && t.front() == '[') t = t.substr(1, t.size() - 2);
  return t;
}

inline int64_t wall_now_ns() {
  timespec t{};
  clock_gettime(CLOCK_REALTIME, &t);
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

// The state one request's two tasks share.
template <PollerBackend P, class S>
struct Exchange {
  S* client = nullptr;
  TcpStream<P>* up = nullptr;
  Buffer* in = nullptr;
  const HttpRoute* route = nullptr;
  ShardMetrics* m = nullptr;
  HttpShardMetrics* hm = nullptr;
  // The request body: where its framing stands. A send that stopped (its upstream closed)
  // continues from here on the next connection, after the held bytes.
  bool chunked = false;
  uint64_t left = 0;  // Content-Length bytes not yet taken from the client
  ChunkedReader chunks;
  uint64_t body_bytes = 0;  // taken from the client so far
  // Every body byte taken so far, while they fit in kRetryBodyBytes (held_all then).
  bool hold = false;
  bool held_all = true;
  std::string held;
  bool body_done = false;     // every body byte went upstream
  bool body_failed = false;   // the client or the upstream failed mid-body
  bool body_refused = false;  // a chunked body broke its framing
  relay_detail::Joiner<P> joined;

  void keep(const char* p, size_t n) {
    if (!hold || !held_all) return;
    if (held.size() + n > kRetryBodyBytes) {
      held_all = false;
      std::string().swap(held);
      return;
    }
    held.append(p, n);
  }
};

// Client → upstream: the request body, from the input buffer first.
template <PollerBackend P, class S>
Task<void> send_body(Exchange<P, S>* x) {
  Buffer& in = *x->in;
  for (;;) {
    size_t take = 0;
    if (x->chunked) {
      if (in.size() > 0) {
        const auto r = x->chunks.feed(in.data(), in.size(), &take);
        if (r == ChunkedReader::Result::kError) {
          x->body_refused = true;
          x->hm->refuse_chunk();
          break;
        }
      }
    } else {
      take = static_cast<size_t>(std::min<uint64_t>(x->left, in.size()));
      x->left -= take;
    }
    if (take > 0) {
      x->keep(in.data(), take);
      x->body_bytes += take;
      (void)x->up->set_write_deadline(deadline_after(x->route->idle_ns));
      const IoResult w = co_await x->up->write(std::as_bytes(std::span(in.data(), take)));
      in.consume(take);
      if (!w.ok()) break;
    }
    if (x->chunked ? x->chunks.done() : x->left == 0) {
      x->body_done = true;
      break;
    }
    if (in.size() == 0) in.beg = in.end = 0;
    in.compact();
    (void)x->client->set_read_deadline(deadline_after(x->route->idle_ns));
    // A Content-Length body is read no further than its end, so the next pipelined
    // request stays in the socket until its turn.
    const IoResult r =
        co_await x->client->read(in.room(x->chunked ? SIZE_MAX : static_cast<size_t>(x->left)));
    if (!r.ok()) break;
    in.end += r.n;
  }
  if (!x->body_done) {
    x->body_failed = true;
    // The upstream got part of a request: it cannot be reused, and its answer (if it
    // sends one) is not waited for.
    x->up->poll_fd().abort();
  }
  x->joined.finish();
}

// Stops the body task of x (if it still runs) and waits for it: the upstream's write is
// aborted, the client's read woken by an expired deadline (which loses no byte: what the
// client sent stays in the socket for whoever reads next).
template <PollerBackend P, class S>
Task<void> stop_body(Exchange<P, S>* x) {
  if (!x->joined.done) {
    x->up->poll_fd().abort();
    (void)x->client->set_read_deadline(1);
  }
  co_await x->joined.wait();
}

// Maglev's key for one request to `pool`: the value of the header or cookie the pool names
// (apps/proxy/hash_key.h; each request of a keep-alive connection by its own), else the
// client's address `client` (counted in `fallbacks` and said once per pool).
inline uint64_t maglev_key_of(std::string_view head, Pool& pool, uint64_t client,
                              std::atomic<uint64_t>& fallbacks, std::string* scratch) {
  const PoolSettings& ps = pool.settings();
  if (ps.balance != Balance::kMaglev || ps.hash.source == HashSource::kClient) return client;
  if (hash_key_value(head, ps.hash, scratch)) return text_key(*scratch);
  HttpShardMetrics::bump(fallbacks);
  if (pool.first_hash_fallback()) {
    std::fprintf(stderr,
                 "ringpoll-proxy: pool '%s': a request without %s %s is hashed on its client's "
                 "address (counted in ringpoll_proxy_http_hash_fallbacks_total)\n",
                 ps.name.c_str(), ps.hash.source == HashSource::kHeader ? "header" : "cookie",
                 ps.hash.name.c_str());
  }
  return client;
}

// Why an upstream could not be had.
enum class NoUpstream : uint8_t { kNone, kUnhealthy, kRefused, kTimeout };

// What the access log says of one request (apps/proxy/access_log.h).
struct LogLine {
  AccessRecord r;
  std::string upstream;
  void upstream_of(const Upstream* u) {
    if (u) upstream = u->address().to_string();
    r.upstream = upstream;
  }
};

}  // namespace http_detail

// `from`: a client an upgrade's predecessor moved here (apps/proxy/http_move.h), with the
// bytes it had read past its last answered request and what was left of its read deadline.
template <PollerBackend P, class S>
Task<void> http_client(S& client, HttpClientRoute<P> ctx, Metrics& metrics, HttpMetrics& hmetrics,
                       HttpResume from = {}) {
  using namespace http_detail;
  auto* shard = Engine<P>::current();
  Scheduler<P>& sched = shard->sched();
  const size_t sid = static_cast<size_t>(shard->id());
  ShardMetrics& m = metrics.shard(sid);
  HttpShardMetrics& hm = hmetrics.shard(sid);
  m.add(from.adopted ? m.http_adopted : m.accepted);
  relay_detail::ActiveCount active(&m);
  const ProxySettings& s = *ctx.s;
  const HttpSettings& hs = ctx.l->http_settings;
  // A plain client may move to an upgrade's successor between two requests
  // (apps/proxy/http_park.h); a TLS stream's record state cannot travel.
  TcpStream<P>* plain = nullptr;
  if constexpr (std::is_same_v<S, TcpStream<P>>) plain = &client;
  HttpPark<P> park(plain, &ctx.l->name, &sched);
  HttpParks<P> parks(plain ? &park : nullptr);
  uint32_t pokes = 0;  // park.pokes seen: a read deadline expired by ask_park is not a timeout
  if (!from.adopted && s.max_connections > 0 &&
      metrics.total_active() > static_cast<int64_t>(s.max_connections)) {
    m.error(ProxyError::kLimit);
    co_return;
  }
  ctx.upstreams->start_sweeper(sched, ctx.hold);
  http::ParserLimits limits = s.http_limits;
  limits.proxy = true;
  http::RequestParser parser(limits);
  const size_t cap =
      std::max(s.buffer_bytes, limits.max_request_line + limits.max_header_bytes + 64);
  Buffer in(cap, s.buffer_bytes, &m), ub(cap, s.buffer_bytes, &m);
  std::string head_out, resp_out;
  const std::string client_addr = peer_address(client.fd());
  const std::string client_ip = ip_of(client_addr);
  const uint64_t addr_key = peer_key(client.fd());  // Maglev pools
  std::string key_value;                            // a request's header or cookie value (Maglev)
  int64_t header_read_ns = hs.routes.empty() ? 10'000'000'000 : hs.routes[0].header_read_ns;
  // The head's read deadline (0: none); a moved client's counts on from the predecessor's.
  int64_t read_deadline = -1;
  if (from.adopted) {
    read_deadline = from.deadline_left_ns < 0 ? 0 : mono_now_ns() + from.deadline_left_ns;
    in.append(from.bytes);
    std::vector<std::byte>().swap(from.bytes);
  }
  // A read woken by ask_park: its deadline goes back, and the client parks (true).
  const auto poked = [&](const IoResult& r) {
    if (!r.err.timeout() || park.pokes == pokes) return false;
    pokes = park.pokes;
    (void)client.set_read_deadline(read_deadline);
    return true;
  };
  AccessLog* const log = ctx.log;
  // One access-log line; `line` carries what is known of the request.
  auto log_line = [&](LogLine& line, int status, uint64_t out_bytes, int64_t t_start) {
    if (!log) return;
    line.r.client = client_addr;
    line.r.listener = ctx.l->name;
    line.r.status = status;
    line.r.bytes_out = out_bytes;
    line.r.total_ns = mono_now_ns() - t_start;
    log->write(sid, line.r);
  };

  for (;;) {
    // 1. The request head.
    if (read_deadline < 0) read_deadline = header_read_ns > 0 ? mono_now_ns() + header_read_ns : 0;
    (void)client.set_read_deadline(read_deadline);
    size_t head_start = in.beg;
    LogLine line;
    int64_t t_start = 0;
    park.reading = true;
    for (;;) {
      if constexpr (std::is_same_v<S, TcpStream<P>>) {
        // The park point of an upgrade's move: what was read past the last answered request
        // goes with the connection (parsed again there), or comes back if it stays.
        if (park.parking) {
          const auto* b = reinterpret_cast<const std::byte*>(in.mem());
          if (in.end > head_start) park.bytes.assign(b + head_start, b + in.end);
          in.beg = in.end = head_start = 0;
          parser.reset();
          park.deadline = read_deadline;
          in.release();
          ub.release();
          const bool away = co_await park.park();  // (a local: engine/task.h's GCC 12 note)
          if (away) {
            m.add(m.http_moved_out);
            co_return;  // the successor has the socket; this process's close is its own
          }
          client.poll_fd().attach_recv();  // the mover may have stopped the receive ahead
          in.hold();
          ub.hold();
          in.append(park.bytes);
          std::vector<std::byte>().swap(park.bytes);
          continue;
        }
      }
      if (in.end > head_start) {
        size_t used = 0;
        const size_t from = in.beg;
        const auto r = parser.feed(in.data(), in.size(), &used);
        in.beg = from + used;
        if (r == http::RequestParser::Result::kRequest) break;
        if (r == http::RequestParser::Result::kError) {
          hm.refuse(parser.refusal());
          t_start = mono_now_ns();
          if (log) line.r.wall_ns = wall_now_ns();
          line.r.bytes_in = in.end - head_start;
          const size_t n =
              co_await answer_and_close(client, http::status_code(parser.error()),
                                        std::string(http::to_string(parser.error())) + " (" +
                                            http::to_string(parser.refusal()) + ")");
          log_line(line, http::status_code(parser.error()), n, t_start);
          co_return;
        }
      }
      // Keep the head in one piece: move it to the front before reading more.
      if (head_start > 0) {
        const size_t shift = head_start;
        std::memmove(in.mem(), in.mem() + shift, in.end - shift);
        in.end -= shift;
        in.beg -= shift;
        head_start = 0;
      }
      if (in.end == in.cap) co_return;  // cannot happen: the parser's limits are below cap
      // Nothing buffered and no request begun: the connection waits for its next request
      // without its two buffers (a TLS stream: nor any decrypted or ciphertext bytes held
      // in its session).
      bool idle = in.end == 0 && parser.idle();
      if constexpr (!kPlainStream<S>) idle = idle && !client.buffered();
      if (idle) {
        in.release();
        ub.release();
        std::string().swap(head_out);  // and the last heads' copies
        std::string().swap(resp_out);
        // Ended, reset or idle past the header-read timeout (an idle connection's
        // timeout is not a header timeout, as below): nothing to answer.
        IoResult w;
        if constexpr (kPlainStream<S>) {
          w = co_await client.poll_fd().wait_readable();
        } else {
          w = co_await client.tcp().poll_fd().wait_readable();
        }
        if (!w.ok() && poked(w)) continue;
        if (!w.ok()) co_return;
        in.hold();
        ub.hold();
      }
      const IoResult rd = co_await client.read(in.room());
      if (!rd.ok() && poked(rd)) continue;
      if (!rd.ok()) {
        if (!parser.idle() && rd.err.timeout()) hm.add(hm.header_timeouts);
        co_return;  // end of stream, header-read timeout or reset: nothing to answer
      }
      in.end += rd.n;
    }
    park.reading = false;
    read_deadline = -1;  // the next head's counts from the end of this request
    // Times count from the complete request head (the access log's TIME, TTFB and TOTAL,
    // and the per-route histograms).
    t_start = mono_now_ns();
    if (log) line.r.wall_ns = wall_now_ns();
    std::string_view head(in.mem() + head_start, in.beg - head_start);
    const size_t head_bytes = head.size();
    line.r.bytes_in = head_bytes;
    while (head.starts_with("\r\n")) head.remove_prefix(2);  // empty lines before it
    const http::Request& rq = parser.request();
    const std::string method(rq.method_name);
    line.r.method = method;
    // The target's bytes move in the input buffer while a body is read: the log keeps a copy.
    std::string target;
    if (log) target = rq.target;
    line.r.target = target;
    const bool http10 = rq.version_minor == 0;
    std::string_view host;
    for_each_field(head, [&](std::string_view n, std::string_view v) {
      if (iequals(n, "host")) host = v;
    });
    const int ri = match_route(hs.routes, host, rq.target, rq.method_name);
    if (ri < 0) {
      hm.count(ctx.route_slot + hs.routes.size(), 503);  // the "no route" slot
      const size_t n = co_await answer_and_close(client, 503, "no route matches this request");
      log_line(line, 503, n, t_start);
      co_return;
    }
    const HttpRoute& route = hs.routes[static_cast<size_t>(ri)];
    line.r.route = route.name;
    const size_t slot = ctx.route_slot + static_cast<size_t>(ri);
    header_read_ns = route.header_read_ns;
    Pool* pool = ctx.pools[static_cast<size_t>(ri)];
    const uint64_t maglev_key =
        maglev_key_of(head, *pool, addr_key, hm.routes[slot].hash_fallbacks, &key_value);
    const bool has_body = rq.chunked || rq.content_length > 0;
    // A tunnel (WebSocket...) is asked for by a request without a body; any answer but
    // 101 keeps the connection HTTP. The tunnel is the L4 relay's, which moves bytes
    // between two TcpStreams: another client stream (TLS) has no tunnel yet, and its
    // Upgrade is removed as hop-by-hop.
    const bool upgrade = kPlainStream<S> && !http10 && !has_body && wants_upgrade(head);

    Exchange<P, S> x;
    x.client = &client;
    x.in = &in;
    x.route = &route;
    x.m = &m;
    x.hm = &hm;
    x.chunked = rq.chunked;
    x.left = rq.content_length;
    x.hold = idempotent(method);
    x.joined.sched = &sched;
    // A chunked body's bytes already here are checked before anything goes upstream.
    if (rq.chunked && in.size() > 0) {
      ChunkedReader probe(limits.max_header_bytes);
      size_t used = 0;
      if (probe.feed(in.data(), in.size(), &used) == ChunkedReader::Result::kError) {
        hm.refuse_chunk();
        const size_t n = co_await answer_and_close(client, 400, "invalid chunked body (bad_chunk)");
        log_line(line, 400, n, t_start);
        co_return;
      }
    }
    ForwardInfo fi;
    fi.client_ip = client_ip;
    if constexpr (!kPlainStream<S>) fi.proto = "https";
    fi.s = &hs;
    fi.http10_upstream = http10;
    fi.upgrade = upgrade;
    rewrite_request_head(head, fi, &head_out);

    // 3-5: an upstream, the request, the response head; once more on a new connection
    // when a reused one turns out closed.
    HttpUpstreamConn<P> conn;
    ResponseHead resp;
    bool have_resp = false;
    bool tunnel = false;
    bool reused = false;
    bool body_task = false;  // send_body runs (or ran) for this attempt
    bool close_after = false;
    uint64_t out_bytes = 0;  // to the client
    int answer = 0;          // an error status to send instead of a response
    std::string answer_why;
    for (int attempt = 0; attempt < 2 && !have_resp && answer == 0; ++attempt) {
      // An upstream connection.
      NoUpstream why = NoUpstream::kNone;
      const PickHint hint{Engine<P>::current()->id(), maglev_key};
      if (pool->healthy_count(mono_now_ns(), hint.shard) == 0) why = NoUpstream::kUnhealthy;
      std::vector<const Upstream*> tried;
      const size_t attempts = static_cast<size_t>(std::max(s.max_attempts, 1));
      reused = false;
      NoUpstream last = NoUpstream::kUnhealthy;  // why the last attempt failed
      for (size_t a = 0; a < attempts && !conn.stream && why == NoUpstream::kNone; ++a) {
        Upstream* u = pool->acquire(mono_now_ns(), tried, hint);
        if (u && std::find(tried.begin(), tried.end(), u) != tried.end()) {
          pool->release(u);  // every upstream was tried
          u = nullptr;
        }
        if (!u) {
          why = last;
          break;
        }
        if (attempt == 0 && co_await ctx.upstreams->take(u, &conn)) {
          reused = true;
          break;
        }
        std::unique_ptr<TcpStream<P>> st;
        const Status c =
            co_await TcpStream<P>::connect(sched, u->address(), route.connect_timeout_ns, &st);
        if (c.ok()) {
          pool->connect_succeeded(u);
          if (s.nodelay) (void)st->set_nodelay(true);
          conn.stream = std::move(st);
          conn.upstream = u;
          conn.requests = 0;
          break;
        }
        m.error(c.timeout() ? ProxyError::kConnectTimeout : ProxyError::kConnectFailed);
        why = c.timeout() ? NoUpstream::kTimeout : NoUpstream::kRefused;
        last = why;
        pool->connect_failed(u, mono_now_ns(), hint.shard);
        pool->release(u);
        tried.push_back(u);
        if (a + 1 < attempts) why = NoUpstream::kNone;
      }
      if (!conn.stream) {
        m.error(ProxyError::kNoUpstream);
        answer = why == NoUpstream::kTimeout ? 504 : why == NoUpstream::kRefused ? 502 : 503;
        answer_why = why == NoUpstream::kTimeout   ? "upstream connect timed out"
                     : why == NoUpstream::kRefused ? "upstream refused the connection"
                                                   : "no healthy upstream";
        break;
      }
      hm.add(reused ? hm.upstream_reused : hm.upstream_new);
      if (log) line.upstream_of(conn.upstream);
      TcpStream<P>& up = *conn.stream;
      x.up = &up;
      (void)up.set_write_deadline(deadline_after(route.idle_ns));
      IoResult w = co_await write_text(up, head_out);
      // A retry sends the body bytes taken on the first attempt, then goes on with the rest.
      if (w.ok() && !x.held.empty()) w = co_await write_text(up, x.held);
      bool early_close = !w.ok();
      body_task = false;
      if (!early_close && has_body && !x.body_done) {
        body_task = true;
        x.body_failed = false;
        x.joined.done = x.joined.waiting = false;
        sched.spawn(send_body(&x));
      }
      // The response head (1xx ones relayed as they come).
      ub.beg = ub.end = 0;
      const int64_t resp_deadline =
          route.response_header_ns > 0 ? mono_now_ns() + route.response_header_ns : 0;
      bool any_byte = false;
      while (!early_close) {
        const long hl = response_head_length(ub.data(), ub.size(), ub.cap);
        if (hl < 0) {
          answer = 502;
          answer_why = "upstream sent a malformed response head";
          break;
        }
        if (hl > 0) {
          std::string why_bad;
          const std::string_view rh(ub.data(), static_cast<size_t>(hl));
          if (!parse_response_head(rh, method == "HEAD", &resp, &why_bad)) {
            answer = 502;
            answer_why = "upstream sent a malformed response: " + why_bad;
            break;
          }
          if (resp.status == 101) {
            if (!upgrade) {
              answer = 502;
              answer_why = "upstream switched protocols without an Upgrade request";
              break;
            }
            // Both connections become one byte tunnel below.
            rewrite_response_head(rh, hs, false, &resp_out, true);
            ub.consume(static_cast<size_t>(hl));
            have_resp = tunnel = true;
            break;
          }
          if (resp.status >= 100 && resp.status < 200) {
            if (!http10) {
              rewrite_response_head(rh, hs, false, &resp_out);
              const IoResult iw = co_await write_text(client, resp_out);
              out_bytes += iw.n;
            }
            ub.consume(static_cast<size_t>(hl));
            continue;
          }
          // The head goes out rewritten; the buffer keeps only body bytes after this.
          close_after = !rq.keep_alive || http10 || !resp.keep_alive ||
                        resp.framing == ResponseHead::Framing::kClose ||
                        (ctx.draining && ctx.draining->load(std::memory_order_relaxed));
          rewrite_response_head(rh, hs, close_after, &resp_out);
          ub.consume(static_cast<size_t>(hl));
          have_resp = true;
          // Outlier detection: a 5xx counts against the upstream (as a failed connect).
          pool->answered(conn.upstream, resp.status < 500, mono_now_ns(), hint.shard);
          break;
        }
        ub.compact();
        (void)up.set_read_deadline(resp_deadline);
        const IoResult r = co_await up.read(ub.room());
        if (!r.ok()) {
          if (r.err.timeout() && !(x.body_failed)) {
            answer = 504;
            answer_why = "upstream response header timeout";
            hm.add(hm.response_timeouts);
          } else if (!any_byte && reused && idempotent(method) && !x.body_refused) {
            early_close = true;  // retried below on a new connection, if it may be
          } else if (x.body_refused) {
            answer = 400;
            answer_why = "invalid chunked body (bad_chunk)";
          } else {
            answer = 502;
            answer_why = "upstream closed the connection before a complete response";
          }
          break;
        }
        any_byte = true;
        ub.end += r.n;
      }
      if (have_resp || answer != 0) break;
      // A reused connection closed under us before answering: retry on a new one when
      // the request is idempotent and all of its body sent so far is held.
      if (body_task) co_await stop_body(&x);
      (void)co_await up.close();
      pool->release(conn.upstream);
      conn = HttpUpstreamConn<P>{};
      x.up = nullptr;
      if (x.body_refused) {
        answer = 400;
        answer_why = "invalid chunked body (bad_chunk)";
      } else if (attempt == 1 || !reused || !idempotent(method) || !x.held_all) {
        answer = 502;
        answer_why = x.held_all ? "upstream closed the connection before a complete response"
                                : "upstream closed the connection before a complete response "
                                  "(the request body was too large to send again)";
      } else {
        hm.add(hm.retries);
      }
    }
    const int64_t t_first = mono_now_ns();
    if (answer != 0) {
      if (conn.stream) {
        conn.stream->poll_fd().abort();  // its state is unknown: never reused
        if (body_task) {
          (void)client.set_read_deadline(1);  // wakes the body task if it waits on the client
          co_await x.joined.wait();
        }
        (void)co_await conn.stream->close();
        pool->release(conn.upstream);
      }
      hm.count(slot, answer);
      out_bytes += co_await answer_and_close(client, answer, answer_why);
      line.r.bytes_in = head_bytes + x.body_bytes;
      log_line(line, answer, out_bytes, t_start);
      co_return;
    }
    line.r.ttfb_ns = t_first - t_start;

    TcpStream<P>& up = *conn.stream;
    if (tunnel) {
      park.tunnel = true;  // a byte tunnel does not move: it drains here
      park.resume();
      // 101: the head, then what either side sent past its head, then bytes both ways
      // (the L4 relay, apps/proxy/relay.h) until both ends closed or timeouts.idle_ms.
      hm.count(slot, 101);
      (void)client.set_write_deadline(deadline_after(route.idle_ns));
      (void)up.set_write_deadline(deadline_after(route.idle_ns));
      IoResult tw = co_await write_text(client, resp_out);
      out_bytes += tw.n;
      if (tw.ok() && ub.size() > 0) {
        tw = co_await client.write(std::as_bytes(std::span(ub.data(), ub.size())));
        m.add(m.bytes_down, tw.n);
      }
      if (tw.ok() && in.size() > 0) {
        tw = co_await up.write(std::as_bytes(std::span(in.data(), in.size())));
        m.add(m.bytes_up, tw.n);
      }
      log_line(line, 101, out_bytes, t_start);
      if (tw.ok()) {
        if constexpr (kPlainStream<S>) {
          (void)client.set_write_deadline(0);
          (void)up.set_write_deadline(0);
          (void)client.set_read_deadline(0);
          co_await relay_detail::relay(sched, client, up, m, s);
        }
      }
      up.poll_fd().abort();
      (void)co_await up.close();
      pool->release(conn.upstream);
      co_return;
    }

    // 5. The response: head, then body. Body bytes that came with the head leave with it,
    //    in one write (a small response is one send: one segment, one wake-up of the
    //    client); a larger first part (above kHeadWithBodyBytes) is written after it.
    ChunkedReader rchunks(limits.max_header_bytes);
    uint64_t left = resp.content_length;
    bool resp_done = resp.framing == ResponseHead::Framing::kNone ||
                     (resp.framing == ResponseHead::Framing::kLength && left == 0);
    bool ok = true;
    bool head_sent = false;
    for (;;) {
      size_t take = 0;
      if (!resp_done && ub.size() > 0) {
        switch (resp.framing) {
          case ResponseHead::Framing::kLength:
            take = static_cast<size_t>(std::min<uint64_t>(left, ub.size()));
            left -= take;
            resp_done = left == 0;
            break;
          case ResponseHead::Framing::kChunked: {
            const auto r = rchunks.feed(ub.data(), ub.size(), &take);
            if (r == ChunkedReader::Result::kError) ok = false;
            resp_done = r == ChunkedReader::Result::kDone;
            break;
          }
          default:
            take = ub.size();
        }
      }
      if (!head_sent) {
        // The head goes even when the body turned out malformed (the client then sees
        // the connection end before the body does, as before).
        head_sent = true;
        const bool with_body = ok && take > 0 && take <= kHeadWithBodyBytes;
        if (with_body) resp_out.append(ub.data(), take);
        (void)client.set_write_deadline(deadline_after(route.idle_ns));
        const IoResult hw = co_await write_text(client, resp_out);
        out_bytes += hw.n;
        if (!hw.ok()) {
          ok = false;
          break;
        }
        if (with_body) {
          ub.consume(take);
          m.add(m.bytes_down, take);
          take = 0;
        }
      }
      if (!ok) break;
      if (take > 0) {
        (void)client.set_write_deadline(deadline_after(route.idle_ns));
        const IoResult w = co_await client.write(std::as_bytes(std::span(ub.data(), take)));
        ub.consume(take);
        out_bytes += w.n;
        if (!w.ok()) {
          ok = false;
          break;
        }
        m.add(m.bytes_down, take);
      }
      if (resp_done) break;
      if (ub.size() == 0) ub.beg = ub.end = 0;
      ub.compact();
      (void)up.set_read_deadline(deadline_after(route.idle_ns));
      const IoResult r = co_await up.read(ub.room(
          resp.framing == ResponseHead::Framing::kLength ? static_cast<size_t>(left) : SIZE_MAX));
      if (!r.ok()) {
        if (resp.framing == ResponseHead::Framing::kClose && r.err.is(Errc::kEof)) {
          resp_done = true;
        } else {
          ok = false;
        }
        break;
      }
      ub.end += r.n;
    }
    // The request body: finished, or stopped when the answer came first (the upstream
    // connection and the client's framing are both lost, so both end after this response).
    bool body_ok = !has_body || x.body_done;  // a retry may have sent all of it already
    if (body_task) {
      co_await stop_body(&x);
      body_ok = x.body_done;
    }
    const int64_t t_end = mono_now_ns();
    hm.count(slot, resp.status);
    hm.timing(slot, t_first - t_start, t_end - t_start);
    line.r.bytes_in = head_bytes + x.body_bytes;
    log_line(line, resp.status, out_bytes, t_start);
    const bool reusable = ok && resp_done && body_ok && resp.keep_alive && !http10 &&
                          ub.size() == 0 && resp.framing != ResponseHead::Framing::kClose;
    Upstream* u = conn.upstream;
    if (reusable) {
      co_await ctx.upstreams->put(std::move(conn));
    } else {
      up.poll_fd().abort();
      (void)co_await up.close();
    }
    pool->release(u);
    if (!ok || !resp_done || !body_ok || close_after) {
      if (ok && resp_done) co_await end_writing(client);
      co_return;
    }
  }
}

#if RINGPOLL_PROXY_TLS  // Windows seam: no TLS there (apps/proxy/relay.h)
// A client of an HTTP listener with tls.cert: the handshake within tls.handshake_ms
// (counted by outcome, as a TCP listener's are), then http_client over the session, then
// close_notify unless it was sent already. The listener's TlsContext is its generation's:
// `ctx.hold` keeps it alive until the connection ends.
template <PollerBackend P>
Task<void> https_client(TcpStream<P>& client, HttpClientRoute<P> ctx, const tls::TlsContext& tctx,
                        Metrics& metrics, HttpMetrics& hmetrics) {
  auto* shard = Engine<P>::current();
  ShardMetrics& m = metrics.shard(static_cast<size_t>(shard->id()));
  const std::shared_ptr<const void> keep = ctx.hold;
  const int64_t hs = ctx.s->tls_handshake_ns;
  tls::TlsStream<P> t;
  const bool ok = co_await tls_handshake(shard->sched(), t, client, tctx, {},
                                         hs > 0 ? mono_now_ns() + hs : 0, TlsSide::kClient, m);
  if (!ok) co_return;  // counted; the server closes the client
  co_await http_client<P>(t, std::move(ctx), metrics, hmetrics);
  (void)co_await t.close();
}
#endif

}  // namespace ringpoll::proxy
