#pragma once
// AccessLog: ringpoll-proxy's HTTP access log, one line per request, written without ever
// making a shard wait for the disk, a pipe or a terminal.
//
//   shard    formats its line into its own scratch string, then appends it to its own
//            bounded buffer under its own mutex (held for one memcpy; only the writer
//            thread ever contends, and only for a swap). A line that does not fit is
//            dropped and counted (ringpoll_proxy_access_log_dropped_total): a log that
//            cannot keep up loses lines, never traffic.
//   writer   one thread per log. Every kFlushIntervalMs, or sooner when a shard's buffer
//            is half full, it swaps each shard's buffer with its own empty one (the two
//            keep their capacity: no allocation once both are reserved) and writes it out.
//            It waits for the destination with poll(), never in write(): a FIFO or pipe
//            nobody reads only keeps the writer waiting (and, meanwhile, the shards'
//            buffers fill and drop), and the writer still sees shutdown. Files it opens
//            are O_NONBLOCK; on a descriptor it did not open (stderr) it writes at most
//            PIPE_BUF bytes after poll() said POLLOUT, which a pipe takes without blocking.
//   close    the destructor stops the writer; what it cannot write within
//            kCloseFlushMs is counted as dropped, line by line.
//
// Formats (both one line per request, '\n'-terminated; docs: tuning/README.md,
// "Access log"):
//   text  TIME CLIENT "METHOD TARGET" STATUS BYTES_IN BYTES_OUT UPSTREAM ROUTE TTFB_MS TOTAL_MS
//         e.g. 2026-12-07T06:01:02.123Z 127.0.0.1:40312 "GET /a?b=1" 200 78 311
//              127.0.0.1:8080 web/api 0.412 0.530
//         Unknown fields are "-". METHOD and TARGET have '"', '\\' and bytes outside
//         0x21..0x7e written as \xHH, so a line always splits on spaces.
//   json  {"time":"...","client":"...","method":"...","target":"...","status":200,
//          "bytes_in":78,"bytes_out":311,"upstream":"...","route":"...","ttfb_ms":0.412,
//          "total_ms":0.530}  (strings escaped per RFC 8259; unknown strings are "")
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace ringpoll::proxy {

struct AccessLogSettings {
  // "off", "stderr" or a file path (opened for appending, created 0644 when missing).
  std::string path = "off";
  bool json = false;
  size_t buffer_bytes = 1 << 20;  // per shard (http.access_log_buffer_kib)
  bool enabled() const { return !path.empty() && path != "off"; }
  bool operator==(const AccessLogSettings&) const = default;
};

// One request as the log writes it. Views are valid only during AccessLog::write().
struct AccessRecord {
  int64_t wall_ns = 0;      // CLOCK_REALTIME when the request head arrived
  std::string_view client;  // "ip:port"
  std::string_view method;  // "" unknown (refused before it was read)
  std::string_view target;
  int status = 0;
  uint64_t bytes_in = 0;      // request bytes read from the client (head and body)
  uint64_t bytes_out = 0;     // response bytes written to the client (heads and body)
  std::string_view upstream;  // "ip:port", "" none
  std::string_view listener;  // the route is written "listener/route"
  std::string_view route;     // "" none matched
  int64_t ttfb_ns = -1;       // to the upstream's response head; -1: none
  int64_t total_ns = 0;       // to the last response byte
};

// Appends one formatted line (with its '\n') to *out.
void format_access_line(const AccessRecord& r, bool json, std::string* out);

class AccessLog {
 public:
  // How often the writer looks at the shards' buffers when nothing hurries it: a line
  // reaches the file within this (plus the destination's own delay).
  static constexpr int kFlushIntervalMs = 50;
  // How long the destructor keeps trying to write what is buffered.
  static constexpr int kCloseFlushMs = 1000;

  // Opens settings.path and starts the writer; nullptr with *why when it cannot be opened.
  static std::unique_ptr<AccessLog> open(const AccessLogSettings& settings, size_t shards,
                                         std::string* why);
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // From shard `shard` only (each shard its own index).
  void write(size_t shard, const AccessRecord& r);

  uint64_t lines() const noexcept;    // appended to a shard's buffer
  uint64_t dropped() const noexcept;  // lost: a full buffer, or unwritable at close
  const AccessLogSettings& settings() const noexcept { return s_; }
  // Prometheus text: ringpoll_proxy_access_log_{lines,dropped}_total.
  std::string render() const;

 private:
  struct alignas(64) ShardBuffer {
    std::mutex mu;
    std::string buf;      // under mu
    std::string scratch;  // the shard's own
    std::atomic<uint64_t> lines{0};
    std::atomic<uint64_t> dropped{0};
  };

  AccessLog(AccessLogSettings s, int fd, bool own_fd, size_t shards);
  void run();
  // Writes all of data within the writer's waits; returns the bytes not written (when
  // stopping past `deadline_ns`, a monotonic time, 0 for none).
  size_t write_out(std::string_view data, int64_t deadline_ns);

  AccessLogSettings s_;
  int fd_;
  bool own_fd_;
  bool regular_;  // a regular file: write() never waits for a reader
  std::vector<ShardBuffer> shards_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> kicked_{false};
  std::atomic<uint64_t> close_dropped_{0};
  std::mutex wake_mu_;
  std::condition_variable wake_;
  std::thread writer_;
};

}  // namespace ringpoll::proxy
