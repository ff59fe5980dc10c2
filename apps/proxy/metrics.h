#pragma once
// What ringpoll-proxy counts, and its Prometheus text rendering for the admin endpoint
// (apps/proxy/admin.h serves it; apps/proxy/relay.h and the UDP paths count into it).
//
// Each shard writes only its own ShardMetrics (relaxed atomics on its own cache lines, so
// counting costs a plain add and no line bounces); the admin endpoint sums them when it is
// scraped. The relay latency histogram measures, per relayed chunk, the time from the read
// completing on one side to the write completing on the other: the proxy's own delay,
// including any wait for a slow receiver.
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/adaptive_poll.h"
#ifndef _WIN32  // Windows seam: no io_uring there, and no render_uring
#include "uring/uring_completion.h"
#endif

namespace ringpoll::proxy {

class Pool;

enum class ProxyError : uint8_t {
  kConnectFailed,   // an upstream refused or failed the connect (each attempt)
  kConnectTimeout,  // an upstream did not answer within the connect timeout
  kNoUpstream,      // every attempt failed: the client was closed
  kIdleTimeout,     // nothing moved either way for the idle timeout
  kReset,           // a peer reset the connection mid-stream
  kAccept,          // accept failed (EMFILE, ...)
  kLimit,           // over max_connections: closed at once
  // Refused at accept by a listener's admission limits (engine/accept_limits.h), by reason.
  kRefusedConnections,
  kRefusedRate,
  kRefusedClientConnections,
  kRefusedClientRate,
  kRefusedGone,
  // SNI routing listeners (apps/proxy/sni.h): the client is closed without an upstream.
  kNotTls,        // the first bytes were not a TLS handshake
  kBadHello,      // a TLS ClientHello that breaks the format, or over its size bound
  kHelloTimeout,  // no whole ClientHello within timeouts.header_read_ms
  kCount
};
const char* to_string(ProxyError e);

// Why a UDP datagram was dropped (apps/proxy/udp.h, apps/proxy/udp_relay.h).
enum class UdpDrop : uint8_t {
  kFlowLimit,     // a new client while udp_max_flows flows exist
  kUpstreamOpen,  // the flow's upstream socket could not be opened
  kSendUpstream,  // the upstream socket refused it (full, or ICMP unreachable before)
  kSendClient,    // the listener socket refused a reply (full, or the client gone)
  kRecvError,     // a receive failed (an ICMP error reported on the flow's socket, ...)
  // Packet paths only (DPDK, AF_XDP: apps/proxy/udp_relay.h).
  kNoPort,       // a new client while every flow port of its shard is in use
  kStray,        // to a flow port no flow holds, or not from that flow's upstream
  kBadChecksum,  // a frame whose IPv4 header or UDP checksum is wrong
  kBadFrame,     // a frame not for us: truncated, bad lengths, a fragment, not IPv4/UDP
  kCount
};
const char* to_string(UdpDrop d);

// Why a TLS handshake failed, as the admin endpoint counts it (apps/proxy/tls_relay.h maps
// OpenSSL's reasons onto these).
enum class TlsFailure : uint8_t {
  kVersion,         // no protocol version both sides accept
  kNoSharedCipher,  // no cipher suite, group or signature algorithm in common
  kBadCertificate,  // a certificate was refused (the upstream's by us, or ours by the client)
  kTimeout,         // not done within the handshake deadline (tls.handshake_ms / connect)
  kOther,           // anything else: not TLS, the peer left mid-handshake, ...
  kCount
};
const char* to_string(TlsFailure f);
// Which connection a handshake was on: with a client (termination) or an upstream
// (origination).
enum class TlsSide : uint8_t { kClient, kUpstream, kCount };
const char* to_string(TlsSide s);

// Relay latency buckets, upper bounds in microseconds (the last is +Inf).
inline constexpr std::array<uint32_t, 14> kLatencyBoundsUs = {
    5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000, 100000, 1000000};

struct alignas(64) ShardMetrics {
  std::atomic<uint64_t> accepted{0};
  std::atomic<int64_t> active{0};
  std::atomic<uint64_t> bytes_up{0};    // client → upstream
  std::atomic<uint64_t> bytes_down{0};  // upstream → client
  // Relay directions that turned bulk (apps/proxy/relay.h): spliced, or received without
  // the provided-buffer ring.
  std::atomic<uint64_t> bulk_streams{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(ProxyError::kCount)> errors{};
  std::array<std::atomic<uint64_t>, kLatencyBoundsUs.size() + 1> latency{};
  // SNI routing: clients sent to a route's pool by their server name, or to the
  // listener's own pool (no route matched, or no name sent).
  std::atomic<uint64_t> sni_routed{0}, sni_default{0};
  std::atomic<uint64_t> latency_sum_ns{0};
  std::atomic<int64_t> relay_buffers{0};  // relay buffers held now (data in flight)
  // Plain relays hibernating now (no task, no frame: apps/proxy/relay.h), and how many
  // times one went to sleep.
  std::atomic<int64_t> hibernating{0};
  std::atomic<uint64_t> hibernations{0};
  // Binary upgrades (apps/proxy/relay_move.h): plain relays handed to the successor, and
  // relays taken over from the predecessor; HTTP keep-alive clients the same
  // (apps/proxy/http_move.h).
  std::atomic<uint64_t> moved_out{0}, adopted{0};
  std::atomic<uint64_t> http_moved_out{0}, http_adopted{0};
  // UDP listeners.
  std::atomic<int64_t> udp_flows_active{0};
  std::atomic<uint64_t> udp_flows_created{0};
  std::atomic<uint64_t> udp_flows_expired{0};
  std::atomic<uint64_t> udp_datagrams_up{0}, udp_datagrams_down{0};
  std::atomic<uint64_t> udp_bytes_up{0}, udp_bytes_down{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(UdpDrop::kCount)> udp_drops{};
  // TLS handshakes by side: done, of which resumed, and failed by reason.
  static constexpr size_t kTlsSides = static_cast<size_t>(TlsSide::kCount);
  std::array<std::atomic<uint64_t>, kTlsSides> tls_handshakes{}, tls_resumed{};
  std::array<std::array<std::atomic<uint64_t>, static_cast<size_t>(TlsFailure::kCount)>, kTlsSides>
      tls_failures{};

  void add(std::atomic<uint64_t>& c, uint64_t v = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }
  void error(ProxyError e) noexcept { add(errors[static_cast<size_t>(e)]); }
  void drop(UdpDrop d) noexcept { add(udp_drops[static_cast<size_t>(d)]); }
  void tls_failed(TlsSide s, TlsFailure f) noexcept {
    add(tls_failures[static_cast<size_t>(s)][static_cast<size_t>(f)]);
  }
  void tls_done(TlsSide s, bool resumed) noexcept {
    add(tls_handshakes[static_cast<size_t>(s)]);
    if (resumed) add(tls_resumed[static_cast<size_t>(s)]);
  }
  void gauge(std::atomic<int64_t>& g, int64_t d) noexcept {
    g.store(g.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
  }
  void relay_latency(int64_t ns) noexcept;
};

class Metrics {
 public:
  explicit Metrics(size_t shards) : shards_(shards) {}
  ShardMetrics& shard(size_t i) noexcept { return shards_[i]; }
  size_t shards() const noexcept { return shards_.size(); }
  uint64_t total_accepted() const noexcept;
  int64_t total_active() const noexcept;
  uint64_t total_errors(ProxyError e) const noexcept;
  uint64_t total_bytes_up() const noexcept;
  uint64_t total_bytes_down() const noexcept;
  // UDP: the sum over shards of one counter (a member pointer of ShardMetrics).
  template <class T>
  int64_t total(std::atomic<T> ShardMetrics::*c) const noexcept {
    int64_t n = 0;
    for (const ShardMetrics& s : shards_)
      n += static_cast<int64_t>((s.*c).load(std::memory_order_relaxed));
    return n;
  }
  uint64_t total_udp_drops(UdpDrop d) const noexcept;
  uint64_t total_tls_failures(TlsSide s, TlsFailure f) const noexcept;
  // Which process of a chain of binary upgrades this is (1: started by hand), and how many
  // of its listeners it took over from the previous one.
  void set_process(uint64_t generation, uint64_t inherited_listeners) noexcept {
    generation_.store(generation, std::memory_order_relaxed);
    inherited_.store(inherited_listeners, std::memory_order_relaxed);
  }

  // An upgrade's counts, by kind of connection: L4 relays (plain ones move; TLS ones drain)
  // and HTTP clients. This process, once it handed over to its successor: connections
  // moved and connections left to drain here. And what its predecessor (generation - 1)
  // said at the end of its moves: moved and drained there.
  struct Handover {
    uint64_t l4_moved = 0, l4_drained = 0, http_moved = 0, http_drained = 0;
  };
  void set_handover(const Handover& h) noexcept { store(handed_, h); }
  void set_predecessor(const Handover& h) noexcept { store(pred_, h); }

  // Prometheus text exposition (version 0.0.4) of everything above plus the pools'
  // upstream health, at time `now` (monotonic ns).
  std::string render(const std::vector<const Pool*>& pools, int64_t now) const;

 private:
  std::vector<ShardMetrics> shards_;
  std::atomic<uint64_t> generation_{1};
  std::atomic<uint64_t> inherited_{0};
  // l4 moved, l4 drained, http moved, http drained
  using HandoverCells = std::array<std::atomic<uint64_t>, 4>;
  static void store(HandoverCells& c, const Handover& h) noexcept {
    const uint64_t v[] = {h.l4_moved, h.l4_drained, h.http_moved, h.http_drained};
    for (size_t i = 0; i < c.size(); ++i) c[i].store(v[i], std::memory_order_relaxed);
  }
  HandoverCells handed_{}, pred_{};
};

// Prometheus text of the io_uring completion backend's own counters, one value per shard
// (index = shard; the admin endpoint reads them on each shard): how often the
// provided-buffer ring ran dry (raise io_uring.buf_count when this climbs under load), the
// re-arms, the buffers free and held now, the connections at io_uring.buf_per_conn, the
// zero-copy sends. Other backends have none: no shards, no text.
#ifndef _WIN32
std::string render_uring(const std::vector<UringCompletionPoller::Counters>& shards);
#endif

// Prometheus text of the engine's stall detector (engine.stall_ms): the stalls each shard
// counted (index = shard).
std::string render_stalls(const std::vector<uint64_t>& shards);

// Prometheus text of the io_uring readiness backend's ring restarts (uring/uring_poller.h,
// Restart) and the ENOMEM retries of their setups, per shard; other backends have none.
std::string render_ring_restarts(const std::vector<uint64_t>& restarts,
                                 const std::vector<uint64_t>& setup_retries);

// Prometheus text of each shard's adaptive busy-poll controller (engine.busy_poll_us =
// "auto", engine/adaptive_poll.h): its mode, the spin it will use, the expected gap, the
// share of this window's idle budget spent, and the totals spun and wasted. No shards (a
// fixed busy_poll_us): no text.
std::string render_adaptive_poll(const std::vector<AdaptivePollStats>& shards);

}  // namespace ringpoll::proxy
