#pragma once
// The HTTP/1.1 message work of ringpoll-proxy's HTTP mode that needs no I/O: choosing a
// route, rewriting a request head for the upstream and a response head for the client,
// reading a response head, and following chunked framing. apps/proxy/http_relay.h does
// the I/O around them.
//
// Request heads are checked by apps/http's RequestParser in proxy mode before anything
// here sees them, so the head walkers below may assume CRLF lines and "name:value"
// fields. Response heads come from an upstream and are checked here, as strictly: a
// response the proxy cannot frame exactly is a 502, never relayed.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/proxy/http_settings.h"

namespace ringpoll::proxy {

// Index of the first route that matches, or -1. host: the Host value (port ignored).
int match_route(const std::vector<HttpRoute>& routes, std::string_view host,
                std::string_view target, std::string_view method);

// Calls f(name, value) for each field of a head (the first line skipped); value has its
// surrounding blanks removed. The head ends with the empty line.
template <class F>
void for_each_field(std::string_view head, F&& f) {
  size_t p = head.find("\r\n");
  while (p != std::string_view::npos && p + 2 < head.size()) {
    p += 2;
    const size_t e = head.find("\r\n", p);
    if (e == std::string_view::npos || e == p) break;
    const std::string_view line = head.substr(p, e - p);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string_view v = line.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      f(line.substr(0, colon), v);
    }
    p = e;
  }
}

bool iequals(std::string_view a, std::string_view b) noexcept;

// What the relay adds to a request on its way upstream.
struct ForwardInfo {
  std::string client_ip;  // the client's address, without port
  const char* proto = "http";
  const HttpSettings* s = nullptr;
  bool http10_upstream = false;  // send HTTP/1.0 + Connection: close (a 1.0 client)
  bool upgrade = false;          // keep Upgrade and send "Connection: upgrade" (a tunnel asked)
};

// True when a request head asks to switch protocols: "upgrade" among its Connection
// tokens and an Upgrade field (RFC 9110 7.8). Only such a request may get a 101.
bool wants_upgrade(std::string_view head);

// The request head as sent upstream: the request line (HTTP/1.1 unless http10_upstream),
// the client's fields minus hop-by-hop ones (Connection and the fields it names,
// Keep-Alive, Proxy-Connection, TE, Upgrade, Proxy-Authorization... see the .cc) and
// plus X-Forwarded-For/-Proto, Forwarded and Via as configured. With fi.upgrade the
// Upgrade field stays and "Connection: upgrade" is sent.
void rewrite_request_head(std::string_view head, const ForwardInfo& fi, std::string* out);

// A response head from an upstream, checked and read.
struct ResponseHead {
  enum class Framing : uint8_t { kNone, kLength, kChunked, kClose };
  int status = 0;
  int minor = 1;
  Framing framing = Framing::kClose;
  uint64_t content_length = 0;
  bool keep_alive = true;  // the upstream connection may carry another request
  size_t head_bytes = 0;
};

// Length of the response head at the start of [p, p+n) (through its empty line), 0 when
// more bytes are needed, or -1 when the bytes cannot be a valid head (a bare LF, a NUL) or
// the head would exceed max.
long response_head_length(const char* p, size_t n, size_t max);

// Reads a complete head; false (with *why) when it is malformed or its framing is
// ambiguous. head_request: the request was HEAD (no body whatever the fields say).
bool parse_response_head(std::string_view head, bool head_request, ResponseHead* out,
                         std::string* why);

// The response head as sent to the client: hop-by-hop fields removed, Via added as
// configured, "Connection: close" when the client connection ends after it. upgrade: a 101
// answering an upgrade request; its Upgrade field stays, with "Connection: upgrade".
void rewrite_response_head(std::string_view head, const HttpSettings& s, bool close,
                           std::string* out, bool upgrade = false);

// A complete error response that says why, with Connection: close.
std::string error_response(int status, std::string_view why);

// Follows chunked framing (RFC 9112 7.1) byte by byte without copying: feed() consumes up
// to the end of the body (last chunk, trailers and the final CRLF) and stops there. Chunk
// sizes are hex digits (at most 15: below 2^60), extensions are visible bytes, every line
// ends in CRLF; trailers are field lines bounded by max_trailer_bytes.
class ChunkedReader {
 public:
  enum class Result { kNeedMore, kDone, kError };
  explicit ChunkedReader(size_t max_trailer_bytes = 16384) : max_trailer_(max_trailer_bytes) {}
  Result feed(const char* p, size_t n, size_t* used);
  bool done() const noexcept { return state_ == State::kDone; }
  void reset() noexcept { *this = ChunkedReader(max_trailer_); }

 private:
  enum class State : uint8_t {
    kSize,
    kExt,
    kSizeLf,
    kData,
    kDataCr,
    kDataLf,
    kTrailerStart,
    kTrailerLine,
    kTrailerLf,
    kEndLf,
    kDone,
    kError,
  };
  static constexpr int kMaxSizeDigits = 15;
  State state_ = State::kSize;
  uint64_t size_ = 0;
  int digits_ = 0;
  uint64_t left_ = 0;
  size_t trailer_bytes_ = 0;
  size_t max_trailer_;
};

}  // namespace ringpoll::proxy
