#pragma once
// Starts a program with its stdout and stderr on pipes (for tests that run the binaries).
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace ringpoll::test {

struct Spawned {
  pid_t pid = -1;  // -1: the pipes or the fork failed
  int out = -1;    // its stdout
  int err = -1;    // its stderr
};

// bin with args; the child's other descriptors close at exec (the test's are CLOEXEC).
inline Spawned spawn_piped(const char* bin, const std::vector<std::string>& args) {
  Spawned s;
  int o[2], e[2];
  if (pipe2(o, O_CLOEXEC) < 0) return s;
  if (pipe2(e, O_CLOEXEC) < 0) {
    ::close(o[0]);
    ::close(o[1]);
    return s;
  }
  s.pid = fork();
  if (s.pid == 0) {
    dup2(o[1], 1);
    dup2(e[1], 2);
    std::vector<char*> argv{const_cast<char*>(bin)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin, argv.data());
    _exit(127);
  }
  ::close(o[1]);
  ::close(e[1]);
  s.out = o[0];
  s.err = e[0];
  return s;
}

// At the end of a scope (also when an assertion ends a test early): SIGKILL to each pid
// still listed, then reaps every child that has exited, so no process outlives the test.
struct KillLeftOvers {
  std::vector<pid_t>& pids;
  ~KillLeftOvers() {
    for (pid_t p : pids) kill(p, SIGKILL);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }
};

}  // namespace ringpoll::test
