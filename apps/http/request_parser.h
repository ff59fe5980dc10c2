#pragma once
// RequestParser: an incremental HTTP/1.1 request parser for ringpoll-serve.
//
// Bytes are fed as they arrive, in pieces of any size; the parser keeps its state between
// feeds and copies only the method and the target (bounded by max_request_line) into a
// buffer it reserves once, so a request costs no allocation and the connection never has
// to hold a whole request head in one piece. Header values are interpreted as they stream
// past (only Host, Connection, Content-Length and Transfer-Encoding matter) and are never
// stored.
//
//   state        on input                                  next
//   kStart       CRLF (empty lines before a request)       kStart
//   kStart       first byte of a method token              kMethod
//   kMethod      tchar... SP                               kTarget
//   kTarget      visible ASCII... SP                       kVersion
//   kVersion     "HTTP/D.D" CR LF                          kHeaderStart
//   kHeaderStart "Name:" OWS value OWS CR LF               kHeaderStart
//   kHeaderStart CR LF (end of the head)                   a request is returned;
//                                                          kBody if Content-Length > 0,
//                                                          else kStart
//   kBody        Content-Length bytes, skipped             kStart
//   any          a byte the grammar refuses                kError (sticky)
//
// Policy (strict, so that this server and any proxy in front of it frame requests alike):
//   - lines end in CRLF; a bare LF, or a CR not followed by LF, is 400;
//   - request line longer than max_request_line (method SP target SP version, without
//     the CRLF; empty lines before it count too) is 414;
//   - header section (every header line with its CRLF, plus the final CRLF) longer than
//     max_header_bytes is 431;
//   - malformed method, target, version or header line, whitespace before a header's
//     colon, obsolete line folding, control characters, an HTTP/1.1 request without
//     exactly one Host, a bad or conflicting Content-Length: 400;
//   - a version other than HTTP/1.x is 505; HTTP/1.2..1.9 are treated as 1.1;
//   - any Transfer-Encoding on a request is 501: chunked request bodies are not parsed
//     (benchmark clients never send them) and guessing their framing would desynchronise
//     the pipeline.
//
// In proxy mode (ParserLimits::proxy, ringpoll-proxy's HTTP listeners) the request is
// going to be relayed, so any framing two parties could read differently is refused with
// 400 (request smuggling, RFC 9112 6.3 and 11.2), and refusal() says which rule:
//   - "Transfer-Encoding: chunked" (one field, exactly that coding) is accepted and
//     Request::chunked set; any other Transfer-Encoding (a list, another coding, two
//     fields, odd spelling) is kBadTransferEncoding;
//   - Transfer-Encoding together with Content-Length is kLengthAndEncoding;
//   - two Content-Length fields, even equal ones, are kDuplicateLength.
// In both modes refusal() also tells a bare LF, a NUL and obs-fold apart from other
// malformed input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringpoll::http {

enum class Method : uint8_t { kGet, kHead, kOther };

// Why a request was refused; each maps to one status code (status_code()).
enum class ParseError : uint8_t {
  kNone,
  kBadRequest,           // 400
  kUriTooLong,           // 414
  kHeadersTooLarge,      // 431
  kNotImplemented,       // 501 (Transfer-Encoding)
  kVersionNotSupported,  // 505
};
int status_code(ParseError e) noexcept;
const char* to_string(ParseError e) noexcept;

// One parsed request head. The views point into the parser and stay valid until the next
// feed() or reset().
struct Request {
  Method method = Method::kOther;
  std::string_view method_name;
  std::string_view target;
  int version_minor = 1;  // HTTP/1.<minor>
  bool keep_alive = true;
  uint64_t content_length = 0;    // body bytes the parser skips after the head
  bool chunked = false;           // proxy mode: a chunked body follows (not skipped)
  bool has_body_framing = false;  // Content-Length or Transfer-Encoding was present
};

// Which rule refused a request (finer than ParseError, for a proxy's counters).
enum class Refusal : uint8_t {
  kNone,
  kBareLf,               // a line ended by LF alone, or CR without LF
  kNul,                  // a NUL byte in the head
  kObsFold,              // a header line starting with a blank (obsolete folding)
  kLengthAndEncoding,    // Content-Length and Transfer-Encoding both (proxy mode)
  kDuplicateLength,      // Content-Length twice (proxy mode) or two different ones
  kBadLength,            // a Content-Length that is not a decimal number
  kBadTransferEncoding,  // anything but one "Transfer-Encoding: chunked" (proxy mode)
  kOther,                // any other malformed, oversized or unsupported head
};
const char* to_string(Refusal r) noexcept;

struct ParserLimits {
  size_t max_request_line = 8192;
  size_t max_header_bytes = 16384;
  bool proxy = false;  // the proxy's stricter framing rules (above)
};

class RequestParser {
 public:
  enum class Result { kNeedMore, kRequest, kError };

  explicit RequestParser(ParserLimits limits = {});

  // Consumes bytes from [data, data + n) up to the end of one request head. *used: bytes
  // taken (all of n unless a head completed or an error was found first). kRequest: the
  // head is in request(); the body, if any, is skipped by the following feeds. kError:
  // error() says why; every later feed returns kError and takes nothing.
  Result feed(const char* data, size_t n, size_t* used);

  const Request& request() const noexcept { return req_; }
  ParseError error() const noexcept { return error_; }
  Refusal refusal() const noexcept { return refusal_; }

  // Between requests: no byte of the next one seen and no body left to skip.
  bool idle() const noexcept { return state_ == State::kStart && line_bytes_ == 0; }
  // Inside a request head (the slowloris window: the header-read deadline applies).
  bool reading_head() const noexcept {
    return !idle() && state_ != State::kBody && state_ != State::kError;
  }
  // Body bytes of the last request still to be skipped.
  uint64_t body_left() const noexcept { return body_left_; }

  // Forgets everything (a new connection).
  void reset() noexcept;

 private:
  enum class State : uint8_t {
    kStart,
    kStartLf,
    kMethod,
    kTarget,
    kVersion,
    kLineLf,
    kHeaderStart,
    kHeaderName,
    kHeaderValue,
    kHeaderLf,
    kHeadEndLf,
    kBody,
    kError,
  };
  // The header fields whose values the parser interprets.
  enum class Field : uint8_t { kOther, kHost, kConnection, kContentLength, kTransferEncoding };

  Result fail(ParseError e, Refusal r = Refusal::kOther) noexcept;
  Result fail_line_end(unsigned char c) noexcept;
  void begin_request() noexcept;
  void classify_field() noexcept;
  bool value_byte(unsigned char c) noexcept;
  bool end_header() noexcept;
  void end_connection_token() noexcept;
  Result finish_head() noexcept;

  // Longest header name and Connection token worth remembering; longer ones cannot be
  // one of the fields we interpret, so only their syntax is checked.
  static constexpr size_t kNameCap = 24;
  static constexpr size_t kTokenCap = 16;
  // "HTTP/1.1" is 8 bytes.
  static constexpr size_t kVersionLen = 8;

  ParserLimits limits_;
  State state_ = State::kStart;
  ParseError error_ = ParseError::kNone;
  Refusal refusal_ = Refusal::kNone;
  Request req_;

  std::string line_;  // method then target, back to back
  size_t method_len_ = 0;
  size_t line_bytes_ = 0;    // request-line bytes so far (414)
  size_t header_bytes_ = 0;  // header-section bytes so far (431)
  char version_[kVersionLen] = {};
  size_t version_len_ = 0;

  Field field_ = Field::kOther;
  char name_[kNameCap] = {};
  size_t name_len_ = 0;  // may exceed kNameCap (then only counted)
  char token_[kTokenCap] = {};
  size_t token_len_ = 0;
  bool value_ended_ = false;     // blank after the Content-Length digits
  uint64_t cl_value_ = 0;        // the Content-Length being read
  uint64_t content_length_ = 0;  // the request's Content-Length once read
  bool cl_digits_ = false;

  int hosts_ = 0;
  bool have_length_ = false;
  bool transfer_encoding_ = false;
  int te_fields_ = 0;
  bool te_chunked_ = true;  // every Transfer-Encoding value so far was exactly "chunked"
  int lengths_ = 0;         // Content-Length fields seen
  bool conn_close_ = false;
  bool conn_keep_alive_ = false;
  uint64_t body_left_ = 0;
};

}  // namespace ringpoll::http
