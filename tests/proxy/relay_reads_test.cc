// The copying relay's reads (apps/proxy/relay.h, RecvInto): on a backend with an edge per
// arrival (epoll, io_uring readiness) a request/response exchange through the proxy costs
// one recv per message and direction, none that only meets EAGAIN (the engine's
// short-read rule, engine/readiness_op.h) — and every byte still arrives, in order.
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "apps/proxy/proxy.h"
#include "proxy/proxy_rig.h"
#include "proxy/proxy_test_helpers.h"
#include "support/io_counts.h"
#include "support/test_env.h"
#include "uring/uring_poller.h"

namespace ringpoll::test {
namespace {

template <class P>
class RelayReads : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
};
// The readiness relay (RecvInto); io_uring completion mode reads from its provided-buffer
// ring, which the rule does not touch.
using RelayReadBackends = ::testing::Types<EpollPoller, UringPoller>;
TYPED_TEST_SUITE(RelayReads, RelayReadBackends, BackendName);

// The shard's counters, read on its thread.
template <class P>
IoCounters shard_counters(ProxyRig<P>& rig) {
  return Engine<P>::call(rig.e.shard(0),
                         [] { return Engine<P>::current()->sched().io_counters(); });
}

TYPED_TEST(RelayReads, AnEchoExchangeCostsNoReadThatOnlyMeetsEagain) {
  using P = TypeParam;
  TestUpstream up(echo);
  proxy::ProxySettings s = main_listener_settings({up.address()});
  s.splice = false;  // the copying relay, the small-message path
  ProxyRig<P> rig(std::move(s));
  ASSERT_TRUE(rig.started);
  const int c = connect_to(rig.addr);
  ASSERT_GE(c, 0);
  timeval tv{5, 0};  // a lost reply fails the test instead of hanging it
  ASSERT_EQ(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  const int rounds = static_cast<int>(sized_for_build(400, 100));
  constexpr size_t kMsg = 64;
  // One round first: the connection is up and each direction has made its first read.
  char out[kMsg], in[kMsg];
  auto round = [&](int i) {
    std::memset(out, 'a' + i % 26, kMsg);
    if (!send_all(c, out, kMsg)) return false;
    size_t got = 0;
    while (got < kMsg) {
      const ssize_t k = ::recv(c, in + got, kMsg - got, 0);
      if (k < 0 && errno == EINTR) continue;  // (a timed socket wait is not restarted)
      if (k <= 0) {
        ADD_FAILURE() << "recv: " << (k < 0 ? std::strerror(errno) : "end of stream") << " after "
                      << got << " bytes";
        return false;
      }
      got += static_cast<size_t>(k);
    }
    return std::memcmp(in, out, kMsg) == 0;
  };
  ASSERT_TRUE(round(0));
  const IoCounters before = shard_counters(rig);
  for (int i = 1; i <= rounds; ++i) ASSERT_TRUE(round(i)) << "round " << i << " lost or corrupted";
  const IoCounters after = shard_counters(rig);
  ::close(c);
  // Two relayed messages per round, each read short. The old relay read again after each
  // and met EAGAIN: 2 per round. A stray edge (bytes read before their event was fetched)
  // may still cost one now and then.
  expect_reads_parked_by_rule<P>(before, after, rounds, 4 + static_cast<uint64_t>(rounds) / 10);
  EXPECT_EQ(rig.errors(proxy::ProxyError::kReset), 0u);
}

// The client sends its last bytes and its FIN in one go, and the echo upstream answers
// with its bytes and FIN in one go: at each end of the proxy the bytes and the end of
// stream reach a socket together, on one edge that carries RDHUP. The read that takes the
// bytes comes back short, and the relay must still see the end and carry it on (the
// short-read rule stops once an event carried RDHUP): the client gets every byte and then
// its end of stream, each connection within its 5 s receive timeout.
TYPED_TEST(RelayReads, AnEndOfStreamThatCameWithTheLastBytesIsCarriedThrough) {
  using P = TypeParam;
  TestUpstream up(echo);
  proxy::ProxySettings s = main_listener_settings({up.address()});
  s.splice = false;  // the copying relay (RecvInto)
  ProxyRig<P> rig(std::move(s));
  ASSERT_TRUE(rig.started);
  const int conns = static_cast<int>(sized_for_build(40, 20));
  for (int i = 0; i < conns; ++i) {
    const int c = connect_to(rig.addr);
    ASSERT_GE(c, 0);
    timeval tv{5, 0};  // a lost end of stream fails the round instead of hanging the test
    ASSERT_EQ(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    const std::string out(1 + static_cast<size_t>(i * 53) % 2000, static_cast<char>('a' + i % 26));
    ASSERT_TRUE(send_all(c, out.data(), out.size()));
    ASSERT_EQ(::shutdown(c, SHUT_WR), 0);
    std::string back;
    char buf[4096];
    ssize_t k;
    while ((k = ::recv(c, buf, sizeof buf, 0)) > 0 || (k < 0 && errno == EINTR)) {
      if (k > 0) back.append(buf, static_cast<size_t>(k));
    }
    const int err = k < 0 ? errno : 0;
    ::close(c);
    EXPECT_EQ(k, 0) << "connection " << i << ": no end of stream within 5 s (" << std::strerror(err)
                    << "), " << back.size() << " of " << out.size() << " bytes back";
    EXPECT_TRUE(back == out) << "connection " << i << ": " << back.size() << " of " << out.size()
                             << " bytes back, or corrupted";
    if (this->HasFailure()) break;  // one lost end says it; the rest would each wait 5 s
  }
  EXPECT_EQ(rig.errors(proxy::ProxyError::kReset), 0u);
}

}  // namespace
}  // namespace ringpoll::test
