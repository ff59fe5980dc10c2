// The AIX pollset emulation (aix/emulation/) against the documented pollset semantics the
// pollset backend relies on, plus the backend's own bookkeeping of the set. If these fail,
// the conformance results of pollset_emulated mean nothing.
#include "aix/emulation/pollset_emulation.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "aix/pollset_poller.h"
#include "engine/clock.h"
#include "support/emulated_backends.h"
#include "engine/deadline.h"
#include "poller/poll_cache.h"

namespace ringpoll::psemu {
namespace {

constexpr int64_t kMs = 1'000'000;

struct PollsetEmulation : ::testing::Test {
  pollset_t ps = -1;
  int sv[2] = {-1, -1};
  void SetUp() override {
    ps = pollset_create(-1);
    ASSERT_GE(ps, 0);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  }
  void TearDown() override {
    for (int fd : sv) {
      if (fd >= 0) ::close(fd);
    }
    pollset_destroy(ps);
  }
  int ctl1(short cmd, int fd, short events) {
    poll_ctl c{cmd, events, fd};
    return pollset_ctl(ps, &c, 1);
  }
  short events_of(int fd) {
    pollfd q{fd, 0, 0};
    return pollset_query(ps, &q) == 1 ? q.events : short{-1};
  }
};

TEST_F(PollsetEmulation, AixConstantsAreAixsNotLinuxs) {
  EXPECT_EQ(kPollIn, 0x0001);
  EXPECT_EQ(kPollOut, 0x0002);  // Linux: 0x4
  EXPECT_EQ(kPollHup, 0x2000);  // Linux: 0x10
  EXPECT_EQ(kPollErr, 0x4000);  // Linux: 0x8
  EXPECT_EQ(PS_ADD, 0);
  EXPECT_EQ(PS_MOD, 1);
  EXPECT_EQ(PS_DELETE, 2);
}

TEST_F(PollsetEmulation, LevelTriggeredReportsEveryPollWhileTheConditionHolds) {
  ASSERT_EQ(ctl1(PS_ADD, sv[0], kPollIn), 0);
  pollfd out[4];
  EXPECT_EQ(pollset_poll(ps, out, 4, 0), 0);
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(pollset_poll(ps, out, 4, 0), 1) << "poll " << i;
    EXPECT_EQ(out[0].fd, sv[0]);  // the result names only the fd: no user data
    EXPECT_EQ(out[0].revents, kPollIn);
  }
  char c;
  ASSERT_EQ(::read(sv[0], &c, 1), 1);
  EXPECT_EQ(pollset_poll(ps, out, 4, 0), 0);
}

TEST_F(PollsetEmulation, PsModOnlyOrsBitsInSoRemovingOneIsDeleteThenAdd) {
  ASSERT_EQ(ctl1(PS_ADD, sv[0], kPollOut), 0);
  pollfd out[4];
  ASSERT_EQ(pollset_poll(ps, out, 4, 0), 1);
  EXPECT_EQ(out[0].revents, kPollOut);
  // Trying to "set" the events to POLLIN with PS_MOD only adds POLLIN: POLLOUT stays.
  ASSERT_EQ(ctl1(PS_MOD, sv[0], kPollIn), 0);
  EXPECT_EQ(events_of(sv[0]), kPollIn | kPollOut);
  ASSERT_EQ(pollset_poll(ps, out, 4, 0), 1);
  EXPECT_EQ(out[0].revents, kPollOut) << "PS_MOD removed a bit";
  // The only way to drop POLLOUT: delete the fd and add it back with what remains.
  poll_ctl two[2] = {{PS_DELETE, 0, sv[0]}, {PS_ADD, kPollIn, sv[0]}};
  ASSERT_EQ(pollset_ctl(ps, two, 2), 0);
  EXPECT_EQ(events_of(sv[0]), kPollIn);
  EXPECT_EQ(pollset_poll(ps, out, 4, 0), 0);
  // PS_MOD of an fd not in the set adds it.
  ASSERT_EQ(ctl1(PS_DELETE, sv[0], 0), 0);
  EXPECT_EQ(events_of(sv[0]), -1);
  ASSERT_EQ(ctl1(PS_MOD, sv[0], kPollOut), 0);
  EXPECT_EQ(events_of(sv[0]), kPollOut);
}

TEST_F(PollsetEmulation, CtlErrorsAndStopAtTheFirstFailure) {
  ASSERT_EQ(ctl1(PS_ADD, sv[0], kPollIn), 0);
  errno = 0;
  EXPECT_EQ(ctl1(PS_ADD, sv[0], kPollIn), -1);  // already in the set
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(ctl1(PS_DELETE, sv[1], 0), -1);  // not in the set
  EXPECT_EQ(errno, EINVAL);
  // Elements before the failing one stay applied; those after it are not applied.
  poll_ctl three[3] = {{PS_ADD, kPollOut, sv[1]}, {PS_ADD, kPollIn, sv[0]}, {PS_DELETE, 0, sv[1]}};
  errno = 0;
  EXPECT_EQ(pollset_ctl(ps, three, 3), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(events_of(sv[1]), kPollOut);
}

TEST_F(PollsetEmulation, HangupIsReportedWithAixsValueWhenNotAskedFor) {
  ASSERT_EQ(ctl1(PS_ADD, sv[0], kPollIn), 0);
  ::close(sv[1]);
  sv[1] = -1;
  pollfd out[4];
  ASSERT_EQ(pollset_poll(ps, out, 4, 0), 1);
  EXPECT_TRUE(out[0].revents & kPollHup);
  EXPECT_TRUE(out[0].revents & kPollIn);  // the read end sees end of file
}

TEST_F(PollsetEmulation, TimeoutIsInMillisecondsAndAClosedFdLeavesTheSet) {
  ASSERT_EQ(ctl1(PS_ADD, sv[0], kPollIn), 0);
  pollfd out[4];
  const int64_t t0 = mono_now_ns();
  EXPECT_EQ(pollset_poll(ps, out, 4, 20), 0);
  EXPECT_GE(mono_now_ns() - t0, 20 * kMs);
  const int old = sv[0];
  ::close(sv[0]);
  sv[0] = -1;
  EXPECT_EQ(events_of(old), -1);
  ::close(sv[1]);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  // Whatever number the new socket got, the closed one's entry is gone: PS_ADD works.
  EXPECT_EQ(ctl1(PS_ADD, sv[0], kPollOut), 0);
}

// The backend's side: interest follows waiters, and a fired direction leaves the set.
TEST(PollsetBackend, AFiredDirectionLeavesTheSetAndAnotherStays) {
  EmulatedPollsetPoller p;
  ASSERT_TRUE(p.init().ok());
  PollCache cache(-1);
  PollDesc* pd = cache.alloc();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  deadline_open(pd, sv[0]);
  ASSERT_EQ(p.open(sv[0], pd), 0);
  EXPECT_EQ(pd->backend_data, 0u);  // no waiter, nothing in the set
  // Fill the send buffer so the writer's direction does not fire.
  static char chunk[65536];
  while (::send(sv[0], chunk, sizeof chunk, MSG_DONTWAIT) > 0) {
  }
  p.arm(pd, Mode::kRead);
  p.arm(pd, Mode::kWrite);
  EXPECT_EQ(pd->backend_data, static_cast<uint64_t>(kPollIn | kPollOut));
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  TaskList out;
  EXPECT_EQ(p.poll(100 * kMs, out), 1);
  EXPECT_EQ(pd->rg.load(), kPdReady);
  EXPECT_EQ(pd->wg.load(), kPdNil);
  EXPECT_EQ(pd->backend_data, static_cast<uint64_t>(kPollOut));  // POLLIN removed
  // Level-triggered, yet the unread byte does not fire again: its bit is out of the set.
  EXPECT_EQ(p.poll(0, out), 0);
  EXPECT_EQ(p.close(sv[0], pd), 0);
  EXPECT_EQ(pd->backend_data, 0u);
  ::close(sv[0]);
  ::close(sv[1]);
  pd->closing = true;
  cache.free(pd);
}

}  // namespace
}  // namespace ringpoll::psemu
