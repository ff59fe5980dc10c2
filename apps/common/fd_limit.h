#pragma once
// The programs' descriptor limit: raise the soft RLIMIT_NOFILE as far as the hard limit
// allows (a proxy at 100,000 connections holds 200,000 descriptors; the soft default is
// often 1024), and say clearly when the hard limit is below what the configuration needs.
// Windows has no such limit on sockets (handles are bounded by memory): nothing to raise.
#ifndef _WIN32
#include <sys/resource.h>
#endif

#include <cstdint>
#include <string>

namespace ringpoll::app {

struct FdLimit {
  uint64_t soft = 0;  // after raising
  uint64_t hard = 0;
  std::string problem;  // empty: enough for `want`
};

// Raises the soft limit to the hard one, or to the larger of `want` and `cap` when the hard
// limit is higher than both (or unlimited); first the hard limit to `want` when it is
// lower and the process may raise it.
// `want` (0: unknown) is what the configuration needs: a hard limit below it is reported
// in problem, naming `what` needs it and how to raise it.
inline FdLimit raise_fd_limit(uint64_t want, const std::string& what,
                              uint64_t cap = uint64_t{1} << 20) {
  FdLimit r;
#ifdef _WIN32
  (void)want, (void)what;
  r.soft = r.hard = cap;
  return r;
#else
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return r;  // cannot tell: accept's EMFILE will
  if (rl.rlim_max != RLIM_INFINITY && want > static_cast<uint64_t>(rl.rlim_max)) {
    // A privileged process (CAP_SYS_RESOURCE, e.g. root) may raise the hard limit too, up
    // to fs.nr_open; anyone else gets EPERM and the problem below.
    const rlimit more{static_cast<rlim_t>(want), static_cast<rlim_t>(want)};
    if (setrlimit(RLIMIT_NOFILE, &more) == 0) (void)getrlimit(RLIMIT_NOFILE, &rl);
  }
  r.hard = rl.rlim_max == RLIM_INFINITY ? cap : static_cast<uint64_t>(rl.rlim_max);
  const uint64_t wanted = want > cap ? want : cap;
  const uint64_t goal = wanted < r.hard ? wanted : r.hard;
  if (rl.rlim_cur != RLIM_INFINITY && static_cast<uint64_t>(rl.rlim_cur) < goal) {
    rl.rlim_cur = static_cast<rlim_t>(goal);
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) (void)getrlimit(RLIMIT_NOFILE, &rl);
  }
  r.soft = rl.rlim_cur == RLIM_INFINITY ? r.hard : static_cast<uint64_t>(rl.rlim_cur);
  if (want > r.soft) {
    r.problem =
        what + " needs " + std::to_string(want) + " descriptors, but RLIMIT_NOFILE allows " +
        std::to_string(r.soft) + " (hard limit " + std::to_string(r.hard) +
        "): raise the hard limit (ulimit -Hn as root, LimitNOFILE= in a systemd unit, " +
        "nofile in /etc/security/limits.conf); connections beyond it fail at accept (EMFILE)";
  }
  return r;
#endif
}

}  // namespace ringpoll::app
