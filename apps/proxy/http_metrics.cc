#include "apps/proxy/http_metrics.h"

#include <cstdio>

namespace ringpoll::proxy {
namespace {

size_t bucket_of(int64_t ns) {
  const uint64_t us = ns > 0 ? static_cast<uint64_t>(ns) / 1000 : 0;
  size_t b = 0;
  while (b < kLatencyBoundsUs.size() && us >= kLatencyBoundsUs[b]) ++b;
  return b;
}

const char* refusal_label(size_t i) {
  return i < kRefusalKinds ? http::to_string(static_cast<http::Refusal>(i)) : "bad_chunk";
}

}  // namespace

void HttpShardMetrics::timing(size_t slot, int64_t ttfb_ns, int64_t total_ns) noexcept {
  bump(routes[slot].ttfb[bucket_of(ttfb_ns)]);
  bump(routes[slot].total[bucket_of(total_ns)]);
}

uint64_t HttpMetrics::total(std::atomic<uint64_t> HttpShardMetrics::*c) const noexcept {
  uint64_t n = 0;
  for (const auto& s : shards_) n += (s.*c).load(std::memory_order_relaxed);
  return n;
}

uint64_t HttpMetrics::refused(http::Refusal r) const noexcept {
  uint64_t n = 0;
  for (const auto& s : shards_)
    n += s.refused[static_cast<size_t>(r)].load(std::memory_order_relaxed);
  return n;
}

uint64_t HttpMetrics::refused_chunk() const noexcept {
  uint64_t n = 0;
  for (const auto& s : shards_) n += s.refused[kRefusalKinds].load(std::memory_order_relaxed);
  return n;
}

uint64_t HttpMetrics::status_class(size_t slot, int cls) const noexcept {
  uint64_t n = 0;
  for (const auto& s : shards_)
    n += s.routes[slot].status[static_cast<size_t>(cls)].load(std::memory_order_relaxed);
  return n;
}

uint64_t HttpMetrics::hash_fallbacks(size_t slot) const noexcept {
  uint64_t n = 0;
  for (const auto& s : shards_) n += s.routes[slot].hash_fallbacks.load(std::memory_order_relaxed);
  return n;
}

std::string HttpMetrics::render(const std::vector<std::string>& slot_names) const {
  std::string out;
  char line[256];
  auto emit = [&](const char* fmt, auto... a) {
    std::snprintf(line, sizeof line, fmt, a...);
    out += line;
  };
  out += "# TYPE ringpoll_proxy_http_requests_total counter\n";
  for (size_t i = 0; i < slot_names.size() && i < kMaxHttpRouteSlots; ++i) {
    for (int c = 1; c <= 5; ++c) {
      emit("ringpoll_proxy_http_requests_total{route=\"%s\",class=\"%dxx\"} %llu\n",
           slot_names[i].c_str(), c, static_cast<unsigned long long>(status_class(i, c)));
    }
  }
  out += "# TYPE ringpoll_proxy_http_hash_fallbacks_total counter\n";
  for (size_t i = 0; i < slot_names.size() && i < kMaxHttpRouteSlots; ++i) {
    emit("ringpoll_proxy_http_hash_fallbacks_total{route=\"%s\"} %llu\n", slot_names[i].c_str(),
         static_cast<unsigned long long>(hash_fallbacks(i)));
  }
  for (const char* h : {"ttfb", "total"}) {
    emit("# TYPE ringpoll_proxy_http_%s_seconds histogram\n", h);
    for (size_t i = 0; i < slot_names.size() && i < kMaxHttpRouteSlots; ++i) {
      uint64_t cum = 0;
      for (size_t b = 0; b <= kLatencyBoundsUs.size(); ++b) {
        for (const auto& s : shards_) {
          const auto& arr = h[1] == 't' ? s.routes[i].ttfb : s.routes[i].total;
          cum += arr[b].load(std::memory_order_relaxed);
        }
        if (b < kLatencyBoundsUs.size()) {
          emit("ringpoll_proxy_http_%s_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", h,
               slot_names[i].c_str(), kLatencyBoundsUs[b] / 1e6,
               static_cast<unsigned long long>(cum));
        } else {
          emit("ringpoll_proxy_http_%s_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", h,
               slot_names[i].c_str(), static_cast<unsigned long long>(cum));
          emit("ringpoll_proxy_http_%s_seconds_count{route=\"%s\"} %llu\n", h,
               slot_names[i].c_str(), static_cast<unsigned long long>(cum));
        }
      }
    }
  }
  out += "# TYPE ringpoll_proxy_http_refused_total counter\n";
  for (size_t r = 1; r <= kRefusalKinds; ++r) {
    uint64_t n = 0;
    for (const auto& s : shards_) n += s.refused[r].load(std::memory_order_relaxed);
    emit("ringpoll_proxy_http_refused_total{reason=\"%s\"} %llu\n", refusal_label(r),
         static_cast<unsigned long long>(n));
  }
  const uint64_t reused = total(&HttpShardMetrics::upstream_reused);
  const uint64_t fresh = total(&HttpShardMetrics::upstream_new);
  emit(
      "# TYPE ringpoll_proxy_http_upstream_requests_total counter\n"
      "ringpoll_proxy_http_upstream_requests_total{connection=\"reused\"} %llu\n"
      "ringpoll_proxy_http_upstream_requests_total{connection=\"new\"} %llu\n",
      static_cast<unsigned long long>(reused), static_cast<unsigned long long>(fresh));
  emit(
      "# TYPE ringpoll_proxy_http_upstream_reuse_ratio gauge\n"
      "ringpoll_proxy_http_upstream_reuse_ratio %g\n",
      reused + fresh > 0 ? static_cast<double>(reused) / static_cast<double>(reused + fresh) : 0.0);
  emit("# TYPE ringpoll_proxy_http_retries_total counter\nringpoll_proxy_http_retries_total %llu\n",
       static_cast<unsigned long long>(total(&HttpShardMetrics::retries)));
  emit(
      "# TYPE ringpoll_proxy_http_timeouts_total counter\n"
      "ringpoll_proxy_http_timeouts_total{phase=\"request_header\"} %llu\n"
      "ringpoll_proxy_http_timeouts_total{phase=\"response_header\"} %llu\n",
      static_cast<unsigned long long>(total(&HttpShardMetrics::header_timeouts)),
      static_cast<unsigned long long>(total(&HttpShardMetrics::response_timeouts)));
  return out;
}

}  // namespace ringpoll::proxy
