#pragma once
// What ringpoll-serve answers, as plain functions over a caller-owned output buffer so a
// batch of pipelined responses is built back to back and sent with one write.
//
//   GET|HEAD /plaintext   200 "Hello, World!" (text/plain)
//   GET|HEAD /bytes/N     200 with N filler bytes (application/octet-stream); N decimal,
//                         at most kMaxBytesBody, else 400
//   GET|HEAD other        404
//   any other method      405 with "Allow: GET, HEAD"
// The query string ("?...") is ignored when routing. HEAD gets the same headers as GET
// (Content-Length included) and no body.
#include <cstdint>
#include <ctime>
#include <span>
#include <string>
#include <string_view>

#include "apps/http/request_parser.h"

namespace ringpoll::http {

// Largest /bytes/N body: large enough for any throughput test, small enough that a typo
// cannot ask the server for terabytes.
inline constexpr uint64_t kMaxBytesBody = 64ull << 20;
inline constexpr std::string_view kPlaintextBody = "Hello, World!";

const char* reason_phrase(int status) noexcept;

// IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes) of t.
std::string format_http_date(std::time_t t);
// The current second's IMF-fixdate, cached per thread (a shard is one thread), so the
// formatting runs once a second, not once a response.
std::string_view current_http_date() noexcept;

enum class ConnectionHeader : uint8_t { kNone, kKeepAlive, kClose };

// Appends the status line and headers (Server, Date, Content-Type unless empty,
// Content-Length, Connection as asked, then `extra`: whole header lines with their CRLF)
// and the blank line that ends them.
void append_head(std::string& out, int status, std::string_view content_type,
                 uint64_t content_length, ConnectionHeader conn, std::string_view extra = {});

// A refusal of a request the parser could not accept (400/414/431/501/505): a short text
// body and "Connection: close" (the connection is closed after it).
void append_error(std::string& out, int status);

// How to answer one parsed request.
struct Response {
  enum class Body : uint8_t { kText, kFiller };
  int status = 200;
  Body body = Body::kText;
  std::string_view text;   // the body when kText
  uint64_t length = 0;     // body length (sent in Content-Length even for HEAD)
  bool send_body = true;   // false for HEAD
  bool keep_alive = true;  // the connection stays open after it
  ConnectionHeader connection = ConnectionHeader::kNone;
  std::string_view content_type;
  std::string_view extra;  // extra header lines (405: Allow)
};
Response respond_to(const Request& r);

// Appends the head of `resp`, and its body when it is text or filler of at most
// `inline_limit` bytes. Returns the filler bytes the caller still has to send (0 when the
// whole response is in `out`).
uint64_t append_response(std::string& out, const Response& resp, uint64_t inline_limit);

// A read-only block of filler bytes to write /bytes/N bodies from, in pieces, with no
// allocation however large N is.
std::span<const char> filler_block() noexcept;

}  // namespace ringpoll::http
