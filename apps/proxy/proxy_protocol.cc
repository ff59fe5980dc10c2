#include "apps/proxy/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace ringpoll::proxy {
namespace {

constexpr uint8_t kV2Signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr uint8_t kV2Proxy = 0x21;  // version 2, command PROXY
constexpr uint8_t kV2Local = 0x20;  // version 2, command LOCAL
constexpr uint8_t kV2Tcp4 = 0x11;
constexpr uint8_t kV2Tcp6 = 0x21;
constexpr uint8_t kV2Unspec = 0x00;

// Both addresses in one family: IPv4 when both are, IPv6 (v4 mapped) when either is,
// AF_UNSPEC when either is something else.
struct Pair {
  int family = AF_UNSPEC;
  sockaddr_in6 a6[2]{};
  sockaddr_in a4[2]{};
};

void map_v4(const sockaddr_in& in, sockaddr_in6* out) {
  *out = sockaddr_in6{};
  out->sin6_family = AF_INET6;
  out->sin6_port = in.sin_port;
  out->sin6_addr.s6_addr[10] = 0xff;
  out->sin6_addr.s6_addr[11] = 0xff;
  std::memcpy(&out->sin6_addr.s6_addr[12], &in.sin_addr, 4);
}

Pair pair_of(const sockaddr_storage& src, const sockaddr_storage& dst) {
  Pair p;
  const sockaddr_storage* s[2] = {&src, &dst};
  const bool v4 = src.ss_family == AF_INET && dst.ss_family == AF_INET;
  const bool known = (src.ss_family == AF_INET || src.ss_family == AF_INET6) &&
                     (dst.ss_family == AF_INET || dst.ss_family == AF_INET6);
  if (!known) return p;
  for (int i = 0; i < 2; ++i) {
    if (v4) {
      std::memcpy(&p.a4[i], s[i], sizeof(sockaddr_in));
    } else if (s[i]->ss_family == AF_INET) {
      sockaddr_in in;
      std::memcpy(&in, s[i], sizeof in);
      map_v4(in, &p.a6[i]);
    } else {
      std::memcpy(&p.a6[i], s[i], sizeof(sockaddr_in6));
    }
  }
  p.family = v4 ? AF_INET : AF_INET6;
  return p;
}

void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
uint16_t get16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

long parse_v2(const uint8_t* in, size_t len, sockaddr_storage* src, sockaddr_storage* dst) {
  if (len < 16) return 0;
  const uint8_t ver_cmd = in[12];
  if (ver_cmd != kV2Proxy && ver_cmd != kV2Local) return -1;
  const size_t body = get16(in + 14);
  if (len < 16 + body) return 0;
  const uint8_t fam = in[13];
  const uint8_t* b = in + 16;
  *src = sockaddr_storage{};
  *dst = sockaddr_storage{};
  if (ver_cmd == kV2Local || fam == kV2Unspec) return static_cast<long>(16 + body);
  if (fam == kV2Tcp4) {
    if (body < 12) return -1;
    sockaddr_in a{}, c{};
    a.sin_family = c.sin_family = AF_INET;
    std::memcpy(&a.sin_addr, b, 4);
    std::memcpy(&c.sin_addr, b + 4, 4);
    std::memcpy(&a.sin_port, b + 8, 2);
    std::memcpy(&c.sin_port, b + 10, 2);
    std::memcpy(src, &a, sizeof a);
    std::memcpy(dst, &c, sizeof c);
  } else if (fam == kV2Tcp6) {
    if (body < 36) return -1;
    sockaddr_in6 a{}, c{};
    a.sin6_family = c.sin6_family = AF_INET6;
    std::memcpy(&a.sin6_addr, b, 16);
    std::memcpy(&c.sin6_addr, b + 16, 16);
    std::memcpy(&a.sin6_port, b + 32, 2);
    std::memcpy(&c.sin6_port, b + 34, 2);
    std::memcpy(src, &a, sizeof a);
    std::memcpy(dst, &c, sizeof c);
  } else {
    return -1;  // UDP and unix families: ringpoll-proxy never writes them
  }
  return static_cast<long>(16 + body);
}

bool parse_port(std::string_view s, uint16_t* out) {
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v > 65535) return false;
  *out = static_cast<uint16_t>(v);
  return true;
}

bool parse_ip(int family, std::string_view s, void* out) {
  char buf[INET6_ADDRSTRLEN];
  if (s.empty() || s.size() >= sizeof buf) return false;
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  return inet_pton(family, buf, out) == 1;
}

long parse_v1(const uint8_t* in, size_t len, sockaddr_storage* src, sockaddr_storage* dst) {
  const size_t scan = len < kProxyV1MaxBytes ? len : kProxyV1MaxBytes;
  size_t end = 0;
  while (end + 1 < scan && !(in[end] == '\r' && in[end + 1] == '\n')) ++end;
  if (end + 1 >= scan) return len < kProxyV1MaxBytes ? 0 : -1;
  std::string_view line(reinterpret_cast<const char*>(in), end);
  std::string_view tok[6];
  size_t n = 0;
  while (!line.empty()) {
    const size_t sp = line.find(' ');
    if (n == 6) return -1;
    tok[n++] = line.substr(0, sp);
    if (sp == std::string_view::npos) break;
    line.remove_prefix(sp + 1);
  }
  *src = sockaddr_storage{};
  *dst = sockaddr_storage{};
  if (n >= 2 && tok[0] == "PROXY" && tok[1] == "UNKNOWN") return static_cast<long>(end + 2);
  if (n != 6 || tok[0] != "PROXY") return -1;
  uint16_t sp, dp;
  if (!parse_port(tok[4], &sp) || !parse_port(tok[5], &dp)) return -1;
  if (tok[1] == "TCP4") {
    sockaddr_in a{}, c{};
    a.sin_family = c.sin_family = AF_INET;
    if (!parse_ip(AF_INET, tok[2], &a.sin_addr) || !parse_ip(AF_INET, tok[3], &c.sin_addr))
      return -1;
    a.sin_port = htons(sp);
    c.sin_port = htons(dp);
    std::memcpy(src, &a, sizeof a);
    std::memcpy(dst, &c, sizeof c);
  } else if (tok[1] == "TCP6") {
    sockaddr_in6 a{}, c{};
    a.sin6_family = c.sin6_family = AF_INET6;
    if (!parse_ip(AF_INET6, tok[2], &a.sin6_addr) || !parse_ip(AF_INET6, tok[3], &c.sin6_addr))
      return -1;
    a.sin6_port = htons(sp);
    c.sin6_port = htons(dp);
    std::memcpy(src, &a, sizeof a);
    std::memcpy(dst, &c, sizeof c);
  } else {
    return -1;
  }
  return static_cast<long>(end + 2);
}

}  // namespace

size_t write_proxy_v1(const sockaddr_storage& src, const sockaddr_storage& dst, char* out,
                      size_t cap) {
  const Pair p = pair_of(src, dst);
  char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
  int n;
  if (p.family == AF_INET) {
    inet_ntop(AF_INET, &p.a4[0].sin_addr, a, sizeof a);
    inet_ntop(AF_INET, &p.a4[1].sin_addr, b, sizeof b);
    n = std::snprintf(out, cap, "PROXY TCP4 %s %s %u %u\r\n", a, b, ntohs(p.a4[0].sin_port),
                      ntohs(p.a4[1].sin_port));
  } else if (p.family == AF_INET6) {
    inet_ntop(AF_INET6, &p.a6[0].sin6_addr, a, sizeof a);
    inet_ntop(AF_INET6, &p.a6[1].sin6_addr, b, sizeof b);
    n = std::snprintf(out, cap, "PROXY TCP6 %s %s %u %u\r\n", a, b, ntohs(p.a6[0].sin6_port),
                      ntohs(p.a6[1].sin6_port));
  } else {
    n = std::snprintf(out, cap, "PROXY UNKNOWN\r\n");
  }
  if (n < 0 || static_cast<size_t>(n) >= cap) return 0;
  return static_cast<size_t>(n);
}

size_t write_proxy_v2(const sockaddr_storage& src, const sockaddr_storage& dst, uint8_t* out,
                      size_t cap) {
  const Pair p = pair_of(src, dst);
  const size_t body = p.family == AF_INET ? 12 : p.family == AF_INET6 ? 36 : 0;
  if (cap < 16 + body) return 0;
  std::memcpy(out, kV2Signature, sizeof kV2Signature);
  out[12] = kV2Proxy;
  out[13] = p.family == AF_INET ? kV2Tcp4 : p.family == AF_INET6 ? kV2Tcp6 : kV2Unspec;
  put16(out + 14, static_cast<uint16_t>(body));
  uint8_t* b = out + 16;
  if (p.family == AF_INET) {
    std::memcpy(b, &p.a4[0].sin_addr, 4);
    std::memcpy(b + 4, &p.a4[1].sin_addr, 4);
    std::memcpy(b + 8, &p.a4[0].sin_port, 2);
    std::memcpy(b + 10, &p.a4[1].sin_port, 2);
  } else if (p.family == AF_INET6) {
    std::memcpy(b, &p.a6[0].sin6_addr, 16);
    std::memcpy(b + 16, &p.a6[1].sin6_addr, 16);
    std::memcpy(b + 32, &p.a6[0].sin6_port, 2);
    std::memcpy(b + 34, &p.a6[1].sin6_port, 2);
  }
  return 16 + body;
}

long parse_proxy_header(const uint8_t* in, size_t len, sockaddr_storage* src,
                        sockaddr_storage* dst) {
  if (len == 0) return 0;
  if (in[0] == kV2Signature[0]) {
    const size_t k = len < sizeof kV2Signature ? len : sizeof kV2Signature;
    if (std::memcmp(in, kV2Signature, k) != 0) return -1;
    return parse_v2(in, len, src, dst);
  }
  static constexpr char kV1[] = "PROXY ";
  const size_t k = len < 6 ? len : 6;
  if (std::memcmp(in, kV1, k) != 0) return -1;
  return parse_v1(in, len, src, dst);
}

}  // namespace ringpoll::proxy
