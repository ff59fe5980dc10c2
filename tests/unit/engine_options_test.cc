// Engine options that change the loop or the backend: busy-polling before blocking
// (SchedulerOptions::busy_poll_ns, the config's engine.busy_poll_us) and the per-shard
// backend setup hook (how the programs hand io_uring options to every shard's ring).
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "engine/engine.h"
#include "engine/poll_fd.h"
#include "epoll/epoll_poller.h"
#include "uring/uring_completion.h"
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
  for (const int64_t busy : {int64_t{0}, int64_t{2'000'000}, kBusyPollAuto}) {
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
    } else if (busy == 0) {
      EXPECT_EQ(busy_polls(e), 0u);
    }
    e.stop();
    e.join();
    for (int fd : {sv[1], sv2[1]}) ::close(fd);
  }
}

// engine.busy_poll_us = "auto" on every backend's loop: a shard that only wakes for a
// timer now and then spins at most its idle budget (1 % of a core) and, measured on the
// shard's own thread, uses little CPU. (BusyPollingStillServesIoAndTimers runs I/O and
// deadlines under auto.)
template <class P>
class AdaptivePollTest : public EngineOptionsTest<P> {};
using AdaptiveBackends = ::testing::Types<EpollPoller, UringPoller, UringCompletionPoller>;
TYPED_TEST_SUITE(AdaptivePollTest, AdaptiveBackends, Name);

int64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// Wakes every period_ns until *stop: the only thing the shard does.
template <class P>
Task<void> tick_until(int64_t period_ns, std::atomic<bool>* stop, std::atomic<int>* ticks) {
  auto& s = Engine<P>::current()->sched();
  while (!stop->load()) {
    co_await s.sleep_for(period_ns);
    ticks->fetch_add(1);
  }
}

TYPED_TEST(AdaptivePollTest, IdleShardSpinsWithinItsBudget) {
  using P = TypeParam;
  EngineOptions o;
  o.shards = 1;
  o.pin = false;
  o.sched.busy_poll_ns = kBusyPollAuto;
  o.sched.tick_ns = 100'000;
  Engine<P> e(o);
  ASSERT_TRUE(e.start().ok());
  auto stats = [&] { return e.shard(0).sched().adaptive_poll(); };
  // Idle: a timer every 1 ms for about a second. A spin of the controller's 50 us at each
  // wake-up would be 5 % of the time; gaps of 1 ms are past the probe's reach, so the
  // shard should not spin at all (bound: 1 %, below the budget's 5 %).
  std::atomic<bool> stop{false};
  std::atomic<int> ticks{0};
  Engine<P>::call(e.shard(0), [&] {
    Engine<P>::current()->sched().spawn(tick_until<P>(1'000'000, &stop, &ticks));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const AdaptivePollStats before = stats();
  const int64_t cpu0 = Engine<P>::call(e.shard(0), [] { return thread_cpu_ns(); });
  const int64_t t0 = mono_now_ns();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const int64_t cpu1 = Engine<P>::call(e.shard(0), [] { return thread_cpu_ns(); });
  const int64_t wall = mono_now_ns() - t0;
  const AdaptivePollStats after = stats();
  stop.store(true);
  EXPECT_GT(ticks.load(), 20) << "the timer did not keep waking the shard";
  // What the controller spun for nothing in the window: within 1 % of it, plus one budget
  // window's worth (a spin decided in one window may be spent in the next).
  const AdaptivePollLimits l;
  const int64_t window_budget = l.idle_budget_ppm * (l.window_ns / 1'000'000);
  const int64_t wasted = after.wasted_ns - before.wasted_ns;
  EXPECT_LE(wasted, wall / 100 + window_budget)
      << "spun " << wasted << " ns for nothing in " << wall << " ns";
  EXPECT_NE(after.mode, AdaptivePollMode::kSpin) << "an idle shard is still set to spin";
  // The thread's CPU: a loose bound (the wake-ups themselves cost CPU, more under the
  // sanitizers and on a loaded machine); a shard that spun through its idle time would
  // use close to all of it.
  EXPECT_LT(cpu1 - cpu0, wall / 4)
      << "the idle shard used " << (cpu1 - cpu0) << " ns of CPU in " << wall << " ns";
  e.stop();
  e.join();
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
