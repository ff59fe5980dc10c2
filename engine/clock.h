#pragma once
// The monotonic clock every deadline is taken on.
#include <time.h>

#include <cstdint>

namespace ringpoll {

// Now, in ns on CLOCK_MONOTONIC: the clock of every absolute deadline (set_deadline,
// sleep_until). Never jumps with the wall clock. Any thread.
inline int64_t mono_now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace ringpoll
