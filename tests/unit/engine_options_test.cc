// Engine options that change the loop or the backend: busy-polling before blocking
// (SchedulerOptions::busy_poll_ns, the config's engine.busy_poll_us) and the per-shard
// backend setup hook (how the programs hand io_uring options to every shard's ring).
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "engine/engine.h"
#include "engine/poll_fd.h"
#include "epoll/epoll_poller.h"
#include "uring/uring_poller.h"

namespace ringpoll {
namespace {

template <class P>
class EngineOptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
};
using OptionBackends = ::testing::Types<EpollPoller, UringPoller>;
struct Name {
  template <class P>
  static std::string GetName(int) {
    return P::kName;
  }
};
TYPED_TEST_SUITE(EngineOptionsTest, OptionBackends, Name);

bool wait_flag(const std::atomic<bool>& f) {
  for (int i = 0; i < 10'000 && !f.load(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return f.load();
}

// Reads from fd (adopted on the shard) with a deadline; reports what came.
template <class P>
Task<void> read_once(int fd, int64_t deadline_ns, std::string* got, Status* err,
                     std::atomic<bool>* done) {
  auto& s = Engine<P>::current()->sched();
  PollFd<P> f;
  if (Status st = f.open(s, fd); !st.ok()) {
    *err = st;
    done->store(true);
    co_return;
  }
  if (deadline_ns > 0) (void)f.set_read_deadline(mono_now_ns() + deadline_ns);
  char buf[64];
  const IoResult r = co_await f.read(std::as_writable_bytes(std::span<char>(buf)));
  got->assign(buf, r.n);
  *err = r.err;
  (void)co_await f.close();
  done->store(true);
}

template <class P>
uint64_t busy_polls(Engine<P>& e) {
  return Engine<P>::call(e.shard(0), [] { return Engine<P>::current()->sched().busy_polls(); });
}

TYPED_TEST(EngineOptionsTest, BusyPollingStillServesIoAndTimers) {
  using P = TypeParam;
  for (const int64_t busy : {int64_t{0}, int64_t{2'000'000}}) {
    EngineOptions o;
    o.shards = 1;
    o.pin = false;
    o.sched.busy_poll_ns = busy;
    Engine<P> e(o);
    ASSERT_TRUE(e.start().ok());
    // I/O arriving while the shard spins (or sleeps) wakes the reader.
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    std::string got;
    Status err;
    std::atomic<bool> done{false};
    Engine<P>::call(e.shard(0), [&] {
      Engine<P>::current()->sched().spawn(read_once<P>(sv[0], 0, &got, &err, &done));
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(::write(sv[1], "spin", 4), 4);
    ASSERT_TRUE(wait_flag(done));
    EXPECT_TRUE(err.ok()) << err.message();
    EXPECT_EQ(got, "spin");
    // A deadline still fires: busy-polling never runs past the next timer.
    int sv2[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv2), 0);
    std::atomic<bool> done2{false};
    Engine<P>::call(e.shard(0), [&] {
      Engine<P>::current()->sched().spawn(read_once<P>(sv2[0], 30'000'000, &got, &err, &done2));
    });
    ASSERT_TRUE(wait_flag(done2));
    EXPECT_TRUE(err.timeout()) << err.message();
    // Spinning happened only when asked for.
    if (busy > 0) {
      EXPECT_GT(busy_polls(e), 0u);
    } else {
      EXPECT_EQ(busy_polls(e), 0u);
    }
    e.stop();
    e.join();
    for (int fd : {sv[1], sv2[1]}) ::close(fd);
  }
}

TEST(EngineBackendSetup, RunsOnEachShardThreadBeforeTheRingIsSetUp) {
  if (!UringPoller::available().ok) GTEST_SKIP() << UringPoller::available().why;
  EngineOptions o;
  o.shards = 2;
  o.pin = false;
  Engine<UringPoller> e(o);
  std::atomic<int> calls{0};
  std::atomic<bool> on_main{false};
  const std::thread::id main_id = std::this_thread::get_id();
  e.set_backend_setup([&](UringPoller& b) {
    calls.fetch_add(1);
    if (std::this_thread::get_id() == main_id) on_main.store(true);
    UringOptions u;
    u.entries = 8;
    u.defer_taskrun = false;
    b.set_options(u);
  });
  ASSERT_TRUE(e.start().ok());
  EXPECT_EQ(calls.load(), 2);
  EXPECT_FALSE(on_main.load());
  // The options took effect: the rings were set up without DEFER_TASKRUN, which the
  // default options ask for (and this kernel has, when the default ring shows it).
  Engine<UringPoller> plain(o);
  ASSERT_TRUE(plain.start().ok());
  const unsigned plain_flags = Engine<UringPoller>::call(plain.shard(0), [] {
    return Engine<UringPoller>::current()->sched().backend().ring().setup_flags();
  });
  plain.stop();
  plain.join();
  if (!(plain_flags & IORING_SETUP_DEFER_TASKRUN))
    GTEST_SKIP() << "this kernel has no DEFER_TASKRUN: nothing to switch off";
  for (size_t i = 0; i < e.size(); ++i) {
    const unsigned flags = Engine<UringPoller>::call(e.shard(i), [] {
      return Engine<UringPoller>::current()->sched().backend().ring().setup_flags();
    });
    EXPECT_EQ(flags & IORING_SETUP_DEFER_TASKRUN, 0u) << "shard " << i;
  }
  e.stop();
  e.join();
}

}  // namespace
}  // namespace ringpoll
