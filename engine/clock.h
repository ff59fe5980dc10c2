#pragma once
// The monotonic clock every deadline is taken on.
#include <time.h>

#include <cstdint>

namespace ringpoll {

inline int64_t mono_now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace ringpoll
