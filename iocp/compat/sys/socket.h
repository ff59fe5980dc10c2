#pragma once
#pragma GCC system_header  // a stand-in for a system header: no -Wpedantic on include_next
// Windows build only (iocp/compat is on the include path of the mingw-w64 build, never of
// the Linux one). engine/poll_fd.h is written against POSIX sockets; its completion path,
// the only one an IOCP backend takes for a socket it watches, needs just the names below.
// Its plain path (a socket the backend could not take) gets working send/read overloads;
// the rest of the readiness-path calls (accept4, recvmsg, sendmsg) are declared so the
// template compiles and fail with ENOSYS.
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

#include "sys/uio.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0  // Winsock never raises SIGPIPE
#endif
#ifndef MSG_DONTWAIT
#define MSG_DONTWAIT 0
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
}  // namespace ringpoll::win

// Overloads of the Winsock calls taking the POSIX argument types (void* buffers, int
// descriptors); Winsock's own char* signatures stay visible beside them. They serve a
// socket the backend could not take (on another completion port: PollFd's plain,
// blocking path), as read(2)/send(2) serve an unpollable descriptor on Linux.
inline ssize_t send(int fd, const void* buf, size_t len, int flags) {
  const int n = ::send(static_cast<SOCKET>(static_cast<unsigned>(fd)),
                       static_cast<const char*>(buf), ringpoll::win::clamp_len(len), flags);
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
inline int accept4(int, sockaddr*, socklen_t*, int) {
  return ringpoll::win::socket_errno_fail(ENOSYS);
}
inline ssize_t recvmsg(int, msghdr*, int) {
  return ringpoll::win::socket_errno_fail(ENOSYS);
}
inline ssize_t sendmsg(int, const msghdr*, int) {
  return ringpoll::win::socket_errno_fail(ENOSYS);
}
