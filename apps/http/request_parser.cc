#include "apps/http/request_parser.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace ringpoll::http {
namespace {

// RFC 9110 token characters: the bytes a method or a header name may hold.
constexpr std::array<bool, 256> make_tchar_table() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (const char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTchar = make_tchar_table();

constexpr bool is_tchar(unsigned char c) {
  return kTchar[c];
}
// A request target is visible ASCII; anything else (space, controls, bytes >= 0x80) ends
// it or is refused.
constexpr bool is_target_byte(unsigned char c) {
  return c > 0x20 && c < 0x7F;
}
// Field values: visible ASCII, obs-text, space and tab; never CR, LF, NUL or DEL.
constexpr bool is_value_byte(unsigned char c) {
  return c == '\t' || c == ' ' || (c > 0x20 && c != 0x7F);
}
constexpr bool is_blank(unsigned char c) {
  return c == ' ' || c == '\t';
}
constexpr char lower(unsigned char c) {
  return static_cast<char>(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
}

// Length of the run of bytes at the start of [p, end) that satisfy pred.
template <class Pred>
size_t run_of(const char* p, const char* end, Pred pred) {
  const char* q = p;
  while (q < end && pred(static_cast<unsigned char>(*q))) ++q;
  return static_cast<size_t>(q - p);
}

}  // namespace

int status_code(ParseError e) noexcept {
  switch (e) {
    case ParseError::kNone:
      return 200;
    case ParseError::kBadRequest:
      return 400;
    case ParseError::kUriTooLong:
      return 414;
    case ParseError::kHeadersTooLarge:
      return 431;
    case ParseError::kNotImplemented:
      return 501;
    case ParseError::kVersionNotSupported:
      return 505;
  }
  return 400;
}

const char* to_string(Refusal r) noexcept {
  switch (r) {
    case Refusal::kNone:
      return "none";
    case Refusal::kBareLf:
      return "bare_lf";
    case Refusal::kNul:
      return "nul";
    case Refusal::kObsFold:
      return "obs_fold";
    case Refusal::kLengthAndEncoding:
      return "length_and_encoding";
    case Refusal::kDuplicateLength:
      return "duplicate_length";
    case Refusal::kBadLength:
      return "bad_length";
    case Refusal::kBadTransferEncoding:
      return "bad_transfer_encoding";
    case Refusal::kOther:
      return "other";
  }
  return "?";
}

const char* to_string(ParseError e) noexcept {
  switch (e) {
    case ParseError::kNone:
      return "none";
    case ParseError::kBadRequest:
      return "malformed request";
    case ParseError::kUriTooLong:
      return "request line too long";
    case ParseError::kHeadersTooLarge:
      return "header section too large";
    case ParseError::kNotImplemented:
      return "Transfer-Encoding not supported";
    case ParseError::kVersionNotSupported:
      return "HTTP version not supported";
  }
  return "?";
}

RequestParser::RequestParser(ParserLimits limits) : limits_(limits) {
  // Typical method + target; larger ones grow the buffer once and it stays grown.
  line_.reserve(std::min<size_t>(limits_.max_request_line, 256));
}

void RequestParser::reset() noexcept {
  state_ = State::kStart;
  error_ = ParseError::kNone;
  refusal_ = Refusal::kNone;
  req_ = Request{};
  line_.clear();
  body_left_ = 0;
  begin_request();
}

void RequestParser::begin_request() noexcept {
  method_len_ = 0;
  line_bytes_ = 0;
  header_bytes_ = 0;
  version_len_ = 0;
  hosts_ = 0;
  have_length_ = false;
  transfer_encoding_ = false;
  te_fields_ = 0;
  te_chunked_ = true;
  lengths_ = 0;
  conn_close_ = false;
  conn_keep_alive_ = false;
  cl_value_ = 0;
  content_length_ = 0;
}

RequestParser::Result RequestParser::fail(ParseError e, Refusal r) noexcept {
  state_ = State::kError;
  error_ = e;
  refusal_ = r;
  return Result::kError;
}

// A byte the grammar refuses where a line could end or a NUL could hide: say which.
RequestParser::Result RequestParser::fail_line_end(unsigned char c) noexcept {
  return fail(ParseError::kBadRequest, c == '\n'   ? Refusal::kBareLf
                                       : c == '\0' ? Refusal::kNul
                                                   : Refusal::kOther);
}

void RequestParser::classify_field() noexcept {
  field_ = Field::kOther;
  const std::string_view name(name_, std::min(name_len_, kNameCap));
  if (name_len_ <= kNameCap) {
    if (name == "host") {
      field_ = Field::kHost;
      ++hosts_;
    } else if (name == "connection") {
      field_ = Field::kConnection;
    } else if (name == "content-length") {
      field_ = Field::kContentLength;
    } else if (name == "transfer-encoding") {
      field_ = Field::kTransferEncoding;
      transfer_encoding_ = true;
    }
  }
  token_len_ = 0;
  cl_value_ = 0;
  cl_digits_ = false;
  value_ended_ = false;
}

void RequestParser::end_connection_token() noexcept {
  const std::string_view t(token_, std::min(token_len_, kTokenCap));
  if (token_len_ <= kTokenCap) {
    if (t == "close") conn_close_ = true;
    if (t == "keep-alive") conn_keep_alive_ = true;
  }
  token_len_ = 0;
}

bool RequestParser::value_byte(unsigned char c) noexcept {
  switch (field_) {
    case Field::kConnection:
      if (c == ',' || is_blank(c)) {
        end_connection_token();
      } else {
        if (token_len_ < kTokenCap) token_[token_len_] = lower(c);
        ++token_len_;
      }
      return true;
    case Field::kContentLength:
      if (c >= '0' && c <= '9') {
        // Digits after blanks that followed digits ("1 2"), or a value past 2^63: refused.
        if (value_ended_ || cl_value_ > (UINT64_MAX / 2 - 9) / 10) return false;
        cl_value_ = cl_value_ * 10 + (c - '0');
        cl_digits_ = true;
        return true;
      }
      if (is_blank(c)) {
        if (cl_digits_) value_ended_ = true;
        return true;
      }
      return false;  // signs, commas (a repeated list), letters
    case Field::kTransferEncoding:
      // Proxy mode only: the value, blanks around it dropped, must be exactly "chunked".
      if (is_blank(c)) {
        if (token_len_ > 0) value_ended_ = true;
      } else {
        if (value_ended_) te_chunked_ = false;  // "chunked x", "a b"
        if (token_len_ < kTokenCap) token_[token_len_] = lower(c);
        ++token_len_;
      }
      return true;
    default:
      return true;
  }
}

bool RequestParser::end_header() noexcept {
  switch (field_) {
    case Field::kConnection:
      end_connection_token();
      return true;
    case Field::kContentLength:
      if (!cl_digits_) {
        refusal_ = Refusal::kBadLength;
        return false;
      }
      ++lengths_;
      // Two Content-Length fields that disagree make the framing ambiguous.
      if (have_length_ && cl_value_ != content_length_) {
        refusal_ = Refusal::kDuplicateLength;
        return false;
      }
      have_length_ = true;
      content_length_ = cl_value_;
      return true;
    case Field::kTransferEncoding:
      ++te_fields_;
      if (token_len_ != 7 || std::string_view(token_, 7) != "chunked") te_chunked_ = false;
      return true;
    default:
      return true;
  }
}

RequestParser::Result RequestParser::finish_head() noexcept {
  const int major = version_[5] - '0';
  if (major != 1) return fail(ParseError::kVersionNotSupported);
  const int minor = version_[7] - '0';
  req_.chunked = false;
  if (limits_.proxy) {
    if (transfer_encoding_ && have_length_) {
      return fail(ParseError::kBadRequest, Refusal::kLengthAndEncoding);
    }
    if (lengths_ > 1) return fail(ParseError::kBadRequest, Refusal::kDuplicateLength);
    if (transfer_encoding_ && (te_fields_ != 1 || !te_chunked_)) {
      return fail(ParseError::kBadRequest, Refusal::kBadTransferEncoding);
    }
    req_.chunked = transfer_encoding_;
  } else if (transfer_encoding_) {
    return fail(ParseError::kNotImplemented);
  }
  req_.has_body_framing = transfer_encoding_ || have_length_;
  if (hosts_ > 1 || (minor >= 1 && hosts_ == 0)) return fail(ParseError::kBadRequest);
  req_.method_name = std::string_view(line_.data(), method_len_);
  req_.target = std::string_view(line_.data() + method_len_, line_.size() - method_len_);
  req_.method = req_.method_name == "GET"    ? Method::kGet
                : req_.method_name == "HEAD" ? Method::kHead
                                             : Method::kOther;
  req_.version_minor = minor;
  req_.keep_alive = minor >= 1 ? !conn_close_ : conn_keep_alive_ && !conn_close_;
  req_.content_length = content_length_;
  // Proxy mode: the proxy relays the body itself and feeds the parser the next head only.
  body_left_ = limits_.proxy ? 0 : content_length_;
  state_ = body_left_ > 0 ? State::kBody : State::kStart;
  begin_request();
  return Result::kRequest;
}

RequestParser::Result RequestParser::feed(const char* data, size_t n, size_t* used) {
  const char* p = data;
  const char* const end = data + n;
  // Every return goes through here so *used is always what was taken.
  auto out = [&](Result r) {
    *used = static_cast<size_t>(p - data);
    return r;
  };
  if (state_ == State::kError) return out(Result::kError);
  const size_t max_line = limits_.max_request_line;
  const size_t max_headers = limits_.max_header_bytes;

  while (p < end) {
    const auto c = static_cast<unsigned char>(*p);
    switch (state_) {
      case State::kBody: {
        const size_t take =
            static_cast<size_t>(std::min<uint64_t>(body_left_, static_cast<uint64_t>(end - p)));
        p += take;
        body_left_ -= take;
        if (body_left_ == 0) state_ = State::kStart;
        break;
      }
      case State::kStart:
        if (c == '\r') {
          if (++line_bytes_ > max_line) return out(fail(ParseError::kUriTooLong));
          state_ = State::kStartLf;
          ++p;
        } else if (is_tchar(c)) {
          line_.clear();  // only now: the previous request's views stayed valid until here
          state_ = State::kMethod;
        } else {
          return out(fail_line_end(c));
        }
        break;
      case State::kStartLf:
        if (c != '\n') return out(fail(ParseError::kBadRequest, Refusal::kBareLf));
        if (++line_bytes_ > max_line) return out(fail(ParseError::kUriTooLong));
        state_ = State::kStart;
        ++p;
        break;
      case State::kMethod:
      case State::kTarget: {
        const bool method = state_ == State::kMethod;
        const size_t k = method ? run_of(p, end, is_tchar) : run_of(p, end, is_target_byte);
        if (line_bytes_ + k > max_line) return out(fail(ParseError::kUriTooLong));
        line_.append(p, k);
        line_bytes_ += k;
        p += k;
        if (p == end) break;
        if (*p != ' ') return out(fail_line_end(static_cast<unsigned char>(*p)));
        if (method) {
          method_len_ = line_.size();
          state_ = State::kTarget;
        } else {
          if (line_.size() == method_len_) return out(fail(ParseError::kBadRequest));
          state_ = State::kVersion;
        }
        if (++line_bytes_ > max_line) return out(fail(ParseError::kUriTooLong));
        ++p;
        break;
      }
      case State::kVersion:
        if (c == '\r') {
          const std::string_view v(version_, version_len_);
          if (v.size() != kVersionLen || !v.starts_with("HTTP/") || v[5] < '0' || v[5] > '9' ||
              v[6] != '.' || v[7] < '0' || v[7] > '9') {
            return out(fail(ParseError::kBadRequest));
          }
          state_ = State::kLineLf;
          ++p;
          break;
        }
        if (!is_target_byte(c) || version_len_ == kVersionLen) return out(fail_line_end(c));
        if (++line_bytes_ > max_line) return out(fail(ParseError::kUriTooLong));
        version_[version_len_++] = static_cast<char>(c);
        ++p;
        break;
      case State::kLineLf:
        if (c != '\n') return out(fail(ParseError::kBadRequest, Refusal::kBareLf));
        state_ = State::kHeaderStart;
        ++p;
        break;
      case State::kHeaderStart:
        if (c == '\r') {
          if (++header_bytes_ > max_headers) return out(fail(ParseError::kHeadersTooLarge));
          state_ = State::kHeadEndLf;
          ++p;
        } else if (is_tchar(c)) {
          name_len_ = 0;
          state_ = State::kHeaderName;
        } else if (is_blank(c)) {
          // Obsolete line folding is refused (RFC 9112 5.2).
          return out(fail(ParseError::kBadRequest, Refusal::kObsFold));
        } else {
          return out(fail_line_end(c));
        }
        break;
      case State::kHeaderName: {
        const size_t k = run_of(p, end, is_tchar);
        if (header_bytes_ + k > max_headers) return out(fail(ParseError::kHeadersTooLarge));
        for (size_t i = 0; i < k && name_len_ + i < kNameCap; ++i) {
          name_[name_len_ + i] = lower(static_cast<unsigned char>(p[i]));
        }
        name_len_ += k;
        header_bytes_ += k;
        p += k;
        if (p == end) break;
        if (*p != ':') return out(fail_line_end(static_cast<unsigned char>(*p)));  // "Name :"
        if (++header_bytes_ > max_headers) return out(fail(ParseError::kHeadersTooLarge));
        classify_field();
        state_ = State::kHeaderValue;
        ++p;
        break;
      }
      case State::kHeaderValue:
        if (c == '\r') {
          if (++header_bytes_ > max_headers) return out(fail(ParseError::kHeadersTooLarge));
          state_ = State::kHeaderLf;
          ++p;
        } else if (field_ == Field::kOther || field_ == Field::kHost ||
                   (field_ == Field::kTransferEncoding && !limits_.proxy)) {
          // Values nobody interprets: check their bytes in one run.
          const size_t k =
              run_of(p, end, [](unsigned char b) { return b != '\r' && is_value_byte(b); });
          if (k == 0) return out(fail_line_end(c));
          if (header_bytes_ + k > max_headers) return out(fail(ParseError::kHeadersTooLarge));
          header_bytes_ += k;
          p += k;
        } else {
          if (!is_value_byte(c)) return out(fail_line_end(c));
          if (!value_byte(c)) {
            return out(fail(ParseError::kBadRequest, field_ == Field::kContentLength
                                                         ? Refusal::kBadLength
                                                         : Refusal::kOther));
          }
          if (++header_bytes_ > max_headers) return out(fail(ParseError::kHeadersTooLarge));
          ++p;
        }
        break;
      case State::kHeaderLf:
        if (c != '\n') return out(fail(ParseError::kBadRequest, Refusal::kBareLf));
        if (++header_bytes_ > max_headers) return out(fail(ParseError::kHeadersTooLarge));
        if (!end_header()) return out(fail(ParseError::kBadRequest, refusal_));
        state_ = State::kHeaderStart;
        ++p;
        break;
      case State::kHeadEndLf:
        if (c != '\n') return out(fail(ParseError::kBadRequest, Refusal::kBareLf));
        if (++header_bytes_ > max_headers) return out(fail(ParseError::kHeadersTooLarge));
        ++p;
        return out(finish_head());
      case State::kError:
        return out(Result::kError);
    }
  }
  return out(Result::kNeedMore);
}

}  // namespace ringpoll::http
