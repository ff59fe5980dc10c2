// ringpoll-echo: a single-shard TCP echo server on the engine, for side-by-side
// benchmarks against plain C servers (bench/echo-compare.sh).
//
//   ringpoll-echo --backend epoll|io_uring|io_uring-completion --listen 127.0.0.1:PORT
//                 [--cpu N]
//
// One listener, one coroutine per connection: read up to 64 KiB, write back what was
// read, until EOF or an error. --cpu pins the process's one thread. One line at start says
// which backend and mode run (for io_uring, the ring's setup flags and features).
// SIGINT/SIGTERM stop the shard and the process exits 0. Bad arguments: a message naming
// the argument, exit 2.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <thread>

#include "engine/backend.h"
#include "engine/clock.h"
#include "engine/poll_fd.h"
#include "engine/scheduler.h"
#include "epoll/epoll_poller.h"
#include "uring/uring_completion.h"
#include "uring/uring_poller.h"

namespace ringpoll {
namespace {

// Per-connection read buffer; the brief of the benchmark, and larger than any message the
// harness sends, so one read takes a whole request.
constexpr size_t kBufBytes = 64 * 1024;
// Pending connections the kernel queues for us; the harness opens up to 500 at once.
constexpr int kBacklog = 4096;
// After a failed accept (EMFILE, ENFILE, ENOMEM) wait this long before trying again, so a
// descriptor shortage does not turn into a busy loop.
constexpr int64_t kAcceptRetryNs = 10'000'000;

struct Args {
  std::string backend = EpollPoller::kName;  // a kName in SocketBackends
  sockaddr_in addr{};
  int cpu = -1;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr,
               "ringpoll-echo: %s\n"
               "usage: ringpoll-echo --backend epoll|io_uring|io_uring-completion "
               "--listen IPV4:PORT [--cpu N]\n",
               msg.c_str());
  std::exit(2);
}

bool parse_int(std::string_view s, int lo, int hi, int* out) {
  int v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return false;
  *out = v;
  return true;
}

Args parse_args(int argc, char** argv) {
  Args a;
  bool have_backend = false, have_listen = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::printf(
          "usage: ringpoll-echo --backend epoll|io_uring|io_uring-completion --listen "
          "IPV4:PORT [--cpu N]\n");
      std::exit(0);
    }
    if (flag != "--backend" && flag != "--listen" && flag != "--cpu") {
      usage_error("unknown argument '" + std::string(flag) + "'");
    }
    if (i + 1 >= argc) usage_error("argument " + std::string(flag) + " needs a value");
    const std::string_view v = argv[++i];
    if (flag == "--backend") {
      if (!with_backend_named(v, []<class P>() {})) {
        usage_error("--backend: '" + std::string(v) +
                    "' is not one of epoll, io_uring, io_uring-completion");
      }
      a.backend = std::string(v);
      have_backend = true;
    } else if (flag == "--listen") {
      const size_t colon = v.rfind(':');
      int port = 0;
      const std::string host(v.substr(0, colon == std::string_view::npos ? 0 : colon));
      if (colon == std::string_view::npos || !parse_int(v.substr(colon + 1), 1, 65535, &port) ||
          inet_pton(AF_INET, host.c_str(), &a.addr.sin_addr) != 1) {
        usage_error("--listen: '" + std::string(v) + "' is not IPV4:PORT (e.g. 127.0.0.1:19001)");
      }
      a.addr.sin_family = AF_INET;
      a.addr.sin_port = htons(static_cast<uint16_t>(port));
      have_listen = true;
    } else {
      const int ncpu = static_cast<int>(sysconf(_SC_NPROCESSORS_CONF));
      if (!parse_int(v, 0, ncpu - 1, &a.cpu)) {
        usage_error("--cpu: '" + std::string(v) + "' is not a CPU number in 0.." +
                    std::to_string(ncpu - 1));
      }
    }
  }
  if (!have_backend) usage_error("missing argument --backend");
  if (!have_listen) usage_error("missing argument --listen");
  return a;
}

int listen_on(const sockaddr_in& addr) {
  const int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l < 0) return -errno;
  const int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0 ||
      listen(l, kBacklog) < 0) {
    const int e = errno;
    ::close(l);
    return -e;
  }
  return l;
}

template <class P>
Task<void> serve_conn(Scheduler<P>* s, int fd) {
  PollFd<P> c;
  if (!c.open(*s, fd).ok()) {
    ::close(fd);
    co_return;
  }
  c.mark_stream_socket();  // an accepted TCP connection: short reads say it is drained
  // The buffer lives in the coroutine frame: one allocation per connection, none per
  // request.
  std::byte buf[kBufBytes];
  for (;;) {
    const IoResult r = co_await c.read(std::span<std::byte>(buf, sizeof buf));
    if (!r.ok()) break;  // EOF, reset or close
    const IoResult w = co_await c.write(std::span<const std::byte>(buf, r.n));
    if (!w.ok()) break;
  }
  (void)co_await c.close();
}

template <class P>
Task<void> accept_loop(Scheduler<P>* s, PollFd<P>* l) {
  const int one = 1;
  for (;;) {
    const AcceptResult a = co_await l->accept();
    if (a.err.closed()) co_return;
    if (!a.err.ok()) {
      std::fprintf(stderr, "ringpoll-echo: accept: %s\n", a.err.message());
      co_await s->sleep_for(kAcceptRetryNs);
      continue;
    }
    // Echo replies are small writes answered at once: do not let Nagle hold them.
    setsockopt(a.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->spawn(serve_conn(s, a.fd));
  }
}

// SIGINT/SIGTERM are blocked in every thread and taken by this one with sigwait, so the
// shard never sees EINTR and the stop is an ordinary cross-thread Scheduler::stop (an
// atomic store plus the backend's coalesced wake) rather than work inside a handler.
struct SignalStopper {
  sigset_t set{};
  std::thread thread;
  std::atomic<int> got{0};

  void block() {
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by threads created later
  }
  template <class P>
  void start(Scheduler<P>* s) {
    thread = std::thread([this, s] {
      int sig = 0;
      while (sigwait(&set, &sig) != 0) {
      }
      got.store(sig);
      s->stop();
    });
  }
  // After run() returned for another reason, release the waiting thread.
  void finish() {
    if (!thread.joinable()) return;
    if (got.load() == 0) pthread_kill(thread.native_handle(), SIGTERM);
    thread.join();
  }
};

template <class P>
int run_server(const Args& args, const char* mode_name, SignalStopper* sig) {
  // The scheduler and the listener live until exit: see the end of this function.
  Scheduler<P> sched;
  Scheduler<P>* s = &sched;
  if (const Status st = s->start(); !st.ok()) {
    std::fprintf(stderr, "ringpoll-echo: backend %s cannot start: %s\n", mode_name, st.message());
    return 1;
  }
  const int lfd = listen_on(args.addr);
  if (lfd < 0) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &args.addr.sin_addr, ip, sizeof ip);
    std::fprintf(stderr, "ringpoll-echo: cannot listen on %s:%u: %s\n", ip,
                 ntohs(args.addr.sin_port), std::strerror(-lfd));
    return 1;
  }
  PollFd<P> listen_fd;
  PollFd<P>* listener = &listen_fd;
  if (const Status st = listener->open(*s, lfd); !st.ok()) {
    std::fprintf(stderr, "ringpoll-echo: listener: %s\n", st.message());
    return 1;
  }
  std::string detail;
  if constexpr (requires(P & p) { p.describe(); }) detail = ": " + s->backend().describe();
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &args.addr.sin_addr, ip, sizeof ip);
  std::printf("ringpoll-echo: listening on %s:%u, backend %s (%s mode)%s, cpu %s\n", ip,
              ntohs(args.addr.sin_port), mode_name, P::kCompletion ? "completion" : "readiness",
              detail.c_str(), args.cpu >= 0 ? std::to_string(args.cpu).c_str() : "any");
  std::fflush(stdout);

  s->spawn(accept_loop(s, listener));
  sig->start(s);
  s->run();
  sig->finish();
  std::printf("ringpoll-echo: stopped (%s)\n", sig->got.load() ? strsignal(sig->got.load()) : "");
  std::fflush(stdout);
  // Connections are still parked in their reads. The process ends here and the kernel
  // closes every socket; unwinding each parked coroutine first would only delay the exit.
  // (A drain with a deadline is ringpoll-serve's graceful shutdown, DESIGN.md "Engine".)
  std::_Exit(0);
}

}  // namespace
}  // namespace ringpoll

int main(int argc, char** argv) {
  using namespace ringpoll;
  const Args args = parse_args(argc, argv);
  if (args.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(args.cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) {
      std::fprintf(stderr, "ringpoll-echo: --cpu %d: %s\n", args.cpu, std::strerror(errno));
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  SignalStopper sig;
  sig.block();
  int rc = 2;
  with_backend_named(args.backend, [&]<class P>() { rc = run_server<P>(args, P::kName, &sig); });
  return rc;
}
