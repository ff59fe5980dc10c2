#pragma once
// What a load run measured, and how it is shown: the human report, the JSON file and the
// once-a-second progress line.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "apps/load/histogram.h"
#include "apps/load/options.h"

namespace ringpoll::load {

struct LoadCounters {
  uint64_t requests = 0;  // answered and verified within the measured window

  // Errors, over the whole run (warm-up included): none is ever dropped silently.
  uint64_t connect_errors = 0;      // refused, unreachable or timed out (connect)
  uint64_t read_errors = 0;         // a read failed (other than reset)
  uint64_t write_errors = 0;        // a write failed (other than reset)
  uint64_t resets = 0;              // ECONNRESET / EPIPE / ECONNABORTED
  uint64_t eofs = 0;                // the server closed with requests in flight
  uint64_t timeouts = 0;            // a request not answered within --timeout
  uint64_t protocol_errors = 0;     // echo mismatch, unparsable or unframable HTTP
  uint64_t http_status_errors = 0;  // HTTP status outside 2xx/3xx (still answered)

  // Not errors.
  uint64_t reconnects = 0;     // connections re-established after one broke
  uint64_t server_closes = 0;  // HTTP "Connection: close" after a complete answer
  uint64_t unfinished = 0;     // requests still in flight when the run ended
  // Connects (and TLS handshakes) whose deadline was the end of the run and that were
  // still in flight then: cut short, not failed.
  uint64_t unfinished_connects = 0;
  uint64_t tls_handshakes = 0;  // --tls: handshakes completed
  uint64_t tls_resumed = 0;     // of which resumed a session

  uint64_t errors() const noexcept {
    return connect_errors + read_errors + write_errors + resets + eofs + timeouts +
           protocol_errors + http_status_errors;
  }
  void add(const LoadCounters& o) noexcept;
};

// One client shard's part of a run (not printed: the merge and the pinning are checked
// with it).
struct ShardSummary {
  int cpu = -1;           // the CPU the shard was pinned to (-1: not pinned)
  uint64_t requests = 0;  // its part of counters.requests
};

struct LoadReport {
  LoadOptions options;
  std::string backend;    // the poller that ran
  std::string failure;    // set when the run could not start
  double measured_s = 0;  // length of the measured window
  LoadCounters counters;
  std::string first_error;   // the first error seen, in words
  LatencyHistogram latency;  // ns; merged over the shards
  double cpu_user_s = 0;     // the generator's own CPU over the measured window
  double cpu_sys_s = 0;
  std::vector<std::string> warnings;
  std::vector<ShardSummary> shards;  // in shard order; empty when the run did not start

  double requests_per_s() const noexcept {
    return measured_s > 0 ? static_cast<double>(counters.requests) / measured_s : 0;
  }
  // Generator CPU per answered request, µs (user + sys); 0 when nothing was answered.
  double cpu_us_per_request() const noexcept {
    return counters.requests
               ? (cpu_user_s + cpu_sys_s) * 1e6 / static_cast<double>(counters.requests)
               : 0;
  }
};

// A live sample for the progress line.
struct ProgressSample {
  double elapsed_s = 0;  // since the load started
  bool warming_up = false;
  double interval_rps = 0;  // answers per second over the last interval
  uint64_t answered = 0;    // since the load started (warm-up included)
  uint64_t errors = 0;
};

void print_report(std::FILE* out, const LoadReport& r);
// Writes the report as one JSON object; false and *err on failure.
bool write_json(const std::string& path, const LoadReport& r, std::string* err);
std::string progress_line(const ProgressSample& s);

}  // namespace ringpoll::load
