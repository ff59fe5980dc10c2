// ringpoll-load's command line: every bad argument is refused with a message naming it,
// and the built binary turns that into exit code 2 (run for real, bounded by the fact
// that a refused command line never connects anywhere).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "apps/load/options.h"

extern char** environ;

namespace ringpoll::load {
namespace {

const std::vector<std::string> kGood = {"--mode",        "echo", "--target",   "127.0.0.1:9",
                                        "--connections", "4",    "--duration", "1"};

std::vector<std::string> with(std::vector<std::string> extra) {
  std::vector<std::string> a = kGood;
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}
// kGood with the value of `flag` replaced.
std::vector<std::string> replacing(const std::string& flag, const std::string& value) {
  std::vector<std::string> a = kGood;
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    if (a[i] == flag) a[i + 1] = value;
  }
  return a;
}
std::vector<std::string> without(const std::string& flag) {
  std::vector<std::string> a;
  for (size_t i = 0; i < kGood.size(); ++i) {
    if (kGood[i] == flag) {
      ++i;
      continue;
    }
    a.push_back(kGood[i]);
  }
  return a;
}

TEST(LoadOptions, GoodArgumentsAndDefaults) {
  const ParseResult r = parse_load_args(kGood);
  ASSERT_EQ(r.kind, ParseResult::Kind::kRun) << r.error;
  const LoadOptions& o = r.options;
  EXPECT_EQ(o.mode, LoadMode::kEcho);
  EXPECT_EQ(o.connections, 4);
  EXPECT_EQ(o.size, 64);
  EXPECT_EQ(o.pipeline, 1);
  EXPECT_EQ(o.shards, 1);
  EXPECT_DOUBLE_EQ(o.timeout_s, 5.0);
  EXPECT_FALSE(o.open_loop());
  EXPECT_EQ(ntohs(o.target.sin_port), 9);

  const ParseResult r2 = parse_load_args(
      {"--mode=http", "--target=localhost:8080", "--connections=10", "--duration=2.5", "--warmup",
       "0.5", "--rate", "1000", "--pipeline", "4", "--shards", "2", "--timeout", "0.25", "--json",
       "/tmp/x.json", "--backend", "epoll"});
  ASSERT_EQ(r2.kind, ParseResult::Kind::kRun) << r2.error;
  EXPECT_EQ(r2.options.mode, LoadMode::kHttp);
  EXPECT_TRUE(r2.options.open_loop());
  EXPECT_DOUBLE_EQ(r2.options.rate, 1000.0);
  EXPECT_DOUBLE_EQ(r2.options.duration_s, 2.5);
  EXPECT_EQ(r2.options.shards, 2);
  EXPECT_EQ(r2.options.backend, BackendChoice::kEpoll);
  EXPECT_EQ(r2.options.target_text, "localhost:8080");
  EXPECT_EQ(parse_load_args({"--help"}).kind, ParseResult::Kind::kHelp);
}

TEST(LoadOptions, EachBadArgumentIsNamed) {
  // (arguments, a word the message must contain)
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {with({"--bogus", "1"}), "--bogus"},
      {with({"--size"}), "--size"},  // no value
      {replacing("--mode", "ftp"), "--mode"},
      {replacing("--target", "127.0.0.1"), "--target"},
      {replacing("--target", "127.0.0.1:0"), "--target"},
      {replacing("--target", "127.0.0.1:70000"), "--target"},
      {replacing("--target", "example.com:80"), "--target"},
      {replacing("--connections", "0"), "--connections"},
      {replacing("--connections", "ten"), "--connections"},
      {replacing("--duration", "0"), "--duration"},
      {replacing("--duration", "-1"), "--duration"},
      {replacing("--duration", "nan"), "--duration"},
      {with({"--size", "0"}), "--size"},
      {with({"--size", "12k"}), "--size"},
      {with({"--warmup", "-1"}), "--warmup"},
      {with({"--rate", "0"}), "--rate"},
      {with({"--rate", "fast"}), "--rate"},
      {with({"--pipeline", "0"}), "--pipeline"},
      {with({"--shards", "0"}), "--shards"},
      {with({"--shards", "5"}), "--shards"},  // more shards than connections
      {with({"--timeout", "0"}), "--timeout"},
      {with({"--json", ""}), "--json"},
      {with({"--backend", "kqueue"}), "--backend"},
      {with({"--connections", "5"}), "--connections"},  // given twice
      {without("--mode"), "--mode"},
      {without("--target"), "--target"},
      {without("--connections"), "--connections"},
      {without("--duration"), "--duration"},
      {{"--mode", "http", "--target", "127.0.0.1:80", "--connections", "1", "--duration", "1",
        "--size", "10"},
       "--size"},
  };
  for (const auto& [args, word] : cases) {
    const ParseResult r = parse_load_args(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    ASSERT_EQ(r.kind, ParseResult::Kind::kError) << joined;
    EXPECT_NE(r.error.find(word), std::string::npos) << joined << "-> " << r.error;
  }
}

struct Exit {
  int code = -1;
  std::string err;
};

// Runs the built ringpoll-load with args; collects stderr and the exit code.
Exit run_binary(const std::vector<std::string>& args) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return {};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv;
  std::string bin = RINGPOLL_LOAD_BIN;
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  Exit e;
  if (rc != 0) {
    close(pipefd[0]);
    return e;
  }
  char buf[4096];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;)
    e.err.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) e.code = WEXITSTATUS(status);
  return e;
}

TEST(LoadOptions, BinaryExitsTwoNamingTheArgument) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {with({"--pipeline", "-3"}), "--pipeline"},
      {replacing("--target", "nowhere"), "--target"},
      {with({"--frobnicate"}), "--frobnicate"},
      {without("--duration"), "--duration"},
  };
  for (const auto& [args, word] : cases) {
    const Exit e = run_binary(args);
    EXPECT_EQ(e.code, 2) << word;
    EXPECT_NE(e.err.find(word), std::string::npos) << e.err;
  }
  EXPECT_EQ(run_binary({"--help"}).code, 0);
}

}  // namespace
}  // namespace ringpoll::load
