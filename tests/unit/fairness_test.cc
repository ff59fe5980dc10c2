// Fairness (DESIGN.md "Fairness", README "What a connection may hold"): a client that
// stops reading must not stall the other connections of its shard. ringpoll-serve's echo
// and HTTP handlers on one shard, on every Linux backend and both io_uring modes: a
// client sends without reading until the server stops taking its bytes (the server's
// memory is bounded), other clients are answered meanwhile with a p99 under 100 ms (500 under
// sanitizers), and the slow client then reads every byte intact. Then 1,000 clients stop reading at
// once (more than the provided-buffer ring can hold at the per-connection bound) and 50 more are
// still served.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "apps/http/response.h"
#include "support/fairness.h"
#include "support/serve_fixture.h"
#include "support/test_env.h"
#include "uring/uring_completion.h"

namespace ringpoll::test {
namespace {

using namespace std::chrono_literals;
using serve::ServeCounters;
using serve::ServeSettings;

constexpr size_t kFloodCap = 256u << 20;  // a server that takes this much is unbounded

// ringpoll-serve's echo or HTTP handler on one shard.
template <class P>
struct OneShardServer : ServeFixture<P> {
  explicit OneShardServer(bool http) : ServeFixture<P>(ServeSettings{}, http, 1) {}
};

int connect_plain(const SocketAddress& at, int rcvbuf = 0) {
  const int fd = socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (::connect(fd, at.sa(), at.len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

template <class P>
class Fairness : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
};
using FairnessBackends = SocketBackendTypes;
TYPED_TEST_SUITE(Fairness, FairnessBackends, BackendName);

TYPED_TEST(Fairness, EchoClientThatStopsReadingDoesNotStallItsShard) {
  OneShardServer<TypeParam> srv(false);
  ASSERT_TRUE(srv.started());
  const int slow = connect_plain(srv.address());
  ASSERT_GE(slow, 0);
  const Flood f = flood_until_blocked(slow, Stream(7), kFloodCap, 300ms);
  ASSERT_TRUE(f.blocked) << "the server took " << f.sent
                         << " bytes from a client that reads nothing: not bounded";

  const ProbeResult pr = probe(srv.address(), ProbeKind::kEcho, 20, 10);
  EXPECT_EQ(pr.answered, pr.asked) << "other clients of the shard were not served";
  EXPECT_LT(pr.p99_ms, kServedP99Ms) << "max " << pr.max_ms << " ms";
  if constexpr (OneShardServer<TypeParam>::kRing) {
    const auto c = srv.ring();
    const unsigned bound = UringCompletionOptions{}.buf_per_conn;
    EXPECT_GE(c.conns_at_bound, 1u) << "the slow connection never reached its bound";
    EXPECT_GE(c.bound_pauses, 1u);
    // At the bound the recv is cancelled; what the kernel delivered in the same batch
    // still lands (51 buffers beyond the bound of 16 here), but the connection no longer
    // takes the ring (before the bound it took all 512).
    EXPECT_GE(c.buffers_held, bound);
    EXPECT_LT(c.buffers_held, UringCompletionOptions{}.buf_count / 2)
        << "one connection that reads nothing took most of the shard's buffers";
  }

  // The slow client reads at last: every byte comes back, in order.
  EXPECT_EQ(check_stream_n(slow, 7, f.sent), f.sent);
  if constexpr (OneShardServer<TypeParam>::kRing) {
    const auto c = srv.ring();
    EXPECT_EQ(c.conns_at_bound, 0u) << "reading did not lift the bound";
  }
  ::close(slow);
}

TYPED_TEST(Fairness, HttpPipelinedResponsesNeverReadDoNotStallItsShard) {
  OneShardServer<TypeParam> srv(true);
  ASSERT_TRUE(srv.started());
  const int slow = connect_plain(srv.address());
  ASSERT_GE(slow, 0);
  const std::string req = "GET /bytes/1000 HTTP/1.1\r\nHost: slow\r\n\r\n";
  const Flood f = flood_until_blocked(slow, Repeat{req}, kFloodCap, 300ms);
  ASSERT_TRUE(f.blocked) << "the server took " << f.sent
                         << " bytes of requests whose answers are not read: not bounded";

  const ProbeResult pr = probe(srv.address(), ProbeKind::kHttp, 20, 10);
  EXPECT_EQ(pr.answered, pr.asked) << "other clients of the shard were not served";
  EXPECT_LT(pr.p99_ms, kServedP99Ms) << "max " << pr.max_ms << " ms";

  // The slow client reads at last: one whole answer per request, in order. It finishes
  // the request it was cut in, then asks to close, so the count is exact.
  const size_t whole = f.sent / req.size();
  const size_t part = f.sent % req.size();
  size_t answers = 0;
  bool intact = true;
  std::thread reader([&] {
    std::string buf, body;
    const std::string filler(http::filler_block().data(), 1000);
    for (;;) {
      const int status = read_http_response(slow, &buf, &body, 10000);
      if (status == 0) break;
      ++answers;
      if (status != 200) intact = false;
      if (answers <= whole + (part ? 1 : 0) && body != filler) intact = false;
    }
  });
  const std::string rest = (part ? req.substr(part) : std::string()) +
                           "GET /plaintext HTTP/1.1\r\nHost: slow\r\nConnection: close\r\n\r\n";
  EXPECT_TRUE(send_all(slow, rest.data(), rest.size()));
  reader.join();
  EXPECT_EQ(answers, whole + (part ? 1 : 0) + 1) << "requests were lost or answered twice";
  EXPECT_TRUE(intact) << "an answer's status or body was wrong";
  ::close(slow);
}

TYPED_TEST(Fairness, AThousandClientsThatStopReadingLeaveFiftyOthersServed) {
  constexpr int kStalled = 1000;
  FdLimit lim(2 * kStalled + 512);
  if (!lim.ok) GTEST_SKIP() << "RLIMIT_NOFILE's hard limit is below " << 2 * kStalled + 512;
  OneShardServer<TypeParam> srv(false);
  ASSERT_TRUE(srv.started());
  // Each stalled client has a small receive buffer, so the server's echo soon blocks and
  // it stops reading them; each then sends 256 KiB (more than its share of the ring).
  std::vector<int> stalled;
  for (int i = 0; i < kStalled; ++i) {
    const int fd = connect_plain(srv.address(), 4096);
    ASSERT_GE(fd, 0) << "connect " << i << ": " << strerror(errno);
    stalled.push_back(fd);
  }
  constexpr size_t kEach = 256 * 1024;
  std::vector<size_t> sent(kStalled, 0);
  const std::string chunk(16384, 's');
  auto last_progress = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - last_progress < 300ms) {
    bool progress = false;
    for (int i = 0; i < kStalled; ++i) {
      if (sent[i] >= kEach) continue;
      const ssize_t k = ::send(stalled[i], chunk.data(), std::min(chunk.size(), kEach - sent[i]),
                               MSG_NOSIGNAL | MSG_DONTWAIT);
      if (k > 0) {
        sent[i] += static_cast<size_t>(k);
        progress = true;
      }
    }
    if (progress) last_progress = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(1ms);
  }
  size_t total = 0;
  for (size_t s : sent) total += s;
  EXPECT_GT(total, size_t{kStalled} * 64 * 1024)
      << "the stalled clients sent too little to fill the ring";

  const ProbeResult pr = probe(srv.address(), ProbeKind::kEcho, 50, 4);
  EXPECT_EQ(pr.answered, pr.asked) << "clients beside 1,000 stalled ones were not served";
  EXPECT_LT(pr.p99_ms, kServedP99Ms) << "max " << pr.max_ms << " ms";
  if constexpr (OneShardServer<TypeParam>::kRing) {
    // The ring ran dry (1,000 connections at up to buf_per_conn each). Whether the
    // probe's reads then met a dry ring (and were received straight into the handler's
    // buffer) or buffers some stalled connection had given back depends on the timing of
    // the machine (CI saw both), so only the dry ring is required here; the probe being
    // answered is what the test is about.
    const auto c = srv.ring();
    EXPECT_GT(c.nobufs, 0u) << "the ring never ran dry: the test did not test the fallback";
  }
  for (int fd : stalled) ::close(fd);
}

}  // namespace
}  // namespace ringpoll::test
