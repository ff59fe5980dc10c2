#pragma once
// Shared helpers for the GoogleTest suites: a scheduler driven step by step, real socket
// pairs on loopback, and a bounded run loop (every wait in the tests is bounded in time).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "aix/pollset_poller.h"
#include "engine/backend.h"
#include "engine/clock.h"
#include "engine/poll_fd.h"
#include "engine/scheduler.h"
#include "epoll/epoll_poller.h"
#include "kqueue/kqueue_poller.h"
#include "poller/internal/test_seams.h"
#include "ports/ports_poller.h"
#include "support/emulated_backends.h"
#include "uring/uring_completion.h"
#include "uring/uring_poller.h"

namespace ringpoll::test {

inline constexpr int64_t kMs = 1'000'000;
inline constexpr int64_t kSec = 1'000'000'000;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
// The p99 a fairness probe must stay under (ms): a shard that a stalled client holds
// answers the others in seconds or never; a served one here within 100 ms, within 500 ms
// under a sanitizer (TSan ran such a probe at a 189 ms p99 on this machine).
inline constexpr double kServedP99Ms = kSanitized ? 500.0 : 100.0;

// A transfer's size: `full`, or `sanitized` in a sanitizer build (they run ~10x slower).
constexpr size_t sized_for_build(size_t full, size_t sanitized) {
  return kSanitized ? sanitized : full;
}

// waitpid with a bound: reaps `pid` into *status and returns true, or after `secs` kills it
// (SIGKILL), reaps it and returns false, so a hung child fails its test at once instead of
// holding it until ctest's timeout (and outliving it).
inline bool wait_child(pid_t pid, int* status, int secs = 60) {
  for (int i = 0; i < secs * 100; ++i) {
    const pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) return false;
    usleep(10'000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, status, 0);
  return false;
}

// Runs fn() (returning std::string) in a forked child and returns what it returned,
// through a pipe: for state that is per process (process_backend's cache, the CPU mask,
// signal masks). "child killed after N s" when it hung (wait_child).
template <class Fn>
std::string child_output(Fn fn, int secs = 60) {
  int p[2];
  if (pipe(p) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid == 0) {
    ::close(p[0]);
    const std::string out = fn();
    ssize_t w = ::write(p[1], out.data(), out.size());
    (void)w;
    _exit(0);
  }
  ::close(p[1]);
  std::string got;
  char buf[512];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  if (!wait_child(pid, &status, secs)) return "child killed after " + std::to_string(secs) + " s";
  return got;
}

// Completion mode with every multishot feature off: recv and accept are single
// operations into the caller's buffer, so the cancel-and-wait path (S23/S24) runs on
// every timeout and close. The conformance suite runs on it too.
class UringCompletionSingleshot : public UringCompletionPoller {
 public:
  static constexpr const char* kName = "io_uring-completion-singleshot";
  UringCompletionSingleshot() {
    UringCompletionOptions o;
    o.multishot_accept = false;
    o.multishot_recv = false;
    set_completion_options(o);
  }
};
static_assert(MultishotCompletionBackend<UringCompletionSingleshot>);

// Every backend the conformance suite runs on. A backend that is not available on this
// machine reports a skip for each test, never a pass.
using Backends =
    ::testing::Types<EpollPoller, UringPoller, UringCompletionPoller, UringCompletionSingleshot,
                     EmulatedKqueuePoller, EmulatedPortsPoller, EmulatedPollsetPoller>;

// The socket-level suites (servers, sockets API, proxy) run on the programs' own list of
// backends (engine/backend.h's SocketBackends), so a backend added there is tested here.
template <class List>
struct GtestTypesOf;
template <class... Ps>
struct GtestTypesOf<BackendList<Ps...>> {
  using type = ::testing::Types<Ps...>;
};
using SocketBackendTypes = GtestTypesOf<SocketBackends>::type;

// Does the backend keep watching an open file description after the fd that registered it
// is closed (a dup keeping the file open)? epoll and io_uring do. kqueue, event ports and
// pollset drop a registration when its fd is closed (their emulations mirror that), so S26
// builds its stale event there from an fd that stays open instead.
template <class P>
inline constexpr bool kWatchOutlivesFdClose = true;
template <>
inline constexpr bool kWatchOutlivesFdClose<EmulatedKqueuePoller> = false;
template <>
inline constexpr bool kWatchOutlivesFdClose<EmulatedPortsPoller> = false;
template <>
inline constexpr bool kWatchOutlivesFdClose<EmulatedPollsetPoller> = false;

struct BackendName {
  template <class P>
  static std::string GetName(int) {
    std::string n = P::kName;
    for (char& c : n) {
      if (c == '-') c = '_';
    }
    return n;
  }
};

struct FdPair {
  int a = -1;
  int b = -1;
  ~FdPair() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
  }
  // Hands `a` to a PollFd (which then owns and closes it).
  int take_a() { return std::exchange(a, -1); }
  int take_b() { return std::exchange(b, -1); }
};

inline void make_nonblocking(int fd) {
  const int fl = fcntl(fd, F_GETFL);
  ASSERT_GE(fl, 0);
  ASSERT_EQ(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

// A connected AF_UNIX stream pair, both ends non-blocking.
inline void unix_pair(FdPair& p) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  p.a = sv[0];
  p.b = sv[1];
}

// A listening TCP socket on 127.0.0.1, an ephemeral port; returns the fd and port.
inline int tcp_listener(uint16_t* port) {
  const int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || listen(l, 128) < 0) {
    ::close(l);
    return -1;
  }
  socklen_t len = sizeof a;
  getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return l;
}

// A blocking TCP connect to 127.0.0.1:port, returned non-blocking.
inline int tcp_connect(uint16_t port) {
  const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
    ::close(c);
    return -1;
  }
  fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
  return c;
}

// A connected TCP pair on loopback (a: accepted side, b: connecting side).
inline void tcp_pair(FdPair& p) {
  uint16_t port = 0;
  const int l = tcp_listener(&port);
  ASSERT_GE(l, 0);
  p.b = tcp_connect(port);
  ASSERT_GE(p.b, 0);
  for (int i = 0; i < 1000 && p.a < 0; ++i) {
    p.a = accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (p.a < 0) usleep(1000);
  }
  ::close(l);
  ASSERT_GE(p.a, 0);
}

// Writes into fd until the kernel refuses (EAGAIN); returns the bytes written.
inline size_t fill_send_buffer(int fd) {
  static char chunk[65536];
  size_t total = 0;
  for (;;) {
    const ssize_t n = ::send(fd, chunk, sizeof chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) break;
    total += static_cast<size_t>(n);
  }
  return total;
}

// Reads and discards everything readable now.
inline size_t drain(int fd) {
  static char chunk[65536];
  size_t total = 0;
  for (;;) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n <= 0) break;
    total += static_cast<size_t>(n);
  }
  return total;
}

// Sleeps until CLOCK_MONOTONIC reaches t.
inline void sleep_until_ns(int64_t t) {
  for (int64_t now = mono_now_ns(); now < t; now = mono_now_ns()) {
    usleep(static_cast<useconds_t>((t - now) / 1000 + 1));
  }
}

inline void put(int fd, const char* s) {
  ASSERT_EQ(::send(fd, s, strlen(s), MSG_NOSIGNAL), static_cast<ssize_t>(strlen(s)));
}

template <class P>
class Env {
 public:
  explicit Env(SchedulerOptions o = {}) : s(o) {}
  Scheduler<P> s;

  // Runs the loop (tasks, timers, I/O) until pred() holds or `timeout_ns` passes; returns
  // pred(). The I/O wait is capped so a forgotten wake cannot hang the suite.
  bool run_until(const std::function<bool()>& pred, int64_t timeout_ns = 10 * kSec) {
    const int64_t end = mono_now_ns() + timeout_ns;
    for (;;) {
      s.run_ready();
      s.fire_timers();
      s.run_ready();
      if (pred()) return true;
      const int64_t now = mono_now_ns();
      if (now >= end) return false;
      int64_t w = s.next_wait_ns();
      if (w < 0 || w > 10 * kMs) w = 10 * kMs;
      s.poll_io(w);
    }
  }
  // Runs everything currently possible without blocking.
  void settle() {
    for (int i = 0; i < 4; ++i) {
      s.poll_io(0);
      s.fire_timers();
      s.run_ready();
    }
  }
};

}  // namespace ringpoll::test
