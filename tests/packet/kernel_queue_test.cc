// The kernel path of the packet contract over loopback, and the shard-loop hook
// (Scheduler::attach_source) it runs under.
#include "packet/kernel_queue.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "engine/scheduler.h"
#include "epoll/epoll_poller.h"
#include "packet/packet_source.h"

namespace ringpoll::packet {
namespace {

constexpr uint32_t kLoopback = 0x7f000001;

// A plain blocking UDP socket on loopback: the other side of the tests.
struct Client {
  int fd = -1;
  Client() {
    fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};  // a lost datagram fails the test instead of hanging it
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(kLoopback);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  ~Client() { ::close(fd); }
  uint16_t port() const {
    sockaddr_in a{};
    socklen_t l = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l);
    return ntohs(a.sin_port);
  }
  ssize_t send(uint16_t to_port, const std::string& s) const {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(kLoopback);
    a.sin_port = htons(to_port);
    return ::sendto(fd, s.data(), s.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  std::string recv() const {
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n < 0 ? std::string("<recv failed: ") + std::strerror(errno) + ">" : std::string(buf, n);
  }
};

QueueSpec loopback_spec() {
  QueueSpec s;
  s.local_ip = kLoopback;
  s.max_payload = 1024;
  return s;
}

// Polls until `want` datagrams arrived (loopback delivery is immediate, but the test must
// not depend on it); copies their payloads out.
std::vector<std::string> receive(KernelQueue& q, size_t want, std::vector<Datagram>* meta) {
  std::vector<std::string> got;
  std::array<Datagram, kMaxBurst> b;
  for (int tries = 0; got.size() < want && tries < 2000; ++tries) {
    const size_t n = q.rx_burst(b);
    for (size_t i = 0; i < n; ++i) {
      got.emplace_back(reinterpret_cast<const char*>(b[i].data), b[i].len);
      if (meta) meta->push_back(b[i]);
    }
    q.release(std::span(b.data(), n));
    if (n == 0) usleep(1000);
  }
  return got;
}

TEST(PacketKernel, ReceivesABurstWithPeersAndSendsReplies) {
  KernelQueue q;
  std::string why;
  ASSERT_TRUE(q.open(loopback_spec(), &why).ok()) << why;
  ASSERT_NE(q.local_port(), 0);
  Client c;
  for (int i = 0; i < 5; ++i)
    ASSERT_GT(c.send(q.local_port(), std::string("d") + std::to_string(i)), 0);
  std::vector<Datagram> meta;
  const auto got = receive(q, 5, &meta);
  ASSERT_EQ(got.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i], std::string("d") + std::to_string(i));
  EXPECT_EQ(meta[0].peer_ip, kLoopback);
  EXPECT_EQ(meta[0].peer_port, c.port());
  EXPECT_EQ(meta[0].local_port, q.local_port());

  std::string reply = "pong";
  Datagram d;
  d.peer_ip = kLoopback;
  d.peer_port = c.port();
  d.data = reinterpret_cast<std::byte*>(reply.data());
  d.len = static_cast<uint32_t>(reply.size());
  std::array<Datagram, 3> out = {d, d, d};
  EXPECT_EQ(q.tx_burst(out), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.recv(), "pong");
  const PacketStats st = q.stats();
  EXPECT_EQ(st.rx_packets, 5u);
  EXPECT_EQ(st.tx_packets, 3u);
  EXPECT_EQ(st.rx_dropped, 0u);
  EXPECT_EQ(st.tx_dropped, 0u);
}

TEST(PacketKernel, OversizedDatagramIsDroppedAndCounted) {
  KernelQueue q;
  QueueSpec spec = loopback_spec();
  spec.max_payload = 64;
  ASSERT_TRUE(q.open(spec).ok());
  Client c;
  c.send(q.local_port(), std::string(200, 'x'));
  c.send(q.local_port(), "small");
  const auto got = receive(q, 1, nullptr);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "small");
  EXPECT_EQ(q.stats().rx_dropped, 1u);
  EXPECT_EQ(q.stats().rx_packets, 1u);
}

TEST(PacketKernel, SocketBufferOverflowIsCountedAsRxDrops) {
  KernelQueue q;
  ASSERT_TRUE(q.open(loopback_spec()).ok());
  const int small = 4096;  // the kernel doubles it; a few hundred datagrams overflow it
  setsockopt(q.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  Client c;
  constexpr int kSent = 2000;
  for (int i = 0; i < kSent; ++i)
    c.send(q.local_port(), std::string("overflow-") + std::to_string(i));
  // Everything sent is either received or counted as dropped. The kernel reports its drop
  // count with the next datagram it delivers, so one more arrives after the flood.
  size_t received = receive(q, kSent, nullptr).size();
  c.send(q.local_port(), "last");
  received += receive(q, 1, nullptr).size();
  const PacketStats st = q.stats();
  EXPECT_GT(st.rx_dropped, 0u);
  EXPECT_EQ(received + st.rx_dropped, static_cast<size_t>(kSent) + 1);
}

TEST(PacketKernel, BindConflictNamesTheAddress) {
  KernelQueue a, b;
  QueueSpec spec = loopback_spec();
  spec.reuseport = false;
  ASSERT_TRUE(a.open(spec).ok());
  spec.local_port = a.local_port();
  std::string why;
  const Status st = b.open(spec, &why);
  EXPECT_EQ(st.sys_errno(), EADDRINUSE);
  EXPECT_NE(why.find(std::string("bind 127.0.0.1:") + std::to_string(a.local_port())),
            std::string::npos)
      << why;
}

TEST(PacketKernel, SendAfterCloseIsCountedNotLost) {
  KernelQueue q;
  ASSERT_TRUE(q.open(loopback_spec()).ok());
  q.close();
  std::array<Datagram, 2> out{};
  EXPECT_EQ(q.tx_burst(out), 0u);
  EXPECT_EQ(q.stats().tx_dropped, 2u);
}

// ---- the shard-loop hook ----

struct CountingSource final : PollSource {
  size_t polls = 0;
  size_t work_on = SIZE_MAX;  // poll number that reports work
  size_t poll_source(TaskList&) override { return ++polls == work_on ? 1 : 0; }
};

TEST(PacketLoopHook, SourcesArePolledEveryIterationWhileTasksSleep) {
  Scheduler<EpollPoller> s;
  ASSERT_TRUE(s.start().ok());
  CountingSource src;
  s.attach_source(&src);
  s.spawn([](Scheduler<EpollPoller>& s) -> Task<void> { co_await s.sleep_for(20'000'000); }(s));
  s.run();
  // 20 ms of sleeping: the loop spun, then backed off to at most 1 ms blocks, so it looked
  // at the source many times but far fewer than a pure spin would.
  EXPECT_GT(src.polls, 64u);
  EXPECT_GT(s.source_idle_rounds(), 64u);
  s.detach_source(&src);
}

TEST(PacketLoopHook, BackOffSpinsThenDoublesUpToTheCap) {
  SchedulerOptions o;
  o.source_idle_spins = 3;
  o.source_idle_max_ns = 8000;
  Scheduler<EpollPoller> s(o);
  ASSERT_TRUE(s.start().ok());
  CountingSource src;
  src.work_on = 6;
  s.attach_source(&src);
  std::vector<int64_t> waits;
  for (int i = 0; i < 9; ++i) {
    s.poll_sources();
    waits.push_back(s.source_wait_ns(-1));
  }
  // Rounds 1-2 idle: spin (0); round 3: 1 us, 4: 2 us, 5: 4 us; round 6 had work:
  // spin again; rounds 7-8 spin, 9: 1 us.
  EXPECT_EQ(waits, (std::vector<int64_t>{0, 0, 1000, 2000, 4000, 0, 0, 0, 1000}));
  for (int i = 0; i < 20; ++i) s.poll_sources();
  EXPECT_EQ(s.source_wait_ns(-1), 8000);  // capped
  EXPECT_EQ(s.source_wait_ns(500), 500);  // never past the next timer
  s.detach_source(&src);
}

TEST(PacketLoopHook, KernelEchoRunsInsideTheShardLoop) {
  Scheduler<EpollPoller> s;
  ASSERT_TRUE(s.start().ok());
  KernelQueue q;
  ASSERT_TRUE(q.open(loopback_spec()).ok());
  PacketSource src(q, EchoHandler{});
  s.attach_source(&src);
  Client c;
  std::vector<std::string> replies;
  std::thread client([&] {
    for (int i = 0; i < 50; ++i) {
      c.send(q.local_port(), std::string("echo-") + std::to_string(i));
      replies.push_back(c.recv());
    }
  });
  // A task keeps the loop alive until the client is done; meanwhile the loop serves the
  // queue between its timer wake-ups.
  std::atomic<bool> done{false};
  s.spawn([](Scheduler<EpollPoller>& s, std::atomic<bool>& done) -> Task<void> {
    while (!done.load()) co_await s.sleep_for(1'000'000);
  }(s, done));
  std::thread stopper([&] {
    client.join();
    done.store(true);
  });
  s.run();
  stopper.join();
  ASSERT_EQ(replies.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(replies[i], std::string("echo-") + std::to_string(i));
  EXPECT_EQ(src.handler().echoed, 50u);
  EXPECT_EQ(q.stats().rx_packets, 50u);
  s.detach_source(&src);
}

}  // namespace
}  // namespace ringpoll::packet
