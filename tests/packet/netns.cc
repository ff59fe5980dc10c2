#include "netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace ringpoll::packet::test {
namespace {

// Runs a shell command quietly; true on exit status 0.
bool sh(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

}  // namespace

int echo_round_trips(uint32_t ip, int port, int clients, int n, size_t size, bool no_checksum) {
  int ok = 0;
  for (int c = 0; c < clients; ++c) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    if (no_checksum) setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one);
    timeval tv{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(ip);
    to.sin_port = htons(static_cast<uint16_t>(port));
    for (int i = 0, lost_in_a_row = 0; i < n && lost_in_a_row < 3; ++i) {
      std::string msg(size, 'x');  // "c<client>-<i>-xxx...": each echo is told apart
      std::string tag = "c";
      tag.append(std::to_string(c)).append("-").append(std::to_string(i)).append("-");
      msg.replace(0, std::min(tag.size(), size), tag, 0, std::min(tag.size(), size));
      sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      char buf[9216];
      const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
      const bool echoed =
          got == static_cast<ssize_t>(msg.size()) && std::memcmp(buf, msg.data(), msg.size()) == 0;
      ok += echoed;
      lost_in_a_row = echoed ? 0 : lost_in_a_row + 1;  // a dead path fails in seconds
    }
    ::close(fd);
  }
  return ok;
}

void serve_echo_over_veth(const VethPair& veth, const std::string& path,
                          const std::vector<std::string>& sets) {
  std::vector<std::string> args = {
      "--mode", "udp-echo",        "--listen", "10.77.0.1:9000",  "--set", "packet.path=" + path,
      "--set",  "engine.shards=1", "--set",    "engine.pin=false"};
  for (const std::string& s : sets) {
    args.push_back("--set");
    args.push_back(s);
  }
  Child serve;
  ASSERT_TRUE(serve.start(RINGPOLL_SERVE_BIN, args));
  const std::string line = serve.read_line(20000);
  ASSERT_TRUE(line.starts_with("ringpoll-serve: udp-echo on 10.77.0.1:9000")) << line;
  EXPECT_NE(line.find("path " + path), std::string::npos) << line;
  constexpr uint32_t kServer = 0x0a4d0001;  // 10.77.0.1
  int ok = 0;
  veth.run_inside([&] {
    ok = echo_round_trips(kServer, 9000, 2, 25, 64, /*no_checksum=*/true);
    ok += echo_round_trips(kServer, 9000, 2, 25, 1024, /*no_checksum=*/true);
  });
  // The first datagram waits for ARP: the kernel queues it until the server answers.
  EXPECT_EQ(ok, 100);
  EXPECT_EQ(serve.stop(SIGTERM), 0);
}

Child::~Child() {
  if (pid_ > 0) stop(SIGKILL);
  if (out_ >= 0) ::close(out_);
}

bool Child::start(const std::string& path, const std::vector<std::string>& args) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return false;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(p[1], 1);
    std::vector<char*> argv{const_cast<char*>(path.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  ::close(p[1]);
  out_ = p[0];
  return pid_ > 0;
}

std::string Child::read_line(int timeout_ms) {
  std::string line;
  for (int waited = 0; waited < timeout_ms;) {
    pollfd pf{out_, POLLIN, 0};
    if (poll(&pf, 1, 10) <= 0) {
      waited += 10;
      continue;
    }
    char ch;
    if (::read(out_, &ch, 1) != 1 || ch == '\n') break;
    line.push_back(ch);
  }
  return line;
}

int Child::stop(int sig) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  int st = 0;
  for (int i = 0; i < 1000; ++i) {
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    usleep(10'000);
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
  return -1;
}

VethPair::VethPair() {
  const std::string base = std::string("rpk") + std::to_string(getpid());
  ns_ = base;
  outer_ = base + "a";
  inner_ = base + "b";
}

VethPair::~VethPair() {
  if (!created_) return;
  sh("ip link del " + outer_);  // deletes both ends
  sh("ip netns del " + ns_);
}

bool VethPair::create(const std::string& inner_cidr, const std::string& outer_cidr,
                      std::string* why) {
  if (geteuid() != 0) {
    *why = "needs root to create a network namespace and a veth pair";
    return false;
  }
  if (!sh("ip -V")) {
    *why = "needs iproute2 (`ip`)";
    return false;
  }
  if (!sh("ip netns add " + ns_)) {
    *why = "`ip netns add " + ns_ + "` failed (no network namespaces here?)";
    return false;
  }
  created_ = true;
  const std::string in = "ip -n " + ns_ + " ";
  const bool ok =
      sh("ip link add " + outer_ + " type veth peer name " + inner_ + " netns " + ns_) &&
      sh(in + "addr add " + inner_cidr + " dev " + inner_) && sh(in + "link set lo up") &&
      sh(in + "link set " + inner_ + " up") && sh("ip link set " + outer_ + " up") &&
      (outer_cidr.empty() || sh("ip addr add " + outer_cidr + " dev " + outer_));
  if (!ok) *why = "setting up veth pair " + outer_ + "/" + inner_ + " failed";
  return ok;
}

void VethPair::run_inside(const std::function<void()>& fn) const {
  std::thread t([&] {
    const int fd = ::open(("/var/run/netns/" + ns_).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) std::abort();  // the fixture made it
    ::close(fd);
    fn();
  });
  t.join();
}

}  // namespace ringpoll::packet::test
