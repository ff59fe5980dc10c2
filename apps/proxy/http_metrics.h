#pragma once
// What ringpoll-proxy's HTTP mode counts, per shard (each shard writes only its own,
// relaxed, as ShardMetrics in apps/proxy/metrics.h), and its Prometheus text.
//
// Routes are counted in slots: each HTTP listener owns routes + 1 consecutive slots (the
// last one for requests no route matched), numbered in listener order by
// http_route_slots(); at most kMaxHttpRouteSlots in all (a config with more is refused).
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/proxy/metrics.h"

namespace ringpoll::proxy {

// Enough for any hand-written route table; bounds the memory of the per-route counters
// (each slot is 7 + 2 x 15 counters per shard).
inline constexpr size_t kMaxHttpRouteSlots = 256;
inline constexpr size_t kRefusalKinds = static_cast<size_t>(http::Refusal::kOther) + 1;

struct HttpRouteCounters {
  std::array<std::atomic<uint64_t>, 6> status{};                           // 1xx..5xx, [0]: other
  std::array<std::atomic<uint64_t>, kLatencyBoundsUs.size() + 1> ttfb{};   // to the response head
  std::array<std::atomic<uint64_t>, kLatencyBoundsUs.size() + 1> total{};  // to its last byte
  // Requests to a Maglev pool keyed on a header or cookie (apps/proxy/hash_key.h) that had
  // none and went by the client's address.
  std::atomic<uint64_t> hash_fallbacks{0};
};

struct alignas(64) HttpShardMetrics {
  std::array<HttpRouteCounters, kMaxHttpRouteSlots> routes{};
  // Requests refused before any upstream saw them, by rule; [kOther + 1]: a chunked body
  // with broken framing.
  std::array<std::atomic<uint64_t>, kRefusalKinds + 1> refused{};
  std::atomic<uint64_t> upstream_reused{0}, upstream_new{0}, retries{0};
  std::atomic<uint64_t> header_timeouts{0}, response_timeouts{0};

  static void bump(std::atomic<uint64_t>& c, uint64_t v = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }
  void add(std::atomic<uint64_t>& c) noexcept { bump(c); }
  void refuse(http::Refusal r) noexcept { bump(refused[static_cast<size_t>(r)]); }
  void refuse_chunk() noexcept { bump(refused[kRefusalKinds]); }
  void count(size_t slot, int status) noexcept {
    const int cls = status / 100;
    bump(routes[slot].status[cls >= 1 && cls <= 5 ? static_cast<size_t>(cls) : 0]);
  }
  void timing(size_t slot, int64_t ttfb_ns, int64_t total_ns) noexcept;
};

class HttpMetrics {
 public:
  explicit HttpMetrics(size_t shards) : shards_(shards) {}
  HttpShardMetrics& shard(size_t i) noexcept { return shards_[i]; }
  uint64_t total(std::atomic<uint64_t> HttpShardMetrics::*c) const noexcept;
  uint64_t refused(http::Refusal r) const noexcept;
  uint64_t refused_chunk() const noexcept;
  uint64_t status_class(size_t slot, int cls) const noexcept;
  uint64_t hash_fallbacks(size_t slot) const noexcept;
  // Prometheus text; slot_names[i] is "listener/route" of slot i.
  std::string render(const std::vector<std::string>& slot_names) const;

 private:
  std::vector<HttpShardMetrics> shards_;
};

}  // namespace ringpoll::proxy
