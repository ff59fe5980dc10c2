#include "engine/net.h"

#include <arpa/inet.h>
#include <netdb.h>

#ifdef _WIN32
#include <mswsock.h>
#else
#include <unistd.h>
#endif

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

namespace ringpoll {

uint16_t SocketAddress::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::string SocketAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port());
  }
  if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
    // Built with append: GCC 12 at -O3 warns falsely (-Wrestrict) on "[" + std::string.
    std::string s;
    s.reserve(sizeof buf + 8);
    s.append(1, '[').append(buf).append("]:").append(std::to_string(port()));
    return s;
  }
  return "(unknown address family)";
}

namespace detail {

#ifdef _WIN32
int open_socket(int family, int type) noexcept {
  // Overlapped (the IOCP backend's operations) and not inherited (close-on-exec).
  const SOCKET s = WSASocketW(family, type, type == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP, nullptr,
                              0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET) {
    errno = iocp_errno(WSAGetLastError());
    return -1;
  }
  if (type == SOCK_DGRAM) {
    // A datagram answered by an ICMP port-unreachable would otherwise fail the socket's
    // next receive with WSAECONNRESET: a UDP server must not lose its socket to one
    // client that went away (POSIX reports nothing on an unconnected socket).
    BOOL off = FALSE;
    DWORD got = 0;
    WSAIoctl(s, SIO_UDP_CONNRESET, &off, sizeof off, nullptr, 0, &got, nullptr, nullptr);
  }
  return static_cast<int>(s);
}
void close_socket(int fd) noexcept {
  closesocket(static_cast<SOCKET>(static_cast<unsigned>(fd)));
}
#else
int open_socket(int family, int type) noexcept {
  return ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}
void close_socket(int fd) noexcept {
  ::close(fd);
}
#endif

Status check_port_unshared(const SocketAddress& at, std::string* why) {
  if (at.port() == 0) return Status();  // the kernel picks a free port
  const int fd = open_socket(at.family(), SOCK_STREAM);
  if (fd < 0) return Status::from_errno(errno);
  // SO_REUSEADDR as the real listeners have it, so connections of an earlier run left in
  // TIME_WAIT do not count; without SO_REUSEPORT, so any socket listening there does.
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const int rc = ::bind(fd, at.sa(), at.len);
  const int e = rc < 0 ? errno : 0;
  close_socket(fd);
  if (e == 0) return Status();
  if (why) {
    *why = "bind " + at.to_string() + ": " + Status::from_errno(e).message();
    if (e == EADDRINUSE)
      *why +=
          " (another socket already listens on this port — a second instance still "
          "running? With SO_REUSEPORT it would silently take part of the connections; "
          "stop it, or set ListenOptions::allow_shared_port / socket.allow_shared_port "
          "to share the port on purpose)";
  }
  return Status::from_errno(e);
}

bool split_host_port(std::string_view text, std::string* host, std::string* port,
                     std::string* why) {
  auto bad = [&](const std::string& m) {
    if (why) *why = m + " in \"" + std::string(text) + "\"";
    return false;
  };
  if (text.empty()) return bad("empty address");
  size_t colon;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ']' after an IPv6 address");
    *host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("missing ':port'");
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("missing ':port'");
    *host = std::string(text.substr(0, colon));
    if (host->find(':') != std::string::npos) {
      return bad("an IPv6 address must be written in brackets, as [::1]:80");
    }
  }
  *port = std::string(text.substr(colon + 1));
  if (port->empty()) return bad("missing port number after ':'");
  if (host->empty()) return bad("missing host before ':'");
  for (char c : *port) {
    if (c < '0' || c > '9') return bad("port \"" + *port + "\" is not a number");
  }
  if (port->size() > 5 || std::stoul(*port) > 65535)
    return bad("port " + *port + " is out of range 0-65535");
  return true;
}

namespace {
struct Resolver {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;
  Resolver() {
    std::thread([this] {
      for (;;) {
        std::function<void()> j;
        {
          std::unique_lock<std::mutex> l(mu);
          cv.wait(l, [&] { return !jobs.empty(); });
          j = std::move(jobs.front());
          jobs.pop_front();
        }
        j();
      }
    }).detach();
  }
};
Resolver& resolver() {
  static Resolver* r = new Resolver();  // lives for the process
  return *r;
}
}  // namespace

void resolve_async(std::string host, std::string port, SocketAddress* out, std::string* why,
                   std::function<void(Status)> done) {
  Resolver& r = resolver();
  std::lock_guard<std::mutex> l(r.mu);
  r.jobs.push_back([host, port, out, why, done] {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0 || !res) {
      if (why) *why = "cannot resolve \"" + host + "\": " + gai_strerror(rc);
      done(Errc::kInvalidArgument);
      return;
    }
    std::memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    done(Status());
  });
  r.cv.notify_one();
}

}  // namespace detail

Status parse_address(std::string_view text, SocketAddress* out, std::string* why) {
  std::string host, port;
  if (!detail::split_host_port(text, &host, &port, why)) return Errc::kInvalidArgument;
  const auto p = static_cast<uint16_t>(std::stoul(port));
  SocketAddress a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(p);
    a.len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(p);
    a.len = sizeof(sockaddr_in6);
  } else {
    if (why) *why = "\"" + host + "\" is not an IPv4 or IPv6 literal (names need resolve())";
    return Errc::kInvalidArgument;
  }
  *out = a;
  return Status();
}

}  // namespace ringpoll
