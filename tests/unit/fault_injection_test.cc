// Fault injection on a running TcpServer (issue 22): the kernel's rare answers, injected
// through the test seams (poller/internal/test_seams.h) while echo clients run: failed
// completions (EAGAIN, EINTR, ENOBUFS, ECANCELED on the multishot recv; EAGAIN, EINTR on
// sends, which the kernel also sends short), failed accepts (EAGAIN, EINTR, ECONNABORTED,
// EMFILE, ENFILE), and io_uring setup failing with ENOMEM. Each test checks that every
// byte comes back in order (nothing lost, nothing duplicated) and that nothing leaks:
// connections, descriptors, provided buffers.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "engine/backend.h"
#include "engine/server.h"
#include "epoll/epoll_poller.h"
#include "poller/internal/test_seams.h"
#include "support/byte_stream.h"
#include "support/echo_engine.h"
#include "support/fd_count.h"
#include "uring/uring_completion.h"

namespace ringpoll::test {
namespace {

// `clients` threads, each with its own connection: sends `bytes` of a pattern of its own
// and reads them back. Returns how many got every byte back, in order.
int echo_clients(const SocketAddress& at, int clients, size_t bytes) {
  std::atomic<int> good{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < clients; ++i) {
    ts.emplace_back([&, i] {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      timeval tv{10, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (::connect(fd, at.sa(), at.len) != 0) {
        ::close(fd);
        return;
      }
      std::string out(bytes, '\0');
      for (size_t k = 0; k < bytes; ++k) out[k] = static_cast<char>('a' + (k * 7 + i) % 26);
      std::thread writer([&] { (void)send_all(fd, out.data(), out.size()); });
      std::string in;
      char buf[8192];
      while (in.size() < bytes) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
      }
      writer.join();
      ::close(fd);
      if (in == out) good.fetch_add(1);
    });
  }
  for (auto& t : ts) t.join();
  return good.load();
}

// An acceptor that pauses 1 to 4 ms after EMFILE/ENFILE (the default starts at 5 ms).
template <class P>
typename TcpServer<P>::Options fast_backoff() {
  typename TcpServer<P>::Options so;
  so.accept_backoff_min_ns = 1'000'000;
  so.accept_backoff_max_ns = 4'000'000;
  return so;
}

// Every third operation of a kind fails, with the next errno of that kind's list.
struct FaultPlan {
  std::atomic<uint64_t> seen[3]{};
  std::atomic<uint64_t> injected[3]{};
};
FaultPlan g_plan;

int next_fault(UringCqeKind k) {
  static constexpr int kSend[] = {EAGAIN, EINTR};
  static constexpr int kRecv[] = {EAGAIN, EINTR, ENOBUFS, ECANCELED};
  static constexpr int kAccept[] = {EAGAIN, EINTR, ECONNABORTED, EMFILE, ENFILE};
  const size_t i = k == UringCqeKind::kOp ? 0 : k == UringCqeKind::kRecv ? 1 : 2;
  if (g_plan.seen[i].fetch_add(1) % 3 != 2) return 0;
  const uint64_t n = g_plan.injected[i].fetch_add(1);
  if (i == 0) return kSend[n % std::size(kSend)];
  if (i == 1) return kRecv[n % std::size(kRecv)];
  return kAccept[n % std::size(kAccept)];
}

TEST(FaultInjection, FailedCompletionsAndShortSendsLoseNothingAndLeakNothing) {
  using P = UringCompletionPoller;
  if (!P::available().ok) GTEST_FAIL() << "io_uring completion mode: " << P::available().why;
  // A thread that wakes a shard keeps a ring of its own for MSG_RING (one per thread, for
  // its life): let this one make it before counting, so the count compares like with like.
  { EchoEngine<P> warm_up; }
  const int fds_before = open_fds();
  {
    // Single-shot accepts, so that every accept is a submission the seam can fail.
    EchoEngine<P> echo(fast_backoff<P>(), [](P& b) {
      UringCompletionOptions o;
      o.multishot_accept = false;
      b.set_completion_options(o);
    });
    ASSERT_TRUE(echo.ok());
    TcpServer<P>& srv = echo.server();
    for (auto& s : g_plan.seen) s.store(0);
    for (auto& s : g_plan.injected) s.store(0);
    g_uring_send_clamp.store(1000);  // the kernel sends short: the rest is submitted again
    g_uring_fault_hook.store(&next_fault);
    const int good = echo_clients(srv.address(), 24, 96 * 1024);
    g_uring_fault_hook.store(nullptr);
    g_uring_send_clamp.store(0);
    EXPECT_EQ(good, 24) << "a client lost, reordered or duplicated bytes";
    for (int k = 0; k < 3; ++k) EXPECT_GT(g_plan.injected[k].load(), 0u) << "kind " << k;
    // EMFILE/ENFILE reached the acceptor (which backed off); the others were retried.
    EXPECT_GT(srv.accept_errors(), 0u);
    EXPECT_TRUE([&] {
      for (int i = 0; i < 500 && srv.live() > 0; ++i) usleep(10'000);
      return srv.live() == 0;
    }()) << srv.live()
         << " connections still open";
    const auto c = Engine<P>::call(
        echo.engine().shard(0), [] { return Engine<P>::current()->sched().backend().counters(); });
    EXPECT_EQ(c.buffers_held, 0u);
    EXPECT_EQ(c.buffers_free, UringCompletionOptions{}.buf_count) << "provided buffers leaked";
    EXPECT_GT(c.nobufs, 0u) << "no ENOBUFS was handled";
  }
  EXPECT_EQ(open_fds(), fds_before) << "descriptors leaked";
}

// epoll: accept4 fails every third call (EMFILE, ENFILE, EINTR, ECONNABORTED in turn).
std::atomic<uint64_t> g_accepts{0}, g_accept_faults{0};
int failing_accept4(int fd, sockaddr* a, socklen_t* l, int flags) {
  static constexpr int kErr[] = {EMFILE, ENFILE, EINTR, ECONNABORTED};
  if (g_accepts.fetch_add(1) % 3 == 2) {
    errno = kErr[g_accept_faults.fetch_add(1) % std::size(kErr)];
    return -1;
  }
  return ::accept4(fd, a, l, flags);
}

TEST(FaultInjection, FailedAcceptsOnEpollLoseNoConnectionAndLeakNothing) {
  using P = EpollPoller;
  const int fds_before = open_fds();
  g_accepts.store(0);
  g_accept_faults.store(0);
  g_accept4_fn = failing_accept4;  // before the engine starts (not atomic)
  {
    EchoEngine<P> echo(fast_backoff<P>());
    ASSERT_TRUE(echo.ok());
    TcpServer<P>& srv = echo.server();
    EXPECT_EQ(echo_clients(srv.address(), 24, 32 * 1024), 24);
    EXPECT_GE(g_accept_faults.load(), 4u);
    EXPECT_GT(srv.accept_errors(), 0u) << "EMFILE/ENFILE never reached the acceptor";
  }
  g_accept4_fn = ::accept4;
  EXPECT_EQ(open_fds(), fds_before) << "descriptors leaked";
}

TEST(FaultInjection, RingSetupFailingWithEnomemFailsTheShardAndFallsBackToEpollSayingWhy) {
  // ENOMEM from io_uring_setup: the ring's memory could not be locked (RLIMIT_MEMLOCK on
  // kernels before 5.12). A shard whose ring cannot be set up fails the engine's start
  // with that error, and backend selection falls back to epoll naming the cause.
  g_uring_setup_fail_errno.store(ENOMEM);
  EngineOptions eo;
  eo.shards = 1;
  eo.pin = false;
  Status st;
  {
    Engine<UringCompletionPoller> e(eo);
    st = e.start();
    e.stop();
    e.join();
  }
  const BackendSelection sel = select_backend(BackendChoice::kAuto);
  g_uring_setup_fail_errno.store(0);
  EXPECT_EQ(st.sys_errno(), ENOMEM) << st.message();
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel.chosen, BackendChoice::kEpoll);
  EXPECT_NE(sel.why.find("RLIMIT_MEMLOCK"), std::string::npos) << sel.why;
}

}  // namespace
}  // namespace ringpoll::test
