#pragma once
// Helpers of the Windows suite's engine-level tests (engine_test.cc, server_test.cc):
// Engine<IocpPoller> started for one test, bounded waits, a task started on a shard.
#include <atomic>

#include "engine/engine.h"
#include "win_env.h"

namespace ringpoll::test {

using WinEngine = Engine<IocpPoller>;

// Waits (bounded) until pred() holds; returns pred().
template <class F>
bool wait_for(F pred, int64_t timeout_ns = 20 * kSec) {
  const int64_t end = mono_now_ns() + timeout_ns;
  while (!pred()) {
    if (mono_now_ns() >= end) return false;
    sleep_ms(2);
  }
  return true;
}

// An engine of `shards` shards, started; stopped and joined when it goes.
struct StartedEngine {
  explicit StartedEngine(int shards) : e(options(shards)), ok(e.start().ok()) {}
  ~StartedEngine() {
    e.stop();
    e.join();
  }
  static EngineOptions options(int shards) {
    EngineOptions o;
    o.shards = shards;
    return o;
  }
  WinEngine e;
  bool ok;
};

// Starts task t on `shard` (from a thread outside the engine).
inline void spawn_on(WinEngine::Shard& shard, Task<void> t) {
  WinEngine::call(shard, [&] { WinEngine::current()->sched().spawn(std::move(t)); });
}

}  // namespace ringpoll::test
