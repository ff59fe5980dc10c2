#pragma once
// The connection handlers of ringpoll-serve, one coroutine per connection on its shard.
//
// echo: read up to buffer_bytes, write them back, until end of stream.
//
// http: HTTP/1.1 with keep-alive and pipelining. Each read is parsed whole: every request
// it completes is answered into one output buffer, in request order, and the buffer goes
// out with one write after the read's bytes are used up (or earlier once it passes
// kFlushBytes, so a deep pipeline of large answers cannot grow it without bound). A
// /bytes/N body larger than kInlineBody is written straight from a shared read-only
// filler block, piece by piece, with no N-byte allocation.
//
// Deadlines (0 disables one):
//   header_read   from the read that brought a request's first byte until its headers are
//                 complete (the slowloris guard); not pushed back by later bytes;
//   idle          between requests, while a request body is being skipped, and for each
//                 write (a client that stops reading);
// on expiry the connection is closed without an answer.
//
// A request the parser refuses gets its error status with "Connection: close"; so does
// the last answer of a connection that asked to close. Either way the server then shuts
// its side, and reads and drops what the client still sends for at most kLingerNs /
// kLingerBytes before closing, so the client receives the answer instead of a reset
// caused by its unread pipelined bytes.
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>

#include "apps/http/request_parser.h"
#include "apps/http/response.h"
#include "engine/clock.h"
#include "engine/net.h"

namespace ringpoll::serve {

// Everything the handlers need from the config, in engine units.
struct ServeSettings {
  size_t buffer_bytes = 64 * 1024;  // one read at most (limits.buffer_bytes)
  http::ParserLimits parser;        // limits.max_request_line, limits.max_header_bytes
  int64_t header_read_ns = 10'000'000'000;
  int64_t idle_ns = 60'000'000'000;
  int64_t max_connections = 0;  // 0: unlimited; over it a new connection is closed at once
  bool keepalive = false;       // SO_KEEPALIVE on accepted connections
  int rcvbuf = 0;               // SO_RCVBUF / SO_SNDBUF; 0: the kernel's default
  int sndbuf = 0;
};

// Shared by every shard of one server.
struct ServeCounters {
  std::atomic<int64_t> live{0};
  std::atomic<uint64_t> refused{0};  // over max_connections
};

// Output that waits this long is written even in the middle of a read's requests.
inline constexpr size_t kFlushBytes = 64 * 1024;
// /bytes/N bodies up to this size are copied into the output buffer; larger ones are
// written from the filler block after what is buffered.
inline constexpr uint64_t kInlineBody = 16 * 1024;
// After a "Connection: close" answer: how long and how much the server keeps reading.
inline constexpr int64_t kLingerNs = 500'000'000;
inline constexpr size_t kLingerBytes = 256 * 1024;

namespace detail {

inline std::span<std::byte> as_bytes(char* p, size_t n) {
  return std::span<std::byte>(reinterpret_cast<std::byte*>(p), n);
}
inline std::span<const std::byte> as_bytes(const char* p, size_t n) {
  return std::span<const std::byte>(reinterpret_cast<const std::byte*>(p), n);
}
inline int64_t deadline_in(int64_t ns) {
  return ns > 0 ? mono_now_ns() + ns : 0;
}

// Applies the per-connection socket options of the config (a TcpStream or a TlsStream).
template <class Stream>
void apply_socket_options(Stream& c, const ServeSettings& s) {
  if (s.keepalive) (void)c.set_keepalive(true);
  if (s.rcvbuf > 0) setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &s.rcvbuf, sizeof s.rcvbuf);
  if (s.sndbuf > 0) setsockopt(c.fd(), SOL_SOCKET, SO_SNDBUF, &s.sndbuf, sizeof s.sndbuf);
}

// Counts the connection in; false when that passes max_connections.
inline bool admit(const ServeSettings& s, ServeCounters* k) {
  const int64_t n = k->live.fetch_add(1) + 1;
  if (s.max_connections > 0 && n > s.max_connections) {
    k->live.fetch_sub(1);
    k->refused.fetch_add(1);
    return false;
  }
  return true;
}

// Half-close: TcpStream's shutdown_write is a system call, TlsStream's sends close_notify
// first (a task).
template <class Stream>
Task<void> shut_write(Stream& c) {
  if constexpr (std::is_same_v<decltype(c.shutdown_write()), Status>) {
    (void)c.shutdown_write();
  } else {
    (void)co_await c.shutdown_write();
  }
  co_return;
}

}  // namespace detail

// The handlers over any stream with TcpStream's shape: a TcpStream, or a TlsStream after
// its handshake (ringpoll-serve --tls-cert).
template <class Stream>
Task<void> serve_echo_on(Stream& c, const ServeSettings& s, ServeCounters* k) {
  if (!detail::admit(s, k)) co_return;
  detail::apply_socket_options(c, s);
  // One allocation per connection, none per message.
  std::unique_ptr<char[]> buf(new char[s.buffer_bytes]);
  for (;;) {
    (void)c.set_read_deadline(detail::deadline_in(s.idle_ns));
    const IoResult r = co_await c.read(detail::as_bytes(buf.get(), s.buffer_bytes));
    if (!r.ok()) break;  // end of stream, reset, idle timeout or shutdown
    (void)c.set_write_deadline(detail::deadline_in(s.idle_ns));
    const IoResult w = co_await c.write(detail::as_bytes(buf.get(), r.n));
    if (!w.ok()) break;
  }
  k->live.fetch_sub(1);
}

template <class Stream>
Task<void> serve_http_on(Stream& c, const ServeSettings& s, ServeCounters* k) {
  if (!detail::admit(s, k)) co_return;
  detail::apply_socket_options(c, s);
  std::unique_ptr<char[]> in(new char[s.buffer_bytes]);
  std::string out;
  http::RequestParser parser(s.parser);
  const std::span<const char> filler = http::filler_block();
  int64_t head_started = 0;  // when the current request's first byte was read (0: none)
  bool linger = false;       // an answer with "Connection: close" was sent
  bool open = true;
  while (open) {
    // A request under way keeps the deadline its first byte set; otherwise idle time.
    const int64_t rd = parser.reading_head() && s.header_read_ns > 0
                           ? head_started + s.header_read_ns
                           : detail::deadline_in(s.idle_ns);
    (void)c.set_read_deadline(rd);
    const IoResult r = co_await c.read(detail::as_bytes(in.get(), s.buffer_bytes));
    if (!r.ok()) break;
    const int64_t now = mono_now_ns();

    const char* p = in.get();
    size_t left = r.n;
    while (left > 0 && open) {
      size_t used = 0;
      const http::RequestParser::Result res = parser.feed(p, left, &used);
      p += used;
      left -= used;
      if (res == http::RequestParser::Result::kNeedMore) break;
      if (res == http::RequestParser::Result::kError) {
        http::append_error(out, http::status_code(parser.error()));
        open = false;
        linger = true;
        break;
      }
      head_started = 0;
      const http::Response resp = http::respond_to(parser.request());
      uint64_t body = http::append_response(out, resp, kInlineBody);
      if (!resp.keep_alive) {
        open = false;
        linger = true;
      }
      if (out.size() < kFlushBytes && body == 0) continue;
      (void)c.set_write_deadline(detail::deadline_in(s.idle_ns));
      IoResult w = co_await c.write(detail::as_bytes(out.data(), out.size()));
      out.clear();
      while (w.ok() && body > 0) {
        const size_t piece = static_cast<size_t>(std::min<uint64_t>(body, filler.size()));
        (void)c.set_write_deadline(detail::deadline_in(s.idle_ns));
        w = co_await c.write(detail::as_bytes(filler.data(), piece));
        body -= piece;
      }
      if (!w.ok()) {
        open = false;
        linger = false;
      }
    }
    if (open && parser.reading_head() && head_started == 0) head_started = now;
    if (!out.empty()) {
      (void)c.set_write_deadline(detail::deadline_in(s.idle_ns));
      const IoResult w = co_await c.write(detail::as_bytes(out.data(), out.size()));
      out.clear();
      if (!w.ok()) break;
    }
  }
  if (linger) {
    // Half-close, then drop what the client still sends until it closes (bounded).
    co_await detail::shut_write(c);
    (void)c.set_read_deadline(mono_now_ns() + kLingerNs);
    for (size_t dropped = 0; dropped < kLingerBytes;) {
      const IoResult r = co_await c.read(detail::as_bytes(in.get(), s.buffer_bytes));
      if (!r.ok()) break;
      dropped += r.n;
    }
  }
  k->live.fetch_sub(1);
}

template <PollerBackend P>
Task<void> serve_echo(TcpStream<P>& c, const ServeSettings& s, ServeCounters* k) {
  return serve_echo_on(c, s, k);
}
template <PollerBackend P>
Task<void> serve_http(TcpStream<P>& c, const ServeSettings& s, ServeCounters* k) {
  return serve_http_on(c, s, k);
}

}  // namespace ringpoll::serve
