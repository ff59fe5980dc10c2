#include "ktls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifndef TCP_ULP
#define TCP_ULP 31  // linux/tcp.h; older libc headers lack it
#endif

namespace ringpoll::tls {
namespace {

std::string errno_text(const char* step, int e) {
  return std::string(step) + ": " + std::strerror(e);
}

// Closes the descriptors it was given on every path.
struct Fds {
  int l = -1, c = -1, a = -1;
  ~Fds() {
    for (int fd : {l, c, a}) {
      if (fd >= 0) ::close(fd);
    }
  }
};

}  // namespace

KtlsProbe probe_ktls() {
  KtlsProbe p;
  Fds f;
  // TCP_ULP needs an established socket, so the probe connects to itself on loopback.
  f.l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (f.l < 0) return {false, errno_text("socket", errno)};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(f.l, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || ::listen(f.l, 1) < 0 ||
      ::getsockname(f.l, reinterpret_cast<sockaddr*>(&a), &len) < 0) {
    return {false, errno_text("loopback listener", errno)};
  }
  f.c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (f.c < 0 || ::connect(f.c, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
    return {false, errno_text("loopback connect", errno)};
  }
  f.a = ::accept4(f.l, nullptr, nullptr, SOCK_CLOEXEC);
  if (f.a < 0) return {false, errno_text("loopback accept", errno)};
  if (::setsockopt(f.c, IPPROTO_TCP, TCP_ULP, "tls", 3) < 0) {
    // ENOENT: no tls module in this kernel (CONFIG_TLS off or not loaded).
    return {false, errno_text("TCP_ULP tls", errno)};
  }
  p.available = true;
  p.why = "TCP_ULP tls accepted";
  return p;
}

const KtlsProbe& process_ktls() {
  static const KtlsProbe p = probe_ktls();  // thread-safe once (C++11 statics)
  return p;
}

std::string record_path_line() {
  const KtlsProbe& p = process_ktls();
  if (!p.available) return "userspace (kTLS unavailable: " + p.why + ")";
  return "userspace (kernel offers kTLS; hand-over not built)";
}

}  // namespace ringpoll::tls
