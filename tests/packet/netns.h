#pragma once
// Test fixtures around processes and network namespaces for the packet tests:
//   - Child: a program started with its stdout on a pipe, killed if the test leaves early;
//   - VethPair: a network namespace and a veth pair with one end inside it, created with
//     `ip` and deleted when the fixture goes away. Needs root and iproute2; when either is
//     missing, create() says why and the test reports a skip.
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include <functional>
#include <string>
#include <vector>

namespace ringpoll::packet::test {

class Child {
 public:
  Child() = default;
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  bool start(const std::string& path, const std::vector<std::string>& args);
  // One line of the child's stdout, waiting at most timeout_ms; "" at EOF or timeout.
  std::string read_line(int timeout_ms = 10000);
  // Sends sig and waits at most 10 s; the exit status, or -1 (killed, or did not exit).
  int stop(int sig);

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

// A closed-loop UDP client: `clients` sockets, one after the other, each sends `n`
// datagrams of `size` bytes to ip:port (host order) and waits up to 1 s for each echo.
// Returns how many echoes came back intact. no_checksum sends with a zero UDP checksum
// (SO_NO_CHECK): veth hands packet sockets the kernel's partial checksum (TX offload),
// which a bypass path that checks checksums would rightly refuse.
int echo_round_trips(uint32_t ip, int port, int clients, int n, size_t size,
                     bool no_checksum = false);

class VethPair;
// ringpoll-serve --mode udp-echo on 10.77.0.1:9000 (one shard) with `path` and the extra
// `--set` assignments, answering a kernel client in `veth`'s namespace: 50 datagrams of
// 64 B and 50 of 1 KiB (zero UDP checksums, see echo_round_trips). Checks the first line
// names the path, that every echo came back and that SIGTERM exits 0 (gtest assertions).
void serve_echo_over_veth(const VethPair& veth, const std::string& path,
                          const std::vector<std::string>& sets);

class VethPair {
 public:
  // Names derived from the pid: rpk<pid>a (stays here), rpk<pid>b (in netns rpk<pid>).
  VethPair();
  ~VethPair();
  VethPair(const VethPair&) = delete;
  VethPair& operator=(const VethPair&) = delete;
  // Creates the namespace and the pair; the inner end gets inner_cidr (e.g.
  // "10.77.0.2/24") and is up; the outer end is up with no address (a bypass path owns
  // it) unless outer_cidr is given. False with *why on failure (not root, no `ip`).
  bool create(const std::string& inner_cidr, const std::string& outer_cidr, std::string* why);
  const std::string& outer() const { return outer_; }
  const std::string& inner() const { return inner_; }
  const std::string& netns() const { return ns_; }
  // Runs fn on a thread that has joined the namespace (sockets it opens live there).
  void run_inside(const std::function<void()>& fn) const;

 private:
  std::string ns_, outer_, inner_;
  bool created_ = false;
};

}  // namespace ringpoll::packet::test
