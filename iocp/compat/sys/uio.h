#pragma once
#pragma GCC system_header  // a stand-in for a system header: no -Wpedantic on include_next
// Windows build only: the POSIX scatter/gather element (see sys/socket.h here).
#include <cstddef>

struct iovec {
  void* iov_base;
  size_t iov_len;
};
