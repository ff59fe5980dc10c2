#pragma once
// What a shard's reads cost in system calls that moved nothing (Scheduler::io_counters),
// checked against the short-read rule of engine/readiness_op.h by the engine's and the
// proxy's tests.
#include <gtest/gtest.h>

#include <cstdint>
#include <type_traits>

#include "engine/scheduler.h"
#include "epoll/epoll_poller.h"
#include "uring/uring_poller.h"

namespace ringpoll::test {

// The backends that must follow the rule: epoll and io_uring readiness (named here, not
// read from their kShortReadDrains, so that a backend losing the trait fails the tests).
template <class P>
inline constexpr bool kRuleExpected =
    std::is_same_v<P, EpollPoller> || std::is_same_v<P, UringPoller>;

// Between two snapshots of a shard's counters, over `rounds` request/response rounds
// whose every read came back short: on a backend of kRuleExpected at most `bound` reads
// met EAGAIN (the old behaviour made one per read) and at least one read per round was
// parked by the rule; elsewhere the rule never parks a read.
template <class P>
void expect_reads_parked_by_rule(const IoCounters& before, const IoCounters& after, int rounds,
                                 uint64_t bound) {
  const uint64_t wouldblock = after.read_wouldblock - before.read_wouldblock;
  const uint64_t parked = after.read_parked_drained - before.read_parked_drained;
  if constexpr (kRuleExpected<P>) {
    EXPECT_LE(wouldblock, bound) << P::kName << ": reads that met EAGAIN in " << rounds
                                 << " rounds (parked without a read: " << parked << ")";
    EXPECT_GE(parked, static_cast<uint64_t>(rounds)) << P::kName;
  } else {
    EXPECT_EQ(parked, 0u) << P::kName << " does not promise an edge per arrival";
  }
}

}  // namespace ringpoll::test
