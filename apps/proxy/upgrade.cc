#include "apps/proxy/upgrade.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

extern char** environ;

namespace ringpoll::proxy {

namespace {

constexpr const char* kFdVar = "RINGPOLL_UPGRADE_FD";
constexpr const char* kGenVar = "RINGPOLL_GENERATION";

bool parse_u64(const char* s, uint64_t* out) {
  if (!s || !*s) return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

// How a child ended, in words; waits at most 5 s for it (then kills it).
std::string reap(pid_t pid) {
  int st = 0;
  for (int i = 0; i < 500; ++i) {
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(st))
        return "exited with status " + std::to_string(WEXITSTATUS(st)) +
               (WEXITSTATUS(st) == 127 ? " (the binary could not be run)" : "");
      return std::string("was killed by signal ") + strsignal(WTERMSIG(st));
    }
    if (r < 0) return std::string("could not be waited for: ") + std::strerror(errno);
    usleep(10'000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return "closed the channel but did not exit within 5 s (killed)";
}

}  // namespace

SelfExec self_exec(int argc, char** argv) {
  SelfExec s;
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  s.path = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string(argv[0]);
  for (int i = 0; i < argc; ++i) s.argv.emplace_back(argv[i]);
  return s;
}

bool upgrade_env(UpgradeEnv* out, std::string* why) {
  const char* fd = std::getenv(kFdVar);
  const char* gen = std::getenv(kGenVar);
  UpgradeEnv e;
  uint64_t v = 0;
  if (fd) {
    if (!parse_u64(fd, &v) || v > INT_MAX || fcntl(static_cast<int>(v), F_GETFD) < 0) {
      *why = std::string(kFdVar) + "=" + fd + " is not an open descriptor";
      return false;
    }
    e.fd = static_cast<int>(v);
    (void)fcntl(e.fd, F_SETFD, FD_CLOEXEC);
  }
  if (gen) {
    if (!parse_u64(gen, &e.generation) || e.generation == 0) {
      *why = std::string(kGenVar) + "=" + gen + " is not a generation number (1, 2, ...)";
      return false;
    }
  }
  unsetenv(kFdVar);
  unsetenv(kGenVar);
  *out = e;
  return true;
}

std::string ready_note(uint64_t generation, const std::vector<std::string>& moves,
                       const std::vector<std::string>& http_moves) {
  std::string note =
      "ready generation " + std::to_string(generation) + " pid " + std::to_string(getpid());
  for (const std::string& l : moves) note += "\nmoves " + l;
  for (const std::string& l : http_moves) note += "\nmoves-http " + l;
  return note;
}

bool start_successor(const SelfExec& self, uint64_t generation,
                     const std::vector<HandedListener>& ls, int timeout_ms, Successor* out,
                     std::string* why) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    *why = std::string("socketpair: ") + std::strerror(errno);
    return false;
  }
  // Everything the child needs is built before fork: after it, only exec-safe calls.
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string_view v(*e);
    if (!v.starts_with(std::string(kFdVar) + "=") && !v.starts_with(std::string(kGenVar) + "="))
      env.emplace_back(v);
  }
  env.push_back(std::string(kFdVar) + "=" + std::to_string(sv[1]));
  env.push_back(std::string(kGenVar) + "=" + std::to_string(generation));
  std::vector<char*> envp, argv;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = self.argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    (void)fcntl(sv[1], F_SETFD, 0);  // the child's end survives exec
    execve(self.path.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  ::close(sv[1]);
  if (pid < 0) {
    ::close(sv[0]);
    *why = std::string("fork: ") + std::strerror(errno);
    return false;
  }
  std::string w, note;
  const Status sent = send_listeners(sv[0], ls, &w);
  const Status got = sent.ok() ? recv_note(sv[0], timeout_ms, &note) : sent;
  if (got.ok() && note.starts_with("ready")) {
    out->pid = pid;
    out->channel = sv[0];
    out->moves.clear();
    out->http_moves.clear();
    for (size_t at = note.find('\n'); at != std::string::npos;) {
      const size_t end = note.find('\n', at + 1);
      const std::string line = note.substr(at + 1, end == std::string::npos ? end : end - at - 1);
      if (line.starts_with("moves ")) out->moves.push_back(line.substr(6));
      if (line.starts_with("moves-http ")) out->http_moves.push_back(line.substr(11));
      at = end;
    }
    // A successor that stops reading must not hold a shard of this one for long.
    const timeval limit{5, 0};
    (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    return true;
  }
  ::close(sv[0]);
  const std::string who = "the new process (pid " + std::to_string(pid) + ", " + self.path + ")";
  if (got.is(Errc::kTimeout)) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    *why = who + " did not report serving within " + std::to_string(timeout_ms) + " ms; killed it";
  } else if (got.ok()) {
    *why = who + " could not start: " + note + "; it " + reap(pid);
  } else {
    *why = who + " " + reap(pid) + " before it served";
  }
  return false;
}

}  // namespace ringpoll::proxy
