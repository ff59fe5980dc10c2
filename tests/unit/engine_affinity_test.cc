// Shards and the process's CPU affinity (issue 27, 3): under `taskset -c 1` or a
// container's cpuset the engine makes one shard per allowed CPU and pins them there, so two
// processes under disjoint masks never share a CPU; a pin that fails is said, not ignored.
// Each case runs in a child that sets its own mask first (as taskset would) and reports
// what its shards got on a pipe.
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>

#include "engine/engine.h"
#include "epoll/epoll_poller.h"
#include "support/test_env.h"

namespace ringpoll::test {
namespace {

using E = Engine<EpollPoller>;

std::vector<int> allowed() {
  return detail::allowed_cpus();
}

// In a child restricted to `cpus` (as taskset would start it): fn()'s result, or "mask
// failed" when the mask could not be set.
template <class Fn>
std::string under_mask(const std::vector<int>& cpus, Fn fn) {
  return child_output(
      [&] {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c : cpus) CPU_SET(c, &set);
        return sched_setaffinity(0, sizeof set, &set) == 0 ? fn() : std::string("mask failed");
      },
      30);
}

// "n=<shards> cpus=<cpu() of each> ran=<CPUs each shard's thread may run on>".
std::string default_engine_report() {
  E e;
  if (!e.start().ok()) return "start failed";
  std::string out = "n=" + std::to_string(e.size()) + " cpus=";
  for (size_t i = 0; i < e.size(); ++i) out += std::to_string(e.shard(i).cpu()) + ",";
  out += " ran=";
  for (size_t i = 0; i < e.size(); ++i) {
    out += E::call(e.shard(i), [] {
      cpu_set_t set;
      CPU_ZERO(&set);
      pthread_getaffinity_np(pthread_self(), sizeof set, &set);
      std::string s;
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) s += std::to_string(c) + ".";
      return s + ",";
    });
  }
  e.stop();
  e.join();
  return out;
}

TEST(EngineAffinity, TasksetOneCpuGivesOneShardPinnedThere) {
  const std::vector<int> a = allowed();
  if (a.size() < 2) GTEST_SKIP() << "needs two CPUs to restrict to the second one";
  const int cpu = a[1];
  const std::string r = under_mask({cpu}, default_engine_report);
  const std::string c = std::to_string(cpu);
  EXPECT_EQ(r, "n=1 cpus=" + c + ", ran=" + c + ".,") << r;
}

TEST(EngineAffinity, TwoProcessesUnderDisjointMasksNeverShareACpu) {
  const std::vector<int> a = allowed();
  if (a.size() < 2) GTEST_SKIP() << "needs two CPUs";
  const size_t half = a.size() / 2;
  const std::vector<int> lo(a.begin(), a.begin() + static_cast<long>(half));
  const std::vector<int> hi(a.begin() + static_cast<long>(half), a.end());
  auto cpus_of = [](const std::vector<int>& mask) {
    return under_mask(mask, [] {
      E e;
      if (!e.start().ok()) return std::string("start failed");
      std::string s;
      for (size_t i = 0; i < e.size(); ++i) s += std::to_string(e.shard(i).cpu()) + " ";
      e.stop();
      e.join();
      return s;
    });
  };
  auto parse = [](const std::string& s) {
    std::set<int> out;
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t sp = s.find(' ', pos);
      out.insert(std::stoi(s.substr(pos, sp - pos)));
      pos = sp + 1;
    }
    return out;
  };
  const std::string rl = cpus_of(lo), rh = cpus_of(hi);
  ASSERT_FALSE(rl.empty() || rl.find_first_not_of("0123456789 ") != std::string::npos) << rl;
  ASSERT_FALSE(rh.empty() || rh.find_first_not_of("0123456789 ") != std::string::npos) << rh;
  const std::set<int> sl = parse(rl), sh = parse(rh);
  EXPECT_EQ(sl, std::set<int>(lo.begin(), lo.end()));
  EXPECT_EQ(sh, std::set<int>(hi.begin(), hi.end()));
  for (int c : sl) EXPECT_EQ(sh.count(c), 0u) << "CPU " << c << " used by both processes";
}

// A CPU no machine here has (as a `cpus` list written for a bigger machine would name):
// the pin fails, stderr says so, and the shard runs unpinned (cpu() -1). Pinning used to
// ignore the error and report the CPU as pinned.
TEST(EngineAffinity, APinTheKernelRefusesIsReportedAndTheShardRunsUnpinned) {
  const std::string r = child_output([] {
    std::FILE* err = std::tmpfile();
    if (!err || dup2(fileno(err), STDERR_FILENO) < 0) return std::string("no tmpfile");
    EngineOptions o;
    o.shards = 1;
    o.cpus = {CPU_SETSIZE - 1};
    E e(o);
    if (!e.start().ok()) return std::string("start failed");
    const int cpu = e.shard(0).cpu();
    e.stop();
    e.join();
    std::string said(4096, '\0');
    std::rewind(err);
    said.resize(std::fread(said.data(), 1, said.size(), err));
    return "cpu=" + std::to_string(cpu) + " | " + said;
  });
  EXPECT_EQ(r.rfind("cpu=-1 | ", 0), 0u) << r;
  EXPECT_NE(r.find("shard 0: cannot pin to CPU " + std::to_string(CPU_SETSIZE - 1)),
            std::string::npos)
      << r;
}

}  // namespace
}  // namespace ringpoll::test
