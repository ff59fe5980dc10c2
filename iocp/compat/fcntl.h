#pragma once
#pragma GCC system_header  // a stand-in for a system header: no -Wpedantic on include_next
// Windows build only: the CRT's <fcntl.h> plus the two fcntl() commands engine/poll_fd.h
// uses to read and set O_NONBLOCK. A completion backend wants O_NONBLOCK off, which is a
// socket's state on Windows, so F_GETFL answers "no flags" and F_SETFL is never needed.
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
