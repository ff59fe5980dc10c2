#pragma once
// Blocking-socket helpers shared by the unit and proxy suites: a deterministic byte
// stream that a receiver checks without keeping a copy, and a peer that writes without
// ever reading (the fairness tests' slow client, DESIGN.md "Fairness").
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace ringpoll::test {

inline bool send_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t k = ::send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    c += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// A deterministic byte stream (xorshift), so receivers check every byte without keeping a
// copy: 100 MiB each way stays cheap.
struct Stream {
  uint64_t x;
  explicit Stream(uint64_t seed) : x(seed * 0x9E3779B97F4A7C15ull + 1) {}
  void fill(char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      p[i] = static_cast<char>(x);
    }
  }
};
// A text repeated without end (pipelined requests).
struct Repeat {
  std::string text;
  size_t at = 0;
  void fill(char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      p[i] = text[at];
      at = at + 1 == text.size() ? 0 : at + 1;
    }
  }
};
inline bool send_stream(int fd, uint64_t seed, size_t n) {
  Stream s(seed);
  char buf[65536];
  while (n > 0) {
    const size_t k = std::min(n, sizeof buf);
    s.fill(buf, k);
    if (!send_all(fd, buf, k)) return false;
    n -= k;
  }
  return true;
}
// Reads to EOF; returns the byte count, or SIZE_MAX at the first byte that differs.
inline size_t check_stream(int fd, uint64_t seed) {
  Stream s(seed);
  char buf[65536], want[65536];
  size_t total = 0;
  for (;;) {
    const ssize_t k = ::recv(fd, buf, sizeof buf, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return total;
    s.fill(want, static_cast<size_t>(k));
    if (std::memcmp(buf, want, static_cast<size_t>(k)) != 0) return SIZE_MAX;
    total += static_cast<size_t>(k);
  }
}
// Reads exactly n bytes of stream `seed`, waiting at most `idle_ms` for each piece;
// returns the count that arrived and matched (n when all did), SIZE_MAX at a wrong byte.
inline size_t check_stream_n(int fd, uint64_t seed, size_t n, int idle_ms = 10000) {
  Stream s(seed);
  char buf[65536], want[65536];
  size_t total = 0;
  while (total < n) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, idle_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return total;
    const ssize_t k = ::recv(fd, buf, std::min(sizeof buf, n - total), MSG_DONTWAIT);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) return total;
    s.fill(want, static_cast<size_t>(k));
    if (std::memcmp(buf, want, static_cast<size_t>(k)) != 0) return SIZE_MAX;
    total += static_cast<size_t>(k);
  }
  return total;
}

// A peer that writes and never reads: sends `s`'s bytes without blocking until its
// sends have met a full socket for `quiet` in a row (the far side stopped taking bytes),
// or `cap` bytes went out (the far side never stops: its memory is not bounded). What
// went out is the first `sent` bytes of the source.
struct Flood {
  size_t sent = 0;
  bool blocked = false;  // false: `cap` was reached first
};
// Source: anything with fill(char*, size_t) producing the bytes in order (Stream, Repeat).
template <class Source>
Flood flood_until_blocked(int fd, Source s, size_t cap, std::chrono::milliseconds quiet) {
  char buf[65536];
  size_t have = 0, off = 0;  // buf[off, have) is generated but not yet sent
  Flood f;
  auto last_progress = std::chrono::steady_clock::now();
  while (f.sent < cap) {
    if (off == have) {
      have = std::min(sizeof buf, cap - f.sent);
      off = 0;
      s.fill(buf, have);
    }
    const ssize_t k = ::send(fd, buf + off, have - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      off += static_cast<size_t>(k);
      f.sent += static_cast<size_t>(k);
      last_progress = std::chrono::steady_clock::now();
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
    if (std::chrono::steady_clock::now() - last_progress >= quiet) {
      f.blocked = true;
      break;
    }
    pollfd p{fd, POLLOUT, 0};
    (void)::poll(&p, 1, 10);
  }
  return f;
}

}  // namespace ringpoll::test
