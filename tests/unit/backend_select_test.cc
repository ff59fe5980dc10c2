// Backend selection and io_uring setup-failure classification, with real failures forced
// in a forked child by a seccomp filter on io_uring_setup.
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <string>

#include "engine/backend.h"
#include "support/test_env.h"

namespace ringpoll {
namespace {

bool install_uring_setup_filter(int err) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K,
               SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

using test::child_output;  // fn() in a forked child: process_backend caches per process

std::string select_under_filter(int err, BackendChoice pinned) {
  return child_output([=] {
    if (!install_uring_setup_filter(err)) return std::string("seccomp install failed");
    const BackendSelection s = select_backend(pinned);
    return std::string(s.ok() ? "ok " : "error ") + to_string(s.chosen) + " | " + s.log_line();
  });
}

TEST(BackendSelect, AutoPrefersIoUringWhenItWorks) {
  if (!UringRing::probe().ok) GTEST_SKIP() << "io_uring is not available on this machine";
  const BackendSelection s = select_backend(BackendChoice::kAuto);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.chosen, BackendChoice::kIoUring);
  EXPECT_NE(s.log_line().find("backend io_uring"), std::string::npos);
}

TEST(BackendSelect, SeccompEnosysFallsBackToEpollAndSaysWhy) {
  const std::string r = select_under_filter(ENOSYS, BackendChoice::kAuto);
  EXPECT_EQ(r.rfind("ok epoll", 0), 0u) << r;
  EXPECT_NE(r.find("ENOSYS"), std::string::npos) << r;
  EXPECT_NE(r.find("seccomp"), std::string::npos) << r;
  EXPECT_NE(r.find("whole process"), std::string::npos) << r;
}

TEST(BackendSelect, SeccompEpermFallsBackAndPrintsTheSysctl) {
  const std::string r = select_under_filter(EPERM, BackendChoice::kAuto);
  EXPECT_EQ(r.rfind("ok epoll", 0), 0u) << r;
  EXPECT_NE(r.find("EPERM"), std::string::npos) << r;
  EXPECT_NE(r.find("kernel.io_uring_disabled="), std::string::npos) << r;
}

TEST(BackendSelect, PinnedIoUringThatCannotStartIsAnErrorNamingTheCause) {
  const std::string r = select_under_filter(ENOSYS, BackendChoice::kIoUring);
  EXPECT_EQ(r.rfind("error io_uring", 0), 0u) << r;
  EXPECT_NE(r.find("pinned"), std::string::npos) << r;
  EXPECT_NE(r.find("ENOSYS"), std::string::npos) << r;
}

TEST(BackendSelect, PinnedEpollIgnoresIoUring) {
  const std::string r = select_under_filter(ENOSYS, BackendChoice::kEpoll);
  EXPECT_EQ(r.rfind("ok epoll", 0), 0u) << r;
  EXPECT_NE(r.find("pinned"), std::string::npos) << r;
}

TEST(BackendSelect, EnomemNamesTheMemlockLimit) {
  // On kernels >= 5.12 ring memory is charged to the memory cgroup, not RLIMIT_MEMLOCK,
  // so a tiny limit does not make setup fail here; the classification is still what an
  // older kernel's ENOMEM gets, with the limit printed.
  const std::string r = child_output([] {
    rlimit rl{0, 0};
    setrlimit(RLIMIT_MEMLOCK, &rl);
    const Availability a = UringRing::probe();
    return std::string(a.ok ? "probe ok" : "probe failed: " + a.why) + " | " +
           classify_uring_setup_failure(ENOMEM);
  });
  EXPECT_NE(r.find("RLIMIT_MEMLOCK=0 bytes"), std::string::npos) << r;
  if (r.rfind("probe failed", 0) == 0) {
    EXPECT_NE(r.find("ENOMEM"), std::string::npos) << r;
  }
}

TEST(BackendSelect, ParseChoice) {
  BackendChoice c;
  EXPECT_TRUE(parse_backend_choice("auto", &c));
  EXPECT_EQ(c, BackendChoice::kAuto);
  EXPECT_TRUE(parse_backend_choice("io_uring", &c));
  EXPECT_EQ(c, BackendChoice::kIoUring);
  EXPECT_TRUE(parse_backend_choice("epoll", &c));
  EXPECT_EQ(c, BackendChoice::kEpoll);
  EXPECT_FALSE(parse_backend_choice("kqueue", &c));
  EXPECT_FALSE(parse_backend_choice("", &c));
}

TEST(BackendSelect, WithBackendDispatchesOnTheSelection) {
  BackendSelection s;
  s.chosen = BackendChoice::kEpoll;
  EXPECT_STREQ(with_backend(s, []<class P>() { return P::kName; }), "epoll");
  s.chosen = BackendChoice::kIoUring;
  s.uring_mode = IoUringMode::kReadiness;
  EXPECT_STREQ(with_backend(s, []<class P>() { return P::kName; }), "io_uring");
}

// The library's default is the programs' default: io_uring in completion mode, and the
// log line says which mode runs.
TEST(BackendSelect, DefaultIsCompletionModeAndTheLogLineSaysSo) {
  BackendSelection s;
  s.chosen = BackendChoice::kIoUring;
  EXPECT_STREQ(with_backend(s, []<class P>() { return P::kName; }), "io_uring-completion");
  s.why = "first choice; probe ok";
  EXPECT_EQ(s.log_line(), "ringpoll: backend io_uring (completion mode): first choice; probe ok");
  s.uring_mode = IoUringMode::kReadiness;
  EXPECT_EQ(s.log_line(), "ringpoll: backend io_uring (readiness mode): first choice; probe ok");
  if (UringRing::probe().ok) {
    EXPECT_EQ(select_backend(BackendChoice::kAuto).uring_mode, IoUringMode::kCompletion);
  }
}

TEST(BackendSelectDeathTest, WithBackendRefusesAFailedSelection) {
  BackendSelection s;
  s.chosen = BackendChoice::kIoUring;
  s.error = Errc::kUnavailable;
  s.why = "io_uring is pinned by configuration but cannot start: test";
  EXPECT_EXIT(with_backend(s, []<class P>() { return 0; }), ::testing::ExitedWithCode(1),
              "no backend: io_uring is pinned by configuration but cannot start: test");
}

// RINGPOLL_BACKEND overrides the program's choice (process_backend's first call), and a
// value it does not know is an error that names the variable. process_backend caches per
// process, so each case runs in a child.
TEST(BackendSelect, EnvironmentForcesEpollOrNamesABadValue) {
  const std::string forced = child_output([] {
    setenv(kBackendEnv, "epoll", 1);
    const BackendSelection& s = process_backend(BackendChoice::kIoUring);
    return std::string(s.ok() ? "ok " : "error ") + to_string(s.chosen) + " | " + s.log_line();
  });
  EXPECT_EQ(forced.rfind("ok epoll", 0), 0u) << forced;
  EXPECT_NE(forced.find("RINGPOLL_BACKEND=epoll"), std::string::npos) << forced;
  const std::string bad = child_output([] {
    setenv(kBackendEnv, "kqueue", 1);
    const BackendSelection& s = process_backend();
    return std::string(s.ok() ? "ok " : "error ") + s.log_line();
  });
  EXPECT_EQ(bad.rfind("error ", 0), 0u) << bad;
  EXPECT_NE(bad.find("RINGPOLL_BACKEND=\"kqueue\" is not one of"), std::string::npos) << bad;
}

}  // namespace
}  // namespace ringpoll
