// TaskList: the intrusive FIFO of ready tasks (Go's gList).
#include "poller/task_list.h"

#include <gtest/gtest.h>

namespace ringpoll {
namespace {

TEST(TaskList, FifoOrderAndCounts) {
  TaskNode n[4];
  TaskList l;
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(l.pop_front(), nullptr);
  for (auto& x : n) l.push_back(&x);
  EXPECT_EQ(l.size(), 4u);
  EXPECT_EQ(l.front(), &n[0]);
  for (auto& x : n) EXPECT_EQ(l.pop_front(), &x);
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(l.size(), 0u);
}

TEST(TaskList, PushFrontAndSplice) {
  TaskNode a, b, c, d;
  TaskList l1, l2;
  l1.push_back(&b);
  l1.push_front(&a);
  l2.push_back(&c);
  l2.push_back(&d);
  l1.splice_back(l2);
  EXPECT_TRUE(l2.empty());
  EXPECT_EQ(l1.size(), 4u);
  for (TaskNode* want : {&a, &b, &c, &d}) EXPECT_EQ(l1.pop_front(), want);
  // Splicing into an empty list and from an empty list.
  TaskList e;
  l2.push_back(&a);
  e.splice_back(l2);
  EXPECT_EQ(e.size(), 1u);
  e.splice_back(l2);
  EXPECT_EQ(e.size(), 1u);
  EXPECT_EQ(e.pop_front(), &a);
  // A node reused after pop is relinked cleanly.
  e.push_back(&a);
  e.push_back(&b);
  EXPECT_EQ(e.pop_front(), &a);
  e.push_back(&a);
  EXPECT_EQ(e.pop_front(), &b);
  EXPECT_EQ(e.pop_front(), &a);
  EXPECT_EQ(e.pop_front(), nullptr);
}

TEST(TaskList, MoveLeavesSourceEmpty) {
  TaskNode a;
  TaskList l;
  l.push_back(&a);
  TaskList m(std::move(l));
  EXPECT_TRUE(l.empty());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(m.size(), 1u);
}

}  // namespace
}  // namespace ringpoll
