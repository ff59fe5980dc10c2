#pragma once
// Blocking sockets for the proxy's tests: upstreams and clients on their own threads, so
// the proxy under test is the only thing running on the engine.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/net.h"
#include "support/byte_stream.h"
#include "support/fairness.h"

namespace ringpoll::test {

inline int listen_on(uint16_t* port, int backlog = 128) {
  const int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || listen(l, backlog) < 0) {
    ::close(l);
    return -1;
  }
  socklen_t len = sizeof a;
  getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return l;
}

// A listener that never accepts, its queue filled by four connections: further SYNs are
// dropped, so a connect to `at` neither succeeds nor fails until the connector's timeout.
struct FullListener {
  FullListener() {
    uint16_t port = 0;
    fd = listen_on(&port, 0);
    parse_address("127.0.0.1:" + std::to_string(port), &at);
    for (int i = 0; i < 4; ++i) {
      const int f = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      ::connect(f, at.sa(), at.len);
      fillers.push_back(f);
    }
  }
  ~FullListener() {
    for (int f : fillers) ::close(f);
    ::close(fd);
  }
  FullListener(const FullListener&) = delete;
  FullListener& operator=(const FullListener&) = delete;
  int fd = -1;
  SocketAddress at;
  std::vector<int> fillers;
};

inline int connect_to(const SocketAddress& at) {
  const int c = socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  for (int i = 0; i < 100; ++i) {
    if (::connect(c, at.sa(), at.len) == 0) return c;
    if (errno != EINTR) break;
  }
  ::close(c);
  return -1;
}

// Reads until EOF or error (or max bytes); returns what arrived.
inline std::string recv_all(int fd, size_t max = SIZE_MAX) {
  std::string s;
  char buf[65536];
  while (s.size() < max) {
    const ssize_t k = ::recv(fd, buf, std::min(sizeof buf, max - s.size()), 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    s.append(buf, static_cast<size_t>(k));
  }
  return s;
}

// Sends `msg` and reads exactly its length back: what came back ("(end)" or "(error)"
// appended when the stream stopped short).
inline std::string round_trip(int fd, const std::string& msg) {
  if (!send_all(fd, msg.data(), msg.size())) return "(send failed)";
  std::string back(msg.size(), '\0');
  size_t n = 0;
  while (n < back.size()) {
    const ssize_t k = ::recv(fd, back.data() + n, back.size() - n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return back.substr(0, n) + (k == 0 ? "(end)" : "(error)");
    n += static_cast<size_t>(k);
  }
  return back;
}

// Waits (bounded) for EOF or a reset on fd; true when the peer closed within `secs`.
inline bool closed_within(int fd, int secs) {
  pollfd p{fd, POLLIN, 0};
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(secs);
  while (std::chrono::steady_clock::now() < end) {
    const int r = ::poll(&p, 1, 100);
    if (r < 0 && errno == EINTR) continue;
    if (r > 0) {
      char c;
      const ssize_t k = ::recv(fd, &c, 1, MSG_DONTWAIT);
      if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) return true;
    }
  }
  return false;
}

// The output of a shell command (bounded by `timeout` inside it), and its exit status.
inline std::string shell(const std::string& cmd, int* rc = nullptr) {
  std::string out;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, k);
  const int st = pclose(f);
  if (rc) *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

template <class Pred>
bool wait_for(Pred pred, int secs = 10) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(secs);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

// One line from fd (a child's stdout), waiting at most `secs` in all.
inline std::string read_line(int fd, int secs = 10) {
  std::string line;
  for (int i = 0; i < secs * 100; ++i) {
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, 10) <= 0) continue;
    char ch;
    if (::read(fd, &ch, 1) != 1 || ch == '\n') break;
    line.push_back(ch);
  }
  return line;
}

// The pid in "... pid N)" of an upgraded proxy's start line, or -1.
inline pid_t pid_in(const std::string& line) {
  const size_t k = line.rfind("pid ");
  return k == std::string::npos ? -1 : static_cast<pid_t>(std::atoi(line.c_str() + k + 4));
}

// A file in /tmp holding `text` (a config for the proxy binary); its path, "" on failure.
inline std::string temp_file(const std::string& text) {
  char path[] = "/tmp/ringpoll-proxy-test-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return "";
  ::close(fd);
  std::ofstream(path) << text;
  return path;
}

// A blocking upstream on 127.0.0.1: an accept thread, and `fn(fd)` on a thread per
// connection.
class TestUpstream {
 public:
  explicit TestUpstream(std::function<void(int)> fn, int backlog = 128) : fn_(std::move(fn)) {
    lfd_ = listen_on(&port_, backlog);
    parse_address("127.0.0.1:" + std::to_string(port_), &addr_);
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~TestUpstream() {
    ::shutdown(lfd_, SHUT_RDWR);
    thread_.join();
    {
      std::lock_guard<std::mutex> l(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : conns_) t.join();
    for (int fd : fds_) ::close(fd);
    ::close(lfd_);
  }
  const SocketAddress& address() const { return addr_; }
  int accepted() const { return accepted_.load(); }

 private:
  void accept_loop() {
    for (;;) {
      const int c = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;
      }
      accepted_.fetch_add(1);
      std::lock_guard<std::mutex> l(mu_);
      fds_.push_back(c);
      conns_.emplace_back([this, c] { fn_(c); });
    }
  }
  std::function<void(int)> fn_;
  int lfd_ = -1;
  uint16_t port_ = 0;
  SocketAddress addr_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> conns_;
  std::atomic<int> accepted_{0};
};

inline void echo(int fd) {
  char buf[65536];
  for (;;) {
    const ssize_t k = ::recv(fd, buf, sizeof buf, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0 || !send_all(fd, buf, static_cast<size_t>(k))) break;
  }
  ::shutdown(fd, SHUT_WR);
}

// GET path on the admin endpoint, each wait bounded by 2 s; the status (0: no answer).
inline int admin_get(const SocketAddress& at, const std::string& path, std::string* body) {
  const int c = connect_to(at);
  if (c < 0) return 0;
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string buf;
  const int status =
      send_all(c, req.data(), req.size()) ? read_http_response(c, &buf, body, 2000) : 0;
  ::close(c);
  return status;
}

// A port nothing listens on.
inline SocketAddress dead_address() {
  uint16_t port = 0;
  const int l = listen_on(&port);
  ::close(l);
  SocketAddress a;
  parse_address("127.0.0.1:" + std::to_string(port), &a);
  return a;
}

// ---- UDP (the proxy's UDP mode) ----

inline int udp_socket(int timeout_ms) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  (void)bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const int big = 1 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  return fd;
}

inline SocketAddress local_of(int fd) {
  SocketAddress a;
  a.len = sizeof a.ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a.ss), &a.len);
  return a;
}

// A UDP upstream: answers every datagram with `tag` followed by the datagram, and
// remembers the source ports it saw (one per proxy flow).
class UdpUpstream {
 public:
  explicit UdpUpstream(char tag) : tag_(tag), fd_(udp_socket(50)) {
    t_ = std::thread([this] {
      std::vector<char> buf(70000);
      while (!stop_.load()) {
        sockaddr_storage from{};
        socklen_t fl = sizeof from;
        const ssize_t n = recvfrom(fd_, buf.data() + 1, buf.size() - 1, 0,
                                   reinterpret_cast<sockaddr*>(&from), &fl);
        if (n < 0) continue;
        buf[0] = tag_;
        {
          std::lock_guard<std::mutex> l(mu_);
          ports_.insert(reinterpret_cast<sockaddr_in*>(&from)->sin_port);
          ++datagrams_;
        }
        (void)sendto(fd_, buf.data(), static_cast<size_t>(n) + 1, 0,
                     reinterpret_cast<sockaddr*>(&from), fl);
      }
    });
  }
  ~UdpUpstream() {
    stop_.store(true);
    t_.join();
    ::close(fd_);
  }
  SocketAddress address() const { return local_of(fd_); }
  size_t sources() {
    std::lock_guard<std::mutex> l(mu_);
    return ports_.size();
  }
  size_t datagrams() {
    std::lock_guard<std::mutex> l(mu_);
    return datagrams_;
  }

 private:
  char tag_;
  int fd_;
  std::atomic<bool> stop_{false};
  std::thread t_;
  std::mutex mu_;
  std::set<uint16_t> ports_;
  size_t datagrams_ = 0;
};

// A client: one UDP socket. ask() sends and returns the reply ("" on timeout).
struct UdpClient {
  explicit UdpClient(int timeout_ms = 2000) : fd(udp_socket(timeout_ms)) {}
  ~UdpClient() { ::close(fd); }
  std::string ask(const SocketAddress& to, const std::string& msg) {
    if (sendto(fd, msg.data(), msg.size(), 0, to.sa(), to.len) < 0) return "sendto failed";
    std::string buf(70000, '\0');
    ssize_t n;
    do {
      n = recv(fd, buf.data(), buf.size(), 0);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? "" : buf.substr(0, static_cast<size_t>(n));
  }
  int fd;
};

// a + b (a helper: GCC 12's -Wrestrict misfires on operator+ of short strings at -O3).
[[gnu::noinline]] inline std::string cat(const std::string& a, const std::string& b) {
  std::string r;
  r.reserve(a.size() + b.size());
  r.append(a);
  r.append(b);
  return r;
}

}  // namespace ringpoll::test
