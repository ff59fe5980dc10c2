#include "apps/load/report.h"

#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <string_view>

namespace ringpoll::load {
namespace {

struct Quantile {
  const char* label;  // human report
  const char* key;    // JSON
  double q;
};
constexpr Quantile kQuantiles[] = {{"p50", "p50", 0.50},
                                   {"p90", "p90", 0.90},
                                   {"p99", "p99", 0.99},
                                   {"p99.9", "p99_9", 0.999},
                                   {"p99.99", "p99_99", 0.9999}};

double us(uint64_t ns) {
  return static_cast<double>(ns) / 1e3;
}

std::string json_string(std::string_view s) {
  std::string o = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

}  // namespace

void LoadCounters::add(const LoadCounters& o) noexcept {
  requests += o.requests;
  connect_errors += o.connect_errors;
  read_errors += o.read_errors;
  write_errors += o.write_errors;
  resets += o.resets;
  eofs += o.eofs;
  timeouts += o.timeouts;
  protocol_errors += o.protocol_errors;
  http_status_errors += o.http_status_errors;
  reconnects += o.reconnects;
  tls_handshakes += o.tls_handshakes;
  tls_resumed += o.tls_resumed;
  server_closes += o.server_closes;
  unfinished += o.unfinished;
  unfinished_connects += o.unfinished_connects;
}

void print_report(std::FILE* out, const LoadReport& r) {
  const LoadOptions& o = r.options;
  const LoadCounters& c = r.counters;
  std::fprintf(out, "ringpoll-load %s %s: %d connections, %d shard%s, pipeline %d, %s",
               to_string(o.mode), o.target_text.c_str(), o.connections, o.shards,
               o.shards == 1 ? "" : "s", o.pipeline, r.backend.c_str());
  if (o.mode == LoadMode::kEcho) std::fprintf(out, ", %d B", o.size);
  if (o.open_loop()) {
    std::fprintf(out, ", open loop at %.0f req/s%s\n", o.rate,
                 o.co_correction ? " (latency from intended send time)" : " (uncorrected)");
  } else {
    std::fprintf(out, ", closed loop\n");
  }
  if (!r.failure.empty()) std::fprintf(out, "  failed to start: %s\n", r.failure.c_str());
  std::fprintf(out, "  %" PRIu64 " requests in %.3f s: %.0f req/s\n", c.requests, r.measured_s,
               r.requests_per_s());
  std::fprintf(out, "  latency us:");
  for (const Quantile& q : kQuantiles) {
    std::fprintf(out, " %s %.1f", q.label, us(r.latency.quantile(q.q)));
  }
  std::fprintf(out, " max %.1f mean %.1f\n", us(r.latency.max()), r.latency.mean() / 1e3);
  std::fprintf(out,
               "  errors %" PRIu64 ": connect %" PRIu64 ", read %" PRIu64 ", write %" PRIu64
               ", reset %" PRIu64 ", closed-by-server %" PRIu64 ", timeout %" PRIu64
               ", protocol %" PRIu64 ", http-status %" PRIu64 "\n",
               c.errors(), c.connect_errors, c.read_errors, c.write_errors, c.resets, c.eofs,
               c.timeouts, c.protocol_errors, c.http_status_errors);
  if (!r.first_error.empty()) std::fprintf(out, "  first error: %s\n", r.first_error.c_str());
  std::fprintf(out,
               "  reconnects %" PRIu64 ", server closes %" PRIu64 ", unfinished at end %" PRIu64
               " (and %" PRIu64 " connects)\n",
               c.reconnects, c.server_closes, c.unfinished, c.unfinished_connects);
  if (r.options.tls) {
    std::fprintf(out, "  tls handshakes %" PRIu64 " (%" PRIu64 " resumed)\n", c.tls_handshakes,
                 c.tls_resumed);
  }
  std::fprintf(out, "  generator cpu: user %.3f s, sys %.3f s, %.2f us/request\n", r.cpu_user_s,
               r.cpu_sys_s, r.cpu_us_per_request());
  for (const std::string& w : r.warnings) std::fprintf(out, "  warning: %s\n", w.c_str());
}

bool write_json(const std::string& path, const LoadReport& r, std::string* err) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    *err = path + ": " + std::strerror(errno);
    return false;
  }
  const LoadOptions& o = r.options;
  const LoadCounters& c = r.counters;
  std::fprintf(f, "{\n  \"tool\": \"ringpoll-load\",\n  \"mode\": \"%s\",\n", to_string(o.mode));
  std::fprintf(f, "  \"target\": %s,\n  \"backend\": %s,\n", json_string(o.target_text).c_str(),
               json_string(r.backend).c_str());
  std::fprintf(f,
               "  \"connections\": %d,\n  \"shards\": %d,\n  \"pipeline\": %d,\n  \"size\": %d,\n",
               o.connections, o.shards, o.pipeline, o.mode == LoadMode::kEcho ? o.size : 0);
  std::fprintf(f, "  \"open_loop\": %s,\n  \"rate\": %.17g,\n  \"co_corrected\": %s,\n",
               o.open_loop() ? "true" : "false", o.rate,
               o.open_loop() && o.co_correction ? "true" : "false");
  std::fprintf(f, "  \"duration_s\": %.17g,\n  \"warmup_s\": %.17g,\n  \"timeout_s\": %.17g,\n",
               o.duration_s, o.warmup_s, o.timeout_s);
  std::fprintf(f, "  \"failure\": %s,\n", json_string(r.failure).c_str());
  std::fprintf(
      f, "  \"measured_s\": %.6f,\n  \"requests\": %" PRIu64 ",\n  \"requests_per_s\": %.3f,\n",
      r.measured_s, c.requests, r.requests_per_s());
  std::fprintf(f, "  \"latency_us\": {");
  for (const Quantile& q : kQuantiles) {
    std::fprintf(f, "\"%s\": %.3f, ", q.key, us(r.latency.quantile(q.q)));
  }
  std::fprintf(f, "\"min\": %.3f, \"max\": %.3f, \"mean\": %.3f, \"samples\": %" PRIu64 "},\n",
               us(r.latency.min()), us(r.latency.max()), r.latency.mean() / 1e3, r.latency.count());
  std::fprintf(f,
               "  \"errors\": {\"total\": %" PRIu64 ", \"connect\": %" PRIu64 ", \"read\": %" PRIu64
               ", \"write\": %" PRIu64 ", \"reset\": %" PRIu64 ", \"closed_by_server\": %" PRIu64
               ", \"timeout\": %" PRIu64 ", \"protocol\": %" PRIu64 ", \"http_status\": %" PRIu64
               ", \"first\": %s},\n",
               c.errors(), c.connect_errors, c.read_errors, c.write_errors, c.resets, c.eofs,
               c.timeouts, c.protocol_errors, c.http_status_errors,
               json_string(r.first_error).c_str());
  std::fprintf(f,
               "  \"reconnects\": %" PRIu64 ",\n  \"server_closes\": %" PRIu64
               ",\n  \"unfinished\": %" PRIu64 ",\n  \"unfinished_connects\": %" PRIu64 ",\n",
               c.reconnects, c.server_closes, c.unfinished, c.unfinished_connects);
  std::fprintf(
      f, "  \"tls\": %s,\n  \"tls_handshakes\": %" PRIu64 ",\n  \"tls_resumed\": %" PRIu64 ",\n",
      o.tls ? "true" : "false", c.tls_handshakes, c.tls_resumed);
  std::fprintf(f, "  \"cpu\": {\"user_s\": %.6f, \"sys_s\": %.6f, \"us_per_request\": %.4f},\n",
               r.cpu_user_s, r.cpu_sys_s, r.cpu_us_per_request());
  std::fprintf(f, "  \"warnings\": [");
  for (size_t i = 0; i < r.warnings.size(); ++i) {
    std::fprintf(f, "%s%s", i ? ", " : "", json_string(r.warnings[i]).c_str());
  }
  std::fprintf(f, "]\n}\n");
  const bool ok = std::ferror(f) == 0;
  if (std::fclose(f) != 0 || !ok) {
    *err = path + ": write failed";
    return false;
  }
  return true;
}

std::string progress_line(const ProgressSample& s) {
  char b[160];
  std::snprintf(b, sizeof b, "[%6.1f s] %-9s %10.0f req/s  answered %" PRIu64 "  errors %" PRIu64,
                s.elapsed_s, s.warming_up ? "warm-up" : "measuring", s.interval_rps, s.answered,
                s.errors);
  return b;
}

}  // namespace ringpoll::load
