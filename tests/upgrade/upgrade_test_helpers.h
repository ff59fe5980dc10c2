#pragma once
// What the binary-upgrade tests (relay_move_test.cc, http_move_test.cc) share: reading an
// address off a program's line, and waiting for an old generation to exit.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "engine/clock.h"
#include "support/test_env.h"

namespace ringpoll::test {

// The address in a "... on ADDR ..." / "listening on ADDR (" line.
inline std::string address_after(const std::string& line, const std::string& what) {
  const size_t at = line.find(what);
  if (at == std::string::npos) return "";
  const size_t s = at + what.size();
  return line.substr(s, line.find_first_of(" ,(", s) - s);
}

// True once pid exited (reaped: the test is the subreaper of every generation), within secs.
inline bool exits_within(pid_t pid, int secs) {
  const int64_t end = mono_now_ns() + int64_t{secs} * kSec;
  while (mono_now_ns() < end) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) return true;
    usleep(5'000);
  }
  return false;
}

}  // namespace ringpoll::test
