#pragma once
// The descriptors this process has open now: a leak check's before and after.
#include <dirent.h>

namespace ringpoll::test {

inline int open_fds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  // the DIR itself
}

}  // namespace ringpoll::test
