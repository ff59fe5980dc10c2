// The kqueue emulation (kqueue/emulation/) against the documented kqueue(2) semantics the
// kqueue backend relies on. If these fail, the conformance results of kqueue_emulated mean
// nothing.
#include "kqueue/emulation/kqueue_emulation.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <thread>

#include "engine/clock.h"
#include "kqueue/kqueue_poller.h"
#include "support/emulated_backends.h"

namespace ringpoll::kqemu {
namespace {

constexpr int64_t kMs = 1'000'000;

struct KqueueEmulation : ::testing::Test {
  int kq = -1;
  int sv[2] = {-1, -1};
  void SetUp() override {
    kq = kqemu::kqueue();
    ASSERT_GE(kq, 0);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  }
  void TearDown() override {
    for (int fd : sv) {
      if (fd >= 0) ::close(fd);
    }
    kqemu::close(kq);
  }
  struct kevent change(uintptr_t ident, int16_t filter, uint16_t flags, uint32_t fflags = 0,
                       void* udata = nullptr) {
    struct kevent ev {};
    ev.ident = ident;
    ev.filter = filter;
    ev.flags = flags;
    ev.fflags = fflags;
    ev.udata = udata;
    return ev;
  }
  int apply(struct kevent ev) { return kqemu::kevent(kq, &ev, 1, nullptr, 0, nullptr); }
  // Non-blocking fetch.
  int fetch(struct kevent* out, int n) {
    timespec zero{0, 0};
    return kqemu::kevent(kq, nullptr, 0, out, n, &zero);
  }
};

TEST_F(KqueueEmulation, EvClearReportsAnEdgeOnceThenOnlyOnNewActivity) {
  int tag = 0;
  ASSERT_EQ(apply(change(sv[0], EVFILT_READ, EV_ADD | EV_CLEAR, 0, &tag)), 0);
  struct kevent ev[4];
  EXPECT_EQ(fetch(ev, 4), 0);  // nothing to read yet
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  ASSERT_EQ(fetch(ev, 4), 1);
  EXPECT_EQ(ev[0].ident, static_cast<uintptr_t>(sv[0]));
  EXPECT_EQ(ev[0].filter, EVFILT_READ);
  EXPECT_EQ(ev[0].udata, &tag);
  EXPECT_EQ(ev[0].data, 1);             // bytes readable
  EXPECT_TRUE(ev[0].flags & EV_CLEAR);  // registration flags are echoed
  EXPECT_FALSE(ev[0].flags & EV_EOF);
  // The byte is still unread, but the state was reset at retrieval: no second report.
  EXPECT_EQ(fetch(ev, 4), 0);
  EXPECT_EQ(fetch(ev, 4), 0);
  // New activity is a new edge.
  ASSERT_EQ(::write(sv[1], "b", 1), 1);
  ASSERT_EQ(fetch(ev, 4), 1);
  EXPECT_EQ(ev[0].data, 2);
  EXPECT_EQ(fetch(ev, 4), 0);
}

TEST_F(KqueueEmulation, WithoutEvClearAKnoteIsLevelTriggered) {
  ASSERT_EQ(apply(change(sv[0], EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  struct kevent ev[4];
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(fetch(ev, 4), 1) << "round " << i;
    EXPECT_EQ(ev[0].filter, EVFILT_READ);
  }
  char c;
  ASSERT_EQ(::read(sv[0], &c, 1), 1);
  EXPECT_EQ(fetch(ev, 4), 0);  // the condition no longer holds
}

TEST_F(KqueueEmulation, AddOfAReadyDescriptorReportsAtOnce) {
  // The write side of a fresh socket is writable: EV_ADD evaluates the filter at once.
  ASSERT_EQ(apply(change(sv[0], EVFILT_WRITE, EV_ADD | EV_CLEAR)), 0);
  struct kevent ev[4];
  ASSERT_EQ(fetch(ev, 4), 1);
  EXPECT_EQ(ev[0].filter, EVFILT_WRITE);
  EXPECT_EQ(fetch(ev, 4), 0);
}

TEST_F(KqueueEmulation, DeleteRemovesAndMissingKnotesAreEnoent) {
  ASSERT_EQ(apply(change(sv[0], EVFILT_READ, EV_ADD | EV_CLEAR)), 0);
  ASSERT_EQ(apply(change(sv[0], EVFILT_READ, EV_DELETE)), 0);
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  struct kevent ev[4];
  EXPECT_EQ(fetch(ev, 4), 0);
  errno = 0;
  EXPECT_EQ(apply(change(sv[0], EVFILT_READ, EV_DELETE)), -1);
  EXPECT_EQ(errno, ENOENT);
  // A change without EV_ADD does not create a knote.
  errno = 0;
  EXPECT_EQ(apply(change(sv[0], EVFILT_WRITE, EV_ENABLE)), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(KqueueEmulation, ChangeErrorsGoToTheEventListWhenItHasRoomElseFail) {
  const int bad = 1000000;  // not an open descriptor
  struct kevent ch = change(bad, EVFILT_READ, EV_ADD);
  struct kevent ev[2];
  ASSERT_EQ(kqemu::kevent(kq, &ch, 1, ev, 2, nullptr), 1);  // returns at once: no wait
  EXPECT_EQ(ev[0].flags, EV_ERROR);
  EXPECT_EQ(ev[0].data, EBADF);
  EXPECT_EQ(ev[0].ident, static_cast<uintptr_t>(bad));
  errno = 0;
  EXPECT_EQ(kqemu::kevent(kq, &ch, 1, nullptr, 0, nullptr), -1);
  EXPECT_EQ(errno, EBADF);
  // EV_RECEIPT: every change answers, with data 0 on success; the two deletions are both
  // processed even though the first fails.
  ASSERT_EQ(apply(change(sv[0], EVFILT_WRITE, EV_ADD)), 0);
  struct kevent two[2] = {change(sv[0], EVFILT_READ, EV_DELETE | EV_RECEIPT),
                          change(sv[0], EVFILT_WRITE, EV_DELETE | EV_RECEIPT)};
  ASSERT_EQ(kqemu::kevent(kq, two, 2, ev, 2, nullptr), 2);
  EXPECT_TRUE(ev[0].flags & EV_ERROR);
  EXPECT_EQ(ev[0].data, ENOENT);
  EXPECT_TRUE(ev[1].flags & EV_ERROR);
  EXPECT_EQ(ev[1].data, 0);
  EXPECT_EQ(fetch(ev, 2), 0);  // the write knote is gone
}

TEST_F(KqueueEmulation, PeerCloseSetsEvEofOnBothFilters) {
  ASSERT_EQ(apply(change(sv[0], EVFILT_READ, EV_ADD | EV_CLEAR)), 0);
  ASSERT_EQ(apply(change(sv[0], EVFILT_WRITE, EV_ADD | EV_CLEAR)), 0);
  struct kevent ev[4];
  ASSERT_EQ(fetch(ev, 4), 1);  // writable at once
  ::close(sv[1]);
  sv[1] = -1;
  ASSERT_EQ(fetch(ev, 4), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(ev[i].flags & EV_EOF) << "filter " << ev[i].filter;
    EXPECT_FALSE(ev[i].flags & EV_ERROR);
  }
}

TEST_F(KqueueEmulation, OneshotReportsOnceAndIsDeleted) {
  ASSERT_EQ(apply(change(sv[0], EVFILT_READ, EV_ADD | EV_ONESHOT)), 0);
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  struct kevent ev[4];
  ASSERT_EQ(fetch(ev, 4), 1);
  ASSERT_EQ(::write(sv[1], "b", 1), 1);
  EXPECT_EQ(fetch(ev, 4), 0);
  errno = 0;
  EXPECT_EQ(apply(change(sv[0], EVFILT_READ, EV_DELETE)), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(KqueueEmulation, ClosingTheFdDropsItsKnotesEvenWhenADupKeepsTheFileOpen) {
  ASSERT_EQ(apply(change(sv[0], EVFILT_READ, EV_ADD | EV_CLEAR)), 0);
  const int keep = dup(sv[0]);
  ASSERT_GE(keep, 0);
  ::close(sv[0]);
  sv[0] = -1;
  ASSERT_EQ(::write(sv[1], "a", 1), 1);
  struct kevent ev[4];
  EXPECT_EQ(fetch(ev, 4), 0) << "kqueue knotes belong to the fd, not the open file";
  ::close(keep);
}

TEST_F(KqueueEmulation, UserEventTriggersAcrossThreadsAndEvClearResetsIt) {
  int cookie = 0;
  ASSERT_EQ(apply(change(42, EVFILT_USER, EV_ADD | EV_CLEAR, 0, &cookie)), 0);
  struct kevent ev[4];
  EXPECT_EQ(fetch(ev, 4), 0);  // not triggered yet
  std::thread t([&] {
    usleep(30'000);
    struct kevent trig {};
    trig.ident = 42;
    trig.filter = EVFILT_USER;
    trig.fflags = NOTE_TRIGGER;
    EXPECT_EQ(kqemu::kevent(kq, &trig, 1, nullptr, 0, nullptr), 0);
  });
  const int64_t t0 = mono_now_ns();
  ASSERT_EQ(kqemu::kevent(kq, nullptr, 0, ev, 4, nullptr), 1);  // blocks until triggered
  t.join();
  EXPECT_GE(mono_now_ns() - t0, 20 * kMs);
  EXPECT_EQ(ev[0].filter, EVFILT_USER);
  EXPECT_EQ(ev[0].ident, 42u);
  EXPECT_EQ(ev[0].udata, &cookie);  // a trigger without EV_ADD keeps the udata
  EXPECT_EQ(fetch(ev, 4), 0);       // EV_CLEAR: retrieval reset the trigger
  // Without EV_CLEAR the trigger stays set until cleared.
  ASSERT_EQ(apply(change(7, EVFILT_USER, EV_ADD)), 0);
  ASSERT_EQ(apply(change(7, EVFILT_USER, 0, NOTE_TRIGGER)), 0);
  EXPECT_EQ(fetch(ev, 4), 1);
  EXPECT_EQ(fetch(ev, 4), 1);
}

TEST_F(KqueueEmulation, TimeoutsWaitAtLeastTheirTimeAndDarwinsLimitIsEnforced) {
  struct kevent ev[1];
  for (long ns : {300'000L, 5'000'000L}) {
    timespec ts{0, ns};
    const int64_t t0 = mono_now_ns();
    EXPECT_EQ(kqemu::kevent(kq, nullptr, 0, ev, 1, &ts), 0);
    EXPECT_GE(mono_now_ns() - t0, ns) << "a sub-millisecond wait must not return early";
  }
  timespec too_long{kMaxTimeoutSec + 1, 0};
  errno = 0;
  EXPECT_EQ(kqemu::kevent(kq, nullptr, 0, ev, 1, &too_long), -1);
  EXPECT_EQ(errno, EINVAL);
  timespec negative{-1, 0};
  errno = 0;
  EXPECT_EQ(kqemu::kevent(kq, nullptr, 0, ev, 1, &negative), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(kqemu::kevent(kq + 1000, nullptr, 0, ev, 1, nullptr), -1);
  EXPECT_EQ(errno, EBADF);
}

// The backend clamps a huge wait below Darwin's limit instead of failing with EINVAL.
TEST(KqueueBackend, HugeWaitIsClampedNotRejected) {
  EmulatedKqueuePoller p;
  ASSERT_TRUE(p.init().ok());
  std::thread waker([&] {
    usleep(20'000);
    p.wake();
  });
  TaskList out;
  EXPECT_EQ(p.poll(INT64_MAX, out), 1);  // only the wake
  waker.join();
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(p.wakes_written(), 1u);
}

}  // namespace
}  // namespace ringpoll::kqemu
