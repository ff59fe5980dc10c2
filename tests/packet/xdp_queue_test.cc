// The AF_XDP path (-DRINGPOLL_WITH_XDP=ON) over a veth pair into a network namespace:
// an echo on an XdpQueue inside a shard loop (Scheduler + PacketSource), the kernel in
// the namespace as the client. Needs root (XDP program, namespace); skips otherwise.
#include "packet/xdp_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "engine/scheduler.h"
#include "epoll/epoll_poller.h"
#include "netns.h"
#include "packet/packet_source.h"

namespace ringpoll::packet {
namespace {

constexpr uint32_t kMe = 0x0a4d0001;  // 10.77.0.1

// Echoes 100 datagrams (64 B and 1 KiB) through an XdpQueue on the veth's outer end.
void echo_over_veth(bool generic_only) {
  test::VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  XdpQueue q;
  q.set_options(XdpOptions{veth.outer(), 4096, true, generic_only});
  QueueSpec spec;
  spec.local_ip = kMe;
  spec.local_port = 9000;
  spec.ring_size = 1024;
  const Status st = q.open(spec, &why);
  if (st.sys_errno() == EPERM || st.sys_errno() == EOPNOTSUPP)
    GTEST_SKIP() << "AF_XDP is not allowed here: " << why;
  ASSERT_TRUE(st.ok()) << why;
  std::printf("AF_XDP mode on veth: %s\n", q.mode());
  if (generic_only) {
    EXPECT_STREQ(q.mode(), "generic copy");
  }

  Scheduler<EpollPoller> s;
  ASSERT_TRUE(s.start().ok());
  PacketSource src(q, EchoHandler{});
  s.attach_source(&src);
  std::atomic<bool> done{false};
  int ok = 0;
  std::thread client([&] {
    veth.run_inside([&] {
      ok = test::echo_round_trips(kMe, 9000, 2, 25, 64, /*no_checksum=*/true);
      ok += test::echo_round_trips(kMe, 9000, 2, 25, 1024, /*no_checksum=*/true);
    });
    done.store(true);
  });
  s.spawn([](Scheduler<EpollPoller>& s, std::atomic<bool>& done) -> Task<void> {
    while (!done.load()) co_await s.sleep_for(1'000'000);
  }(s, done));
  s.run();
  client.join();
  s.detach_source(&src);
  EXPECT_EQ(ok, 100);
  const PacketStats ps = q.stats();
  EXPECT_EQ(src.handler().echoed, ps.tx_packets);
  EXPECT_GE(ps.arp_replies, 1u);  // the namespace asked for 10.77.0.1 first
  EXPECT_EQ(ps.rx_bad_checksum, 0u);
}

// Modes are tried zero-copy first; veth has no zero-copy, so this runs native copy.
TEST(XdpVeth, EchoesInsideTheShardLoopBestMode) {
  echo_over_veth(false);
}
TEST(XdpVeth, EchoesInsideTheShardLoopGenericMode) {
  echo_over_veth(true);
}

TEST(XdpVeth, ServeEchoesOverAVethPair) {
  test::VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "", &why)) GTEST_SKIP() << why;
  {
    XdpQueue probe;  // the same refusal the in-process test skips on
    probe.set_options(XdpOptions{veth.outer(), 256, true});
    QueueSpec spec;
    spec.local_ip = kMe;
    spec.ring_size = 64;
    const Status st = probe.open(spec, &why);
    if (st.sys_errno() == EPERM || st.sys_errno() == EOPNOTSUPP)
      GTEST_SKIP() << "AF_XDP is not allowed here: " << why;
  }
  test::serve_echo_over_veth(veth, "xdp", {"packet.xdp_iface=" + veth.outer()});
}

TEST(XdpVeth, UnknownInterfaceIsNamed) {
  XdpQueue q;
  q.set_options(XdpOptions{"rpk-no-such0", 256, true});
  QueueSpec spec;
  spec.local_ip = kMe;
  std::string why;
  EXPECT_FALSE(q.open(spec, &why).ok());
  EXPECT_NE(why.find("rpk-no-such0"), std::string::npos) << why;
  EXPECT_NE(why.find("no such interface"), std::string::npos) << why;
}

}  // namespace
}  // namespace ringpoll::packet
