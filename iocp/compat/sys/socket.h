#pragma once
#pragma GCC system_header  // a stand-in for a system header: no -Wpedantic on include_next
// Windows build only (iocp/compat is on the include path of the mingw-w64 build, never of
// the Linux one). engine/poll_fd.h is written against POSIX sockets; its completion path,
// the only one an IOCP backend takes for a socket it watches, needs just the names below.
// Its plain path (a socket the backend could not take) gets working send/read overloads;
// accept4 accepts without waiting (TcpServer takes a closing listener's backlog with it);
// the rest of the readiness-path calls (recvmsg, sendmsg) are declared so the template
// compiles and fail with ENOSYS.
//
// Descriptors are ints, as in the rest of ringpoll: a SOCKET is a kernel handle value, a
// small multiple of 4 in practice, so it round-trips through int. (A process with more
// than 2^31 handle values would break this; ringpoll's int descriptors are the limit.)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>

#include <sys/types.h>
#include <cerrno>
#include <cstddef>
#include <type_traits>

#include "sys/uio.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0  // Winsock never raises SIGPIPE
#endif
// Winsock has no per-call non-blocking flag; this bit (one Winsock never uses) asks the
// recv overload below for a non-blocking call, and send/sendto drop it (see there).
#ifndef MSG_DONTWAIT
#define MSG_DONTWAIT 0x40000000
#endif
#ifndef SOCK_NONBLOCK
#define SOCK_NONBLOCK 0x800
#endif
#ifndef SOCK_CLOEXEC
#define SOCK_CLOEXEC 0x80000
#endif
#ifndef SHUT_RD
#define SHUT_RD SD_RECEIVE
#define SHUT_WR SD_SEND
#define SHUT_RDWR SD_BOTH
#endif

struct msghdr {
  void* msg_name;
  socklen_t msg_namelen;
  iovec* msg_iov;
  size_t msg_iovlen;
  void* msg_control;
  size_t msg_controllen;
  int msg_flags;
};

namespace ringpoll {
int iocp_errno(int wsa_error) noexcept;  // iocp/iocp_poller.cc
}  // namespace ringpoll

namespace ringpoll::win {
inline int socket_errno_fail(int e) noexcept {
  errno = e;
  return -1;
}
// The few Winsock errors a plain (non-overlapped) call on a socket the backend could not
// take reports; the overlapped path maps the full set (iocp_errno).
inline int plain_call_fail() noexcept {
  const int e = WSAGetLastError();
  return socket_errno_fail(e == WSAEWOULDBLOCK    ? EAGAIN
                           : e == WSAEINTR        ? EINTR
                           : e == WSAENOTSOCK     ? ENOTSOCK
                           : e == WSAECONNRESET   ? ECONNRESET
                           : e == WSAECONNABORTED ? ECONNABORTED
                                                  : EIO);
}
// A failed setup call (bind, listen, setsockopt ...): errno from the full Winsock map, so
// the sockets layer's messages name the real cause (EADDRINUSE, EACCES ...).
inline int setup_call_fail() noexcept {
  return socket_errno_fail(ringpoll::iocp_errno(WSAGetLastError()));
}
inline SOCKET as_socket(int fd) noexcept {
  return static_cast<SOCKET>(static_cast<unsigned>(fd));
}
inline int clamp_len(size_t len) noexcept {
  return len > 0x7fffffff ? 0x7fffffff : static_cast<int>(len);
}

// Whether a read (or an accept) on s would find something now, without waiting: a
// zero-timeout WSAPoll. 1: it would; -1 with errno: nothing yet (EAGAIN), or the poll
// failed.
inline int readable_now(SOCKET s) noexcept {
  WSAPOLLFD p{};
  p.fd = s;
  p.events = POLLRDNORM;
  const int k = WSAPoll(&p, 1, 0);
  if (k == SOCKET_ERROR) return setup_call_fail();
  return k == 0 ? socket_errno_fail(EAGAIN) : 1;
}
// Winsock's own flags of a call, without MSG_DONTWAIT.
inline int winsock_flags(int flags) noexcept {
  return flags & ~MSG_DONTWAIT;
}
}  // namespace ringpoll::win

// Overloads of the Winsock calls taking the POSIX argument types (void* buffers, int
// descriptors); Winsock's own char* signatures stay visible beside them. They serve a
// socket the backend could not take (on another completion port: PollFd's plain,
// blocking path), as read(2)/send(2) serve an unpollable descriptor on Linux.
// A datagram send or a send on a socket the backend could not take: MSG_DONTWAIT is
// dropped (a UDP send does not wait for the peer; the plain path is a blocking one).
inline ssize_t send(int fd, const void* buf, size_t len, int flags) {
  const int n =
      ::send(static_cast<SOCKET>(static_cast<unsigned>(fd)), static_cast<const char*>(buf),
             ringpoll::win::clamp_len(len), ringpoll::win::winsock_flags(flags));
  return n == SOCKET_ERROR ? ringpoll::win::plain_call_fail() : n;
}
// recv(2) with an int descriptor and any buffer (a template constrained to an int
// descriptor, so that a call with a char* and an int length picks it over Winsock's, and a
// call with a SOCKET keeps Winsock's). With MSG_DONTWAIT it does not wait: a zero-timeout
// WSAPoll first, and nothing to read yet fails with EAGAIN, as a non-blocking recv(2) does
// (ringpoll-proxy's peeks at a client or an idle upstream, and the bulk relay's look, must
// not block a shard).
template <class F, class B, class L>
requires std::is_same_v<F, int> && std::is_integral_v<L> ssize_t recv(F fd, B* buf, L len,
                                                                      int flags) {
  const SOCKET s = ringpoll::win::as_socket(fd);
  if (flags & MSG_DONTWAIT) {
    if (const int k = ringpoll::win::readable_now(s); k <= 0) return k;
  }
  const int n =
      ::recv(s, reinterpret_cast<char*>(buf), ringpoll::win::clamp_len(static_cast<size_t>(len)),
             ringpoll::win::winsock_flags(flags));
  return n == SOCKET_ERROR ? ringpoll::win::plain_call_fail() : n;
}
// sendto(2) with an int descriptor (constrained as recv's) and any buffer; MSG_DONTWAIT
// as for send.
template <class F, class B>
requires std::is_same_v<F, int> ssize_t sendto(F fd, const B* buf, size_t len, int flags,
                                               const sockaddr* to, socklen_t tolen) {
  const int n =
      ::sendto(ringpoll::win::as_socket(fd), reinterpret_cast<const char*>(buf),
               ringpoll::win::clamp_len(len), ringpoll::win::winsock_flags(flags), to, tolen);
  return n == SOCKET_ERROR ? ringpoll::win::plain_call_fail() : n;
}
// The CRT's read(int, void*, unsigned) knows no sockets; this overload (an exact match for
// a size_t length) receives instead.
inline ssize_t read(int fd, void* buf, size_t len) {
  const int n = ::recv(static_cast<SOCKET>(static_cast<unsigned>(fd)), static_cast<char*>(buf),
                       ringpoll::win::clamp_len(len), 0);
  return n == SOCKET_ERROR ? ringpoll::win::plain_call_fail() : n;
}
inline int getsockopt(int fd, int level, int name, void* val, socklen_t* len) {
  return ::getsockopt(static_cast<SOCKET>(fd), level, name, static_cast<char*>(val), len);
}
// The setup calls with int descriptors, failing with -1 and errno as POSIX ones do (the
// sockets layer, engine/net.h, reads errno). Winsock's SOCKET signatures stay beside them.
inline int bind(int fd, const sockaddr* sa, socklen_t len) {
  return ::bind(ringpoll::win::as_socket(fd), sa, len) == 0 ? 0 : ringpoll::win::setup_call_fail();
}
inline int listen(int fd, int backlog) {
  return ::listen(ringpoll::win::as_socket(fd), backlog) == 0 ? 0
                                                              : ringpoll::win::setup_call_fail();
}
inline int setsockopt(int fd, int level, int name, const void* val, socklen_t len) {
  return ::setsockopt(ringpoll::win::as_socket(fd), level, name, static_cast<const char*>(val),
                      len) == 0
             ? 0
             : ringpoll::win::setup_call_fail();
}
inline int getsockname(int fd, sockaddr* sa, socklen_t* len) {
  return ::getsockname(ringpoll::win::as_socket(fd), sa, len) == 0
             ? 0
             : ringpoll::win::setup_call_fail();
}
inline int getpeername(int fd, sockaddr* sa, socklen_t* len) {
  return ::getpeername(ringpoll::win::as_socket(fd), sa, len) == 0
             ? 0
             : ringpoll::win::setup_call_fail();
}
inline int shutdown(int fd, int how) {
  return ::shutdown(ringpoll::win::as_socket(fd), how) == 0 ? 0 : ringpoll::win::setup_call_fail();
}
// accept4(2) as its callers use it, on a listener they made non-blocking: TcpServer's
// take_backlog (engine/server.h), which accepts what the kernel queued on a listener about
// to close. A Windows listener stays blocking (fcntl is a no-op here), so the non-blocking
// part is a zero-timeout WSAPoll: an empty queue fails with EAGAIN. The accepted socket
// has the listener's attributes (overlapped, not inherited), as accept's always does; the
// flags (SOCK_NONBLOCK, SOCK_CLOEXEC) ask for nothing more here.
inline int accept4(int fd, sockaddr* sa, socklen_t* len, int) {
  const SOCKET s = ringpoll::win::as_socket(fd);
  if (const int k = ringpoll::win::readable_now(s); k <= 0) return k;
  const SOCKET c = ::accept(s, sa, len);
  if (c == INVALID_SOCKET) {
    const int e = WSAGetLastError();
    // A connection reset while queued is ECONNABORTED on Linux: the caller takes the next.
    return ringpoll::win::socket_errno_fail(e == WSAEWOULDBLOCK  ? EAGAIN
                                            : e == WSAECONNRESET ? ECONNABORTED
                                                                 : ringpoll::iocp_errno(e));
  }
  return static_cast<int>(c);
}
inline ssize_t recvmsg(int, msghdr*, int) {
  return ringpoll::win::socket_errno_fail(ENOSYS);
}
inline ssize_t sendmsg(int, const msghdr*, int) {
  return ringpoll::win::socket_errno_fail(ENOSYS);
}
