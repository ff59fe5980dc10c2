#include "apps/load/http_response.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string_view>

namespace ringpoll::load {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

// True when the comma-separated list v holds token t (case-insensitive).
bool has_token(std::string_view v, std::string_view t) {
  while (!v.empty()) {
    const size_t comma = v.find(',');
    std::string_view item = v.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, t)) return true;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

const char* to_string(HttpError e) noexcept {
  switch (e) {
    case HttpError::kNone:
      return "none";
    case HttpError::kBadStatusLine:
      return "bad status line";
    case HttpError::kBadHeader:
      return "bad header line";
    case HttpError::kLineTooLong:
      return "line too long";
    case HttpError::kTooManyHeaders:
      return "too many headers";
    case HttpError::kChunked:
      return "chunked transfer encoding (not supported)";
    case HttpError::kNoLength:
      return "response without Content-Length";
    case HttpError::kBadContentLength:
      return "bad Content-Length";
  }
  return "?";
}

void HttpResponseParser::start_response() {
  state_ = State::kStatusLine;
  line_.clear();
  status_ = 0;
  minor_ = 1;
  keep_alive_ = true;
  have_length_ = false;
  chunked_ = false;
  interim_ = false;
  headers_ = 0;
  length_ = 0;
  body_left_ = 0;
}

HttpResponseParser::Result HttpResponseParser::feed(const char* data, size_t n, size_t* used) {
  size_t i = 0;
  if (error_ != HttpError::kNone) {
    *used = 0;
    return Result::kError;
  }
  while (i < n) {
    if (state_ == State::kBody) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(body_left_, n - i));
      i += take;
      body_left_ -= take;
      if (body_left_ == 0) {
        state_ = State::kStatusLine;  // status_ and keep_alive_ stay readable
        *used = i;
        return Result::kComplete;
      }
      continue;
    }
    // Status or header line: gather up to LF.
    const char* lf = static_cast<const char*>(std::memchr(data + i, '\n', n - i));
    const size_t end = lf ? static_cast<size_t>(lf - data) : n;
    if (line_.size() + (end - i) > kMaxLine) {
      error_ = HttpError::kLineTooLong;
      *used = i;
      return Result::kError;
    }
    line_.append(data + i, end - i);
    if (!lf) {
      i = n;
      break;
    }
    i = end + 1;
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (state_ == State::kStatusLine) {
      // Starting a new response: clear what the last one left behind.
      std::string line = std::move(line_);
      start_response();
      line_ = std::move(line);
      if (!on_status_line()) {
        *used = i;
        return Result::kError;
      }
      state_ = State::kHeader;
    } else if (!line_.empty()) {
      if (!on_header_line()) {
        *used = i;
        return Result::kError;
      }
    } else {
      bool complete = false;
      if (!headers_done(&complete)) {
        *used = i;
        return Result::kError;
      }
      if (complete) {
        *used = i;
        return Result::kComplete;
      }
    }
    line_.clear();
  }
  *used = i;
  return Result::kNeedMore;
}

bool HttpResponseParser::on_status_line() {
  // "HTTP/1.x SSS[ reason]"
  const std::string_view l = line_;
  if (l.size() < 12 || !l.starts_with("HTTP/1.") || l[8] != ' ' || l[7] < '0' || l[7] > '9' ||
      (l.size() > 12 && l[12] != ' ')) {
    error_ = HttpError::kBadStatusLine;
    return false;
  }
  minor_ = l[7] - '0';
  int s = 0;
  const auto [p, ec] = std::from_chars(l.data() + 9, l.data() + 12, s);
  if (ec != std::errc() || p != l.data() + 12 || s < 100 || s > 999) {
    error_ = HttpError::kBadStatusLine;
    return false;
  }
  status_ = s;
  keep_alive_ = minor_ >= 1;  // HTTP/1.0 closes unless it says keep-alive
  interim_ = s < 200;
  return true;
}

bool HttpResponseParser::on_header_line() {
  if (++headers_ > kMaxHeaders) {
    error_ = HttpError::kTooManyHeaders;
    return false;
  }
  const std::string_view l = line_;
  const size_t colon = l.find(':');
  if (colon == std::string_view::npos || colon == 0 || l[0] == ' ' || l[0] == '\t') {
    error_ = HttpError::kBadHeader;
    return false;
  }
  const std::string_view name = l.substr(0, colon);
  if (name.find_first_of(" \t") != std::string_view::npos) {
    error_ = HttpError::kBadHeader;
    return false;
  }
  std::string_view value = l.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);

  if (iequals(name, "content-length")) {
    uint64_t len = 0;
    const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), len);
    if (value.empty() || ec != std::errc() || p != value.data() + value.size() ||
        (have_length_ && len != length_)) {
      error_ = HttpError::kBadContentLength;
      return false;
    }
    have_length_ = true;
    length_ = len;
  } else if (iequals(name, "transfer-encoding")) {
    if (!iequals(value, "identity")) chunked_ = true;  // chunked or anything we cannot frame
  } else if (iequals(name, "connection")) {
    if (has_token(value, "close")) keep_alive_ = false;
    if (has_token(value, "keep-alive")) keep_alive_ = true;
  }
  return true;
}

bool HttpResponseParser::headers_done(bool* complete) {
  *complete = false;
  if (interim_) {  // 1xx: its headers end here; the real response follows
    start_response();
    return true;
  }
  if (chunked_) {
    error_ = HttpError::kChunked;
    return false;
  }
  const bool no_body = status_ == 204 || status_ == 304;
  if (no_body) {
    length_ = 0;
  } else if (!have_length_) {
    error_ = HttpError::kNoLength;
    return false;
  }
  line_.clear();
  if (length_ == 0) {
    state_ = State::kStatusLine;
    *complete = true;
    return true;
  }
  body_left_ = length_;
  state_ = State::kBody;
  return true;
}

}  // namespace ringpoll::load
