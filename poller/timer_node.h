#pragma once
// The intrusive node a timer wheel links. It lives in poller/ because every PollDesc embeds
// one (the single node that serves both its read and write deadlines); the wheel that links
// it lives in engine/timer_wheel.h.
#include <cstdint>

namespace ringpoll {

struct TimerNode {
  TimerNode* next = nullptr;  // null when not linked in a wheel
  TimerNode* prev = nullptr;
  int64_t when = 0;  // absolute expiry, ns on CLOCK_MONOTONIC; valid while linked
  bool linked() const noexcept { return next != nullptr; }
};
static_assert(sizeof(TimerNode) == 24, "a wheel node is three words");

}  // namespace ringpoll
