// The event-ports emulation (ports/emulation/) against the documented port_*(3C) semantics
// the ports backend relies on. If these fail, the conformance results of ports_emulated
// mean nothing.
#include "ports/emulation/ports_emulation.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "engine/clock.h"
#include "support/emulated_backends.h"

namespace ringpoll::portemu {
namespace {

constexpr int64_t kMs = 1'000'000;

struct PortsEmulation : ::testing::Test {
  int port = -1;
  int sv[2] = {-1, -1};
  void SetUp() override {
    port = port_create();
    ASSERT_GE(port, 0);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  }
  void TearDown() override {
    for (int fd : sv) {
      if (fd >= 0) ::close(fd);
    }
    portemu::close(port);
  }
  // Non-blocking: returns the number of events retrieved (0 on ETIME with none).
  unsigned fetch(port_event_t* list, unsigned max) {
    unsigned n = 1;
    timespec zero{0, 0};
    const int r = port_getn(port, list, max, &n, &zero);
    if (r < 0) {
      EXPECT_EQ(errno, ETIME);
    }
    return n;
  }
  int assoc(int fd, int events, void* user) {
    return port_associate(port, PORT_SOURCE_FD, static_cast<uintptr_t>(fd), events, user);
  }
};

TEST_F(PortsEmulation, AnAssociationFiresOnceThenNotUntilReassociated) {
  int user = 0;
  ASSERT_EQ(assoc(sv[0], kPollIn, &user), 0);
  port_event_t ev[4];
  EXPECT_EQ(fetch(ev, 4), 0u);  // nothing to read yet
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  ASSERT_EQ(fetch(ev, 4), 1u);
  EXPECT_EQ(ev[0].portev_source, PORT_SOURCE_FD);
  EXPECT_EQ(ev[0].portev_object, static_cast<uintptr_t>(sv[0]));
  EXPECT_EQ(ev[0].portev_user, &user);
  EXPECT_TRUE(ev[0].portev_events & kPollIn);
  // One-shot: data is still there and more arrives, but the fd is no longer associated.
  ASSERT_EQ(::write(sv[1], "b", 1), 1);
  EXPECT_EQ(fetch(ev, 4), 0u);
  errno = 0;
  EXPECT_EQ(port_dissociate(port, PORT_SOURCE_FD, static_cast<uintptr_t>(sv[0])), -1);
  EXPECT_EQ(errno, ENOENT);
  // Re-associating checks the condition at once: the unread data sends an event now.
  int user2 = 0;
  ASSERT_EQ(assoc(sv[0], kPollIn, &user2), 0);
  ASSERT_EQ(fetch(ev, 4), 1u);
  EXPECT_EQ(ev[0].portev_user, &user2);
  EXPECT_EQ(fetch(ev, 4), 0u);
}

TEST_F(PortsEmulation, ReassociatingReplacesEventsAndUser) {
  int a = 0, b = 0;
  ASSERT_EQ(assoc(sv[0], kPollIn, &a), 0);   // not readable: pending
  ASSERT_EQ(assoc(sv[0], kPollOut, &b), 0);  // writable: fires at once, with the new user
  port_event_t ev[4];
  ASSERT_EQ(fetch(ev, 4), 1u);
  EXPECT_EQ(ev[0].portev_user, &b);
  EXPECT_EQ(ev[0].portev_events & (kPollIn | kPollOut), kPollOut);  // illumos POLLOUT = 4
  EXPECT_EQ(kPollOut, 0x4);
}

TEST_F(PortsEmulation, HangupAndErrorAreReportedWithoutBeingAskedFor) {
  ASSERT_EQ(assoc(sv[0], 0, nullptr), 0);
  port_event_t ev[4];
  EXPECT_EQ(fetch(ev, 4), 0u);
  ::close(sv[1]);
  sv[1] = -1;
  ASSERT_EQ(fetch(ev, 4), 1u);
  EXPECT_TRUE(ev[0].portev_events & kPollHup);
  EXPECT_FALSE(ev[0].portev_events & kPollOut);  // not asked for, not reported
}

TEST_F(PortsEmulation, DissociateStopsEvents) {
  ASSERT_EQ(assoc(sv[0], kPollIn, nullptr), 0);
  ASSERT_EQ(port_dissociate(port, PORT_SOURCE_FD, static_cast<uintptr_t>(sv[0])), 0);
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  port_event_t ev[4];
  EXPECT_EQ(fetch(ev, 4), 0u);
}

TEST_F(PortsEmulation, GetnWaitsForNgetAndEtimeStillReturnsWhatItGot) {
  ASSERT_EQ(assoc(sv[0], kPollOut, nullptr), 0);  // one event available
  port_event_t ev[4];
  unsigned n = 2;
  timespec ts{0, 50 * kMs};
  const int64_t t0 = mono_now_ns();
  errno = 0;
  EXPECT_EQ(port_getn(port, ev, 4, &n, &ts), -1);
  EXPECT_EQ(errno, ETIME);
  EXPECT_GE(mono_now_ns() - t0, 50 * kMs) << "it must wait for the second event";
  ASSERT_EQ(n, 1u) << "ETIME with an event retrieved";
  EXPECT_EQ(ev[0].portev_object, static_cast<uintptr_t>(sv[0]));
  // Enough events: success, all of them.
  ASSERT_EQ(port_send(port, 1, nullptr), 0);
  ASSERT_EQ(port_send(port, 2, nullptr), 0);
  n = 2;
  ASSERT_EQ(port_getn(port, ev, 4, &n, &ts), 0);
  EXPECT_EQ(n, 2u);
  // *nget > max is invalid; max == 0 reports how many are pending without taking them.
  n = 5;
  errno = 0;
  EXPECT_EQ(port_getn(port, ev, 4, &n, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  ASSERT_EQ(port_send(port, 3, nullptr), 0);
  n = 0;
  ASSERT_EQ(port_getn(port, ev, 0, &n, nullptr), 0);
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(fetch(ev, 4), 1u);  // still there
}

TEST_F(PortsEmulation, PortSendQueuesUserEventsAndWakesABlockedGetn) {
  int cookie = 0;
  std::thread t([&] {
    usleep(30'000);
    EXPECT_EQ(port_send(port, 0x55, &cookie), 0);
  });
  port_event_t ev[2];
  unsigned n = 1;
  const int64_t t0 = mono_now_ns();
  ASSERT_EQ(port_getn(port, ev, 2, &n, nullptr), 0);
  t.join();
  EXPECT_GE(mono_now_ns() - t0, 20 * kMs);
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(ev[0].portev_source, PORT_SOURCE_USER);
  EXPECT_EQ(ev[0].portev_events, 0x55);
  EXPECT_EQ(ev[0].portev_user, &cookie);
  EXPECT_EQ(fetch(ev, 2), 0u);  // consumed
}

TEST_F(PortsEmulation, AlertModeReturnsTheAlertUntilCleared) {
  int cookie = 0;
  ASSERT_EQ(port_send(port, 9, nullptr), 0);
  ASSERT_EQ(port_alert(port, PORT_ALERT_UPDATE, kPollHup, &cookie), 0);
  errno = 0;
  EXPECT_EQ(port_alert(port, PORT_ALERT_UPDATE, kPollHup, &cookie), -1);
  EXPECT_EQ(errno, EBUSY);
  EXPECT_EQ(port_alert(port, PORT_ALERT_SET, kPollIn, &cookie), 0);  // SET always works
  errno = 0;
  EXPECT_EQ(port_alert(port, PORT_ALERT_SET | PORT_ALERT_UPDATE, 1, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  port_event_t ev[4];
  for (int i = 0; i < 3; ++i) {  // not consumed by retrieval; queued events stay hidden
    ASSERT_EQ(fetch(ev, 4), 1u);
    EXPECT_EQ(ev[0].portev_source, PORT_SOURCE_ALERT);
    EXPECT_EQ(ev[0].portev_events, kPollIn);
    EXPECT_EQ(ev[0].portev_user, &cookie);
  }
  ASSERT_EQ(port_alert(port, 0, 0, nullptr), 0);  // events == 0 leaves alert mode
  ASSERT_EQ(fetch(ev, 4), 1u);
  EXPECT_EQ(ev[0].portev_source, PORT_SOURCE_USER);
  EXPECT_EQ(ev[0].portev_events, 9);
}

TEST_F(PortsEmulation, TimedWaitWaitsAtLeastItsTimeEvenBelowAMillisecond) {
  port_event_t ev[1];
  unsigned n = 1;
  timespec ts{0, 300'000};
  const int64_t t0 = mono_now_ns();
  errno = 0;
  EXPECT_EQ(port_getn(port, ev, 1, &n, &ts), -1);
  EXPECT_EQ(errno, ETIME);
  EXPECT_EQ(n, 0u);
  EXPECT_GE(mono_now_ns() - t0, 300'000);
}

}  // namespace
}  // namespace ringpoll::portemu
