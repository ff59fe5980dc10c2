// TcpServer: graceful shutdown drains, signals, 10,000 concurrent connections with the fd
// count back to its baseline, and EMFILE on accept (back off, keep serving, never spin).
#include "engine/server.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "support/fd_count.h"
#include "support/test_env.h"

namespace ringpoll::test {
namespace {

using P =
    EpollPoller;  // the engine logic under test is backend-independent; NetTest covers backends
using E = Engine<P>;

Task<void> echo_handler(TcpStream<P>& c) {
  std::array<std::byte, 4096> buf;
  for (;;) {
    IoResult r = co_await c.read(buf);
    if (!r.ok()) co_return;
    if (!(co_await c.write(std::span(buf.data(), r.n))).ok()) co_return;
  }
}

int blocking_connect(const SocketAddress& a) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, a.sa(), a.len) < 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// 127.0.0.1 with port 0: the kernel picks a free port.
SocketAddress any_loopback_port() {
  SocketAddress at;
  parse_address("127.0.0.1:0", &at);
  return at;
}
EngineOptions with_shards(int n) {
  EngineOptions o;
  o.shards = n;
  return o;
}

TEST(TcpServer, GracefulShutdownFinishesInFlightWorkThenAbortsIdleConnections) {
  E e(with_shards(2));
  ASSERT_TRUE(e.start().ok());
  TcpServer<P> srv(e);
  const SocketAddress at = any_loopback_port();
  // Each request takes 300 ms to answer.
  auto slow = [](TcpStream<P>& c) -> Task<void> {
    std::array<std::byte, 64> buf;
    for (;;) {
      IoResult r = co_await c.read(buf);
      if (!r.ok()) co_return;
      co_await E::current()->sched().sleep_for(300'000'000);
      if (!(co_await c.write(std::span(buf.data(), r.n))).ok()) co_return;
    }
  };
  std::string why;
  ASSERT_TRUE(srv.start(at, slow, &why).ok()) << why;
  const SocketAddress addr = srv.address();
  const int busy = blocking_connect(addr);
  const int idle = blocking_connect(addr);
  ASSERT_GE(busy, 0);
  ASSERT_GE(idle, 0);
  ASSERT_EQ(::send(busy, "req", 3, 0), 3);
  for (int i = 0; i < 500 && srv.live() < 2; ++i) usleep(2000);
  ASSERT_EQ(srv.live(), 2u);
  // The busy client reads its answer, then closes, while the shutdown drains.
  std::string answer;
  std::thread client([&] {
    char buf[16];
    ssize_t n;
    do {
      n = ::recv(busy, buf, sizeof buf, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) answer.assign(buf, static_cast<size_t>(n));
    ::close(busy);
  });
  const auto t0 = std::chrono::steady_clock::now();
  const size_t aborted = srv.shutdown(1'000'000'000);  // 1 s drain
  const auto took = std::chrono::steady_clock::now() - t0;
  client.join();
  EXPECT_EQ(answer, "req");  // in-flight work finished
  EXPECT_EQ(aborted, 1u);    // the idle connection outlived the drain deadline
  EXPECT_GE(took, std::chrono::milliseconds(900));
  EXPECT_EQ(srv.live(), 0u);
  char c;
  EXPECT_EQ(::recv(idle, &c, 1, 0), 0);  // the aborted connection was closed
  ::close(idle);
  EXPECT_LT(blocking_connect(addr), 0);  // no longer accepting
  e.stop();
  e.join();
}

TEST(TcpServer, FirstSignalStopsGracefullySecondStopsAtOnce) {
  // In a child: the signals must be blocked in every thread, and this test process has
  // other threads (resolver, earlier engines) that would take SIGTERM's default action.
  const pid_t pid = fork();
  if (pid == 0) {
    std::atomic<int> graceful{0}, immediate{0};
    std::atomic<bool> release{false};
    std::thread sig = shutdown_on_signals(
        [&] {
          graceful.fetch_add(1);
          while (!release.load()) usleep(1000);  // a long drain
        },
        [&] {
          immediate.fetch_add(1);
          release.store(true);
        });
    kill(getpid(), SIGTERM);
    for (int i = 0; i < 2000 && graceful.load() == 0; ++i) usleep(1000);
    if (graceful.load() != 1) _exit(1);
    if (immediate.load() != 0) _exit(2);
    kill(getpid(), SIGINT);
    for (int i = 0; i < 2000 && immediate.load() == 0; ++i) usleep(1000);
    if (immediate.load() != 1) _exit(3);
    sig.join();
    _exit(0);
  }
  int status = 0;
  ASSERT_TRUE(wait_child(pid, &status)) << "the child did not exit within 60 s (killed)";
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1: no graceful call; 2: immediate too early; 3: no immediate call";
}

TEST(TcpServer, TenThousandConcurrentConnectionsAndFdsBackToBaseline) {
  constexpr int kConns = 10000;
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max < kConns + 200)
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << rl.rlim_max << " < " << kConns + 200;
  rlimit want{rl.rlim_max, rl.rlim_max};
  setrlimit(RLIMIT_NOFILE, &want);
  const int baseline = open_fds();
  {
    E e(with_shards(2));
    ASSERT_TRUE(e.start().ok());
    TcpServer<P> srv(e);
    const SocketAddress at = any_loopback_port();
    ASSERT_TRUE(srv.start(at, echo_handler).ok());
    const SocketAddress addr = srv.address();
    // The clients live in a child process (its own fd table): open all, then exchange a
    // message on every one, then close all. Exit code 0 = every exchange succeeded.
    int ready[2], go[2];  // child -> parent: all open; parent -> child: exchange now
    ASSERT_EQ(pipe(ready), 0);
    ASSERT_EQ(pipe(go), 0);
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<int> fds;
      for (int i = 0; i < kConns; ++i) {
        const int fd = blocking_connect(addr);
        if (fd < 0) _exit(10);
        fds.push_back(fd);
      }
      char b = 'o';
      if (::write(ready[1], &b, 1) != 1) _exit(11);  // all open
      if (::read(go[0], &b, 1) != 1) _exit(12);
      for (int fd : fds) {
        if (::send(fd, "x", 1, 0) != 1) _exit(13);
      }
      for (int fd : fds) {
        char c;
        if (::recv(fd, &c, 1, 0) != 1 || c != 'x') _exit(14);
      }
      for (int fd : fds) ::close(fd);
      _exit(0);
    }
    char b;
    ASSERT_EQ(::read(ready[0], &b, 1), 1);  // the child has all its connections open
    for (int i = 0; i < 5000 && srv.live() < static_cast<size_t>(kConns); ++i) usleep(2000);
    EXPECT_EQ(srv.live(), static_cast<size_t>(kConns));  // all open at once, server side
    const auto per = srv.accepted_per_shard();
    std::printf("10k connections per shard: %llu / %llu\n", static_cast<unsigned long long>(per[0]),
                static_cast<unsigned long long>(per[1]));
    ASSERT_EQ(::write(go[1], &b, 1), 1);  // go
    int status = 0;
    EXPECT_TRUE(wait_child(pid, &status)) << "the client did not exit within 60 s (killed)";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "client exit " << WEXITSTATUS(status);
    for (int i = 0; i < 5000 && srv.live() > 0; ++i) usleep(2000);
    EXPECT_EQ(srv.live(), 0u);
    for (int fd : {ready[0], ready[1], go[0], go[1]}) ::close(fd);
    srv.shutdown(1'000'000'000);
    e.stop();
    e.join();
  }
  EXPECT_EQ(open_fds(), baseline);
  setrlimit(RLIMIT_NOFILE, &rl);
}

TEST(TcpServer, ReuseportBalanceAtAThousandConnections) {
  // Issue 4's balance check: connections per shard under SO_REUSEPORT, max/min <= 1.5.
  constexpr int kConns = 1000;
  E e(with_shards(2));
  ASSERT_TRUE(e.start().ok());
  TcpServer<P> srv(e);
  const SocketAddress at = any_loopback_port();
  ASSERT_TRUE(srv.start(at, echo_handler).ok());
  std::vector<int> fds;
  for (int i = 0; i < kConns; ++i) {
    const int fd = blocking_connect(srv.address());
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
  }
  for (int i = 0; i < 5000 && srv.live() < static_cast<size_t>(kConns); ++i) usleep(1000);
  ASSERT_EQ(srv.live(), static_cast<size_t>(kConns));
  const auto per = srv.accepted_per_shard();
  const double hi = static_cast<double>(std::max(per[0], per[1]));
  const double lo = static_cast<double>(std::min(per[0], per[1]));
  std::printf("balance at %d connections: %llu / %llu (max/min %.3f)\n", kConns,
              static_cast<unsigned long long>(per[0]), static_cast<unsigned long long>(per[1]),
              lo > 0 ? hi / lo : 0.0);
  ASSERT_GT(lo, 0);
  EXPECT_LE(hi / lo, 1.5);
  for (int fd : fds) ::close(fd);
  srv.shutdown(2'000'000'000);
  e.stop();
  e.join();
}

TEST(TcpServer, EmfileOnAcceptBacksOffAndKeepsServing) {
  int info[2];
  ASSERT_EQ(pipe(info), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    // The server, in a child whose descriptor limit is nearly used up.
    ::close(info[0]);
    E e(EngineOptions{1, {}, false, 64, {}});
    if (!e.start().ok()) _exit(20);
    TcpServer<P> srv(e);
    const SocketAddress at = any_loopback_port();
    if (!srv.start(at, echo_handler).ok()) _exit(21);
    const uint16_t port = srv.address().port();
    rlimit rl{static_cast<rlim_t>(open_fds() + 3), static_cast<rlim_t>(open_fds() + 3)};
    setrlimit(RLIMIT_NOFILE, &rl);
    if (::write(info[1], &port, sizeof port) != sizeof port) _exit(22);
    usleep(1'500'000);  // the parent connects, finds echo working, and floods
    const uint64_t errors = srv.accept_errors();
    const uint64_t served = srv.accepted_per_shard()[0];
    if (::write(info[1], &errors, sizeof errors) != sizeof errors) _exit(23);
    if (::write(info[1], &served, sizeof served) != sizeof served) _exit(24);
    srv.shutdown(100'000'000);
    e.stop();
    e.join();
    _exit(0);
  }
  ::close(info[1]);
  uint16_t port = 0;
  ASSERT_EQ(::read(info[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  SocketAddress addr;
  parse_address("127.0.0.1:" + std::to_string(port), &addr);
  std::vector<int> fds;
  for (int i = 0; i < 12; ++i) {  // more than the child can accept
    const int fd = blocking_connect(addr);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
  }
  usleep(300'000);
  // The first connections were accepted before the limit hit: they are still served.
  int echoed = 0;
  for (int fd : fds) {
    if (::send(fd, "y", 1, MSG_NOSIGNAL) != 1) continue;
    pollfd p{fd, POLLIN, 0};
    char c;
    if (::poll(&p, 1, 300) == 1 && ::recv(fd, &c, 1, MSG_DONTWAIT) == 1 && c == 'y') ++echoed;
  }
  EXPECT_GE(echoed, 1) << "no connection was served while accept hit EMFILE";
  EXPECT_LT(echoed, 12) << "the descriptor limit never bit; the test proves nothing";
  uint64_t errors = 0, served = 0;
  ASSERT_EQ(::read(info[0], &errors, sizeof errors), static_cast<ssize_t>(sizeof errors));
  ASSERT_EQ(::read(info[0], &served, sizeof served), static_cast<ssize_t>(sizeof served));
  EXPECT_GT(errors, 0u) << "accept never failed with EMFILE";
  EXPECT_LT(errors, 40u) << "the acceptor spun on EMFILE instead of backing off";
  for (int fd : fds) ::close(fd);
  int status = 0;
  ASSERT_TRUE(wait_child(pid, &status)) << "the child did not exit within 60 s (killed)";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << WEXITSTATUS(status);
  ::close(info[0]);
}

TEST(TcpServer, DestroyedWithoutShutdownAbortsItsConnectionsWhileTheEngineRuns) {
  // No shutdown(): the destructor ends what the server started (the accept loops and a
  // handler parked in read) before its memory goes; the engine then runs on. Under ASan a
  // task left pointing at the freed server shows up as a use after free.
  E e(with_shards(2));
  ASSERT_TRUE(e.start().ok());
  SocketAddress addr;
  std::atomic<int> ended{0};
  int client = -1;
  {
    TcpServer<P> srv(e);
    const SocketAddress at = any_loopback_port();
    std::string why;
    ASSERT_TRUE(srv.start(
                       at,
                       [&ended](TcpStream<P>& c) -> Task<void> {
                         std::array<std::byte, 64> buf;
                         IoResult r = co_await c.read(buf);
                         EXPECT_TRUE(r.err.closed()) << r.err.message();
                         ended.fetch_add(1);
                       },
                       &why)
                    .ok())
        << why;
    addr = srv.address();
    client = blocking_connect(addr);
    ASSERT_GE(client, 0);
    for (int i = 0; i < 500 && srv.live() < 1; ++i) usleep(2000);
    ASSERT_EQ(srv.live(), 1u);
  }
  EXPECT_EQ(ended.load(), 1) << "the parked handler did not end before the server went";
  char c;
  EXPECT_EQ(::recv(client, &c, 1, 0), 0);  // the connection was closed
  ::close(client);
  EXPECT_LT(blocking_connect(addr), 0);  // no longer listening
  // The engine still serves: a task on each shard runs.
  for (size_t i = 0; i < e.size(); ++i) EXPECT_EQ(E::call(e.shard(i), [] { return 7; }), 7);
  e.stop();
  e.join();
}

// A handler that parks in read until its connection ends: it keeps a drain waiting.
Task<void> hold_handler(TcpStream<P>& c) {
  std::array<std::byte, 64> buf;
  for (;;) {
    IoResult r = co_await c.read(buf);
    if (!r.ok()) co_return;
  }
}

// Starts srv on a free loopback port and connects one client that the server holds (a
// handler parked in read); returns the client's fd, or -1 when that did not happen.
int hold_one_connection(TcpServer<P>& srv) {
  if (!srv.start(any_loopback_port(), hold_handler).ok()) return -1;
  const int client = blocking_connect(srv.address());
  for (int i = 0; i < 500 && srv.live() < 1; ++i) usleep(2000);
  if (srv.live() == 1) return client;
  if (client >= 0) ::close(client);
  return -1;
}

// Runs body() in a child (fresh signal masks, no threads of this test process) and
// returns its wait status, or -1 when it had not exited within `secs` (then killed).
template <class Body>
int in_child(int secs, Body body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  if (!wait_child(pid, &status, secs)) return -1;
  return status;
}

// Issue 27 (1): shutdown() after Engine::stop() used to wait forever in Engine::call on a
// stopped shard. It returns now, counting the connection still open, and the server and
// the engine are destroyed cleanly afterwards (ASan sees no use after free: the server's
// state goes with the stopped shards).
TEST(TcpServer, ShutdownAfterEngineStopReturnsInsteadOfHanging) {
  const int status = in_child(20, [] {
    E e(with_shards(2));
    if (!e.start().ok()) return 10;
    size_t open = 0;
    {
      TcpServer<P> srv(e);
      const int client = hold_one_connection(srv);
      if (client < 0) return 11;
      e.stop();
      open = srv.shutdown(10'000'000'000);
      e.join();
      ::close(client);
    }
    return open == 1 ? 0 : 13;
  });
  ASSERT_NE(status, -1) << "shutdown() after Engine::stop() hung (the child was killed)";
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: start; 11: no connection; 13: count";
}

// A server destroyed after Engine::stop() without shutdown() used to stop the process;
// its teardown is now shutdown()'s stopped-engine path.
TEST(TcpServer, DestroyedAfterTheEngineStoppedWithoutShutdownIsSafe) {
  const int status = in_child(20, [] {
    E e(with_shards(1));
    if (!e.start().ok()) return 10;
    auto srv = std::make_unique<TcpServer<P>>(e);
    const int client = hold_one_connection(*srv);
    if (client < 0) return 11;
    e.stop();
    e.join();
    srv.reset();
    ::close(client);
    return 0;
  });
  ASSERT_NE(status, -1) << "the child hung (killed)";
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The program: graceful = shutdown with a long drain, then stop; a second signal's
// handler = Engine::stop(). A connection stays open, so the drain would take 30 s; the
// second SIGTERM must end it at once (the process used to need SIGKILL). With a handler
// that stops nothing, wait_stop_signals ends the process itself 5 s after the handler.
int serve_and_signal_twice(std::function<void(E&)> immediate) {
  block_stop_signals(false);
  E e(with_shards(2));
  if (!e.start().ok()) return 10;
  {
    TcpServer<P> srv(e);
    const int client = hold_one_connection(srv);
    if (client < 0) return 11;
    std::thread signaller([] {  // created after the block: it inherits the mask
      kill(getpid(), SIGTERM);
      usleep(300'000);  // the graceful stop is in its drain by now
      kill(getpid(), SIGTERM);
    });
    wait_stop_signals(
        [&] {
          srv.shutdown(30'000'000'000);
          e.stop();
        },
        [&] { immediate(e); });
    signaller.join();
    e.join();
    ::close(client);
  }
  return 0;
}

TEST(TcpServer, SecondSignalWithEngineStopEndsTheProcessPromptly) {
  const auto t0 = std::chrono::steady_clock::now();
  const int status = in_child(20, [] { return serve_and_signal_twice([](E& e) { e.stop(); }); });
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_NE(status, -1) << "a second SIGTERM with engine.stop() left the process hanging";
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST(TcpServer, SecondSignalWithAHandlerThatStopsNothingStillEndsTheProcess) {
  const auto t0 = std::chrono::steady_clock::now();
  const int status = in_child(20, [] { return serve_and_signal_twice([](E&) {}); });
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_NE(status, -1) << "the graceful stop kept the process alive after the second signal";
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  EXPECT_LT(took, std::chrono::seconds(12));
}

// Engine::call on a stopped shard used to wait forever; try_call says it could not run.
TEST(Engine, TryCallOnAStoppedShardFailsInsteadOfWaiting) {
  E e(with_shards(1));
  ASSERT_TRUE(e.start().ok());
  EXPECT_EQ(E::try_call(e.shard(0), [] { return 5; }), std::optional<int>(5));
  e.stop();
  e.join();
  EXPECT_FALSE(e.shard(0).serving());
  EXPECT_EQ(E::try_call(e.shard(0), [] { return 5; }), std::nullopt);
  bool ran = false;
  EXPECT_FALSE(E::try_call(e.shard(0), [&] { ran = true; }));
  EXPECT_FALSE(ran);
}

// Issue 27 (4): a second instance on a port already served (SO_REUSEPORT) used to start
// silently and take part of the connections; it is refused now, saying why, unless
// allow_shared_port.
TEST(TcpServer, ASecondInstanceOnABoundPortIsRefusedUnlessAllowed) {
  E e(with_shards(2));
  ASSERT_TRUE(e.start().ok());
  TcpServer<P> first(e);
  const SocketAddress at = any_loopback_port();
  ASSERT_TRUE(first.start(at, echo_handler).ok());
  const SocketAddress taken = first.address();
  {
    TcpServer<P> second(e);
    std::string why;
    const Status st = second.start(taken, echo_handler, &why);
    EXPECT_EQ(st.sys_errno(), EADDRINUSE) << st.message();
    EXPECT_NE(why.find("another socket already listens"), std::string::npos) << why;
    EXPECT_NE(why.find(taken.to_string()), std::string::npos) << why;
  }
  {
    typename TcpServer<P>::Options so;
    so.listen.allow_shared_port = true;
    TcpServer<P> shared(e, so);
    std::string why;
    EXPECT_TRUE(shared.start(taken, echo_handler, &why).ok()) << why;
    shared.shutdown(0);
  }
  first.shutdown(0);
  // Another process's listener (a plain SO_REUSEPORT socket here) is refused the same way.
  const int other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(other, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  ASSERT_EQ(bind(other, taken.sa(), taken.len), 0) << strerror(errno);
  ASSERT_EQ(listen(other, 16), 0);
  {
    TcpServer<P> third(e);
    std::string why;
    EXPECT_EQ(third.start(taken, echo_handler, &why).sys_errno(), EADDRINUSE) << why;
  }
  ::close(other);
  // Once the port is free (connections of the earlier servers in TIME_WAIT do not count),
  // a new instance starts.
  {
    TcpServer<P> again(e);
    std::string why;
    EXPECT_TRUE(again.start(taken, echo_handler, &why).ok()) << why;
    again.shutdown(0);
  }
  e.stop();
  e.join();
}

// Issue 27 (6): a handler may take the connection's context: its shard, the peer, and
// whether the server is draining; (10) write() takes text.
TEST(TcpServer, ContextHandlerSeesShardPeerAndDraining) {
  E e(with_shards(2));
  ASSERT_TRUE(e.start().ok());
  TcpServer<P> srv(e);
  const SocketAddress at = any_loopback_port();
  std::atomic<int> shard_ok{0}, drained{0};
  std::string peer;
  std::mutex mu;
  ASSERT_TRUE(srv.start(at,
                        [&](TcpStream<P>& c, ConnContext<P> ctx) -> Task<void> {
                          shard_ok.store(&ctx.shard() == E::current() ? 1 : -1);
                          {
                            std::lock_guard<std::mutex> l(mu);
                            peer = ctx.peer().to_string();
                          }
                          const IoResult hi = co_await c.write("hi\n");  // string_view
                          if (!hi.ok()) co_return;
                          std::array<std::byte, 16> buf;
                          IoResult r = co_await c.read(buf);
                          // Says it was the shutdown, not "use of closed descriptor".
                          if (r.err.closed() && ctx.draining() &&
                              std::string(r.err.message()).find("server shutdown") !=
                                  std::string::npos)
                            drained.store(1);
                          std::printf("aborted handler's read: %s\n", r.err.message());
                        })
                  .ok());
  const int client = blocking_connect(srv.address());
  ASSERT_GE(client, 0);
  sockaddr_in local{};
  socklen_t len = sizeof local;
  getsockname(client, reinterpret_cast<sockaddr*>(&local), &len);
  char hi[3];
  ASSERT_EQ(::recv(client, hi, sizeof hi, MSG_WAITALL), 3);
  EXPECT_EQ(std::string(hi, 3), "hi\n");
  for (int i = 0; i < 500 && shard_ok.load() == 0; ++i) usleep(2000);
  EXPECT_EQ(shard_ok.load(), 1);
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(peer, "127.0.0.1:" + std::to_string(ntohs(local.sin_port)));
  }
  EXPECT_EQ(srv.shutdown(100'000'000), 1u);  // aborted at the drain deadline
  EXPECT_EQ(drained.load(), 1);
  ::close(client);
  e.stop();
  e.join();
}

}  // namespace
}  // namespace ringpoll::test
