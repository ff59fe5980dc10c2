// A fleet of proxies on hosts made of network namespaces (issue 21): a DNS host running
// dnsmasq, two ringpoll-proxy hosts, four upstream hosts and a client host, each with a veth
// into a bridge that lives in a switch namespace of its own (so no host firewall sees the
// traffic). Nothing runs on loopback. The tests make the topology and remove it; without
// root, `ip` or dnsmasq they say why and skip (CI has all three).
//
// The upstreams are small servers in this process (one thread each, joined to its
// namespace) that answer every chunk a connection sends with "uN:" and the chunk, so the
// client knows which upstream served it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "support/spawn.h"
#include "support/test_env.h"

namespace ringpoll::test {
namespace {

constexpr int kKeys = 32;  // client addresses 10.99.1.1..32: Maglev keys
const char* const kDns = "10.99.0.53";
const char* const kProxyIp[2] = {"10.99.0.11", "10.99.0.12"};
constexpr int kProxyPort = 7000;
constexpr int kUpPort = 8080;
constexpr int kAdminPort = 9100;
// How long a record change may take to reach both proxies: the TTL (1 s) and 1 s, plus
// room for sanitizer builds (the proxies run ~10x slower there).
constexpr int64_t kFollowNs = 2 * kSec + (kSanitized ? 3 * kSec : 0);

std::string up_ip(int i) {
  return "10.99.0." + std::to_string(20 + i);
}  // u1..u4

bool sh(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

// Runs fn on a thread joined to network namespace `ns` (its sockets live there).
void in_netns(const std::string& ns, const std::function<void()>& fn) {
  std::thread t([&] {
    const int fd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "setns " << ns << ": " << std::strerror(errno);
      if (fd >= 0) ::close(fd);
      return;
    }
    ::close(fd);
    fn();
  });
  t.join();
}

// A process started in a namespace (`ip netns exec`, which execs it: the pid is the
// program's), its stdout and stderr on pipes.
struct Proc {
  Spawned s;
  std::string err_text;  // what it wrote on stderr so far (drain_err)
  bool start(const std::string& ns, const std::string& cmd) {
    err_text.clear();
    s = spawn_piped("/bin/sh", {"-c", "exec ip netns exec " + ns + " " + cmd});
    if (s.pid < 0) return false;
    fcntl(s.err, F_SETFL, O_NONBLOCK);
    return true;
  }
  // A line of stdout within timeout_ms ("" when none).
  std::string line(int timeout_ms) {
    std::string l;
    const int64_t end = mono_now_ns() + timeout_ms * kMs;
    while (mono_now_ns() < end) {
      pollfd pf{s.out, POLLIN, 0};
      if (::poll(&pf, 1, 20) <= 0) continue;
      char ch;
      if (::read(s.out, &ch, 1) != 1 || ch == '\n') break;
      l.push_back(ch);
    }
    return l;
  }
  const std::string& drain_err() {
    char buf[4096];
    for (ssize_t n; s.err >= 0 && (n = ::read(s.err, buf, sizeof buf)) > 0;)
      err_text.append(buf, n);
    return err_text;
  }
  void stop(int sig = SIGTERM) {
    if (s.pid <= 0) return;
    drain_err();
    kill(s.pid, sig);
    int st = 0;
    wait_child(s.pid, &st, 10);
    s.pid = -1;
    drain_err();  // what it said on its way out (a sanitizer's report)
    for (int* fd : {&s.out, &s.err})
      if (*fd >= 0) ::close(std::exchange(*fd, -1));
  }
  ~Proc() { stop(SIGKILL); }
};

// One upstream: answers each chunk with "uN:" + the chunk, on every connection; or, as an
// HTTP server (keep-alive, requests without bodies), each request head with 200 (or 500)
// and the body "uN".
class TagServer {
 public:
  enum class Mode { kEcho, kHttp, kHttp500 };
  ~TagServer() { stop(); }
  void start(const std::string& ns, const std::string& ip, const std::string& tag,
             Mode mode = Mode::kEcho) {
    tag_ = tag;
    mode_ = mode;
    std::atomic<bool> ready{false};
    t_ = std::thread([this, ns, ip, &ready] {
      const int nfd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
      if (nfd >= 0 && setns(nfd, CLONE_NEWNET) == 0) {
        lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        const int one = 1;
        setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(kUpPort);
        inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
        if (bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd_, 128) != 0)
          lfd_ = -1;
      }
      if (nfd >= 0) ::close(nfd);
      ready = true;
      if (lfd_ >= 0) loop();
    });
    while (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_GE(lfd_, 0) << "upstream " << tag << " could not listen on " << ip;
  }
  void stop() {
    stop_ = true;
    if (t_.joinable()) t_.join();
  }

 private:
  // What a connection that sent `in` gets back (the answered part of `in` consumed).
  std::string answer(std::string& in) const {
    if (mode_ == Mode::kEcho) return tag_ + ":" + std::exchange(in, std::string());
    std::string out;
    for (size_t end; (end = in.find("\r\n\r\n")) != std::string::npos;) {
      in.erase(0, end + 4);
      out += mode_ == Mode::kHttp500 ? "HTTP/1.1 500 Internal Server Error\r\n"
                                     : "HTTP/1.1 200 OK\r\n";
      out += "Content-Length: " + std::to_string(tag_.size()) + "\r\n\r\n" + tag_;
    }
    return out;
  }
  void loop() {
    std::vector<pollfd> fds{{lfd_, POLLIN, 0}};
    std::vector<std::string> in{""};  // by fds: what each connection sent, unanswered
    while (!stop_) {
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      for (size_t i = fds.size(); i-- > 1;) {
        if (!fds[i].revents) continue;
        char buf[512];
        const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
        if (n <= 0) {
          ::close(fds[i].fd);
          fds.erase(fds.begin() + static_cast<long>(i));
          in.erase(in.begin() + static_cast<long>(i));
          continue;
        }
        in[i].append(buf, static_cast<size_t>(n));
        const std::string out = answer(in[i]);
        if (::send(fds[i].fd, out.data(), out.size(), MSG_NOSIGNAL) < 0) continue;
      }
      if (fds[0].revents & POLLIN) {
        for (int c; (c = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) {
          fds.push_back({c, POLLIN, 0});
          in.emplace_back();
        }
      }
    }
    for (pollfd& p : fds) ::close(p.fd);
  }
  std::string tag_;
  Mode mode_ = Mode::kEcho;
  int lfd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

// A connection from the client host (source `src`) to a proxy: open() in the client's
// namespace, then ask() from any thread.
struct Conn {
  int fd = -1;
  ~Conn() {
    if (fd >= 0) ::close(fd);
  }
  bool open(const std::string& src, const std::string& ip, int port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in s{}, d{};
    s.sin_family = d.sin_family = AF_INET;
    inet_pton(AF_INET, src.c_str(), &s.sin_addr);
    inet_pton(AF_INET, ip.c_str(), &d.sin_addr);
    d.sin_port = htons(static_cast<uint16_t>(port));
    return bind(fd, reinterpret_cast<sockaddr*>(&s), sizeof s) == 0 &&
           connect(fd, reinterpret_cast<sockaddr*>(&d), sizeof d) == 0;
  }
  // Sends `what` + "\n" and returns the answer's tag ("u3"), or "" on failure.
  std::string ask(const std::string& what) {
    const std::string msg = what + "\n";
    if (::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size()))
      return "";
    std::string got;
    char ch;
    while (got.size() < 256 && ::read(fd, &ch, 1) == 1 && ch != '\n') got.push_back(ch);
    const size_t colon = got.find(':');
    if (colon == std::string::npos || got.substr(colon + 1) != what) return "";
    return got.substr(0, colon);
  }
};

// An HTTP/1.1 keep-alive connection from the client host to a proxy.
struct HttpConn : Conn {
  std::string buf;  // received past the last response
  // GET `path` with `fields` ("Name: value" lines); the answer's status and body, or
  // {0, ""} when the connection failed.
  std::pair<int, std::string> get(const std::string& path, const std::vector<std::string>& fields) {
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: app.fleet.test\r\n";
    for (const std::string& f : fields) req += f + "\r\n";
    req += "\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
      return {0, ""};
    size_t head_end;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos)
      if (!more()) return {0, ""};
    const std::string head = buf.substr(0, head_end + 4);
    buf.erase(0, head_end + 4);
    int status = 0;
    size_t length = 0;
    if (std::sscanf(head.c_str(), "HTTP/1.1 %d", &status) != 1) return {0, ""};
    for (const char* f : {"\r\nContent-Length:", "\r\ncontent-length:"}) {
      const size_t at = head.find(f);
      if (at != std::string::npos) length = std::strtoul(head.c_str() + at + 17, nullptr, 10);
    }
    while (buf.size() < length)
      if (!more()) return {0, ""};
    std::string body = buf.substr(0, length);
    buf.erase(0, length);
    return {status, body};
  }
  bool more() {
    char b[4096];
    const ssize_t n = ::read(fd, b, sizeof b);
    if (n <= 0) return false;
    buf.append(b, static_cast<size_t>(n));
    return true;
  }
};

class Fleet {
 public:
  Fleet() : p_("rf" + std::to_string(getpid())) {}
  ~Fleet() { destroy(); }

  // The namespaces and links; false with *why when they cannot be made.
  bool create(std::string* why) {
    if (geteuid() != 0) {
      *why = "needs root (network namespaces)";
      return false;
    }
    if (!sh("command -v ip") || !sh("command -v dnsmasq")) {
      *why = "needs `ip` (iproute2) and `dnsmasq` (dnsmasq-base)";
      return false;
    }
    if (!sh("ip netns add " + ns("sw"))) {
      *why = "ip netns add failed (no namespace support here?)";
      return false;
    }
    made_.push_back(ns("sw"));
    bool ok = sh("ip -n " + ns("sw") + " link add br0 type bridge") &&
              sh("ip -n " + ns("sw") + " link set br0 up");
    const std::vector<std::pair<std::string, std::string>> hosts = {
        {"dns", kDns},    {"p1", kProxyIp[0]}, {"p2", kProxyIp[1]}, {"u1", up_ip(1)},
        {"u2", up_ip(2)}, {"u3", up_ip(3)},    {"u4", up_ip(4)},    {"c", "10.99.0.100"}};
    for (size_t i = 0; ok && i < hosts.size(); ++i) {
      const std::string& h = hosts[i].first;
      const std::string n = ns(h), outer = "s" + h;
      ok = sh("ip netns add " + n);
      if (ok) made_.push_back(n);
      ok = ok &&
           sh("ip link add " + outer + "x" + p_ + " netns " + ns("sw") +
              " type veth peer name eth0 netns " + n) &&
           sh("ip -n " + ns("sw") + " link set " + outer + "x" + p_ + " name " + outer) &&
           sh("ip -n " + ns("sw") + " link set " + outer + " master br0 up") &&
           sh("ip -n " + n + " addr add " + hosts[i].second + "/16 dev eth0") &&
           sh("ip -n " + n + " link set eth0 up") && sh("ip -n " + n + " link set lo up");
    }
    for (int k = 1; ok && k <= kKeys; ++k)
      ok = sh("ip -n " + ns("c") + " addr add " + key_ip(k) + "/16 dev eth0");
    if (!ok) *why = "could not build the topology with `ip`";
    return ok;
  }

  void destroy() {
    for (auto& p : proxies_) {
      p.stop();
      EXPECT_EQ(p.err_text.find("Sanitizer"), std::string::npos) << p.err_text;
    }
    dns_.stop();
    for (auto& u : ups_) u.stop();
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) sh("ip netns del " + *it);
    made_.clear();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::string ns(const std::string& host) const { return p_ + host; }
  static std::string key_ip(int k) { return "10.99.1." + std::to_string(k); }
  const std::string& dir() {
    if (dir_.empty()) {
      char tmpl[] = "/tmp/ringpoll-fleet-XXXXXX";
      dir_ = mkdtemp(tmpl);
    }
    return dir_;
  }

  // Upstream i (1..4) answers as modes[i - 1] says (all echo when empty).
  void start_upstreams(const std::vector<TagServer::Mode>& modes = {}) {
    for (int i = 1; i <= 4; ++i) {
      std::string tag = "u";  // appended, not "u" + std::string (g++ 12 -Wrestrict)
      tag += std::to_string(i);
      ups_[i - 1].start(ns(tag), up_ip(i), tag,
                        modes.empty() ? TagServer::Mode::kEcho : modes[i - 1]);
    }
  }

  // The DNS host's records: app.fleet.test -> the upstreams in `a`, u1..u4.fleet.test ->
  // theirs, and SRV records "_app._tcp.fleet.test" (target index, priority, weight).
  struct Srv {
    int target, priority, weight;
  };
  void write_hosts(const std::vector<int>& a) {
    std::ofstream f(dir() + "/hosts");
    for (int i : a) f << up_ip(i) << " app.fleet.test\n";
    for (int i = 1; i <= 4; ++i) f << up_ip(i) << " u" << i << ".fleet.test\n";
  }
  bool start_dns(const std::vector<Srv>& srv) {
    std::string cmd =
        "dnsmasq -k -C /dev/null -u root -g root --pid-file= --no-resolv --no-hosts "
        "--addn-hosts=" +
        dir() +
        "/hosts --local=/fleet.test/ --local-ttl=1 "
        "--listen-address=" +
        std::string(kDns) + " --bind-interfaces --log-facility=-";
    for (const Srv& s : srv)
      cmd += " --srv-host=_app._tcp.fleet.test,u" + std::to_string(s.target) + ".fleet.test," +
             std::to_string(kUpPort) + "," + std::to_string(s.priority) + "," +
             std::to_string(s.weight);
    if (!dns_.start(ns("dns"), cmd)) return false;
    // Up when it answers: a UDP query from the DNS host itself would need a resolver;
    // dnsmasq says "started" on stderr first.
    const int64_t end = mono_now_ns() + 10 * kSec;
    while (mono_now_ns() < end && dns_.drain_err().find("read " + dir()) == std::string::npos)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return dns_.err_text.find("read " + dir()) != std::string::npos;
  }
  void reload_dns() { kill(dns_.s.pid, SIGHUP); }
  void stop_dns() { dns_.stop(SIGKILL); }

  // Both proxies, with the pool's lines (balance, upstreams, ...), the listener's (after
  // its pool: protocol, ...) and more tables after the pool (`tables`). Each serves its
  // admin page on port kAdminPort.
  bool start_proxies(const std::string& pool_lines, int shards,
                     const std::string& listener_lines = "", const std::string& tables = "") {
    for (int i = 0; i < 2; ++i) {
      const std::string conf = dir() + "/p" + std::to_string(i + 1) + ".toml";
      std::ofstream(conf) << "[proxy]\nresolvers = [\"" << kDns << ":53\"]\n\n"
                          << "[timeouts]\nconnect_ms = 300\n\n"
                          // No access log: its lines would fill the stderr pipe, which the
                          // test reads only now and then (a full pipe blocks the proxy's
                          // own messages, and with them a shard).
                          << "[http]\naccess_log = \"off\"\n\n"
                          << "[[proxy.listener]]\nname = \"front\"\nlisten = \"" << kProxyIp[i]
                          << ":" << kProxyPort << "\"\npool = \"app\"\n"
                          << listener_lines << "\n\n"
                          << "[[proxy.pool]]\nname = \"app\"\nresolve_min_ttl_s = 1\n"
                          << "resolve_max_ttl_s = 1\n"
                          << pool_lines << "\n"
                          << tables << "\n";
      const std::string cmd = std::string(RINGPOLL_PROXY_BIN) + " --config " + conf +
                              " --set engine.shards=" + std::to_string(shards) +
                              " --set engine.pin=false --admin " + kProxyIp[i] + ":" +
                              std::to_string(kAdminPort);
      if (!proxies_[i].start(ns("p" + std::to_string(i + 1)), cmd)) return false;
      const std::string l = proxies_[i].line(20000);
      if (l.find("listening on") == std::string::npos) {
        ADD_FAILURE() << "proxy " << i + 1 << ": " << l << "\n" << proxies_[i].drain_err();
        return false;
      }
    }
    return true;
  }
  Proc& proxy(int i) { return proxies_[i]; }

  // One request through proxy i from client address k: the upstream's tag, "" on failure.
  std::vector<std::string> ask_all(int proxy, const std::vector<int>& keys) {
    std::vector<std::string> tags;
    in_netns(ns("c"), [&] {
      for (int k : keys) {
        Conn c;
        tags.push_back(c.open(key_ip(k), kProxyIp[proxy], kProxyPort) ? c.ask("ping") : "");
      }
    });
    return tags;
  }
  // GETs through proxy i on one keep-alive connection from client address k: each
  // request's answer as "uN" (200), "500:uN" (500), or "" (failed).
  std::vector<std::string> http_round(int proxy, int k, const std::string& path,
                                      const std::vector<std::vector<std::string>>& requests) {
    std::vector<std::string> tags;
    in_netns(ns("c"), [&] {
      HttpConn c;
      if (!c.open(key_ip(k), kProxyIp[proxy], kProxyPort)) return;
      for (const auto& fields : requests) {
        const auto [status, body] = c.get(path, fields);
        tags.push_back(status == 200 ? body : status == 500 ? "500:" + body : "");
      }
    });
    tags.resize(requests.size());  // a connect that failed: every request failed
    return tags;
  }
  // Proxy i's admin page (/metrics), "" when it could not be had.
  std::string metrics(int proxy) {
    std::string page;
    in_netns(ns("c"), [&] {
      Conn c;
      if (!c.open("10.99.0.100", kProxyIp[proxy], kAdminPort)) return;
      const std::string req = "GET /metrics HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";
      if (::send(c.fd, req.data(), req.size(), MSG_NOSIGNAL) < 0) return;
      char b[4096];
      for (ssize_t n; (n = ::read(c.fd, b, sizeof b)) > 0;) page.append(b, static_cast<size_t>(n));
    });
    return page;
  }
  // A connection through proxy i from client address k, open.
  std::unique_ptr<Conn> connect(int proxy, int k) {
    auto c = std::make_unique<Conn>();
    bool ok = false;
    in_netns(ns("c"), [&] { ok = c->open(key_ip(k), kProxyIp[proxy], kProxyPort); });
    if (!ok) return nullptr;
    return c;
  }

 private:
  std::string p_;
  std::string dir_;
  std::vector<std::string> made_;
  Proc dns_;
  Proc proxies_[2];
  TagServer ups_[4];
};

std::vector<int> all_keys() {
  std::vector<int> v;
  for (int k = 1; k <= kKeys; ++k) v.push_back(k);
  return v;
}

// The tags a round of requests through proxy i reached; "" stands for a failed request.
std::set<std::string> seen(const std::vector<std::string>& tags) {
  return std::set<std::string>(tags.begin(), tags.end());
}

// Waits (within deadline_ns) until a round through each proxy reaches exactly `want`
// (every request served); returns how long from `since` that took, or -1.
int64_t wait_for_set(Fleet& f, const std::set<std::string>& want, int64_t since,
                     int64_t deadline_ns) {
  while (mono_now_ns() - since < deadline_ns) {
    const int64_t round = mono_now_ns();
    if (seen(f.ask_all(0, all_keys())) == want && seen(f.ask_all(1, all_keys())) == want)
      return round - since;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

std::string text_of(const std::set<std::string>& s) {
  std::string t;
  for (const std::string& x : s) t += (t.empty() ? "" : ",") + (x.empty() ? "(failed)" : x);
  return t;
}

#define MAKE_FLEET_OF(f, modes)                        \
  Fleet f;                                             \
  {                                                    \
    std::string why;                                   \
    if (!f.create(&why)) GTEST_SKIP() << why;          \
    ASSERT_NO_FATAL_FAILURE(f.start_upstreams(modes)); \
  }
#define MAKE_FLEET(f) MAKE_FLEET_OF(f, std::vector<TagServer::Mode>{})

TEST(FleetNetns, BothProxiesFollowRecordsAddedAndRemovedAndAgreeOnEveryMaglevKey) {
  MAKE_FLEET(f);
  f.write_hosts({1, 2, 3});
  ASSERT_TRUE(f.start_dns({})) << f.ns("dns") << ": dnsmasq did not start";
  ASSERT_TRUE(f.start_proxies("balance = \"maglev\"\nupstreams = [\"app.fleet.test:8080\"]", 2));
  ASSERT_GE(wait_for_set(f, {"u1", "u2", "u3"}, mono_now_ns(), 10 * kSec), 0)
      << "p1 reached " << text_of(seen(f.ask_all(0, all_keys()))) << "\n"
      << f.proxy(0).drain_err();
  auto agree = [&](const char* when) {
    const auto a = f.ask_all(0, all_keys()), b = f.ask_all(1, all_keys());
    for (size_t k = 0; k < a.size(); ++k)
      EXPECT_EQ(a[k], b[k]) << when << ": client " << Fleet::key_ip(static_cast<int>(k) + 1)
                            << " goes to different upstreams";
    return a;
  };
  agree("three upstreams");

  // Added: within TTL + 1 s both proxies send keys to u4.
  f.write_hosts({1, 2, 3, 4});
  int64_t t0 = mono_now_ns();
  f.reload_dns();
  const int64_t added = wait_for_set(f, {"u1", "u2", "u3", "u4"}, t0, kFollowNs);
  EXPECT_GE(added, 0) << "the proxies did not follow the added record within " << kFollowNs / kMs
                      << " ms";
  const std::vector<std::string> before = agree("four upstreams");

  // A connection established to u1 (through p1) before u1 is removed.
  int on_u1 = 0;
  for (size_t k = 0; k < before.size() && !on_u1; ++k)
    if (before[k] == "u1") on_u1 = static_cast<int>(k) + 1;
  ASSERT_NE(on_u1, 0) << "no key went to u1";
  std::unique_ptr<Conn> held = f.connect(0, on_u1);
  ASSERT_NE(held, nullptr);
  ASSERT_EQ(held->ask("before"), "u1");

  // Removed: within TTL + 1 s no new connection reaches u1, on either proxy.
  f.write_hosts({2, 3, 4});
  t0 = mono_now_ns();
  f.reload_dns();
  const int64_t removed = wait_for_set(f, {"u2", "u3", "u4"}, t0, kFollowNs);
  EXPECT_GE(removed, 0) << "the proxies did not follow the removed record within "
                        << kFollowNs / kMs << " ms";
  for (int round = 0; round < 3; ++round) {
    for (int p = 0; p < 2; ++p) {
      const auto tags = f.ask_all(p, all_keys());
      EXPECT_EQ(std::count(tags.begin(), tags.end(), "u1"), 0) << "a new connection reached u1";
      EXPECT_EQ(std::count(tags.begin(), tags.end(), ""), 0) << "a request failed";
    }
  }
  EXPECT_EQ(held->ask("after"), "u1") << "the established connection was cut";
  held.reset();
  const std::vector<std::string> after = agree("u1 removed");
  // Maglev: u1's keys move; of the others at most 5 % may (the unit test shows the
  // 1/N + 5 % bound over many keys).
  int others_moved = 0;
  for (size_t k = 0; k < after.size(); ++k)
    others_moved += before[k] != "u1" && after[k] != before[k];
  EXPECT_LE(others_moved, kKeys / 20 + 1) << "keys not on u1 that moved";

  // The DNS server goes away: both proxies keep serving the last good set.
  f.stop_dns();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // > 2 re-resolutions
  EXPECT_GE(wait_for_set(f, {"u2", "u3", "u4"}, mono_now_ns(), 5 * kSec), 0)
      << "the last good set was not kept with the DNS server down";
  for (int p = 0; p < 2; ++p)
    EXPECT_NE(f.proxy(p).drain_err().find("resolving app.fleet.test:8080 failed"),
              std::string::npos)
        << f.proxy(p).err_text;
  std::printf("followed an added record in %.0f ms, a removed one in %.0f ms\n", added / 1e6,
              removed / 1e6);
}

// Counts of tags over n requests through proxy i (client address 1: one key, round robin).
std::map<std::string, int> spread(Fleet& f, int proxy, int n) {
  std::map<std::string, int> m;
  for (const std::string& t : f.ask_all(proxy, std::vector<int>(static_cast<size_t>(n), 1))) ++m[t];
  return m;
}

TEST(FleetNetns, SrvWeightsAndPrioritiesAreHonouredAndAReweightIsFollowed) {
  MAKE_FLEET(f);
  f.write_hosts({});
  // u1 and u2 at priority 10 (weights 3 and 1); u3 at 20, a backup while any 10 is there.
  ASSERT_TRUE(f.start_dns({{1, 10, 3}, {2, 10, 1}, {3, 20, 5}}));
  ASSERT_TRUE(
      f.start_proxies("balance = \"round_robin\"\nupstreams = [\"_app._tcp.fleet.test\"]", 1));
  ASSERT_GE(wait_for_set(f, {"u1", "u2"}, mono_now_ns(), 10 * kSec), 0) << f.proxy(0).drain_err();
  for (int p = 0; p < 2; ++p) {
    const auto m = spread(f, p, 40);
    EXPECT_EQ(m, (std::map<std::string, int>{{"u1", 30}, {"u2", 10}})) << "proxy " << p + 1;
  }
  // Re-weighted (dnsmasq reads SRV records at start: it restarts, a short DNS outage).
  f.stop_dns();
  const int64_t t0 = mono_now_ns();
  ASSERT_TRUE(f.start_dns({{1, 10, 1}, {2, 10, 1}, {3, 20, 5}}));
  bool even = false;
  while (!even && mono_now_ns() - t0 < kFollowNs + kSec) {
    even = spread(f, 0, 20) == std::map<std::string, int>{{"u1", 10}, {"u2", 10}} &&
           spread(f, 1, 20) == std::map<std::string, int>{{"u1", 10}, {"u2", 10}};
  }
  EXPECT_TRUE(even) << "the new weights were not followed within TTL + 1 s of the restart";
  // The lower priority is dropped: only u3 remains.
  f.stop_dns();
  ASSERT_TRUE(f.start_dns({{3, 20, 5}}));
  EXPECT_GE(wait_for_set(f, {"u3"}, mono_now_ns(), kFollowNs + kSec), 0);
}

TEST(FleetNetns, AnUpstreamWhoseLinkGoesDownIsEjectedAndEveryRequestIsServed) {
  MAKE_FLEET(f);
  f.write_hosts({1, 2, 3, 4});
  ASSERT_TRUE(f.start_dns({}));
  ASSERT_TRUE(f.start_proxies(
      "balance = \"round_robin\"\nupstreams = [\"app.fleet.test:8080\"]\nfail_threshold = 2\n"
      "eject_ms = 30000",
      1));
  ASSERT_GE(wait_for_set(f, {"u1", "u2", "u3", "u4"}, mono_now_ns(), 10 * kSec), 0);
  ASSERT_TRUE(sh("ip -n " + f.ns("sw") + " link set su2 down"));
  for (int p = 0; p < 2; ++p) {
    const auto m = spread(f, p, 40);
    EXPECT_EQ(m.count(""), 0u) << "proxy " << p + 1 << ": a request failed";
    EXPECT_EQ(m.count("u2"), 0u);
    int served = 0;
    for (const auto& [tag, n] : m) served += n;
    EXPECT_EQ(served, 40);
    EXPECT_NE(f.proxy(p).drain_err().find("upstream 10.99.0.22:8080 ejected"), std::string::npos)
        << f.proxy(p).err_text;
  }
}

// Maglev on a header or a cookie in the HTTP mode (issue 21): two routes of one HTTP
// listener, "/c" to a pool keyed on the cookie "session" and the rest to one keyed on the
// header X-User, both on app.fleet.test's records.
constexpr int kUsers = 1000;  // enough that u1's share is within 1.4 % of 1/4 (one sigma)
const char* const kHttpListener = "protocol = \"http\"";
const char* const kKeyedPools =
    "balance = \"maglev\"\nupstreams = [\"app.fleet.test:8080\"]\nhash_key = \"header:X-User\"";
const char* const kCookieTables =
    "[[proxy.pool]]\nname = \"bycookie\"\nresolve_min_ttl_s = 1\nresolve_max_ttl_s = 1\n"
    "balance = \"maglev\"\nupstreams = [\"app.fleet.test:8080\"]\nhash_key = \"cookie:session\"\n\n"
    "[[proxy.route]]\nname = \"c\"\nlistener = \"front\"\npool = \"bycookie\"\n"
    "path_prefix = \"/c\"\n\n"
    "[[proxy.route]]\nname = \"h\"\nlistener = \"front\"\npool = \"app\"\n";

std::string user(int u) {
  return "user-" + std::to_string(u);
}
// Requests for users [0, n) by header or by cookie (among others).
std::vector<std::vector<std::string>> by_header(int n) {
  std::vector<std::vector<std::string>> r;
  for (int u = 0; u < n; ++u) r.push_back({"Accept: */*", "X-User: " + user(u)});
  return r;
}
std::vector<std::vector<std::string>> by_cookie(int n) {
  std::vector<std::vector<std::string>> r;
  for (int u = 0; u < n; ++u) r.push_back({"Cookie: theme=dark; session=" + user(u) + "; lang=en"});
  return r;
}

// Waits until the users of a probe (the first 100, by header and by cookie) reach exactly
// `want` through both proxies; how long from `since`, or -1.
int64_t wait_for_keyed_set(Fleet& f, const std::set<std::string>& want, int64_t since,
                           int64_t deadline_ns) {
  while (mono_now_ns() - since < deadline_ns) {
    const int64_t round = mono_now_ns();
    bool all = true;
    for (int p = 0; p < 2 && all; ++p)
      all = seen(f.http_round(p, 1 + p, "/h", by_header(100))) == want &&
            seen(f.http_round(p, 3 + p, "/c", by_cookie(100))) == want;
    if (all) return round - since;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

TEST(FleetNetns, HeaderAndCookieKeysPickTheSameUpstreamOnBothProxiesAndFewMoveWhenOneGoes) {
  const std::vector<TagServer::Mode> http(4, TagServer::Mode::kHttp);
  MAKE_FLEET_OF(f, http);
  f.write_hosts({1, 2, 3, 4});
  ASSERT_TRUE(f.start_dns({}));
  ASSERT_TRUE(f.start_proxies(kKeyedPools, 2, kHttpListener, kCookieTables));
  ASSERT_GE(wait_for_keyed_set(f, {"u1", "u2", "u3", "u4"}, mono_now_ns(), 10 * kSec), 0)
      << "one keep-alive connection's users never spread over u1..u4: "
      << text_of(seen(f.http_round(0, 1, "/h", by_header(100)))) << "\n"
      << f.proxy(0).drain_err();

  // Each proxy from a client address of its own, all users on one keep-alive connection:
  // the header alone decides, request by request.
  struct Round {
    std::vector<std::string> header[2], cookie[2];
  };
  auto round = [&](const char* when) {
    Round r;
    for (int p = 0; p < 2; ++p) {
      r.header[p] = f.http_round(p, 1 + p, "/h", by_header(kUsers));
      r.cookie[p] = f.http_round(p, 3 + p, "/c", by_cookie(kUsers));
    }
    for (int u = 0; u < kUsers; ++u) {
      const size_t i = static_cast<size_t>(u);
      EXPECT_NE(r.header[0][i], "") << when << ": " << user(u) << "'s request failed";
      EXPECT_EQ(r.header[0][i], r.header[1][i])
          << when << ": " << user(u) << " (header) goes to different upstreams";
      EXPECT_EQ(r.cookie[0][i], r.cookie[1][i])
          << when << ": " << user(u) << " (cookie) goes to different upstreams";
      // Both pools have the same set and the key is the value's: the same upstream.
      EXPECT_EQ(r.header[0][i], r.cookie[0][i]) << when << ": " << user(u);
    }
    return r;
  };
  const Round before = round("four upstreams");
  std::map<std::string, int> share;
  for (const std::string& t : before.header[0]) ++share[t];
  EXPECT_EQ(share.size(), 4u);
  for (const auto& [tag, n] : share)
    EXPECT_NEAR(n, kUsers / 4, kUsers / 20) << tag << "'s share of the users";

  // A new connection per request, each from another client address: the same answers.
  for (int u = 0; u < 16; ++u) {
    const auto one = f.http_round(u % 2, 5 + u, "/h", {{"X-User: " + user(u)}});
    EXPECT_EQ(one[0], before.header[0][static_cast<size_t>(u)]) << user(u) << " on its own";
  }

  // Without the header: the client's address decides (the same upstream for all of one
  // address, on both proxies), counted and said.
  std::vector<std::string> fallback[2];
  for (int p = 0; p < 2; ++p) fallback[p] = f.http_round(p, 30, "/h", {{}, {}, {}, {}, {}});
  EXPECT_EQ(seen(fallback[0]).size(), 1u) << text_of(seen(fallback[0]));
  EXPECT_EQ(fallback[0], fallback[1]) << "the proxies disagree on the client address's key";
  EXPECT_NE(fallback[0][0], "");
  for (int p = 0; p < 2; ++p) {
    EXPECT_NE(f.metrics(p).find("ringpoll_proxy_http_hash_fallbacks_total{route=\"front/h\"} 5\n"),
              std::string::npos)
        << "proxy " << p + 1 << ":\n"
        << f.metrics(p);
    EXPECT_NE(f.proxy(p).drain_err().find(
                  "pool 'app': a request without header X-User is hashed on its client's address"),
              std::string::npos)
        << f.proxy(p).err_text;
  }

  // u1's record goes: within TTL + 1 s neither proxy sends a user there; u1's users move,
  // and of the others at most 5 %.
  f.write_hosts({2, 3, 4});
  const int64_t t0 = mono_now_ns();
  f.reload_dns();
  EXPECT_GE(wait_for_keyed_set(f, {"u2", "u3", "u4"}, t0, kFollowNs), 0)
      << "the proxies did not follow the removed record within " << kFollowNs / kMs << " ms";
  const Round after = round("u1 removed");
  for (auto which : {&Round::header, &Round::cookie}) {
    int moved = 0, others_moved = 0;
    for (size_t i = 0; i < static_cast<size_t>(kUsers); ++i) {
      const std::string& was = (before.*which)[0][i];
      const std::string& now = (after.*which)[0][i];
      EXPECT_NE(now, "u1");
      moved += was != now;
      others_moved += was != "u1" && was != now;
    }
    EXPECT_LE(moved, kUsers / 4 + kUsers / 20) << "users that moved (1/N + 5 % at most)";
    EXPECT_LE(others_moved, kUsers / 20) << "users not on u1 that moved";
    EXPECT_GT(moved, 0);
  }
}

TEST(FleetNetns, AnUpstreamAnswering5xxInTheHttpModeIsEjected) {
  const std::vector<TagServer::Mode> modes = {TagServer::Mode::kHttp, TagServer::Mode::kHttp500,
                                              TagServer::Mode::kHttp, TagServer::Mode::kHttp};
  MAKE_FLEET_OF(f, modes);
  // Fixed addresses (no DNS): the set is there from the start, no request waits for it.
  std::string ups;
  for (int i = 1; i <= 4; ++i) ups += std::string(i > 1 ? ", " : "") + "\"" + up_ip(i) + ":8080\"";
  ASSERT_TRUE(f.start_proxies(
      "balance = \"round_robin\"\nupstreams = [" + ups + "]\nfail_threshold = 3\neject_ms = 30000",
      1, kHttpListener));
  for (int p = 0; p < 2; ++p) {
    // Round robin gives u2 every fourth request: three 500s from it, then none.
    const auto tags = f.http_round(p, 1, "/", std::vector<std::vector<std::string>>(40));
    std::map<std::string, int> m;
    for (const std::string& t : tags) ++m[t];
    EXPECT_EQ(m["500:u2"], 3) << "proxy " << p + 1 << ": u2's 500s (fail_threshold 3)";
    EXPECT_EQ(m["u2"], 0);
    EXPECT_EQ(m[""], 0) << "proxy " << p + 1 << ": failed requests";
    EXPECT_EQ(m["u1"] + m["u3"] + m["u4"], 37) << "proxy " << p + 1;
    EXPECT_NE(f.proxy(p).drain_err().find(
                  "upstream 10.99.0.22:8080 ejected for 30.000 s (consecutive 5xx answers"),
              std::string::npos)
        << f.proxy(p).err_text;
    EXPECT_NE(
        f.metrics(p).find(
            "ringpoll_proxy_upstream_ejections_total{pool=\"app\",upstream=\"10.99.0.22:8080\"} 1"),
        std::string::npos)
        << f.metrics(p);
  }
}

}  // namespace
}  // namespace ringpoll::test
