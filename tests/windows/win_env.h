#pragma once
// Helpers of the Windows (IOCP, under Wine) suite: the counterparts of
// tests/support/test_env.h with Winsock sockets. Every wait is bounded in time.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "engine/poll_fd.h"
#include "engine/scheduler.h"
#include "iocp/iocp_poller.h"

namespace ringpoll::test {

inline constexpr int64_t kMs = 1'000'000;
inline constexpr int64_t kSec = 1'000'000'000;

// The backend as shipped (skip-on-success when every provider is IFS: off under Wine),
// with it off, and with it forced on (results ready at submit are taken inline).
using IocpBackends = ::testing::Types<IocpPoller, IocpPollerNoSkip, IocpPollerForceSkip>;

struct BackendName {
  template <class P>
  static std::string GetName(int) {
    std::string n = P::kName;
    for (char& c : n) {
      if (c == '-') c = '_';
    }
    return n;
  }
};

// Winsock for the test process (the backend starts it too; the count nests).
class WinsockEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    WSADATA d;
    ASSERT_EQ(WSAStartup(MAKEWORD(2, 2), &d), 0);
  }
  void TearDown() override { WSACleanup(); }
};

inline void close_fd(int fd) {
  if (fd >= 0) closesocket(static_cast<SOCKET>(static_cast<unsigned>(fd)));
}
inline SOCKET sock(int fd) {
  return static_cast<SOCKET>(static_cast<unsigned>(fd));
}

struct FdPair {
  int a = -1;
  int b = -1;
  ~FdPair() {
    close_fd(a);
    close_fd(b);
  }
  int take_a() { return std::exchange(a, -1); }
  int take_b() { return std::exchange(b, -1); }
};

// A listening TCP socket on 127.0.0.1, an ephemeral port.
inline int tcp_listener(uint16_t* port) {
  const SOCKET l = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
  if (l == INVALID_SOCKET) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(l, 128) != 0) {
    closesocket(l);
    return -1;
  }
  int len = sizeof a;
  getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return static_cast<int>(l);
}

inline sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// A blocking connect to 127.0.0.1:port.
inline int tcp_connect(uint16_t port) {
  const SOCKET c = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
  if (c == INVALID_SOCKET) return -1;
  const sockaddr_in a = loopback(port);
  if (connect(c, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    closesocket(c);
    return -1;
  }
  return static_cast<int>(c);
}

// A connected TCP pair on loopback (a: accepted side, b: connecting side).
inline void tcp_pair(FdPair& p) {
  uint16_t port = 0;
  const int l = tcp_listener(&port);
  ASSERT_GE(l, 0);
  p.b = tcp_connect(port);
  ASSERT_GE(p.b, 0);
  const SOCKET a = accept(sock(l), nullptr, nullptr);
  close_fd(l);
  ASSERT_NE(a, INVALID_SOCKET);
  p.a = static_cast<int>(a);
}

inline void put(int fd, const char* s) {
  ASSERT_EQ(::send(sock(fd), s, static_cast<int>(strlen(s)), 0), static_cast<int>(strlen(s)));
}

inline int readable_bytes(int fd) {
  u_long n = 0;
  if (ioctlsocket(sock(fd), FIONREAD, &n) != 0) return -1;
  return static_cast<int>(n);
}

// Reads (blocking) exactly n bytes, or fewer on EOF/error; returns what was read.
inline size_t recv_exact(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    const int r = ::recv(sock(fd), buf + got, static_cast<int>(n - got), 0);
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

inline void sleep_ms(int ms) {
  Sleep(static_cast<DWORD>(ms));
}

// Sleeps until the monotonic clock reaches t.
inline void sleep_until_ns(int64_t t) {
  for (int i = 0; i < 100000; ++i) {
    const int64_t now = mono_now_ns();
    if (now >= t) return;
    Sleep(static_cast<DWORD>((t - now) / kMs + 1));
  }
}

// Bounds a blocking recv on a test's plain socket, so a missing byte fails, never hangs.
inline void recv_timeout(int fd, DWORD ms) {
  setsockopt(sock(fd), SOL_SOCKET, SO_RCVTIMEO, reinterpret_cast<const char*>(&ms), sizeof ms);
}

template <class P>
class Env {
 public:
  explicit Env(SchedulerOptions o = {}) : s(o) {}
  Scheduler<P> s;

  // Runs tasks, timers and I/O until pred() holds or timeout_ns passes; returns pred().
  bool run_until(const std::function<bool()>& pred, int64_t timeout_ns = 10 * kSec) {
    const int64_t end = mono_now_ns() + timeout_ns;
    for (;;) {
      s.run_ready();
      s.fire_timers();
      s.run_ready();
      if (pred()) return true;
      if (mono_now_ns() >= end) return false;
      int64_t w = s.next_wait_ns();
      if (w < 0 || w > 10 * kMs) w = 10 * kMs;
      s.poll_io(w);
    }
  }
  // Runs everything currently possible without blocking.
  void settle() {
    for (int i = 0; i < 4; ++i) {
      s.poll_io(0);
      s.fire_timers();
      s.run_ready();
    }
  }
};

// The conformance tests' connected pair: TCP on loopback (Winsock has no AF_UNIX pairs).
inline void connected_pair(FdPair& p) {
  tcp_pair(p);
}

// A write that the peer never reads stays in flight: loopback buffers hold a few MiB at
// most, so this many bytes cannot all be taken at once.
inline constexpr size_t kStuckWrite = size_t{48} << 20;
// Nothing to fill first (Linux fills the send buffer): kStuckWrite alone stays in flight.
inline void block_writes(int) {}

}  // namespace ringpoll::test

#include "support/poll_ops.h"

namespace ringpoll::test {

template <class P>
class IocpWine : public BackendFixture<P> {
 protected:
  // A connected TCP pair whose accepted end f owns, registered with this shard.
  bool open_tcp(FdPair& p, PollFd<P>& f) { return this->open_pair(p, f); }
};

TYPED_TEST_SUITE(IocpWine, IocpBackends, BackendName);

}  // namespace ringpoll::test
