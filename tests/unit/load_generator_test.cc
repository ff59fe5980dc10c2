// ringpoll-load's generator: the open-loop schedule, the coordinated-omission correction
// against a server that stalls once, and short end-to-end runs against in-test servers on
// the engine (echo and HTTP) — on every backend the generator is instantiated for — with
// refused connects, the open-loop rate over shards, and the shards' pinning and merge.
// Every run is bounded: the generator stops at its duration, and each in-test server
// stops when its clients are gone or its own deadline passes.
#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string_view>
#include <thread>
#include <vector>

#include "apps/load/generator.h"
#include "apps/load/schedule.h"
#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/poll_fd.h"
#include "support/test_env.h"

namespace ringpoll::load {
namespace {

using test::kMs;
using test::kSec;

LoadOptions base_options(LoadMode mode, uint16_t port, int connections, double duration_s) {
  LoadOptions o;
  o.mode = mode;
  o.target.sin_family = AF_INET;
  o.target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  o.target.sin_port = htons(port);
  o.target_text = "127.0.0.1:" + std::to_string(port);
  o.connections = connections;
  o.duration_s = duration_s;
  o.timeout_s = 2;
  return o;
}

TEST(LoadSchedule, ConnectionsInterleaveIntoOneEvenStream) {
  constexpr int kConns = 7;
  constexpr double kRate = 3000;  // interval 333333.33 ns: exercises the rounding
  const int64_t t0 = 1'000'000'000;
  std::vector<int64_t> all;
  for (int g = 0; g < kConns; ++g) {
    const OpenLoopSchedule s(t0, kRate, kConns, g);
    EXPECT_EQ(s.at(0), t0 + static_cast<int64_t>(std::llround(g * 1e9 / kRate)));
    for (uint64_t k = 0; k < 300; ++k) {
      if (k > 0) {  // each connection sends every C/R seconds
        EXPECT_NEAR(static_cast<double>(s.at(k) - s.at(k - 1)), kConns * 1e9 / kRate, 1.0);
      }
      all.push_back(s.at(k));
    }
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i < all.size(); ++i) {
    // The merged stream is t0 + i/R, to the nanosecond.
    EXPECT_NEAR(static_cast<double>(all[i] - t0), static_cast<double>(i) * 1e9 / kRate, 1.0) << i;
  }
}

// A plain blocking echo server for one connection that stalls once: before answering
// request number `stall_at` it sleeps `stall`. It ends when the client closes or after
// `limit` (so a broken generator cannot hang the test).
class StallingEchoServer {
 public:
  StallingEchoServer(size_t msg, int stall_at, int64_t stall)
      : msg_(msg), stall_at_(stall_at), stall_(stall) {
    listener_ = test::tcp_listener(&port_);
    thread_ = std::thread([this] { serve(); });
  }
  ~StallingEchoServer() {
    thread_.join();
    if (listener_ >= 0) ::close(listener_);
  }
  uint16_t port() const { return port_; }
  int answered() const { return answered_.load(); }

 private:
  void serve() {
    const int64_t limit = mono_now_ns() + 10 * kSec;
    pollfd p{listener_, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return;
    const int c = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    timeval tv{0, 200'000};  // each recv wakes up at least every 200 ms to check the limit
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::vector<char> buf(msg_);
    int n = 0;
    while (mono_now_ns() < limit) {
      size_t got = 0;
      while (got < msg_ && mono_now_ns() < limit) {
        const ssize_t r = recv(c, buf.data() + got, msg_ - got, 0);
        if (r == 0) goto done;
        if (r < 0) {
          if (errno == EAGAIN || errno == EINTR) continue;
          goto done;
        }
        got += static_cast<size_t>(r);
      }
      if (got < msg_) break;
      if (++n == stall_at_) test::sleep_until_ns(mono_now_ns() + stall_);
      if (send(c, buf.data(), msg_, MSG_NOSIGNAL) != static_cast<ssize_t>(msg_)) break;
      answered_.store(n);
    }
  done:
    ::close(c);
  }

  size_t msg_;
  int stall_at_;
  int64_t stall_;
  int listener_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> answered_{0};
  std::thread thread_;
};

// Open loop at 500 req/s on one connection for 1 s; the server stalls 200 ms once, ~0.2 s
// in. With the correction, the ~100 requests intended during the stall are charged the
// time they waited (up to 200 ms); without it only the one request in flight is.
LoadReport run_with_stall(bool co_correction) {
  StallingEchoServer server(64, /*stall_at=*/100, /*stall=*/200 * kMs);
  LoadOptions o = base_options(LoadMode::kEcho, server.port(), 1, 1.0);
  o.size = 64;
  o.rate = 500;
  o.co_correction = co_correction;
  return run_load_on<EpollPoller>(o);
}

TEST(LoadOpenLoop, StallShowsWithCorrection) {
  const LoadReport r = run_with_stall(true);
  ASSERT_EQ(r.counters.errors(), 0u) << r.first_error;
  ASSERT_GT(r.counters.requests, 300u);
  EXPECT_GE(r.latency.max(), static_cast<uint64_t>(190 * kMs));
  EXPECT_GE(r.latency.quantile(0.99), static_cast<uint64_t>(100 * kMs));
  // About half of the ~100 requests behind the stall waited 100 ms or more.
  EXPECT_GE(r.latency.count_at_or_above(100 * kMs), 25u);
}

TEST(LoadOpenLoop, StallHiddenWithoutCorrection) {
  const LoadReport r = run_with_stall(false);
  ASSERT_EQ(r.counters.errors(), 0u) << r.first_error;
  ASSERT_GT(r.counters.requests, 300u);
  // Only the request in flight during the stall measures it; the ones queued behind it are
  // sent late and look fast — the omission the correction exists to undo.
  // (Bounds with room for a loaded 2-core machine under a sanitizer; with the correction
  // the same run has 25 or more at 100 ms and a p99 of 100 ms or more.)
  EXPECT_LE(r.latency.count_at_or_above(100 * kMs), 10u);
  EXPECT_LT(r.latency.quantile(0.99), static_cast<uint64_t>(100 * kMs));
}

// An echo or HTTP server on the engine, one shard in its own thread. The accept loop
// re-checks `stop_` every 50 ms; connection tasks end when their client closes.
template <class P>
class EngineServer {
 public:
  enum class Kind { kEcho, kHttp };
  explicit EngineServer(Kind kind) : kind_(kind) {
    listener_ = test::tcp_listener(&port_);
    thread_ = std::thread([this] {
      if (!s_.start().ok()) return;
      s_.spawn(accept_loop());
      s_.run();
    });
  }
  ~EngineServer() {
    stop_.store(true);
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  Task<void> accept_loop() {
    PollFd<P> l;
    if (!l.open(s_, listener_).ok()) co_return;
    while (!stop_.load()) {
      l.set_read_deadline(mono_now_ns() + 50 * kMs);
      const AcceptResult a = co_await l.accept();
      if (a.fd >= 0) s_.spawn(serve(a.fd));
    }
    co_await l.close();
  }
  Task<void> serve(int fd) {
    PollFd<P> c;
    if (!c.open(s_, fd).ok()) {
      ::close(fd);
      co_return;
    }
    static constexpr std::string_view kResponse =
        "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";
    std::vector<std::byte> buf(16 * 1024);
    std::vector<std::byte> out;
    int matched = 0;  // HTTP: how much of "\r\n\r\n" the last bytes matched
    for (;;) {
      const IoResult r = co_await c.read(std::span<std::byte>(buf));
      if (!r.ok()) break;
      std::span<const std::byte> reply(buf.data(), r.n);
      if (kind_ == Kind::kHttp) {
        out.clear();
        for (size_t i = 0; i < r.n; ++i) {
          const char ch = static_cast<char>(buf[i]);
          matched = ch == "\r\n\r\n"[matched] ? matched + 1 : (ch == '\r' ? 1 : 0);
          if (matched == 4) {
            matched = 0;
            const auto* p = reinterpret_cast<const std::byte*>(kResponse.data());
            out.insert(out.end(), p, p + kResponse.size());
          }
        }
        reply = out;
      }
      if (!reply.empty()) {
        const IoResult w = co_await c.write(reply);
        if (!w.ok()) break;
      }
    }
    co_await c.close();
  }

  Kind kind_;
  Scheduler<P> s_;
  int listener_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The generator's tests that run on each backend it is built for (generator.cc's explicit
// instantiations). A backend that is not available here reports a skip, never a pass.
template <class P>
class LoadOnBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    const Availability a = P::available();
    if (!a.ok) GTEST_SKIP() << P::kName << " is not available here: " << a.why;
  }
};
using LoadBackends = ::testing::Types<EpollPoller, UringPoller, UringCompletionPoller>;
TYPED_TEST_SUITE(LoadOnBackend, LoadBackends, test::BackendName);

// The generator's sockets are the engine's, so it runs on io_uring's completion mode too
// (the programs' default backend).
TYPED_TEST(LoadOnBackend, EchoOnEngine) {
  using P = TypeParam;
  EngineServer<P> server(EngineServer<P>::Kind::kEcho);
  LoadOptions o = base_options(LoadMode::kEcho, server.port(), 6, 1.0);
  o.size = 300;
  o.pipeline = 3;
  o.shards = 2;
  o.warmup_s = 0.2;
  const LoadReport r = run_load_on<P>(o);
  EXPECT_TRUE(r.failure.empty()) << r.failure;
  EXPECT_GT(r.counters.requests, 100u);
  EXPECT_EQ(r.counters.errors(), 0u) << r.first_error;
  EXPECT_EQ(r.latency.count(), r.counters.requests);
  EXPECT_EQ(r.counters.reconnects, 0u);
  EXPECT_NEAR(r.measured_s, 1.0, 1e-6);
  EXPECT_GT(r.latency.quantile(0.5), 0u);
  EXPECT_LE(r.latency.quantile(0.5), r.latency.quantile(0.99));
}

TEST(LoadEndToEnd, HttpPipelinedOnEngine) {
  EngineServer<EpollPoller> server(EngineServer<EpollPoller>::Kind::kHttp);
  LoadOptions o = base_options(LoadMode::kHttp, server.port(), 4, 1.0);
  o.pipeline = 4;
  const LoadReport r = run_load_on<EpollPoller>(o);
  EXPECT_GT(r.counters.requests, 100u);
  EXPECT_EQ(r.counters.errors(), 0u) << r.first_error;
  EXPECT_EQ(r.counters.server_closes, 0u);
}

// Every connect goes through PollFd's connect; a refused one is counted and named, on
// every backend, and retried with back-off until the run ends.
TYPED_TEST(LoadOnBackend, RefusedConnectionsAreCountedNotDropped) {
  using P = TypeParam;
  uint16_t port = 0;
  const int l = test::tcp_listener(&port);
  ASSERT_GE(l, 0);
  ::close(l);  // nobody listens there now: every connect is refused
  LoadOptions o = base_options(LoadMode::kEcho, port, 2, 0.3);
  const LoadReport r = run_load_on<P>(o);
  EXPECT_TRUE(r.failure.empty()) << r.failure;
  EXPECT_EQ(r.counters.requests, 0u);
  // Both connections in the connect phase, then at least one retry each in 0.3 s (the
  // back-off starts at 10 ms).
  EXPECT_GE(r.counters.connect_errors, 4u);
  EXPECT_EQ(r.counters.errors(), r.counters.connect_errors);
  EXPECT_EQ(r.counters.reconnects, 0u);
  EXPECT_NE(r.first_error.find("connect: "), std::string::npos) << r.first_error;
  EXPECT_NE(r.first_error.find("refused"), std::string::npos) << r.first_error;
}

// A connect that the end of the run cuts short is not an error: a closed loop that opens
// a connection per request (--tls-handshake-per-request) always has some in flight then.
// One that outlives --timeout is. The listener's accept queue is full and nobody
// accepts, so the kernel drops every SYN and no connect completes: the two connections'
// first connects (before the run) fail at the 0.4 s timeout and are counted; their
// retries, whose deadline is the end of the 0.3 s run, are counted as unfinished.
TYPED_TEST(LoadOnBackend, AConnectTheRunsEndCutsShortIsNoError) {
  using P = TypeParam;
  const int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(l, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(l, 0), 0);  // room for one connection that is never accepted
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(l, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(filler, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  LoadOptions o = base_options(LoadMode::kEcho, ntohs(a.sin_port), 2, 0.3);
  o.timeout_s = 0.4;
  const LoadReport r = run_load_on<P>(o);
  ::close(filler);
  ::close(l);
  EXPECT_TRUE(r.failure.empty()) << r.failure;
  EXPECT_EQ(r.counters.requests, 0u);
  EXPECT_EQ(r.counters.connect_errors, 2u) << r.first_error;
  EXPECT_EQ(r.counters.errors(), r.counters.connect_errors);
  EXPECT_NE(r.first_error.find("timed out"), std::string::npos) << r.first_error;
  EXPECT_EQ(r.counters.unfinished_connects, 2u);
}

// Open loop over two shards: the answers counted in the measured window are the rate
// times the window (each connection sends on its own schedule, whatever the server's
// speed), not what a closed loop would reach.
TYPED_TEST(LoadOnBackend, OpenLoopRateHeldOverShards) {
  using P = TypeParam;
  EngineServer<P> server(EngineServer<P>::Kind::kEcho);
  constexpr double kRate = 2000;
  LoadOptions o = base_options(LoadMode::kEcho, server.port(), 4, 1.0);
  o.rate = kRate;
  o.shards = 2;
  o.warmup_s = 0.2;
  // Room to catch up: with one request in flight, a round trip longer than a connection's
  // 2 ms interval (a loaded machine, a sanitizer) would lose sends, not the schedule.
  o.pipeline = 8;
  const LoadReport r = run_load_on<P>(o);
  ASSERT_TRUE(r.failure.empty()) << r.failure;
  EXPECT_EQ(r.counters.errors(), 0u) << r.first_error;
  const double expected = kRate * r.measured_s;
  // Only the requests in flight at the window's two edges differ; 10 % is room for a
  // loaded machine under a sanitizer.
  EXPECT_GE(static_cast<double>(r.counters.requests), 0.9 * expected);
  EXPECT_LE(static_cast<double>(r.counters.requests), 1.02 * expected);
  ASSERT_EQ(r.shards.size(), 2u);
  for (const ShardSummary& s : r.shards) {
    // Two connections each: half the rate, within the same margins.
    EXPECT_GE(static_cast<double>(s.requests), 0.45 * expected);
    EXPECT_LE(static_cast<double>(s.requests), 0.51 * expected);
  }
}

// Three shards: each is an Engine shard pinned to the allowed CPUs in order (as the
// servers' are), each records its own part, and the report is their sum — counters and
// histogram alike.
TEST(LoadEndToEnd, ShardsArePinnedAndTheirRecordsMerged) {
  EngineServer<EpollPoller> server(EngineServer<EpollPoller>::Kind::kEcho);
  LoadOptions o = base_options(LoadMode::kEcho, server.port(), 6, 0.5);
  o.shards = 3;
  const LoadReport r = run_load_on<EpollPoller>(o);
  ASSERT_TRUE(r.failure.empty()) << r.failure;
  EXPECT_EQ(r.counters.errors(), 0u) << r.first_error;
  const std::vector<int> allowed = ringpoll::detail::allowed_cpus();
  ASSERT_EQ(r.shards.size(), 3u);
  uint64_t sum = 0;
  for (size_t i = 0; i < r.shards.size(); ++i) {
    EXPECT_EQ(r.shards[i].cpu, allowed[i % allowed.size()]) << "shard " << i;
    EXPECT_GT(r.shards[i].requests, 0u) << "shard " << i;
    sum += r.shards[i].requests;
  }
  EXPECT_EQ(sum, r.counters.requests);
  EXPECT_EQ(r.latency.count(), r.counters.requests);
}

}  // namespace
}  // namespace ringpoll::load
