#pragma once
// HttpResponseParser: an incremental HTTP/1.x response parser for the load generator.
//
// Bytes are fed as they arrive, in pieces of any size; the parser keeps only the current
// line (bounded) and the body bytes still to skip, so a connection needs no receive buffer
// of its own. A response is framed by Content-Length; "Transfer-Encoding: chunked" and a
// response without a length are rejected (an error the generator counts), because
// skipping them correctly would need a second framing path the benchmark servers never
// use. 1xx interim responses are skipped; 204 and 304 carry no body.
//
//   state          on input                       next
//   kStatusLine    "HTTP/1.x DDD reason" CRLF     kHeader (1xx: kStatusLine again)
//   kHeader        "Name: value" CRLF             kHeader
//   kHeader        empty line                     kBody, or complete when no body
//   kBody          Content-Length bytes           complete (then kStatusLine)
#include <cstddef>
#include <cstdint>
#include <string>

namespace ringpoll::load {

enum class HttpError : uint8_t {
  kNone,
  kBadStatusLine,
  kBadHeader,
  kLineTooLong,
  kTooManyHeaders,
  kChunked,
  kNoLength,
  kBadContentLength,
};
const char* to_string(HttpError e) noexcept;

class HttpResponseParser {
 public:
  // Longest status or header line accepted, and most headers per response: far above
  // what a benchmark server sends, low enough that a broken peer is caught quickly.
  static constexpr size_t kMaxLine = 8192;
  static constexpr int kMaxHeaders = 100;

  enum class Result { kNeedMore, kComplete, kError };

  // Consumes bytes from [data, data+n) up to the end of one response. *used: bytes taken
  // (all of n unless a response completed earlier). After kComplete, status() and
  // keep_alive() describe it and the next feed starts the next response.
  Result feed(const char* data, size_t n, size_t* used);

  int status() const noexcept { return status_; }
  bool keep_alive() const noexcept { return keep_alive_; }
  HttpError error() const noexcept { return error_; }

 private:
  enum class State : uint8_t { kStatusLine, kHeader, kBody };

  bool on_line();  // false: error_ is set
  bool on_status_line();
  bool on_header_line();
  bool headers_done(bool* complete);
  void start_response();

  State state_ = State::kStatusLine;
  std::string line_;
  int status_ = 0;
  int minor_ = 1;
  bool keep_alive_ = true;
  bool have_length_ = false;
  bool chunked_ = false;
  bool interim_ = false;
  int headers_ = 0;
  uint64_t length_ = 0;
  uint64_t body_left_ = 0;
  HttpError error_ = HttpError::kNone;
};

}  // namespace ringpoll::load
