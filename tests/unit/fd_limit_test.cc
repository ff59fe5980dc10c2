// The programs' descriptor limit (apps/common/fd_limit.h): the soft RLIMIT_NOFILE is
// raised to the hard one, and a need beyond the hard limit is reported naming both.
#include "apps/common/fd_limit.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <string>

namespace ringpoll::test {
namespace {

struct RestoreNofile {
  rlimit saved{};
  RestoreNofile() { getrlimit(RLIMIT_NOFILE, &saved); }
  ~RestoreNofile() { setrlimit(RLIMIT_NOFILE, &saved); }
};

TEST(FdLimit, SoftLimitIsRaisedToTheHardOne) {
  RestoreNofile restore;
  rlimit rl = restore.saved;
  ASSERT_NE(rl.rlim_max, RLIM_INFINITY) << "an unlimited hard limit: nothing to raise to";
  rl.rlim_cur = rl.rlim_max > 256 ? 256 : rl.rlim_max;  // start low, as a login shell's 1024
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  const uint64_t hard = rl.rlim_max;
  const app::FdLimit r = app::raise_fd_limit(200, "test", hard);
  EXPECT_EQ(r.hard, hard);
  EXPECT_EQ(r.soft, hard);
  EXPECT_TRUE(r.problem.empty()) << r.problem;
  getrlimit(RLIMIT_NOFILE, &rl);
  EXPECT_EQ(rl.rlim_cur, hard);
}

TEST(FdLimit, ANeedBeyondTheHardLimitIsReportedNamingBoth) {
  // More than fs.nr_open: not even a privileged process may raise its hard limit that far.
  RestoreNofile restore;
  const uint64_t hard = restore.saved.rlim_max;
  ASSERT_NE(restore.saved.rlim_max, RLIM_INFINITY);
  uint64_t nr_open = 1048576;
  if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "r")) {
    unsigned long long v = 0;
    if (std::fscanf(f, "%llu", &v) == 1) nr_open = v;
    std::fclose(f);
  }
  const uint64_t want = std::max(hard, nr_open) + 1000;
  const app::FdLimit r = app::raise_fd_limit(want, "limits.max_connections 5");
  EXPECT_EQ(r.soft, hard);
  EXPECT_NE(
      r.problem.find("limits.max_connections 5 needs " + std::to_string(want) + " descriptors"),
      std::string::npos)
      << r.problem;
  EXPECT_NE(r.problem.find("hard limit " + std::to_string(hard)), std::string::npos) << r.problem;
}

}  // namespace
}  // namespace ringpoll::test
