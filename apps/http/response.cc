#include "apps/http/response.h"

#include <array>
#include <charconv>
#include <cstdio>

namespace ringpoll::http {
namespace {

// Filler block size: one write's worth; a /bytes/N body is written as N / kFillerBytes
// writes of it, never from one N-byte allocation.
constexpr size_t kFillerBytes = 64 * 1024;

constexpr std::array<char, kFillerBytes> make_filler() {
  std::array<char, kFillerBytes> b{};
  for (char& c : b) c = 'x';
  return b;
}
constexpr std::array<char, kFillerBytes> kFiller = make_filler();

void append_number(std::string& out, uint64_t v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;  // 24 bytes hold any uint64_t
  out.append(buf, static_cast<size_t>(end - buf));
}

// "N" of "/bytes/N": decimal digits only (no sign, no blanks), value in [0, max].
bool parse_length(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

}  // namespace

const char* reason_phrase(int status) noexcept {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string format_http_date(std::time_t t) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
#ifdef _WIN32
  gmtime_s(&tm, &t);  // the Windows C runtime's thread-safe form
#else
  gmtime_r(&t, &tm);
#endif
  char buf[64];
  const int n = std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                              kDays[tm.tm_wday % 7], tm.tm_mday, kMonths[tm.tm_mon % 12],
                              tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

std::string_view current_http_date() noexcept {
  struct Cache {
    std::time_t second = -1;
    char text[40] = {};
    size_t len = 0;
  };
  static thread_local Cache cache;
  timespec ts{};
  // The coarse clock is enough for a one-second field and costs no more than a load.
#ifdef CLOCK_REALTIME_COARSE
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
#else
  clock_gettime(CLOCK_REALTIME, &ts);  // Windows (winpthreads): no coarse clock
#endif
  if (ts.tv_sec != cache.second) {
    const std::string s = format_http_date(ts.tv_sec);
    cache.len = s.copy(cache.text, sizeof cache.text);
    cache.second = ts.tv_sec;
  }
  return std::string_view(cache.text, cache.len);
}

void append_head(std::string& out, int status, std::string_view content_type,
                 uint64_t content_length, ConnectionHeader conn, std::string_view extra) {
  out.append("HTTP/1.1 ");
  append_number(out, static_cast<uint64_t>(status));
  out.push_back(' ');
  out.append(reason_phrase(status));
  out.append("\r\nServer: ringpoll\r\nDate: ");
  out.append(current_http_date());
  if (!content_type.empty()) {
    out.append("\r\nContent-Type: ");
    out.append(content_type);
  }
  out.append("\r\nContent-Length: ");
  append_number(out, content_length);
  if (conn == ConnectionHeader::kClose) out.append("\r\nConnection: close");
  if (conn == ConnectionHeader::kKeepAlive) out.append("\r\nConnection: keep-alive");
  out.append("\r\n");
  out.append(extra);
  out.append("\r\n");
}

void append_error(std::string& out, int status) {
  const std::string_view reason = reason_phrase(status);
  append_head(out, status, "text/plain", reason.size() + 1, ConnectionHeader::kClose);
  out.append(reason);
  out.push_back('\n');
}

Response respond_to(const Request& r) {
  Response resp;
  resp.keep_alive = r.keep_alive;
  resp.connection = !r.keep_alive          ? ConnectionHeader::kClose
                    : r.version_minor == 0 ? ConnectionHeader::kKeepAlive
                                           : ConnectionHeader::kNone;
  resp.send_body = r.method != Method::kHead;
  resp.content_type = "text/plain";
  auto text = [&](int status, std::string_view body) {
    resp.status = status;
    resp.body = Response::Body::kText;
    resp.text = body;
    resp.length = body.size();
  };
  if (r.method == Method::kOther) {
    text(405, "Method Not Allowed\n");
    resp.send_body = true;
    resp.extra = "Allow: GET, HEAD\r\n";
    return resp;
  }
  std::string_view path = r.target;
  if (const size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  constexpr std::string_view kBytesPrefix = "/bytes/";
  if (path == "/plaintext") {
    text(200, kPlaintextBody);
  } else if (path.starts_with(kBytesPrefix)) {
    uint64_t n = 0;
    if (parse_length(path.substr(kBytesPrefix.size()), kMaxBytesBody, &n)) {
      resp.status = 200;
      resp.body = Response::Body::kFiller;
      resp.length = n;
      resp.content_type = "application/octet-stream";
    } else {
      text(400, "Bad Request: /bytes/N takes a decimal N up to 67108864\n");
    }
  } else {
    text(404, "Not Found\n");
  }
  return resp;
}

uint64_t append_response(std::string& out, const Response& resp, uint64_t inline_limit) {
  append_head(out, resp.status, resp.content_type, resp.length, resp.connection, resp.extra);
  if (!resp.send_body) return 0;
  if (resp.body == Response::Body::kText) {
    out.append(resp.text);
    return 0;
  }
  if (resp.length > inline_limit) return resp.length;
  for (uint64_t left = resp.length; left > 0;) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(left, kFiller.size()));
    out.append(kFiller.data(), k);
    left -= k;
  }
  return 0;
}

std::span<const char> filler_block() noexcept {
  return std::span<const char>(kFiller);
}

}  // namespace ringpoll::http
