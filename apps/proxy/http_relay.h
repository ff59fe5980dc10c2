#pragma once
// http_client<P, S>: one client connection of an HTTP listener of ringpoll-proxy, from
// accept to close. S is the client's stream: TcpStream<P> now; a TLS stream composes by
// providing the same read / write / deadline / shutdown_write / fd / poll_fd calls.
//
// Per request, in order (pipelined requests wait in the input buffer and are answered in
// the order they came):
//   1. read the head within the header-read timeout (the first request: the first route's;
//      later ones: the route of the request before) and check it with apps/http's
//      RequestParser in proxy mode: anything two parties could frame differently (request
//      smuggling) is answered 400 with Connection: close, counted by reason
//      (http::Refusal), and never reaches an upstream. A chunked body's bytes already
//      buffered are checked before the head is sent upstream too;
//   2. pick the first matching route (apps/proxy/http_message.h); none: 503;
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
//      connection ends before any response byte and the request is idempotent without a
//      body, it is sent once more on a new connection;
//   6. return the upstream connection to the idle set when both messages completed and
//      it may carry another request; close the client when either side asked for that.
//
// Memory per client is bounded: one input buffer and one response buffer, each
// max(buffer_bytes, request-line + header limits) bytes; bodies stream through them with
// the backpressure of TCP, as in the L4 relay. HTTP/1.0 clients are served with HTTP/1.0
// and "Connection: close" upstream and a closed connection after each response.
// Upgrade (WebSocket) is not relayed: the Upgrade field is hop-by-hop and removed.
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/proxy/http_message.h"
#include "apps/proxy/http_metrics.h"
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
  std::shared_ptr<const void> hold;
  // Set once the proxy stops (shutdown, or the old process of an upgrade): each response
  // from then on says Connection: close and the connection ends after it, so a keep-alive
  // client reconnects (to the successor) between requests instead of being cut at the
  // drain deadline.
  const std::atomic<bool>* draining = nullptr;
};

namespace http_detail {

// A fixed buffer holding [beg, end) of unconsumed bytes.
struct Buffer {
  std::unique_ptr<char[]> mem;
  size_t cap = 0, beg = 0, end = 0;
  explicit Buffer(size_t c) : mem(new char[c]), cap(c) {}
  size_t size() const { return end - beg; }
  const char* data() const { return mem.get() + beg; }
  void consume(size_t n) {
    beg += n;
    if (beg == end) beg = end = 0;
  }
  // Moves what is left to the front; true when there is room after it.
  bool compact() {
    if (beg > 0) {
      std::memmove(mem.get(), mem.get() + beg, end - beg);
      end -= beg;
      beg = 0;
    }
    return end < cap;
  }
  std::span<std::byte> room(size_t max = SIZE_MAX) {
    return {reinterpret_cast<std::byte*>(mem.get() + end), std::min(cap - end, max)};
  }
};

template <class S>
auto write_text(S& s, std::string_view t) {
  return s.write(std::as_bytes(std::span(t)));
}

// How long an error answer may take to leave: it is small, a client that does not take
// it within this long is not waited for.
constexpr int64_t kAnswerWriteNs = 5'000'000'000;

// Sends an error answer that says why and half-closes: the connection ends after it.
template <class S>
Task<void> answer_and_close(S& client, int status, std::string why) {
  (void)client.set_write_deadline(mono_now_ns() + kAnswerWriteNs);
  const std::string text = error_response(status, why);
  (void)co_await write_text(client, text);
  (void)client.shutdown_write();
}

inline bool idempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" || m == "TRACE";
}

inline std::string peer_ip(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0) return "unknown";
  SocketAddress sa;
  sa.ss = a;
  sa.len = len;
  std::string t = sa.to_string();
  // "1.2.3.4:80" / "[::1]:80" without the port.
  t.resize(t.rfind(':'));
  if (!t.empty() && t.front() == '[') t = t.substr(1, t.size() - 2);
  return t;
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
  // The request body.
  bool chunked = false;
  uint64_t length = 0;
  ChunkedReader chunks;
  bool body_done = false;     // every body byte went upstream
  bool body_failed = false;   // the client or the upstream failed mid-body
  bool body_refused = false;  // a chunked body broke its framing
  relay_detail::Joiner<P> joined;
};

// Client → upstream: the request body, from the input buffer first.
template <PollerBackend P, class S>
Task<void> send_body(Exchange<P, S>* x) {
  Buffer& in = *x->in;
  uint64_t left = x->length;
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
      take = static_cast<size_t>(std::min<uint64_t>(left, in.size()));
      left -= take;
    }
    if (take > 0) {
      (void)x->up->set_write_deadline(mono_now_ns() + x->route->idle_ns);
      const IoResult w = co_await x->up->write(std::as_bytes(std::span(in.data(), take)));
      in.consume(take);
      if (!w.ok()) break;
    }
    if (x->chunked ? x->chunks.done() : left == 0) {
      x->body_done = true;
      break;
    }
    if (in.size() == 0) in.beg = in.end = 0;
    in.compact();
    (void)x->client->set_read_deadline(mono_now_ns() + x->route->idle_ns);
    // A Content-Length body is read no further than its end, so the next pipelined
    // request stays in the socket until its turn.
    const IoResult r =
        co_await x->client->read(in.room(x->chunked ? SIZE_MAX : static_cast<size_t>(left)));
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

// Why an upstream could not be had.
enum class NoUpstream : uint8_t { kNone, kUnhealthy, kRefused, kTimeout };

}  // namespace http_detail

template <PollerBackend P, class S>
Task<void> http_client(S& client, HttpClientRoute<P> ctx, Metrics& metrics, HttpMetrics& hmetrics) {
  using namespace http_detail;
  auto* shard = Engine<P>::current();
  Scheduler<P>& sched = shard->sched();
  const size_t sid = static_cast<size_t>(shard->id());
  ShardMetrics& m = metrics.shard(sid);
  HttpShardMetrics& hm = hmetrics.shard(sid);
  m.add(m.accepted);
  relay_detail::ActiveCount active(&m);
  const ProxySettings& s = *ctx.s;
  const HttpSettings& hs = ctx.l->http_settings;
  if (s.max_connections > 0 && metrics.total_active() > static_cast<int64_t>(s.max_connections)) {
    m.error(ProxyError::kLimit);
    co_return;
  }
  ctx.upstreams->start_sweeper(sched, ctx.hold);
  http::ParserLimits limits = s.http_limits;
  limits.proxy = true;
  http::RequestParser parser(limits);
  const size_t cap =
      std::max(s.buffer_bytes, limits.max_request_line + limits.max_header_bytes + 64);
  Buffer in(cap), ub(cap);
  std::string head_out, resp_out;
  const std::string client_ip = peer_ip(client.fd());
  int64_t header_read_ns = hs.routes.empty() ? 10'000'000'000 : hs.routes[0].header_read_ns;

  for (;;) {
    // 1. The request head.
    (void)client.set_read_deadline(header_read_ns > 0 ? mono_now_ns() + header_read_ns : 0);
    size_t head_start = in.beg;
    for (;;) {
      if (in.end > head_start) {
        size_t used = 0;
        const size_t from = in.beg;
        const auto r = parser.feed(in.data(), in.size(), &used);
        in.beg = from + used;
        if (r == http::RequestParser::Result::kRequest) break;
        if (r == http::RequestParser::Result::kError) {
          hm.refuse(parser.refusal());
          co_await answer_and_close(client, http::status_code(parser.error()),
                                    std::string(http::to_string(parser.error())) + " (" +
                                        http::to_string(parser.refusal()) + ")");
          co_return;
        }
      }
      // Keep the head in one piece: move it to the front before reading more.
      if (head_start > 0) {
        const size_t shift = head_start;
        std::memmove(in.mem.get(), in.mem.get() + shift, in.end - shift);
        in.end -= shift;
        in.beg -= shift;
        head_start = 0;
      }
      if (in.end == in.cap) co_return;  // cannot happen: the parser's limits are below cap
      const IoResult rd = co_await client.read(in.room());
      if (!rd.ok()) {
        if (!parser.idle() && rd.err.timeout()) hm.add(hm.header_timeouts);
        co_return;  // end of stream, header-read timeout or reset: nothing to answer
      }
      in.end += rd.n;
    }
    std::string_view head(in.mem.get() + head_start, in.beg - head_start);
    while (head.starts_with("\r\n")) head.remove_prefix(2);  // empty lines before it
    const http::Request& rq = parser.request();
    const std::string method(rq.method_name);
    const bool http10 = rq.version_minor == 0;
    std::string_view host;
    for_each_field(head, [&](std::string_view n, std::string_view v) {
      if (iequals(n, "host")) host = v;
    });
    const int ri = match_route(hs.routes, host, rq.target, rq.method_name);
    const int64_t t_start = mono_now_ns();
    if (ri < 0) {
      hm.count(ctx.route_slot + hs.routes.size(), 503);  // the "no route" slot
      co_await answer_and_close(client, 503, "no route matches this request");
      co_return;
    }
    const HttpRoute& route = hs.routes[static_cast<size_t>(ri)];
    const size_t slot = ctx.route_slot + static_cast<size_t>(ri);
    header_read_ns = route.header_read_ns;
    Pool* pool = ctx.pools[static_cast<size_t>(ri)];
    const bool has_body = rq.chunked || rq.content_length > 0;

    Exchange<P, S> x;
    x.client = &client;
    x.in = &in;
    x.route = &route;
    x.m = &m;
    x.hm = &hm;
    x.chunked = rq.chunked;
    x.length = rq.content_length;
    x.joined.sched = &sched;
    // A chunked body's bytes already here are checked before anything goes upstream.
    if (rq.chunked && in.size() > 0) {
      ChunkedReader probe(limits.max_header_bytes);
      size_t used = 0;
      if (probe.feed(in.data(), in.size(), &used) == ChunkedReader::Result::kError) {
        hm.refuse_chunk();
        co_await answer_and_close(client, 400, "invalid chunked body (bad_chunk)");
        co_return;
      }
    }
    ForwardInfo fi;
    fi.client_ip = client_ip;
    fi.s = &hs;
    fi.http10_upstream = http10;
    rewrite_request_head(head, fi, &head_out);

    // 3-5: an upstream, the request, the response head; once more on a new connection
    // when a reused one turns out closed.
    HttpUpstreamConn<P> conn;
    ResponseHead resp;
    bool have_resp = false;
    bool reused = false;
    bool body_started = false;
    bool close_after = false;
    int answer = 0;  // an error status to send instead of a response
    std::string answer_why;
    for (int attempt = 0; attempt < 2 && !have_resp && answer == 0; ++attempt) {
      // An upstream connection.
      NoUpstream why = NoUpstream::kNone;
      if (pool->healthy_count(mono_now_ns()) == 0) why = NoUpstream::kUnhealthy;
      std::vector<const Upstream*> tried;
      const size_t attempts =
          std::min(static_cast<size_t>(std::max(s.max_attempts, 1)), pool->size());
      reused = false;
      for (size_t a = 0; a < attempts && !conn.stream && why == NoUpstream::kNone; ++a) {
        Upstream* u = pool->acquire(mono_now_ns(), tried);
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
        pool->connect_failed(u, mono_now_ns());
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
      TcpStream<P>& up = *conn.stream;
      x.up = &up;
      (void)up.set_write_deadline(mono_now_ns() + route.idle_ns);
      const IoResult w = co_await write_text(up, head_out);
      bool early_close = !w.ok();
      if (!early_close && has_body) {
        body_started = true;
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
          if (resp.status >= 100 && resp.status < 200) {
            if (resp.status == 101) {
              answer = 502;
              answer_why = "upstream switched protocols (Upgrade is not relayed)";
              break;
            }
            if (!http10) {
              rewrite_response_head(rh, hs, false, &resp_out);
              (void)co_await write_text(client, resp_out);
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
          } else if (!any_byte && reused && !body_started && idempotent(method)) {
            early_close = true;  // retried below on a new connection
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
      // A reused connection closed under us before answering: retry on a new one.
      if (body_started) co_await x.joined.wait();
      (void)co_await up.close();
      pool->release(conn.upstream);
      conn = HttpUpstreamConn<P>{};
      x.up = nullptr;
      hm.add(hm.retries);
      if (!(reused && !body_started && idempotent(method)) || attempt == 1) {
        answer = 502;
        answer_why = "upstream closed the connection before a complete response";
      }
    }
    const int64_t t_first = mono_now_ns();
    if (answer != 0) {
      if (conn.stream) {
        conn.stream->poll_fd().abort();  // its state is unknown: never reused
        if (body_started) {
          (void)client.set_read_deadline(1);  // wakes the body task if it waits on the client
          co_await x.joined.wait();
        }
        (void)co_await conn.stream->close();
        pool->release(conn.upstream);
      }
      hm.count(slot, answer);
      co_await answer_and_close(client, answer, answer_why);
      co_return;
    }

    // 5. The response: head, then body.
    TcpStream<P>& up = *conn.stream;
    (void)client.set_write_deadline(mono_now_ns() + route.idle_ns);
    const IoResult hw = co_await write_text(client, resp_out);
    bool ok = hw.ok();
    ChunkedReader rchunks(limits.max_header_bytes);
    uint64_t left = resp.content_length;
    bool resp_done = resp.framing == ResponseHead::Framing::kNone ||
                     (resp.framing == ResponseHead::Framing::kLength && left == 0);
    while (ok && !resp_done) {
      size_t take = 0;
      if (ub.size() > 0) {
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
      if (!ok) break;
      if (take > 0) {
        (void)client.set_write_deadline(mono_now_ns() + route.idle_ns);
        const IoResult w = co_await client.write(std::as_bytes(std::span(ub.data(), take)));
        ub.consume(take);
        if (!w.ok()) {
          ok = false;
          break;
        }
        m.add(m.bytes_down, take);
      }
      if (resp_done) break;
      if (ub.size() == 0) ub.beg = ub.end = 0;
      ub.compact();
      (void)up.set_read_deadline(mono_now_ns() + route.idle_ns);
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
    // The request body: finished, or stopped when the answer came first.
    bool body_ok = !has_body;
    if (body_started) {
      if (!x.joined.done) {
        // The answer came before the whole body: stop sending it (the upstream connection
        // and the client's framing are both lost, so both end after this response).
        up.poll_fd().abort();
        (void)client.set_read_deadline(1);
      }
      co_await x.joined.wait();
      body_ok = x.body_done;
    }
    const int64_t t_end = mono_now_ns();
    hm.count(slot, resp.status);
    hm.timing(slot, t_first - t_start, t_end - t_start);
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
      if (ok && resp_done) (void)client.shutdown_write();
      co_return;
    }
  }
}

}  // namespace ringpoll::proxy
