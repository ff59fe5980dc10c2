#pragma once
// PROXY protocol headers (HAProxy's spec, versions 1 and 2) that ringpoll-proxy writes to
// an upstream before the client's first byte, so the upstream learns the client's address.
//
//   v1: one text line, "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (TCP6 for IPv6,
//       "PROXY UNKNOWN\r\n" when the family is neither), at most 107 bytes.
//   v2: a 12-byte signature, version/command, family/protocol, a big-endian length, then
//       the addresses in binary (12 bytes for IPv4, 36 for IPv6, none for UNSPEC).
//
// Both writers are pure functions on caller-owned memory: no allocation, no I/O. A mixed
// pair (IPv4 source, IPv6 destination) is written with both mapped into IPv6.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

namespace ringpoll::proxy {

inline constexpr size_t kProxyV1MaxBytes = 107;  // the spec's bound, CRLF included
inline constexpr size_t kProxyV2MaxBytes = 16 + 36;
inline constexpr size_t kProxyHeaderMaxBytes =
    kProxyV2MaxBytes > kProxyV1MaxBytes ? kProxyV2MaxBytes : kProxyV1MaxBytes;

// Writes the header into out[0..cap) and returns its length, or 0 when cap is too small.
size_t write_proxy_v1(const sockaddr_storage& src, const sockaddr_storage& dst, char* out,
                      size_t cap);
size_t write_proxy_v2(const sockaddr_storage& src, const sockaddr_storage& dst, uint8_t* out,
                      size_t cap);

// Reads a header back (for tests, fuzzing and upstreams written with ringpoll). Returns the
// header's length, 0 when more bytes are needed, -1 when the bytes are not a valid header.
// On success *src / *dst hold the addresses (AF_UNSPEC for UNKNOWN / LOCAL).
long parse_proxy_header(const uint8_t* in, size_t len, sockaddr_storage* src,
                        sockaddr_storage* dst);

}  // namespace ringpoll::proxy
