#pragma once
// StopAndJoin: at the end of a scope (also when an assertion returns early), sets a
// thread's stop flag and joins it, so a test's client loop never outlives the test.
#include <atomic>
#include <thread>

namespace ringpoll::test {

struct StopAndJoin {
  std::atomic<bool>& stop;
  std::thread& t;
  StopAndJoin(std::atomic<bool>& s, std::thread& th) : stop(s), t(th) {}
  StopAndJoin(const StopAndJoin&) = delete;
  StopAndJoin& operator=(const StopAndJoin&) = delete;
  ~StopAndJoin() {
    stop = true;
    if (t.joinable()) t.join();
  }
};

}  // namespace ringpoll::test
