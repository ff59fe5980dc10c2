#pragma once
// AdminEndpoint<P>: ringpoll-proxy's admin page (--admin ADDR:PORT), a TcpServer listening
// on shard 0 only, so ProxyServer::shutdown (apps/proxy/proxy.h) ends its requests like
// any connection's. Requests are read with apps/http's RequestParser, with the limits and
// strictness ringpoll-serve has (limits.max_request_line, limits.max_header_bytes), and
// answered with apps/http's response writer:
//
//   GET /metrics[?...]   200, Prometheus text (version 0.0.4): the proxy's metrics and
//                        pools (Metrics::render) and, on io_uring completion mode, the
//                        backend's counters read on each shard (render_uring), and each
//                        shard's stall count (render_stalls) and, on io_uring
//                        readiness mode, its ring restarts (render_ring_restarts), and
//                        under engine.busy_poll_us = "auto" each shard's busy-poll
//                        controller (render_adaptive_poll); all rendered in
//                        apps/proxy/metrics.cc
//   GET /healthz         200 "ok"
//   anything else        404 (HEAD gets no body)
//   a refused request    the parser's status (400, 414, 431, 501, 505)
//   end of stream before the request is complete: 400
//
// One answer per connection, always with "Connection: close": a pipelined second request
// is not answered. After the answer the endpoint shuts its side and reads and drops what
// the client still sends (bounded), so that the client receives the answer rather than a
// reset caused by its unread bytes (kLingerNs, kLingerBytes). Reading the request and
// writing the answer have kDeadlineNs together.
#include <concepts>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/http/response.h"
#include "apps/proxy/metrics.h"
#include "apps/proxy/pool.h"
#include "engine/engine.h"
#include "engine/net.h"
#include "engine/server.h"

namespace ringpoll::proxy {

template <PollerBackend P>
class AdminEndpoint {
 public:
  // The pools of the current generation, for their health on the metrics page.
  using PoolsFn = std::function<std::vector<const Pool*>()>;

  AdminEndpoint(Engine<P>& e, const Metrics& m, PoolsFn pools, http::ParserLimits limits)
      : e_(e), metrics_(m), pools_(std::move(pools)), limits_(limits) {}
  AdminEndpoint(const AdminEndpoint&) = delete;
  AdminEndpoint& operator=(const AdminEndpoint&) = delete;

  // Listens on `at` (port 0: any), or on `inherit`, the admin socket a predecessor
  // handed over (engine/handover.h). Errors as TcpServer::start gives them.
  Status start(const SocketAddress& at, std::string* why, std::vector<int> inherit = {}) {
    typename TcpServer<P>::Options o;
    o.listen.reuseport = false;
    o.shard = 0;
    o.inherit_fds = std::move(inherit);
    server_ = std::make_unique<TcpServer<P>>(e_, o);
    return server_->start(
        at, [this](TcpStream<P>& c) { return serve(c); }, why);
  }
  SocketAddress address() const { return server_->address(); }
  std::vector<int> listening_fds() const { return server_->listening_fds(); }
  // More Prometheus text for the metrics page (the HTTP mode's, apps/proxy/http_metrics.h).
  void set_extra(std::function<std::string()> f) { extra_ = std::move(f); }
  // Closes the listener and aborts open requests; returns once their handlers ended.
  void shutdown() { (void)server_->shutdown(0); }

 private:
  // A client gets this long to send its request and take the answer.
  static constexpr int64_t kDeadlineNs = 5'000'000'000;
  // After the answer: how long and how much the endpoint still reads and drops at most.
  static constexpr int64_t kLingerNs = 500'000'000;
  static constexpr size_t kLingerBytes = 64 * 1024;
  // One read; a request head larger than this arrives in several.
  static constexpr size_t kReadBytes = 2048;

  // One admin request; the server closes the stream when this returns.
  Task<void> serve(TcpStream<P>& c) {
    (void)c.set_deadline(mono_now_ns() + kDeadlineNs);
    http::RequestParser parser(limits_);
    char buf[kReadBytes];
    auto in = std::as_writable_bytes(std::span<char>(buf));
    std::string out;
    for (;;) {
      const IoResult r = co_await c.read(in);
      if (!r.ok()) {
        // Half-closed before the request was complete: the answer can still reach it.
        if (r.err.is(Errc::kEof) && !parser.idle()) http::append_error(out, 400);
        break;
      }
      size_t used = 0;
      const auto res = parser.feed(buf, r.n, &used);
      if (res == http::RequestParser::Result::kNeedMore) continue;
      if (res == http::RequestParser::Result::kError) {
        http::append_error(out, http::status_code(parser.error()));
      } else {
        co_await answer(parser.request(), out);
      }
      break;
    }
    if (out.empty()) co_return;  // nothing asked, or the deadline passed, or a shutdown
    const IoResult w =
        co_await c.write(std::as_bytes(std::span<const char>(out.data(), out.size())));
    if (!w.ok()) co_return;
    (void)c.shutdown_write();
    (void)c.set_read_deadline(mono_now_ns() + kLingerNs);
    for (size_t dropped = 0; dropped < kLingerBytes;) {
      const IoResult r = co_await c.read(in);
      if (!r.ok()) break;
      dropped += r.n;
    }
  }

  // Appends the answer to one request to `out`.
  Task<void> answer(const http::Request& req, std::string& out) {
    std::string_view path = req.target;
    if (const size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
    int status = 200;
    std::string_view type = "text/plain";
    std::string body;
    if (req.method == http::Method::kGet && path == "/metrics") {
      type = "text/plain; version=0.0.4";
      body = metrics_.render(pools_(), mono_now_ns());
      body += co_await backend_metrics();
      std::vector<uint64_t> stalls;  // atomics: read from here, no shard hop needed
      for (size_t i = 0; i < e_.size(); ++i) stalls.push_back(e_.shard(i).sched().stalls());
      body += render_stalls(stalls);
      body += ring_restarts();
      std::vector<AdaptivePollStats> polls;  // atomics too
      for (size_t i = 0; i < e_.size(); ++i) {
        if (e_.shard(i).sched().adaptive_polling())
          polls.push_back(e_.shard(i).sched().adaptive_poll());
      }
      body += render_adaptive_poll(polls);
      if (extra_) body += extra_();
    } else if (req.method == http::Method::kGet && req.target == "/healthz") {
      body = "ok\n";
    } else {
      status = 404;
      body = "try GET /metrics\n";
    }
    http::append_head(out, status, type, body.size(), http::ConnectionHeader::kClose);
    if (req.method != http::Method::kHead) out += body;
  }

  // The io_uring readiness backend's ring restarts (atomics, read from here); other
  // backends have none.
  std::string ring_restarts() {
    std::vector<uint64_t> restarts, retries;
    if constexpr (requires(P & b) { b.ring_restarts(); }) {
      for (size_t i = 0; i < e_.size(); ++i) {
        restarts.push_back(e_.shard(i).sched().backend().ring_restarts());
        retries.push_back(e_.shard(i).sched().backend().ring_setup_retries());
      }
    }
    return render_ring_restarts(restarts, retries);
  }

  // The io_uring completion backend's counters, read on each shard in turn, as text
  // (render_uring); other backends have none.
  Task<std::string> backend_metrics() {
#ifdef _WIN32  // Windows seam: IOCP has no counters of its own on this page
    co_return std::string();
#else
    std::vector<UringCompletionPoller::Counters> shards;
    if constexpr (requires(P & b) {
                    { b.counters() } -> std::convertible_to<UringCompletionPoller::Counters>;
                  }) {
      for (size_t i = 0; i < e_.size(); ++i)
        shards.push_back(co_await Engine<P>::submit_to(
            e_.shard(i), [] { return Engine<P>::current()->sched().backend().counters(); }));
    }
    co_return render_uring(shards);
#endif
  }

  Engine<P>& e_;
  const Metrics& metrics_;
  PoolsFn pools_;
  std::function<std::string()> extra_;
  http::ParserLimits limits_;
  std::unique_ptr<TcpServer<P>> server_;
};

}  // namespace ringpoll::proxy
