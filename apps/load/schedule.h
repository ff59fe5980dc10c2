#pragma once
// OpenLoopSchedule: the intended send times of one connection in an open-loop run.
//
// At a total rate R over C connections, request k of connection g (0 <= g < C) is intended
// at t0 + (k*C + g) / R seconds: the connections interleave into one evenly spaced stream
// of R requests/s, each connection sending every C/R seconds, staggered by 1/R. Latency is
// measured from these times, not from when a request actually left (wrk2's correction for
// coordinated omission): a server that stalls cannot slow the schedule down and so hide
// the requests that would have waited behind the stall.
#include <cmath>
#include <cstdint>

namespace ringpoll::load {

class OpenLoopSchedule {
 public:
  OpenLoopSchedule() = default;
  OpenLoopSchedule(int64_t t0_ns, double rate, int connections, int index) noexcept
      : t0_(t0_ns),
        interval_ns_(1e9 / rate),
        connections_(static_cast<uint64_t>(connections)),
        index_(static_cast<uint64_t>(index)) {}

  // Intended send time of this connection's k-th request (k from 0).
  int64_t at(uint64_t k) const noexcept {
    const double slot = static_cast<double>(k * connections_ + index_);
    return t0_ + static_cast<int64_t>(std::llround(slot * interval_ns_));
  }

 private:
  int64_t t0_ = 0;
  double interval_ns_ = 0;  // 1/R: the spacing of the merged stream
  uint64_t connections_ = 1;
  uint64_t index_ = 0;
};

}  // namespace ringpoll::load
