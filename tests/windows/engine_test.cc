// Engine<IocpPoller> on Windows (issue 25): shards pinned with SetThreadAffinityMask,
// cross-shard work that wakes a shard blocked in GetQueuedCompletionStatusEx (the inbox
// wake is a posted completion packet), and the console control events standing for
// SIGINT/SIGTERM (and the named reload event for SIGHUP) in wait_stop_signals.
#include <atomic>
#include <chrono>
#include <thread>
#include <utility>

#include "engine/engine.h"
#include "engine/server.h"
#include "win_engine.h"

namespace ringpoll::test {
namespace {

using E = WinEngine;

TEST(WinEngine, ShardsRunOnTheirOwnThreadsPinnedToTheirCpus) {
  StartedEngine se(2);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  const std::vector<int> allowed = ringpoll::detail::allowed_cpus();
  ASSERT_FALSE(allowed.empty());
  for (size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ(e.shard(i).cpu(), allowed[i % allowed.size()]) << "shard " << i;
    // On the shard's thread: it is that shard, and its thread's affinity is its CPU alone
    // (SetThreadAffinityMask answers with the mask it replaces).
    const auto [id, mask] = E::call(e.shard(i), [] {
      const DWORD_PTR self = DWORD_PTR{1} << E::current()->cpu();
      return std::pair<int, DWORD_PTR>(E::current()->id(),
                                       SetThreadAffinityMask(GetCurrentThread(), self));
    });
    EXPECT_EQ(id, static_cast<int>(i));
    EXPECT_EQ(mask, DWORD_PTR{1} << e.shard(i).cpu()) << "shard " << i << " is not pinned";
  }
}

// Shard 1 sleeps in GetQueuedCompletionStatusEx with nothing to do; every submit_to from
// shard 0 must wake it (the inbox's posted completion packet), each round trip resuming
// the caller on shard 0 (the reply's wake).
TEST(WinEngine, SubmitToWakesASleepingShardEveryTime) {
  StartedEngine se(2);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  constexpr int kRounds = 500;  // each a wake of a sleeping shard: ~3 ms under Wine
  std::atomic<int> sum{0};
  std::atomic<bool> done{false};
  std::atomic<bool> wrong_shard{false};
  ASSERT_TRUE(E::post(e.shard(0), [&] {
    E::current()->sched().spawn([](E* eng, std::atomic<int>* s, std::atomic<bool>* d,
                                   std::atomic<bool>* wrong) -> Task<void> {
      for (int i = 0; i < kRounds; ++i) {
        const int v = co_await E::submit_to(eng->shard(1), [i, wrong] {
          if (E::current()->id() != 1) wrong->store(true);
          return i;
        });
        s->fetch_add(v);
        if (E::current()->id() != 0) wrong->store(true);
      }
      d->store(true);
    }(&e, &sum, &done, &wrong_shard));
  }));
  EXPECT_TRUE(wait_for([&] { return done.load(); })) << "submit_to rounds stalled";
  EXPECT_EQ(sum.load(), kRounds * (kRounds - 1) / 2);
  EXPECT_FALSE(wrong_shard.load());
  EXPECT_GT(e.shard(1).sched().backend().wakes_written(), 0u);
}

// Jobs posted from a thread outside the engine reach shards that are blocked.
TEST(WinEngine, PostFromAnotherThreadReachesBlockedShards) {
  StartedEngine se(2);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  std::atomic<int> ran[2] = {0, 0};
  for (int round = 0; round < 50; ++round) {
    for (size_t i = 0; i < 2; ++i) {
      // Let the shard go back to sleep now and then, so the wake path is what delivers.
      if (round % 10 == 0) sleep_ms(5);
      ASSERT_TRUE(E::post(e.shard(i), [&ran, i] { ran[i].fetch_add(1); }));
    }
  }
  EXPECT_TRUE(wait_for([&] { return ran[0].load() == 50 && ran[1].load() == 50; }))
      << ran[0].load() << " " << ran[1].load();
  e.stop();
  e.join();
  EXPECT_FALSE(e.shard(0).serving());
}

// ---- the console control events ----

struct StopRun {
  std::atomic<int> graceful{0}, immediate{0}, reload{0};
  std::atomic<bool> release{false};  // lets graceful() return
  std::atomic<bool> returned{false};
  std::thread waiter;
  void start(bool with_reload) {
    block_stop_signals(with_reload);
    waiter = std::thread([this, with_reload] {
      std::function<void()> rl;
      if (with_reload) rl = [this] { reload.fetch_add(1); };
      wait_stop_signals(
          [this] {
            graceful.fetch_add(1);
            for (int i = 0; i < 2000 && !release.load(); ++i) sleep_ms(5);
          },
          [this] {
            immediate.fetch_add(1);
            release.store(true);
          },
          rl);
      returned.store(true);
    });
  }
  ~StopRun() {
    release.store(true);
    // A test that failed early leaves the waiter waiting: two stops end it (graceful,
    // then immediate), so the join cannot hang.
    for (int i = 0; i < 2 && !returned.load(); ++i) {
      ringpoll::detail::deliver_console_event(CTRL_C_EVENT);
      sleep_ms(100);
    }
    if (waiter.joinable()) waiter.join();
  }
};

// Ctrl-C is the first stop signal (graceful), Ctrl-Break the second (immediate).
TEST(WinStop, CtrlCStopsGracefullyAndCtrlBreakThenStopsAtOnce) {
  StopRun r;
  r.start(false);
  EXPECT_TRUE(ringpoll::detail::deliver_console_event(CTRL_C_EVENT));
  ASSERT_TRUE(wait_for([&] { return r.graceful.load() == 1; }, 10 * kSec));
  EXPECT_EQ(r.immediate.load(), 0);
  EXPECT_TRUE(ringpoll::detail::deliver_console_event(CTRL_BREAK_EVENT));
  ASSERT_TRUE(wait_for([&] { return r.immediate.load() == 1; }, 10 * kSec));
  EXPECT_TRUE(wait_for([&] { return r.returned.load(); }, 10 * kSec));
  EXPECT_EQ(r.graceful.load(), 1);
}

// Closing the console: Windows ends the process when the handler returns, so the handler
// returns only once the graceful stop has.
TEST(WinStop, ConsoleCloseIsHeldUntilTheGracefulStopReturns) {
  StopRun r;
  r.start(false);
  std::thread release([&] {
    wait_for([&] { return r.graceful.load() == 1; }, 10 * kSec);
    sleep_ms(300);
    r.release.store(true);
  });
  EXPECT_TRUE(ringpoll::detail::deliver_console_event(CTRL_CLOSE_EVENT));
  // The handler came back: the graceful stop must have finished first.
  EXPECT_TRUE(r.release.load());
  EXPECT_TRUE(wait_for([&] { return r.returned.load(); }, 10 * kSec));
  release.join();
  EXPECT_EQ(r.immediate.load(), 0);
}

// Reload without SIGHUP: another process sets the named event.
TEST(WinStop, TheNamedReloadEventReloadsAndCtrlCStillStops) {
  StopRun r;
  r.start(true);
  const std::string name = reload_event_name(GetCurrentProcessId());
  EXPECT_EQ(name, "Local\\ringpoll-reload-" + std::to_string(GetCurrentProcessId()));
  HANDLE ev = OpenEventA(EVENT_MODIFY_STATE, FALSE, name.c_str());
  ASSERT_NE(ev, nullptr) << "no event named " << name;
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(SetEvent(ev));
    EXPECT_TRUE(wait_for([&] { return r.reload.load() == i; }, 10 * kSec)) << i;
  }
  CloseHandle(ev);
  EXPECT_EQ(r.graceful.load(), 0);
  r.release.store(true);
  EXPECT_TRUE(ringpoll::detail::deliver_console_event(CTRL_C_EVENT));
  EXPECT_TRUE(wait_for([&] { return r.returned.load(); }, 10 * kSec));
  EXPECT_EQ(r.graceful.load(), 1);
  EXPECT_EQ(r.reload.load(), 3);
}

}  // namespace
}  // namespace ringpoll::test
