#include "apps/proxy/access_log.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#ifndef _WIN32
#include <poll.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace ringpoll::proxy {
namespace {

// Windows seam: the log is a C runtime descriptor there, opened in binary mode (no CRLF)
// and not inherited; the CRT has no poll(2) and no non-blocking writes, so every
// descriptor is written as a regular file is (a pipe's write waits for its reader).
#ifdef _WIN32
constexpr int kOpenFlags = O_WRONLY | O_APPEND | O_CREAT | O_BINARY | O_NOINHERIT;
#else
// O_NONBLOCK: a FIFO with no reader fails at open (ENXIO) instead of hanging the start,
// and one whose reader stops reading makes write() say EAGAIN (see the header).
constexpr int kOpenFlags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK;
#endif

int64_t mono_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

void hex_escape(char c, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto u = static_cast<unsigned char>(c);
  out->append("\\x");
  out->push_back(kHex[u >> 4]);
  out->push_back(kHex[u & 15]);
}

// Text fields: a line must split on spaces and quotes, so those and every byte outside
// the visible ASCII range are escaped.
void text_field(std::string_view v, std::string* out) {
  if (v.empty()) {
    out->push_back('-');
    return;
  }
  for (const char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7e || c == '"' || c == '\\') {
      hex_escape(c, out);
    } else {
      out->push_back(c);
    }
  }
}

// A JSON string (RFC 8259 7): quote, backslash and control bytes escaped; other bytes as
// they are (a request target is ASCII after the parser's checks).
void json_string(std::string_view v, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (const char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (u < 0x20 || u >= 0x7f) {
      // Bytes above 0x7e are not known to be UTF-8: \u00XX keeps the line valid JSON.
      out->append("\\u00");
      out->push_back(kHex[u >> 4]);
      out->push_back(kHex[u & 15]);
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

void append_uint(uint64_t v, std::string* out) {
  char b[24];
  const int n = std::snprintf(b, sizeof b, "%llu", static_cast<unsigned long long>(v));
  out->append(b, static_cast<size_t>(n));
}

// Milliseconds with microsecond precision; "-" (text) or null (JSON) when unknown.
void append_ms(int64_t ns, bool json, std::string* out) {
  if (ns < 0) {
    out->append(json ? "null" : "-");
    return;
  }
  char b[32];
  const int n = std::snprintf(b, sizeof b, "%lld.%03lld", static_cast<long long>(ns / 1'000'000),
                              static_cast<long long>(ns / 1000 % 1000));
  out->append(b, static_cast<size_t>(n));
}

// "2026-12-07T06:01:02.123Z".
void append_time(int64_t wall_ns, std::string* out) {
  const time_t sec = static_cast<time_t>(wall_ns / 1'000'000'000);
  tm t{};
#ifdef _WIN32
  gmtime_s(&t, &sec);  // the Windows C runtime's thread-safe form
#else
  gmtime_r(&sec, &t);
#endif
  char b[40];
  const int n = std::snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                              t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                              static_cast<int>(wall_ns / 1'000'000 % 1000));
  out->append(b, static_cast<size_t>(n));
}

}  // namespace

void format_access_line(const AccessRecord& r, bool json, std::string* out) {
  if (json) {
    out->append("{\"time\":\"");
    append_time(r.wall_ns, out);
    out->append("\",\"client\":");
    json_string(r.client, out);
    out->append(",\"method\":");
    json_string(r.method, out);
    out->append(",\"target\":");
    json_string(r.target, out);
    out->append(",\"status\":");
    append_uint(static_cast<uint64_t>(r.status), out);
    out->append(",\"bytes_in\":");
    append_uint(r.bytes_in, out);
    out->append(",\"bytes_out\":");
    append_uint(r.bytes_out, out);
    out->append(",\"upstream\":");
    json_string(r.upstream, out);
    out->append(",\"route\":");
    if (r.route.empty()) {
      json_string("", out);
    } else {
      json_string(std::string(r.listener) + "/" + std::string(r.route), out);
    }
    out->append(",\"ttfb_ms\":");
    append_ms(r.ttfb_ns, true, out);
    out->append(",\"total_ms\":");
    append_ms(r.total_ns, true, out);
    out->append("}\n");
    return;
  }
  append_time(r.wall_ns, out);
  out->push_back(' ');
  text_field(r.client, out);
  out->append(" \"");
  text_field(r.method, out);
  out->push_back(' ');
  text_field(r.target, out);
  out->append("\" ");
  append_uint(static_cast<uint64_t>(r.status), out);
  out->push_back(' ');
  append_uint(r.bytes_in, out);
  out->push_back(' ');
  append_uint(r.bytes_out, out);
  out->push_back(' ');
  text_field(r.upstream, out);
  out->push_back(' ');
  if (r.route.empty()) {
    out->push_back('-');
  } else {
    text_field(r.listener, out);
    out->push_back('/');
    text_field(r.route, out);
  }
  out->push_back(' ');
  append_ms(r.ttfb_ns, false, out);
  out->push_back(' ');
  append_ms(r.total_ns, false, out);
  out->push_back('\n');
}

std::unique_ptr<AccessLog> AccessLog::open(const AccessLogSettings& settings, size_t shards,
                                           std::string* why) {
  int fd = STDERR_FILENO;
  bool own = false;
  if (settings.path != "stderr") {
    fd = ::open(settings.path.c_str(), kOpenFlags, 0644);
    if (fd < 0) {
      *why = "http.access_log: cannot open '" + settings.path + "': " + std::strerror(errno);
      return nullptr;
    }
    own = true;
  }
  return std::unique_ptr<AccessLog>(new AccessLog(settings, fd, own, std::max<size_t>(shards, 1)));
}

AccessLog::AccessLog(AccessLogSettings s, int fd, bool own_fd, size_t shards)
    : s_(std::move(s)), fd_(fd), own_fd_(own_fd), shards_(shards) {
  struct stat st {};
  regular_ = fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  for (ShardBuffer& b : shards_) {
    b.buf.reserve(s_.buffer_bytes);
    b.scratch.reserve(1024);
  }
  writer_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> l(wake_mu_);
    wake_.notify_one();
  }
  writer_.join();
  if (own_fd_) ::close(fd_);
}

void AccessLog::write(size_t shard, const AccessRecord& r) {
  ShardBuffer& b = shards_[shard];
  b.scratch.clear();
  format_access_line(r, s_.json, &b.scratch);
  bool half = false;
  {
    std::lock_guard<std::mutex> l(b.mu);
    if (b.buf.size() + b.scratch.size() > s_.buffer_bytes) {
      b.dropped.store(b.dropped.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return;
    }
    b.buf.append(b.scratch);
    half = b.buf.size() >= s_.buffer_bytes / 2;
  }
  b.lines.store(b.lines.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  // One wake per flush, not one per line past the half. Notified without wake_mu_: a
  // wake lost to the race with the writer's wait costs at most one kFlushIntervalMs.
  if (half && !kicked_.exchange(true, std::memory_order_relaxed)) wake_.notify_one();
}

size_t AccessLog::write_out(std::string_view data, int64_t deadline_ns) {
  while (!data.empty()) {
#ifdef _WIN32
    (void)deadline_ns;
    const size_t n = data.size();  // the CRT's write takes it all, waiting if need be
#else
    if (!regular_) {
      pollfd p{fd_, POLLOUT, 0};
      const int k = ::poll(&p, 1, kFlushIntervalMs);
      if (k < 0 && errno != EINTR) return data.size();
      if (k <= 0) {
        if (stop_.load() && (deadline_ns == 0 || mono_ns() >= deadline_ns)) return data.size();
        continue;
      }
      if (p.revents & (POLLERR | POLLNVAL)) return data.size();
    }
    // A descriptor that is not ours may be blocking: after POLLOUT a pipe takes PIPE_BUF
    // bytes without waiting.
    const size_t n = (regular_ || own_fd_) ? data.size() : std::min<size_t>(data.size(), PIPE_BUF);
#endif
    const ssize_t w = ::write(fd_, data.data(), n);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return data.size();  // EPIPE, ENOSPC, EIO...: these lines are lost
    }
    data.remove_prefix(static_cast<size_t>(w));
  }
  return 0;
}

void AccessLog::run() {
  std::string out;
  out.reserve(s_.buffer_bytes);
  auto lost_lines = [](std::string_view rest) {
    return static_cast<uint64_t>(std::count(rest.begin(), rest.end(), '\n'));
  };
  for (;;) {
    const bool stopping = stop_.load();
    if (!stopping) {
      std::unique_lock<std::mutex> l(wake_mu_);
      wake_.wait_for(l, std::chrono::milliseconds(kFlushIntervalMs),
                     [this] { return stop_.load() || kicked_.load(std::memory_order_relaxed); });
    }
    kicked_.store(false, std::memory_order_relaxed);
    const int64_t deadline = stopping ? mono_ns() + int64_t{kCloseFlushMs} * 1'000'000 : 0;
    for (ShardBuffer& b : shards_) {
      {
        std::lock_guard<std::mutex> l(b.mu);
        out.swap(b.buf);
      }
      const size_t left = write_out(out, deadline);
      if (left > 0) {
        close_dropped_.fetch_add(lost_lines(std::string_view(out).substr(out.size() - left)));
      }
      out.clear();
    }
    if (stopping) return;
  }
}

uint64_t AccessLog::lines() const noexcept {
  uint64_t n = 0;
  for (const ShardBuffer& b : shards_) n += b.lines.load(std::memory_order_relaxed);
  return n;
}

uint64_t AccessLog::dropped() const noexcept {
  uint64_t n = close_dropped_.load(std::memory_order_relaxed);
  for (const ShardBuffer& b : shards_) n += b.dropped.load(std::memory_order_relaxed);
  return n;
}

std::string AccessLog::render() const {
  std::string out =
      "# TYPE ringpoll_proxy_access_log_lines_total counter\n"
      "ringpoll_proxy_access_log_lines_total ";
  append_uint(lines(), &out);
  out +=
      "\n# TYPE ringpoll_proxy_access_log_dropped_total counter\n"
      "ringpoll_proxy_access_log_dropped_total ";
  append_uint(dropped(), &out);
  out += "\n";
  return out;
}

}  // namespace ringpoll::proxy
