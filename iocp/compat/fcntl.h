#pragma once
#pragma GCC system_header  // a stand-in for a system header: no -Wpedantic on include_next
// Windows build only: the CRT's <fcntl.h> plus the two fcntl() commands engine/poll_fd.h
// uses to read and set O_NONBLOCK. A completion backend wants O_NONBLOCK off, which is a
// socket's state on Windows, so F_GETFL answers "no flags" and F_SETFL is never needed.
// Below them, the pipe and splice(2) calls of ringpoll-proxy's readiness-backend relay
// (apps/proxy/relay.h), declared so its templates compile: Windows runs only IOCP, a
// completion backend, which never takes that path (and proxy.splice = "on" is refused
// there), so they fail with ENOSYS if ever reached.
#include_next <fcntl.h>

#ifndef F_GETFL
#define F_GETFL 3
#define F_SETFL 4
#endif
#ifndef O_NONBLOCK
#define O_NONBLOCK 0x800
#endif

inline int fcntl(int, int, ...) {
  return 0;
}

#ifndef O_CLOEXEC
#define O_CLOEXEC 0x80000
#endif
#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031
#endif
#ifndef SPLICE_F_MOVE
#define SPLICE_F_MOVE 1
#define SPLICE_F_NONBLOCK 2
#endif

#include <sys/types.h>
#include <cerrno>

inline int pipe2(int (&)[2], int) {
  errno = ENOSYS;
  return -1;
}
inline ssize_t splice(int, long long*, int, long long*, size_t, unsigned) {
  errno = ENOSYS;
  return -1;
}
