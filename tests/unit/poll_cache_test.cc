// PollCache: slab growth, free list, fdseq generations, NUMA binding, type stability.
#include <gtest/gtest.h>
#include <numa.h>
#include <numaif.h>

#include <set>

#include "poller/poll_cache.h"

namespace ringpoll {
namespace {

void release(PollCache& c, PollDesc* pd) {
  pd->closing = true;
  c.free(pd);
}

TEST(PollCache, GrowsByWholeBlocksAndHandsOutDistinctAlignedDescriptors) {
  PollCache c(-1);
  std::set<PollDesc*> seen;
  std::vector<PollDesc*> v;
  for (size_t i = 0; i < PollCache::kPerBlock * 2 + 1; ++i) {
    PollDesc* pd = c.alloc();
    ASSERT_EQ(reinterpret_cast<uintptr_t>(pd) % alignof(PollDesc), 0u);
    ASSERT_TRUE(seen.insert(pd).second) << "handed out twice";
    ASSERT_TRUE(c.owns(pd));
    v.push_back(pd);
  }
  EXPECT_EQ(c.blocks(), 3u);
  EXPECT_EQ(c.live(), v.size());
  for (PollDesc* pd : v) release(c, pd);
  EXPECT_EQ(c.live(), 0u);
  EXPECT_EQ(c.blocks(), 3u);  // never shrinks
  PollDesc outside;
  EXPECT_FALSE(c.owns(&outside));
}

TEST(PollCache, FreeBumpsTheGenerationAndPublishesIt) {
  PollCache c(-1);
  PollDesc* pd = c.alloc();
  const uint32_t s0 = pd->fdseq.load();
  EXPECT_NE(s0, 0u);  // 0 is reserved for "untagged"
  release(c, pd);
  EXPECT_EQ(pd->fdseq.load(), next_fdseq(s0));
  EXPECT_EQ((pd->info.load() >> kInfoFdSeqShift) & kFdSeqMask, next_fdseq(s0));
  EXPECT_EQ(c.alloc(), pd);  // LIFO free list: the same memory comes back
  release(c, pd);
}

TEST(PollCache, GenerationWrapsSkippingZero) {
  EXPECT_EQ(next_fdseq(1), 2u);
  EXPECT_EQ(next_fdseq(kFdSeqMask - 1), kFdSeqMask);
  EXPECT_EQ(next_fdseq(kFdSeqMask), 1u);
  PollCache c(-1);
  PollDesc* pd = c.alloc();
  for (uint32_t i = 0; i < kFdSeqMask + 5; ++i) {
    release(c, pd);
    ASSERT_NE(pd->fdseq.load(), 0u);
    ASSERT_EQ(c.alloc(), pd);
  }
  release(c, pd);
}

TEST(PollCache, DescriptorSizeIsPinned) {
  // Every connection pays for one (issue 4: memory per idle connection).
  EXPECT_EQ(sizeof(PollDesc), 96u);
  // The backends tag the three low bits of PollDesc pointers in io_uring user data.
  EXPECT_GE(alignof(PollDesc), 8u);
  // Deadline state per connection, both directions: rd, wd, rseq, wseq.
  EXPECT_EQ(
      sizeof(PollDesc::rd) + sizeof(PollDesc::wd) + sizeof(PollDesc::rseq) + sizeof(PollDesc::wseq),
      24u);
  EXPECT_EQ(sizeof(TimerNode), 24u);  // the one wheel node that serves both directions
}

TEST(PollCache, BlocksAreBoundToTheRequestedNumaNode) {
  if (numa_available() < 0) GTEST_SKIP() << "NUMA is not available on this machine";
  const int node = PollCache::current_numa_node();
  ASSERT_GE(node, 0);
  PollCache c(node);
  PollDesc* pd = c.alloc();
  int mode = -1;
  unsigned long mask = 0;
  ASSERT_EQ(get_mempolicy(&mode, &mask, sizeof(mask) * 8, pd, MPOL_F_ADDR), 0);
  EXPECT_EQ(mode, MPOL_BIND);
  EXPECT_EQ(mask, 1ul << node);
  int where = -1;
  ASSERT_EQ(get_mempolicy(&where, nullptr, 0, pd, MPOL_F_NODE | MPOL_F_ADDR), 0);
  EXPECT_EQ(where, node);  // the page is on the node
  release(c, pd);
}

TEST(PollCache, RetiredBlocksAreReusedAndOldGenerationsStayOld) {
  PollDesc* first = nullptr;
  uint32_t seq = 0;
  {
    PollCache a(-1);
    first = a.alloc();  // left live on purpose: a shard stopped with it open
    seq = first->fdseq.load();
    first->rg.store(kPdReady);
  }
  PollCache b(-1);
  bool found = false;
  std::vector<PollDesc*> got;
  for (size_t i = 0; i < PollCache::kPerBlock; ++i) {
    PollDesc* pd = b.alloc();
    got.push_back(pd);
    if (pd == first) found = true;
  }
  ASSERT_TRUE(found) << "the retired block was not reused";
  EXPECT_NE(first->fdseq.load(), seq);  // an event tagged for the old owner is stale
  EXPECT_EQ(first->rg.load(), kPdNil);  // and its slots were reset
  for (PollDesc* pd : got) release(b, pd);
}

}  // namespace
}  // namespace ringpoll
