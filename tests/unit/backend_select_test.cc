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

// Runs fn in a forked child and returns what it wrote.
template <class Fn>
std::string in_child(Fn fn) {
  int p[2];
  if (pipe(p) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid == 0) {
    ::close(p[0]);
    const std::string out = fn();
    ssize_t w = ::write(p[1], out.data(), out.size());
    (void)w;
    _exit(0);
  }
  ::close(p[1]);
  std::string got;
  char buf[512];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return got;
}

std::string select_under_filter(int err, BackendChoice pinned) {
  return in_child([=] {
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
  const std::string r = in_child([] {
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
  EXPECT_STREQ(with_backend(s, []<class P>() { return P::kName; }), "io_uring");
}

}  // namespace
}  // namespace ringpoll
