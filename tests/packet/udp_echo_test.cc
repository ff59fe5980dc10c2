// ringpoll-serve --mode udp-echo end to end: the built binary on the kernel path over
// loopback (two shards sharing a port), and over a veth pair into a network namespace.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>

#include "netns.h"
#include "packet/packet_io.h"

namespace ringpoll::packet::test {
namespace {

// Port of "ringpoll-serve: udp-echo on A.B.C.D:PORT, ..." or 0.
int port_of(const std::string& line, const std::string& addr) {
  const std::string want = "ringpoll-serve: udp-echo on " + addr + ":";
  if (!line.starts_with(want)) return 0;
  return std::atoi(line.c_str() + want.size());
}

TEST(PacketServeUdpEcho, KernelPathOnLoopbackWithTwoShards) {
  Child serve;
  ASSERT_TRUE(
      serve.start(RINGPOLL_SERVE_BIN, {"--mode", "udp-echo", "--listen", "127.0.0.1:0", "--set",
                                       "engine.shards=2", "--set", "engine.pin=false"}));
  const std::string line = serve.read_line();
  const int port = port_of(line, "127.0.0.1");
  ASSERT_GT(port, 0) << line;
  EXPECT_NE(line.find("path kernel, 2 shards"), std::string::npos) << line;
  // Eight client sockets: SO_REUSEPORT hashes their flows over both shards' sockets.
  EXPECT_EQ(echo_round_trips(0x7f000001, port, 8, 50, 64), 8 * 50);
  EXPECT_EQ(echo_round_trips(0x7f000001, port, 1, 20, 1024), 20);
  EXPECT_EQ(serve.stop(SIGTERM), 0);
}

TEST(PacketServeUdpEcho, RefusesAnIpv6Address) {
  Child v6;
  ASSERT_TRUE(v6.start(RINGPOLL_SERVE_BIN, {"--mode", "udp-echo", "--listen", "[::1]:0"}));
  EXPECT_EQ(v6.stop(0), 2);
}

// Builds without DPDK only (with it, the dpdk path is tested in dpdk_queue_test.cc).
#ifndef RINGPOLL_WITH_DPDK
TEST(PacketServeUdpEcho, RefusesTheDpdkPathWhenNotBuilt) {
  Child dpdk;
  ASSERT_TRUE(dpdk.start(RINGPOLL_SERVE_BIN, {"--mode", "udp-echo", "--listen", "127.0.0.1:0",
                                              "--set", "packet.path=dpdk"}));
  EXPECT_EQ(dpdk.stop(0), 2);
}
#endif

TEST(PacketServeUdpEcho, KernelPathOverAVethPair) {
  VethPair veth;
  std::string why;
  if (!veth.create("10.77.0.2/24", "10.77.0.1/24", &why)) GTEST_SKIP() << why;
  Child serve;
  ASSERT_TRUE(serve.start(RINGPOLL_SERVE_BIN, {"--mode", "udp-echo", "--listen", "10.77.0.1:9000",
                                               "--set", "engine.shards=1"}));
  const std::string line = serve.read_line();
  ASSERT_EQ(port_of(line, "10.77.0.1"), 9000) << line;
  int ok = 0;
  veth.run_inside([&] { ok = echo_round_trips(0x0a4d0001, 9000, 4, 25, 512); });
  EXPECT_EQ(ok, 100);
  EXPECT_EQ(serve.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace ringpoll::packet::test
