#include "apps/proxy/http_message.h"

#include <algorithm>
#include <cstdio>

#include "apps/http/response.h"

namespace ringpoll::proxy {
namespace {

constexpr char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c | 0x20) : c;
}

// Hop-by-hop fields (RFC 9110 7.6.1 and the ones older proxies use): they describe one
// connection, so they end here. Transfer-Encoding is kept: the proxy relays chunked
// bodies as they are.
constexpr std::string_view kHopByHop[] = {
    "connection", "keep-alive",         "proxy-connection",    "te",
    "upgrade",    "proxy-authenticate", "proxy-authorization", "trailer"};

// Fields named in a Connection value are hop-by-hop too.
bool named_in(std::string_view connection, std::string_view name) {
  size_t p = 0;
  while (p <= connection.size()) {
    size_t e = connection.find(',', p);
    if (e == std::string_view::npos) e = connection.size();
    std::string_view t = connection.substr(p, e - p);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    if (iequals(t, name)) return true;
    p = e + 1;
  }
  return false;
}

// keep_upgrade: the Upgrade field of a tunnel's request and 101 passes.
bool hop_by_hop(std::string_view name, const std::vector<std::string_view>& connection,
                bool keep_upgrade = false) {
  if (keep_upgrade && iequals(name, "upgrade")) return false;
  for (std::string_view h : kHopByHop)
    if (iequals(name, h)) return true;
  for (std::string_view c : connection)
    if (named_in(c, name)) return true;
  return false;
}

std::vector<std::string_view> connection_values(std::string_view head) {
  std::vector<std::string_view> v;
  for_each_field(head, [&](std::string_view n, std::string_view val) {
    if (iequals(n, "connection")) v.push_back(val);
  });
  return v;
}

void append_field(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

bool host_matches(std::string_view pattern, std::string_view host) {
  if (pattern.empty()) return true;
  if (pattern.size() > 2 && pattern.substr(0, 2) == "*.") {
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    return host.size() > suffix.size() && iequals(host.substr(host.size() - suffix.size()), suffix);
  }
  return iequals(pattern, host);
}

}  // namespace

bool wants_upgrade(std::string_view head) {
  bool token = false, field = false;
  for_each_field(head, [&](std::string_view n, std::string_view v) {
    if (iequals(n, "connection") && named_in(v, "upgrade")) token = true;
    if (iequals(n, "upgrade") && !v.empty()) field = true;
  });
  return token && field;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

int match_route(const std::vector<HttpRoute>& routes, std::string_view host,
                std::string_view target, std::string_view method) {
  // The port of "host:port" is not part of the name; an IPv6 literal keeps its brackets.
  const size_t colon = host.rfind(':');
  if (colon != std::string_view::npos && host.find(']', colon) == std::string_view::npos)
    host = host.substr(0, colon);
  for (size_t i = 0; i < routes.size(); ++i) {
    const HttpRoute& r = routes[i];
    if (!host_matches(r.host, host)) continue;
    if (!r.path_prefix.empty() && !target.starts_with(r.path_prefix)) continue;
    if (!r.method.empty() && r.method != method) continue;
    return static_cast<int>(i);
  }
  return -1;
}

void rewrite_request_head(std::string_view head, const ForwardInfo& fi, std::string* out) {
  out->clear();
  const size_t line_end = head.find("\r\n");
  const std::string_view line = head.substr(0, line_end);
  const size_t sp = line.rfind(' ');
  out->append(line.substr(0, sp + 1));
  out->append(fi.http10_upstream ? "HTTP/1.0\r\n" : "HTTP/1.1\r\n");
  const std::string_view client_version = line.substr(sp + 1 + 5);  // after "HTTP/"
  const auto conn = connection_values(head);
  std::string xff;
  std::string_view host;
  for_each_field(head, [&](std::string_view n, std::string_view v) {
    if (hop_by_hop(n, conn, fi.upgrade)) return;
    if (iequals(n, "host")) host = v;
    if (fi.s->x_forwarded) {
      if (iequals(n, "x-forwarded-for")) {
        if (!xff.empty()) xff += ", ";
        xff.append(v);
        return;
      }
      if (iequals(n, "x-forwarded-proto")) return;  // ours replaces the client's
    }
    append_field(out, n, v);
  });
  if (fi.s->x_forwarded) {
    if (!xff.empty()) xff += ", ";
    xff += fi.client_ip;
    append_field(out, "X-Forwarded-For", xff);
    append_field(out, "X-Forwarded-Proto", fi.proto);
  }
  if (fi.s->forwarded) {
    const bool v6 = fi.client_ip.find(':') != std::string::npos;
    std::string f = v6 ? "for=\"[" + fi.client_ip + "]\"" : "for=" + fi.client_ip;
    f += ";proto=";
    f += fi.proto;
    if (!host.empty()) {
      f += ";host=\"";
      f.append(host);
      f += "\"";
    }
    append_field(out, "Forwarded", f);
  }
  // A client's Via fields were kept above; ours follows them (a list, RFC 9110 7.6.3).
  if (fi.s->via) append_field(out, "Via", std::string(client_version) + " ringpoll");
  if (fi.http10_upstream) append_field(out, "Connection", "close");
  if (fi.upgrade) append_field(out, "Connection", "upgrade");
  out->append("\r\n");
}

long response_head_length(const char* p, size_t n, size_t max) {
  const size_t lim = std::min(n, max);
  for (size_t i = 0; i < lim; ++i) {
    const char c = p[i];
    if (c == '\0') return -1;
    if (c == '\n') {
      if (i == 0 || p[i - 1] != '\r') return -1;  // a bare LF
      if (i >= 3 && p[i - 2] == '\n' && p[i - 3] == '\r') return static_cast<long>(i + 1);
    } else if (i > 0 && p[i - 1] == '\r') {
      return -1;  // a CR not followed by LF
    }
  }
  return n >= max ? -1 : 0;
}

bool parse_response_head(std::string_view head, bool head_request, ResponseHead* out,
                         std::string* why) {
  ResponseHead r;
  r.head_bytes = head.size();
  const std::string_view line = head.substr(0, head.find("\r\n"));
  // "HTTP/1.x DDD" then SP and a reason, possibly empty.
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[7] < '0' || line[7] > '9' ||
      line[8] != ' ' || (line.size() > 12 && line[12] != ' ')) {
    *why = "malformed status line";
    return false;
  }
  for (int i = 9; i < 12; ++i) {
    if (line[static_cast<size_t>(i)] < '0' || line[static_cast<size_t>(i)] > '9') {
      *why = "malformed status code";
      return false;
    }
  }
  r.minor = line[7] - '0';
  r.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (r.status < 100) {
    *why = "status code below 100";
    return false;
  }
  bool have_length = false, te = false, te_chunked = false, conn_close = false,
       conn_keep_alive = false, bad = false;
  int lengths = 0;
  for_each_field(head, [&](std::string_view n, std::string_view v) {
    if (n.empty() || n.find_first_of(" \t") != std::string_view::npos) bad = true;
    if (iequals(n, "content-length")) {
      ++lengths;
      uint64_t x = 0;
      if (v.empty() || v.size() > 18) bad = true;
      for (const char c : v) {
        if (c < '0' || c > '9') bad = true;
        x = x * 10 + static_cast<uint64_t>(c - '0');
      }
      if (have_length && x != r.content_length) bad = true;
      have_length = true;
      r.content_length = x;
    } else if (iequals(n, "transfer-encoding")) {
      // Only "chunked" as the last coding frames a response; anything else is refused
      // rather than guessed (a gzip+chunked body would still be relayed byte for byte).
      te = true;
      const size_t comma = v.rfind(',');
      std::string_view last = comma == std::string_view::npos ? v : v.substr(comma + 1);
      while (!last.empty() && (last.front() == ' ' || last.front() == '\t')) last.remove_prefix(1);
      te_chunked = iequals(last, "chunked");
    } else if (iequals(n, "connection")) {
      if (named_in(v, "close")) conn_close = true;
      if (named_in(v, "keep-alive")) conn_keep_alive = true;
    }
  });
  // The status line is checked above; a field line without a colon is malformed too.
  size_t p = head.find("\r\n") + 2;
  while (p + 2 < head.size()) {
    const size_t e = head.find("\r\n", p);
    const std::string_view l = head.substr(p, e - p);
    if (l.find(':') == std::string_view::npos || l.front() == ' ' || l.front() == '\t') bad = true;
    p = e + 2;
  }
  if (bad) {
    *why = "malformed header field";
    return false;
  }
  if (te && (lengths > 0 || !te_chunked)) {
    *why = te_chunked ? "both Content-Length and Transfer-Encoding"
                      : "a Transfer-Encoding that is not chunked";
    return false;
  }
  r.keep_alive = r.minor >= 1 ? !conn_close : conn_keep_alive && !conn_close;
  if (head_request || r.status < 200 || r.status == 204 || r.status == 304) {
    r.framing = ResponseHead::Framing::kNone;
  } else if (te) {
    r.framing = ResponseHead::Framing::kChunked;
  } else if (have_length) {
    r.framing = ResponseHead::Framing::kLength;
  } else {
    r.framing = ResponseHead::Framing::kClose;
    r.keep_alive = false;
  }
  *out = r;
  return true;
}

void rewrite_response_head(std::string_view head, const HttpSettings& s, bool close,
                           std::string* out, bool upgrade) {
  out->clear();
  const size_t line_end = head.find("\r\n");
  out->append(head.substr(0, line_end + 2));
  const std::string_view version = head.substr(5, 3);
  const auto conn = connection_values(head);
  for_each_field(head, [&](std::string_view n, std::string_view v) {
    if (!hop_by_hop(n, conn, upgrade)) append_field(out, n, v);
  });
  if (s.via) append_field(out, "Via", std::string(version) + " ringpoll");
  if (upgrade) {
    append_field(out, "Connection", "upgrade");
  } else if (close) {
    append_field(out, "Connection", "close");
  }
  out->append("\r\n");
}

std::string error_response(int status, std::string_view why) {
  std::string body = "ringpoll-proxy: ";
  body.append(why);
  body += "\n";
  char head[160];
  std::snprintf(head, sizeof head,
                "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n\r\n",
                status, http::reason_phrase(status), body.size());
  return head + body;
}

ChunkedReader::Result ChunkedReader::feed(const char* data, size_t n, size_t* used) {
  const char* p = data;
  const char* const end = data + n;
  auto out = [&](Result r) {
    *used = static_cast<size_t>(p - data);
    return r;
  };
  auto fail = [&] {
    state_ = State::kError;
    return out(Result::kError);
  };
  while (p < end) {
    const char c = *p;
    switch (state_) {
      case State::kSize: {
        int d = -1;
        if (c >= '0' && c <= '9') d = c - '0';
        if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        if (d >= 0) {
          if (++digits_ > kMaxSizeDigits) return fail();
          size_ = size_ * 16 + static_cast<uint64_t>(d);
        } else if (digits_ == 0) {
          return fail();  // "", "-1", "0x10", " 5"
        } else if (c == ';') {
          state_ = State::kExt;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else {
          return fail();  // "5 ", "5\n", "5g"
        }
        ++p;
        break;
      }
      case State::kExt:
        if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (static_cast<unsigned char>(c) < 0x20 && c != '\t') {
          return fail();  // a bare LF or a control byte inside an extension
        }
        ++p;
        break;
      case State::kSizeLf:
        if (c != '\n') return fail();
        ++p;
        left_ = size_;
        state_ = size_ == 0 ? State::kTrailerStart : State::kData;
        size_ = 0;
        digits_ = 0;
        break;
      case State::kData: {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(left_, end - p));
        p += take;
        left_ -= take;
        if (left_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        if (c != '\r') return fail();
        ++p;
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return fail();
        ++p;
        state_ = State::kSize;
        break;
      case State::kTrailerStart:
        if (c == '\r') {
          state_ = State::kEndLf;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\0') {
          return fail();
        } else {
          state_ = State::kTrailerLine;
        }
        if (++trailer_bytes_ > max_trailer_) return fail();
        ++p;
        break;
      case State::kTrailerLine:
        if (c == '\r') {
          state_ = State::kTrailerLf;
        } else if (c == '\n' || c == '\0') {
          return fail();
        }
        if (++trailer_bytes_ > max_trailer_) return fail();
        ++p;
        break;
      case State::kTrailerLf:
        if (c != '\n') return fail();
        ++p;
        state_ = State::kTrailerStart;
        break;
      case State::kEndLf:
        if (c != '\n') return fail();
        ++p;
        state_ = State::kDone;
        return out(Result::kDone);
      case State::kDone:
        return out(Result::kDone);
      case State::kError:
        return out(Result::kError);
    }
  }
  if (state_ == State::kDone) return out(Result::kDone);
  return out(state_ == State::kError ? Result::kError : Result::kNeedMore);
}

}  // namespace ringpoll::proxy
