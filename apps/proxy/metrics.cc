#include "apps/proxy/metrics.h"

#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <tuple>
#include <utility>

#include "apps/proxy/pool.h"

namespace ringpoll::proxy {

const char* to_string(ProxyError e) {
  switch (e) {
    case ProxyError::kConnectFailed:
      return "connect_failed";
    case ProxyError::kConnectTimeout:
      return "connect_timeout";
    case ProxyError::kNoUpstream:
      return "no_upstream";
    case ProxyError::kIdleTimeout:
      return "idle_timeout";
    case ProxyError::kReset:
      return "reset";
    case ProxyError::kAccept:
      return "accept";
    case ProxyError::kLimit:
      return "over_limit";
    case ProxyError::kRefusedConnections:
      return "refused_connections";
    case ProxyError::kRefusedRate:
      return "refused_rate";
    case ProxyError::kRefusedClientConnections:
      return "refused_client_connections";
    case ProxyError::kRefusedClientRate:
      return "refused_client_rate";
    case ProxyError::kRefusedGone:
      return "refused_gone";
    case ProxyError::kNotTls:
      return "not_tls";
    case ProxyError::kBadHello:
      return "bad_client_hello";
    case ProxyError::kHelloTimeout:
      return "client_hello_timeout";
    case ProxyError::kCount:
      break;
  }
  return "unknown";
}

const char* to_string(UdpDrop d) {
  switch (d) {
    case UdpDrop::kFlowLimit:
      return "flow_limit";
    case UdpDrop::kUpstreamOpen:
      return "upstream_open";
    case UdpDrop::kSendUpstream:
      return "send_upstream";
    case UdpDrop::kSendClient:
      return "send_client";
    case UdpDrop::kRecvError:
      return "recv_error";
    case UdpDrop::kNoPort:
      return "no_port";
    case UdpDrop::kStray:
      return "stray";
    case UdpDrop::kBadChecksum:
      return "bad_checksum";
    case UdpDrop::kBadFrame:
      return "bad_frame";
    case UdpDrop::kCount:
      break;
  }
  return "unknown";
}

const char* to_string(TlsFailure f) {
  switch (f) {
    case TlsFailure::kVersion:
      return "version";
    case TlsFailure::kNoSharedCipher:
      return "no_shared_cipher";
    case TlsFailure::kBadCertificate:
      return "bad_certificate";
    case TlsFailure::kTimeout:
      return "timeout";
    case TlsFailure::kOther:
    case TlsFailure::kCount:
      break;
  }
  return "other";
}

const char* to_string(TlsSide s) {
  return s == TlsSide::kClient ? "client" : "upstream";
}

void ShardMetrics::relay_latency(int64_t ns) noexcept {
  const uint64_t us = ns > 0 ? static_cast<uint64_t>(ns) / 1000 : 0;
  size_t b = 0;
  while (b < kLatencyBoundsUs.size() && us >= kLatencyBoundsUs[b]) ++b;
  add(latency[b]);
  add(latency_sum_ns, ns > 0 ? static_cast<uint64_t>(ns) : 0);
}

uint64_t Metrics::total_accepted() const noexcept {
  uint64_t n = 0;
  for (auto& s : shards_) n += s.accepted.load(std::memory_order_relaxed);
  return n;
}
int64_t Metrics::total_active() const noexcept {
  int64_t n = 0;
  for (auto& s : shards_) n += s.active.load(std::memory_order_relaxed);
  return n;
}
uint64_t Metrics::total_errors(ProxyError e) const noexcept {
  uint64_t n = 0;
  for (auto& s : shards_) n += s.errors[static_cast<size_t>(e)].load(std::memory_order_relaxed);
  return n;
}
uint64_t Metrics::total_bytes_up() const noexcept {
  uint64_t n = 0;
  for (auto& s : shards_) n += s.bytes_up.load(std::memory_order_relaxed);
  return n;
}
uint64_t Metrics::total_bytes_down() const noexcept {
  uint64_t n = 0;
  for (auto& s : shards_) n += s.bytes_down.load(std::memory_order_relaxed);
  return n;
}
uint64_t Metrics::total_udp_drops(UdpDrop d) const noexcept {
  uint64_t n = 0;
  for (auto& s : shards_) n += s.udp_drops[static_cast<size_t>(d)].load(std::memory_order_relaxed);
  return n;
}
uint64_t Metrics::total_tls_failures(TlsSide side, TlsFailure f) const noexcept {
  uint64_t n = 0;
  for (auto& s : shards_)
    n += s.tls_failures[static_cast<size_t>(side)][static_cast<size_t>(f)].load(
        std::memory_order_relaxed);
  return n;
}

namespace {

// Windows seam: mingw-w64's C++ stdio is its ANSI one (%zu, %lld), which GCC checks as
// gnu_printf there; its plain printf archetype is msvcrt's.
#ifdef _WIN32
#define RINGPOLL_PRINTF_ARCHETYPE gnu_printf
#else
#define RINGPOLL_PRINTF_ARCHETYPE printf
#endif
void line(std::string& out, const char* fmt, ...)
    __attribute__((format(RINGPOLL_PRINTF_ARCHETYPE, 2, 3)));
void line(std::string& out, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0)
    out.append(buf, static_cast<size_t>(n) < sizeof buf ? static_cast<size_t>(n) : sizeof buf - 1);
  out.push_back('\n');
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  line(out, "# HELP %s %s", name, help);
  line(out, "# TYPE %s %s", name, type);
}

}  // namespace

std::string Metrics::render(const std::vector<const Pool*>& pools, int64_t now) const {
  std::string out;
  out.reserve(4096);
  header(out, "ringpoll_proxy_connections_total", "counter", "Client connections accepted.");
  line(out, "ringpoll_proxy_connections_total %" PRIu64, total_accepted());
  header(out, "ringpoll_proxy_connections_active", "gauge", "Client connections open now.");
  line(out, "ringpoll_proxy_connections_active %" PRId64, total_active());
  header(out, "ringpoll_proxy_bytes_total", "counter", "Bytes relayed, by direction.");
  line(out, "ringpoll_proxy_bytes_total{direction=\"client_to_upstream\"} %" PRIu64,
       total_bytes_up());
  line(out, "ringpoll_proxy_bytes_total{direction=\"upstream_to_client\"} %" PRIu64,
       total_bytes_down());
  header(out, "ringpoll_proxy_relay_buffers", "gauge",
         "Relay buffers held now: one per direction with data in flight; an idle connection "
         "holds none.");
  line(out, "ringpoll_proxy_relay_buffers %" PRId64, total(&ShardMetrics::relay_buffers));
  header(out, "ringpoll_proxy_relays_hibernating", "gauge",
         "Plain relays quiet for proxy.hibernate_after_ms, waiting with their pumps' tasks "
         "gone.");
  line(out, "ringpoll_proxy_relays_hibernating %" PRId64, total(&ShardMetrics::hibernating));
  header(out, "ringpoll_proxy_relay_hibernations_total", "counter",
         "Times a plain relay went to sleep (it wakes when either side has data).");
  line(out, "ringpoll_proxy_relay_hibernations_total %" PRIu64, total(&ShardMetrics::hibernations));
  header(out, "ringpoll_proxy_bulk_streams_total", "counter",
         "Relay directions that turned bulk (spliced, or off the provided-buffer ring).");
  line(out, "ringpoll_proxy_bulk_streams_total %" PRIu64, total(&ShardMetrics::bulk_streams));
  header(out, "ringpoll_proxy_errors_total", "counter", "Errors, by kind.");
  for (size_t k = 0; k < static_cast<size_t>(ProxyError::kCount); ++k) {
    const auto e = static_cast<ProxyError>(k);
    line(out, "ringpoll_proxy_errors_total{kind=\"%s\"} %" PRIu64, to_string(e), total_errors(e));
  }
  header(out, "ringpoll_proxy_process_generation", "gauge",
         "1 for a process started by hand, +1 for each binary upgrade (SIGUSR2) since.");
  line(out, "ringpoll_proxy_process_generation %" PRIu64,
       generation_.load(std::memory_order_relaxed));
  header(out, "ringpoll_proxy_inherited_listeners", "gauge",
         "Listeners this process took over from the previous generation (no rebinding).");
  line(out, "ringpoll_proxy_inherited_listeners %" PRIu64,
       inherited_.load(std::memory_order_relaxed));
  // Established connections across an upgrade (apps/proxy/relay_move.h), per generation.
  const uint64_t gen = generation_.load(std::memory_order_relaxed);
  header(out, "ringpoll_proxy_upgrade_connections", "gauge",
         "Established connections at a binary upgrade, by generation that handed them over, "
         "kind (l4: relays, of which TLS ones drain; http: keep-alive clients) and outcome: "
         "moved (to the successor, carried on there) or drained (finished in the old process).");
  const auto cells = [&](uint64_t g, const HandoverCells& c) {
    const char* kinds[] = {"l4", "l4", "http", "http"};
    for (size_t i = 0; i < c.size(); ++i)
      line(out,
           "ringpoll_proxy_upgrade_connections{generation=\"%" PRIu64
           "\",kind=\"%s\",outcome=\"%s\"} %" PRIu64,
           g, kinds[i], i % 2 == 0 ? "moved" : "drained", c[i].load(std::memory_order_relaxed));
  };
  if (gen > 1) cells(gen - 1, pred_);
  cells(gen, handed_);
  header(out, "ringpoll_proxy_connections_moved_total", "counter",
         "Connections handed to an upgrade's successor (out) and taken over from the "
         "predecessor (in), by kind: plain L4 relays, HTTP keep-alive clients.");
  for (const auto& [kind, o, i] :
       {std::tuple{"l4", &ShardMetrics::moved_out, &ShardMetrics::adopted},
        std::tuple{"http", &ShardMetrics::http_moved_out, &ShardMetrics::http_adopted}}) {
    line(out, "ringpoll_proxy_connections_moved_total{kind=\"%s\",direction=\"out\"} %" PRId64,
         kind, total(o));
    line(out, "ringpoll_proxy_connections_moved_total{kind=\"%s\",direction=\"in\"} %" PRId64, kind,
         total(i));
  }
  header(out, "ringpoll_proxy_sni_routed_total", "counter",
         "TLS clients of SNI-routing listeners, by how their pool was chosen.");
  for (const auto& [by, counter] : {std::pair{"server_name", &ShardMetrics::sni_routed},
                                    std::pair{"default", &ShardMetrics::sni_default}})
    line(out, "ringpoll_proxy_sni_routed_total{by=\"%s\"} %" PRId64, by, total(counter));
  header(out, "ringpoll_proxy_shard_connections_active", "gauge",
         "Client connections open now, per shard.");
  for (size_t i = 0; i < shards_.size(); ++i)
    line(out, "ringpoll_proxy_shard_connections_active{shard=\"%zu\"} %" PRId64, i,
         shards_[i].active.load(std::memory_order_relaxed));
  header(out, "ringpoll_proxy_shard_connections_total", "counter",
         "Client connections accepted, per shard.");
  for (size_t i = 0; i < shards_.size(); ++i)
    line(out, "ringpoll_proxy_shard_connections_total{shard=\"%zu\"} %" PRIu64, i,
         shards_[i].accepted.load(std::memory_order_relaxed));
  header(out, "ringpoll_proxy_udp_flows_active", "gauge", "UDP flows (clients) open now.");
  line(out, "ringpoll_proxy_udp_flows_active %" PRId64, total(&ShardMetrics::udp_flows_active));
  header(out, "ringpoll_proxy_udp_flows_total", "counter", "UDP flows created.");
  line(out, "ringpoll_proxy_udp_flows_total %" PRId64, total(&ShardMetrics::udp_flows_created));
  header(out, "ringpoll_proxy_udp_flows_expired_total", "counter",
         "UDP flows ended by the idle timeout.");
  line(out, "ringpoll_proxy_udp_flows_expired_total %" PRId64,
       total(&ShardMetrics::udp_flows_expired));
  header(out, "ringpoll_proxy_udp_datagrams_total", "counter",
         "UDP datagrams relayed, by direction.");
  line(out, "ringpoll_proxy_udp_datagrams_total{direction=\"client_to_upstream\"} %" PRId64,
       total(&ShardMetrics::udp_datagrams_up));
  line(out, "ringpoll_proxy_udp_datagrams_total{direction=\"upstream_to_client\"} %" PRId64,
       total(&ShardMetrics::udp_datagrams_down));
  header(out, "ringpoll_proxy_udp_bytes_total", "counter",
         "UDP payload bytes relayed, by direction.");
  line(out, "ringpoll_proxy_udp_bytes_total{direction=\"client_to_upstream\"} %" PRId64,
       total(&ShardMetrics::udp_bytes_up));
  line(out, "ringpoll_proxy_udp_bytes_total{direction=\"upstream_to_client\"} %" PRId64,
       total(&ShardMetrics::udp_bytes_down));
  header(out, "ringpoll_proxy_udp_drops_total", "counter", "UDP datagrams dropped, by reason.");
  for (size_t k = 0; k < static_cast<size_t>(UdpDrop::kCount); ++k) {
    const auto d = static_cast<UdpDrop>(k);
    line(out, "ringpoll_proxy_udp_drops_total{reason=\"%s\"} %" PRIu64, to_string(d),
         total_udp_drops(d));
  }
  // TLS handshakes, by side (clients of terminating listeners, upstreams of TLS pools).
  auto per_side = [&](auto field, TlsSide side) {
    uint64_t n = 0;
    for (auto& s : shards_)
      n += (s.*field)[static_cast<size_t>(side)].load(std::memory_order_relaxed);
    return n;
  };
  constexpr TlsSide kSides[] = {TlsSide::kClient, TlsSide::kUpstream};
  header(out, "ringpoll_proxy_tls_handshakes_total", "counter",
         "TLS handshakes completed, by side (client: terminated here; upstream: originated).");
  for (TlsSide sd : kSides)
    line(out, "ringpoll_proxy_tls_handshakes_total{side=\"%s\"} %" PRIu64, to_string(sd),
         per_side(&ShardMetrics::tls_handshakes, sd));
  header(out, "ringpoll_proxy_tls_resumed_total", "counter",
         "TLS handshakes that resumed a session (a ticket), by side.");
  for (TlsSide sd : kSides)
    line(out, "ringpoll_proxy_tls_resumed_total{side=\"%s\"} %" PRIu64, to_string(sd),
         per_side(&ShardMetrics::tls_resumed, sd));
  header(out, "ringpoll_proxy_tls_handshake_failures_total", "counter",
         "TLS handshakes that failed, by side and reason.");
  for (TlsSide sd : kSides)
    for (size_t k = 0; k < static_cast<size_t>(TlsFailure::kCount); ++k) {
      const auto f = static_cast<TlsFailure>(k);
      line(out, "ringpoll_proxy_tls_handshake_failures_total{side=\"%s\",reason=\"%s\"} %" PRIu64,
           to_string(sd), to_string(f), total_tls_failures(sd, f));
    }

  // One metric per upstream of every pool, labelled with both names.
  // The current set of each pool (names may change it; a snapshot for this page).
  std::vector<std::shared_ptr<const Members>> sets;
  for (const Pool* p : pools) sets.push_back(p->members());
  auto per_upstream = [&](const char* name, const char* type, const char* help, auto value) {
    header(out, name, type, help);
    for (size_t k = 0; k < pools.size(); ++k)
      for (size_t i = 0; i < sets[k]->ups.size(); ++i)
        line(out, "%s{pool=\"%s\",upstream=\"%s\"} %" PRIu64, name,
             pools[k]->settings().name.c_str(), sets[k]->ups[i]->label().c_str(),
             static_cast<uint64_t>(value(*sets[k]->ups[i], sets[k]->weights[i])));
  };
  auto per_pool = [&](const char* name, const char* type, const char* help, auto value) {
    header(out, name, type, help);
    for (size_t k = 0; k < pools.size(); ++k)
      line(out, "%s{pool=\"%s\"} %" PRIu64, name, pools[k]->settings().name.c_str(),
           static_cast<uint64_t>(value(*pools[k], *sets[k])));
  };
  per_pool("ringpoll_proxy_pool_upstreams", "gauge",
           "Upstreams in the pool's current set (fixed and resolved).",
           [](const Pool&, const Members& m) { return m.ups.size(); });
  per_pool("ringpoll_proxy_pool_resolutions_total", "counter",
           "Name resolutions of the pool's upstreams that answered.",
           [](const Pool& p, const Members&) { return p.resolutions(); });
  per_pool("ringpoll_proxy_pool_resolve_failures_total", "counter",
           "Name resolutions that failed (the name kept its last good upstreams).",
           [](const Pool& p, const Members&) { return p.resolve_failures(); });
  per_pool("ringpoll_proxy_pool_ejections_refused_total", "counter",
           "Ejections not made: max_ejection_percent of the pool was out already.",
           [](const Pool& p, const Members&) { return p.ejections_refused(); });
  per_upstream("ringpoll_proxy_upstream_weight", "gauge",
               "The upstream's weight (1, or its SRV record's).",
               [](const Upstream&, uint32_t w) { return w; });
  per_upstream("ringpoll_proxy_upstream_healthy", "gauge",
               "1 when the upstream is in service, 0 while ejected.",
               [&](const Upstream& u, uint32_t) { return u.healthy(now) ? 1 : 0; });
  per_upstream("ringpoll_proxy_upstream_connections_active", "gauge",
               "Connections open to the upstream now.",
               [](const Upstream& u, uint32_t) { return u.active(); });
  per_upstream("ringpoll_proxy_upstream_connect_failures_total", "counter",
               "Failed connects to the upstream.",
               [](const Upstream& u, uint32_t) { return u.connects_failed(); });
  per_upstream("ringpoll_proxy_upstream_ejections_total", "counter",
               "Times the upstream was taken out of service.",
               [](const Upstream& u, uint32_t) { return u.ejections(); });
  per_upstream("ringpoll_proxy_upstream_returns_total", "counter",
               "Times the upstream came back into service after an ejection.",
               [](const Upstream& u, uint32_t) { return u.returns(); });

  header(out, "ringpoll_proxy_relay_latency_seconds", "histogram",
         "Per relayed chunk: read completed on one side to write completed on the other.");
  uint64_t cum = 0, sum_ns = 0;
  for (size_t b = 0; b <= kLatencyBoundsUs.size(); ++b) {
    uint64_t n = 0;
    for (auto& s : shards_) n += s.latency[b].load(std::memory_order_relaxed);
    cum += n;
    if (b < kLatencyBoundsUs.size())
      line(out, "ringpoll_proxy_relay_latency_seconds_bucket{le=\"%g\"} %" PRIu64,
           kLatencyBoundsUs[b] / 1e6, cum);
    else
      line(out, "ringpoll_proxy_relay_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64, cum);
  }
  for (auto& s : shards_) sum_ns += s.latency_sum_ns.load(std::memory_order_relaxed);
  line(out, "ringpoll_proxy_relay_latency_seconds_sum %.9f", static_cast<double>(sum_ns) / 1e9);
  line(out, "ringpoll_proxy_relay_latency_seconds_count %" PRIu64, cum);
  return out;
}

#ifndef _WIN32  // Windows seam: no io_uring there (apps/proxy/metrics.h)
std::string render_uring(const std::vector<UringCompletionPoller::Counters>& shards) {
  using C = UringCompletionPoller::Counters;
  struct Row {
    const char* name;
    const char* type;
    const char* help;
    uint64_t C::*value;
  };
  static constexpr Row kRows[] = {
      {"ringpoll_uring_recv_nobufs_total", "counter",
       "Multishot recvs ended because the provided buffer ring ran dry (ENOBUFS); nothing is "
       "lost, the recv is re-armed.",
       &C::nobufs},
      {"ringpoll_uring_recv_rearms_total", "counter", "Multishot recvs re-armed.", &C::recv_rearms},
      {"ringpoll_uring_buffers_free", "gauge", "Provided receive buffers free now.",
       &C::buffers_free},
      {"ringpoll_uring_buffers_held", "gauge",
       "Provided receive buffers holding data a connection has not read yet.", &C::buffers_held},
      {"ringpoll_uring_conns_at_bound", "gauge",
       "Connections holding io_uring.buf_per_conn buffers unread now: their recv is off until "
       "their application reads.",
       &C::conns_at_bound},
      {"ringpoll_uring_bound_pauses_total", "counter",
       "Times a connection reached io_uring.buf_per_conn.", &C::bound_pauses},
      {"ringpoll_uring_starved_reads_total", "counter",
       "Reads received straight into the application's buffer while the buffer ring was dry.",
       &C::starved_reads},
      {"ringpoll_uring_zc_sends_total", "counter", "Sends made with send_zc.", &C::zc_sends},
      {"ringpoll_uring_zc_loopback_total", "counter",
       "Sockets that send without send_zc because their peer is on loopback.", &C::zc_loopback},
      {"ringpoll_uring_detached_recvs_total", "counter",
       "Connections taken off the provided-buffer ring (bulk streams: single-shot receives).",
       &C::detached_recvs},
      {"ringpoll_uring_attached_recvs_total", "counter",
       "Connections put back on the provided-buffer ring when their bulk stream went quiet.",
       &C::attached_recvs},
  };
  std::string out;
  if (shards.empty()) return out;
  for (const Row& r : kRows) header(out, r.name, r.type, r.help);
  for (size_t i = 0; i < shards.size(); ++i)
    for (const Row& r : kRows)
      line(out, "%s{shard=\"%zu\"} %" PRIu64, r.name, i, shards[i].*r.value);
  return out;
}
#endif

namespace {
// One counter, one line per shard (index = shard).
void per_shard(std::string& out, const char* name, const char* help,
               const std::vector<uint64_t>& shards) {
  header(out, name, "counter", help);
  for (size_t i = 0; i < shards.size(); ++i)
    line(out, "%s{shard=\"%zu\"} %" PRIu64, name, i, shards[i]);
}
}  // namespace

std::string render_stalls(const std::vector<uint64_t>& shards) {
  std::string out;
  per_shard(out, "ringpoll_shard_stalls_total",
            "Times the shard's loop did not poll for engine.stall_ms (each is logged with the "
            "task it was running).",
            shards);
  return out;
}

std::string render_ring_restarts(const std::vector<uint64_t>& restarts,
                                 const std::vector<uint64_t>& setup_retries) {
  std::string out;
  if (restarts.empty()) return out;
  per_shard(out, "ringpoll_shard_ring_restarts_total",
            "Times the shard rebuilt its io_uring (the kernel dropped completions, or asked).",
            restarts);
  per_shard(out, "ringpoll_shard_ring_setup_retries_total",
            "Ring setups of a restart that failed with ENOMEM and were retried.", setup_retries);
  return out;
}

std::string render_adaptive_poll(const std::vector<AdaptivePollStats>& shards) {
  std::string out;
  if (shards.empty()) return out;
  header(out, "ringpoll_shard_poll_mode", "gauge",
         "Adaptive busy poll: 0 block at once, 1 spin before blocking, 2 throttled (the idle "
         "budget of this window is spent).");
  for (size_t i = 0; i < shards.size(); ++i)
    line(out, "ringpoll_shard_poll_mode{shard=\"%zu\",mode=\"%s\"} %d", i,
         to_string(shards[i].mode), static_cast<int>(shards[i].mode));
  struct Row {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const AdaptivePollStats&);
  };
  static constexpr Row kRows[] = {
      {"ringpoll_shard_poll_spin_seconds", "gauge", "The spin the next idle point will use.",
       [](const AdaptivePollStats& s) { return static_cast<double>(s.spin_ns) / 1e9; }},
      {"ringpoll_shard_poll_gap_seconds", "gauge",
       "Expected time from going idle to the next work (EWMA).",
       [](const AdaptivePollStats& s) { return static_cast<double>(s.gap_ewma_ns) / 1e9; }},
      {"ringpoll_shard_poll_tasks_per_wake", "gauge",
       "Tasks run per busy period (EWMA); above engine.adaptive limits the shard blocks.",
       [](const AdaptivePollStats& s) { return static_cast<double>(s.tasks_per_wake_x16) / 16; }},
      {"ringpoll_shard_poll_idle_budget_used_ratio", "gauge",
       "Spinning that found nothing in this window, as a share of the window.",
       [](const AdaptivePollStats& s) { return static_cast<double>(s.budget_used_ppm) / 1e6; }},
      {"ringpoll_shard_poll_spins_total", "counter", "Idle points that spun before blocking.",
       [](const AdaptivePollStats& s) { return static_cast<double>(s.spins); }},
      {"ringpoll_shard_poll_spin_hits_total", "counter", "Spins that found work.",
       [](const AdaptivePollStats& s) { return static_cast<double>(s.spin_hits); }},
      {"ringpoll_shard_poll_spun_seconds_total", "counter", "Time spent spinning.",
       [](const AdaptivePollStats& s) { return static_cast<double>(s.spun_ns) / 1e9; }},
      {"ringpoll_shard_poll_wasted_seconds_total", "counter",
       "Time spent spinning that found nothing.",
       [](const AdaptivePollStats& s) { return static_cast<double>(s.wasted_ns) / 1e9; }},
  };
  for (const Row& r : kRows) {
    header(out, r.name, r.type, r.help);
    for (size_t i = 0; i < shards.size(); ++i)
      line(out, "%s{shard=\"%zu\"} %.9g", r.name, i, r.value(shards[i]));
  }
  return out;
}

}  // namespace ringpoll::proxy
