#pragma once
// The fairness tests' probe (DESIGN.md "Fairness"): while some peers hold a shard's
// resources, other clients make round trips and the probe reports how many were answered
// and the 99th percentile of their latency. Blocking sockets, every wait bounded.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/net.h"
#include "support/byte_stream.h"

namespace ringpoll::test {

// Waits at most timeout_ms for fd to be readable; false on timeout.
inline bool readable_within(int fd, int timeout_ms) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    return r > 0;
  }
}

// Appends to *buf until it holds n bytes; false when timeout_ms pass without data, or the
// stream ends first.
inline bool fill_to(int fd, std::string* buf, size_t n, int timeout_ms) {
  char tmp[65536];
  while (buf->size() < n) {
    if (!readable_within(fd, timeout_ms)) return false;
    const ssize_t k = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) return false;
    buf->append(tmp, static_cast<size_t>(k));
  }
  return true;
}

// Reads one HTTP/1.1 response framed by Content-Length from fd (bytes past it stay in
// *buf). Returns its status, or 0 on timeout, end of stream or a malformed head.
inline int read_http_response(int fd, std::string* buf, std::string* body, int timeout_ms) {
  size_t end;
  while ((end = buf->find("\r\n\r\n")) == std::string::npos) {
    if (!fill_to(fd, buf, buf->size() + 1, timeout_ms)) return 0;
  }
  const std::string head = buf->substr(0, end + 4);
  buf->erase(0, end + 4);
  if (head.size() < 12 || head.rfind("HTTP/1.1 ", 0) != 0) return 0;
  const size_t cl = head.find("\r\nContent-Length: ");
  if (cl == std::string::npos) return 0;
  const size_t len = std::stoull(head.substr(cl + 18));
  if (!fill_to(fd, buf, len, timeout_ms)) return 0;
  if (body) *body = buf->substr(0, len);
  buf->erase(0, len);
  return std::stoi(head.substr(9, 3));
}

struct ProbeResult {
  int asked = 0;
  int answered = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

enum class ProbeKind { kEcho, kHttp };

// `clients` connections to `at`, each making `rounds` round trips in turn (an echo of 100
// bytes, or GET /plaintext), each answer awaited at most 2 s. A round trip that is not
// answered counts as asked and not answered, and ends that client.
inline ProbeResult probe(const SocketAddress& at, ProbeKind kind, int clients, int rounds) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> ms;
  ProbeResult r;
  const std::string echo_msg(100, 'p');
  const std::string get = "GET /plaintext HTTP/1.1\r\nHost: probe\r\n\r\n";
  std::vector<int> fds;
  for (int c = 0; c < clients; ++c) {
    const int fd = socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, at.sa(), at.len) != 0) {
      if (fd >= 0) ::close(fd);
      r.asked += rounds;
      continue;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fds.push_back(fd);
  }
  std::vector<std::string> bufs(fds.size());
  std::vector<bool> alive(fds.size(), true);
  for (int i = 0; i < rounds; ++i) {
    for (size_t c = 0; c < fds.size(); ++c) {
      ++r.asked;
      if (!alive[c]) continue;
      const auto t0 = Clock::now();
      bool ok;
      if (kind == ProbeKind::kEcho) {
        ok = send_all(fds[c], echo_msg.data(), echo_msg.size()) &&
             fill_to(fds[c], &bufs[c], echo_msg.size(), 2000) &&
             bufs[c].compare(0, echo_msg.size(), echo_msg) == 0;
        bufs[c].clear();
      } else {
        std::string body;
        ok = send_all(fds[c], get.data(), get.size()) &&
             read_http_response(fds[c], &bufs[c], &body, 2000) == 200;
      }
      if (!ok) {
        alive[c] = false;
        continue;
      }
      ++r.answered;
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  }
  for (int fd : fds) ::close(fd);
  if (!ms.empty()) {
    std::sort(ms.begin(), ms.end());
    r.p99_ms = ms[std::min(ms.size() - 1, static_cast<size_t>(ms.size() * 0.99))];
    r.max_ms = ms.back();
  }
  return r;
}

// Raises the soft RLIMIT_NOFILE to `want` (within the hard limit); false when the hard
// limit is lower. The previous limit is restored by the returned guard's destructor.
struct FdLimit {
  rlimit saved{};
  bool ok = false;
  explicit FdLimit(rlim_t want) {
    getrlimit(RLIMIT_NOFILE, &saved);
    if (saved.rlim_cur >= want) {
      ok = true;
      return;
    }
    if (saved.rlim_max < want) return;
    rlimit r{want, saved.rlim_max};
    ok = setrlimit(RLIMIT_NOFILE, &r) == 0;
  }
  ~FdLimit() { setrlimit(RLIMIT_NOFILE, &saved); }
};

}  // namespace ringpoll::test
