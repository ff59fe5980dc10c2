// poller/errors.h: fatal() after a failed system call names the error, not only what
// failed.
#include <gtest/gtest.h>

#include <cerrno>

#include "poller/errors.h"

namespace ringpoll::test {
namespace {

TEST(FatalDeathTest, WithAnErrnoPrintsItsTextAndNumber) {
  EXPECT_DEATH(fatal("epoll_wait failed", EBADF),
               "ringpoll: fatal: epoll_wait failed: Bad file descriptor \\(errno 9\\)");
}

TEST(FatalDeathTest, WithoutAnErrnoPrintsWhatFailed) {
  EXPECT_DEATH(fatal("corrupted PollDesc"), "ringpoll: fatal: corrupted PollDesc\n");
}

}  // namespace
}  // namespace ringpoll::test
