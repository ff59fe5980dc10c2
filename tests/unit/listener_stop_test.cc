// Stopping a listener loses no connection (issue 20): a connection the kernel completed
// before the listener stopped is served, by this server or by a process sharing the
// socket (an upgrade's successor), never reset. In io_uring completion mode the multishot
// accept takes connections ahead of the accept loop; stopping it cancels that request and
// hands every connection it took to a handler (engine/server.h close_listener).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "engine/backend.h"
#include "engine/server.h"
#include "poller/internal/test_seams.h"
#include "support/byte_stream.h"
#include "support/echo_engine.h"
#include "support/stop_join.h"
#include "support/test_env.h"
#include "uring/uring_completion.h"

namespace ringpoll::test {
namespace {

// Connects to 127.0.0.1:port and sends "ping"; -1 when the connect failed.
int connect_and_ping(uint16_t port) {
  const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  const timeval limit{3, 0};  // a connection nobody serves counts as failed, not a hang
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || !send_all(c, "ping", 4)) {
    ::close(c);
    return -1;
  }
  return c;
}

// The echo of "ping" on c (then closes c): true when all four bytes came back.
bool pong(int c) {
  std::string in;
  char buf[8];
  while (in.size() < 4) {
    const ssize_t n = ::recv(c, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  ::close(c);
  return in == "ping";
}

template <class P>
uint64_t accepted(TcpServer<P>& s) {
  uint64_t n = 0;
  for (uint64_t k : s.accepted_per_shard()) n += k;
  return n;
}

// Polls pred every 5 ms for at most 10 s.
template <class Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 2000; ++i) {
    if (pred()) return true;
    usleep(5'000);
  }
  return pred();
}

// The acceptor's first accept fails with EMFILE (injected), so it pauses while the
// multishot accept, armed again, keeps taking connections into its queue.
std::atomic<int> g_accept_calls{0};
int first_accept_emfile(UringCqeKind k) {
  if (k != UringCqeKind::kAccept) return 0;
  return g_accept_calls.fetch_add(1) == 0 ? EMFILE : 0;
}

TEST(ListenerStop, IoUringMultishotAcceptHandsEveryConnectionItTookToAHandler) {
  using P = UringCompletionPoller;
  if (!P::available().ok) GTEST_FAIL() << "io_uring completion mode: " << P::available().why;
  uint16_t port = 0;
  const int shared = tcp_listener(&port);  // the test keeps a copy, as a successor would
  ASSERT_GE(shared, 0);
  typename TcpServer<P>::Options so;
  so.inherit_fds = {::dup(shared)};
  so.accept_backoff_min_ns = so.accept_backoff_max_ns = 1'500'000'000;
  g_accept_calls.store(0);
  g_uring_fault_hook.store(&first_accept_emfile);
  EchoEngine<P> old(so);
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(eventually([&] { return old.server().accept_errors() == 1; }));
  g_uring_fault_hook.store(nullptr);
  // The acceptor pauses 1.5 s; meanwhile 16 clients connect and send.
  constexpr int kClients = 16;
  std::vector<int> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_and_ping(port));
    ASSERT_GE(clients.back(), 0) << "connect " << i;
  }
  // The multishot accept takes them all: nothing is left in the kernel's queue.
  ASSERT_TRUE(eventually([&] {
    pollfd pf{shared, POLLIN, 0};
    return ::poll(&pf, 1, 0) == 0;
  })) << "the multishot accept did not take the connections";
  EXPECT_EQ(accepted(old.server()), 0u) << "the acceptor was to be pausing";
  // Stop while they sit in its queue: each is handed to a handler and answered.
  std::atomic<int> answered{0};
  std::vector<std::thread> readers;
  for (int c : clients) readers.emplace_back([&answered, c] { answered += pong(c) ? 1 : 0; });
  const size_t aborted = old.server().shutdown(3'000'000'000);
  for (auto& t : readers) t.join();
  EXPECT_EQ(answered.load(), kClients) << "connections the kernel completed were reset";
  EXPECT_EQ(accepted(old.server()), static_cast<uint64_t>(kClients));
  EXPECT_EQ(aborted, 0u);
  old.stop();
  ::close(shared);
}

template <class P>
class ListenerStopUnderLoad : public ::testing::Test {};
TYPED_TEST_SUITE(ListenerStopUnderLoad, SocketBackendTypes, BackendName);

// An upgrade in small: two servers share one listening socket; clients connect in a tight
// loop; the old one stops in the middle. Every connection a client saw connected is
// answered, by one or the other.
TYPED_TEST(ListenerStopUnderLoad, EveryConnectionAClientSawConnectedIsServed) {
  using P = TypeParam;
  if (!P::available().ok) GTEST_FAIL() << P::kName << ": " << P::available().why;
  uint16_t port = 0;
  const int shared = tcp_listener(&port);
  ASSERT_GE(shared, 0);
  typename TcpServer<P>::Options a, b;
  a.inherit_fds = {::dup(shared)};
  b.inherit_fds = {::dup(shared)};
  EchoEngine<P> old(a), next(b);
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(next.ok());
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread loop([&] {
    const int64_t end = mono_now_ns() + 20'000'000'000;  // bounded, whatever happens
    for (int i = 0; i < 200000 && !stop.load() && mono_now_ns() < end; ++i) {
      const int c = connect_and_ping(port);
      (c >= 0 && pong(c) ? ok : failed).fetch_add(1);
    }
  });
  StopAndJoin join(stop, loop);
  ASSERT_TRUE(eventually([&] { return ok.load() > 300; }));
  EXPECT_EQ(old.server().shutdown(2'000'000'000), 0u);
  const int after_stop = ok.load();
  EXPECT_TRUE(eventually([&] { return ok.load() > after_stop + 300; })) << "the other one serves";
  stop = true;
  loop.join();
  EXPECT_EQ(failed.load(), 0) << "of " << ok.load() + failed.load() << " connections";
  EXPECT_GT(accepted(old.server()), 0u);
  EXPECT_GT(accepted(next.server()), 0u);
  old.stop();
  next.stop();
  ::close(shared);
}

}  // namespace
}  // namespace ringpoll::test
