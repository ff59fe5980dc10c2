// HTTP keep-alive clients move to the new process on each binary upgrade (issue 20, item 3;
// apps/proxy/http_move.h): many clients, each sending sequential requests over one
// connection and checking every answer, across a row of upgrades — no request failed or
// answered wrong, no reset, no connection closed or told to close (the client never
// reconnects), every connection moved (drained 0), and the counts on the admin page and in
// the log. A pipelined pair split across an upgrade (the first request answered by the old
// process, the second read there and answered by the new one) is answered in order. On
// epoll and io_uring completion mode (what its provided buffers received ahead travels).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/clock.h"
#include "proxy/proxy_test_helpers.h"
#include "support/fd_log.h"
#include "support/spawn.h"
#include "support/stop_join.h"
#include "support/test_env.h"
#include "upgrade/upgrade_test_helpers.h"

namespace ringpoll::test {
namespace {

// 200 clients across 5 upgrades; under sanitizers (about 10x slower) 50 across 2.
const int kClients = kSanitized ? 50 : 200;
const int kUpgrades = kSanitized ? 2 : 5;
// A client's pause between an answer and its next request: 20..60 ms, so that at an
// upgrade most connections wait between requests and some are in the middle of one.
constexpr int64_t kThinkMinMs = 20;
constexpr int64_t kThinkSpanMs = 40;

// One HTTP response taken off the front of *buf (false: not complete yet).
struct Response {
  int status = 0;
  bool close = false;  // "Connection: close"
  std::string body;
};
bool take_response(std::string* buf, Response* r) {
  const size_t e = buf->find("\r\n\r\n");
  if (e == std::string::npos) return false;
  std::string head = buf->substr(0, e + 4);
  for (char& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  size_t len = 0;
  if (const size_t cl = head.find("\r\ncontent-length:"); cl != std::string::npos)
    len = std::strtoull(head.c_str() + cl + 17, nullptr, 10);
  if (buf->size() < e + 4 + len) return false;
  r->status = head.size() > 12 ? std::atoi(head.c_str() + 9) : 0;
  r->close = head.find("\r\nconnection: close") != std::string::npos;
  r->body = buf->substr(e + 4, len);
  buf->erase(0, e + 4 + len);
  return true;
}

// One response on a blocking socket within `secs` (false: none came).
bool read_response(int fd, std::string* buf, Response* r, int secs) {
  const int64_t end = mono_now_ns() + int64_t{secs} * kSec;
  while (!take_response(buf, r)) {
    pollfd p{fd, POLLIN, 0};
    if (mono_now_ns() >= end) return false;
    if (::poll(&p, 1, 50) <= 0) continue;
    char tmp[4096];
    const ssize_t k = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) return false;
    if (k > 0) buf->append(tmp, static_cast<size_t>(k));
  }
  return true;
}

std::string get(const std::string& target) {
  return "GET " + target + " HTTP/1.1\r\nHost: test\r\n\r\n";
}

bool send_all(int fd, const std::string& s) {
  return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
}

// GET target on a blocking connection; its response within 20 s (false: none came).
bool ask(int fd, std::string* buf, const std::string& target, Response* r) {
  return send_all(fd, get(target)) && read_response(fd, buf, r, 20);
}

// The test's upstream: HTTP/1.1 keep-alive on one thread; each answer's body is its
// request's target. A request for "/hold..." is answered once release() was called.
class Upstream {
 public:
  Upstream() {
    lfd_ = listen_on(&port_, 1024);
    (void)fcntl(lfd_, F_SETFL, fcntl(lfd_, F_GETFL) | O_NONBLOCK);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd_;
    epoll_ctl(ep_, EPOLL_CTL_ADD, lfd_, &ev);
    t_ = std::thread([this] { run(); });
  }
  ~Upstream() {
    stop_ = true;
    t_.join();
    for (auto& [fd, c] : conns_) ::close(fd);
    ::close(ep_);
    ::close(lfd_);
  }
  Upstream(const Upstream&) = delete;
  Upstream& operator=(const Upstream&) = delete;
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void release() { release_ = true; }
  size_t held() const { return held_.load(); }
  // The upstream connection (numbered in accept order) `target` came on; -1: it did not.
  int conn_of(const std::string& target) {
    std::lock_guard<std::mutex> l(mu_);
    const auto it = seen_.find(target);
    return it == seen_.end() ? -1 : it->second;
  }

 private:
  struct Conn {
    int id = 0;
    std::string in, out;
    std::vector<std::string> held;
  };
  void run() {
    epoll_event evs[64];
    int next_id = 0;
    bool released = false;
    while (!stop_.load()) {
      const int n = epoll_wait(ep_, evs, 64, 2);
      for (int i = 0; i < n; ++i) {
        const int fd = evs[i].data.fd;
        if (fd == lfd_) {
          for (;;) {
            const int c = accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (c < 0) break;
            conns_[c].id = next_id++;
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.fd = c;
            epoll_ctl(ep_, EPOLL_CTL_ADD, c, &ev);
          }
          continue;
        }
        Conn& c = conns_[fd];
        char buf[8192];
        ssize_t k;
        while ((k = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
          c.in.append(buf, static_cast<size_t>(k));
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
          ::close(fd);
          conns_.erase(fd);
          continue;
        }
        serve(fd, c);
      }
      if (release_.load() && !released) {
        released = true;
        for (auto& [fd, c] : conns_) {
          for (const std::string& t : c.held) answer(c, t);
          c.held.clear();
          serve(fd, c);
        }
      }
      for (auto& [fd, c] : conns_) flush(fd, c);
    }
  }
  void serve(int fd, Conn& c) {
    for (;;) {
      if (!c.held.empty()) return;  // the rest waits behind the held one
      const size_t e = c.in.find("\r\n\r\n");
      if (e == std::string::npos) break;
      const std::string head = c.in.substr(0, e + 4);
      c.in.erase(0, e + 4);
      const size_t a = head.find(' ') + 1;
      const std::string target = head.substr(a, head.find(' ', a) - a);
      if (!target.starts_with("/c")) {  // the load's own are not looked up
        std::lock_guard<std::mutex> l(mu_);
        seen_[target] = c.id;
      }
      if (target.starts_with("/hold") && !release_.load()) {
        c.held.push_back(target);
        held_.fetch_add(1);
        return;
      }
      answer(c, target);
    }
    flush(fd, c);
  }
  static void answer(Conn& c, const std::string& target) {
    c.out +=
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(target.size()) + "\r\n\r\n" + target;
  }
  static void flush(int fd, Conn& c) {
    while (!c.out.empty()) {
      const ssize_t w = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w <= 0) return;
      c.out.erase(0, static_cast<size_t>(w));
    }
  }
  int lfd_ = -1, ep_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false}, release_{false};
  std::atomic<size_t> held_{0};
  std::unordered_map<int, Conn> conns_;  // the thread's own
  std::mutex mu_;
  std::map<std::string, int> seen_;
  std::thread t_;
};

// The clients: each sends "GET /c<k>/<i>", checks that the answer is 200 with that target
// as its body and no Connection: close, pauses, sends the next; one thread drives them all.
struct Clients {
  struct Client {
    int fd = -1;
    uint16_t port = 0;  // its local port: the same TCP connection from start to end
    std::atomic<uint64_t> sent{0}, answered{0};
    std::atomic<bool> waiting{false};
    std::atomic<bool> dead{false};
    int64_t next_at = 0;
    std::string in;
  };
  std::vector<Client> cs;
  int ep = -1;
  std::atomic<bool> sending{true}, stop{false};
  // Set by the driver once it has seen sending == false at the top of a round: no send of
  // an earlier round is still under way (so every request it made is counted in `sent`).
  std::atomic<bool> sends_stopped{false};
  std::mutex mu;
  std::vector<std::string> faults;
  std::atomic<uint64_t> fault_count{0};

  explicit Clients(size_t n) : cs(n) {}
  void fault(size_t k, const std::string& f) {
    cs[k].dead = true;
    fault_count.fetch_add(1);
    std::lock_guard<std::mutex> l(mu);
    if (faults.size() < 20)
      faults.push_back("connection " + std::to_string(k) + " after " +
                       std::to_string(cs[k].answered.load()) + " answers: " + f);
  }
  void send_next(size_t k) {
    Client& c = cs[k];
    const std::string req = get("/c" + std::to_string(k) + "/" + std::to_string(c.sent.load()));
    const ssize_t w = ::send(c.fd, req.data(), req.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w != static_cast<ssize_t>(req.size())) {
      fault(k, w < 0 ? std::string("send: ") + std::strerror(errno) : "a short send");
      return;
    }
    c.waiting = true;
    c.sent.fetch_add(1);
  }
  void receive(size_t k) {
    Client& c = cs[k];
    char buf[4096];
    for (;;) {
      const ssize_t r = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (r <= 0) {
        fault(k, r == 0 ? std::string("closed by the proxy")
                        : std::string("recv: ") + std::strerror(errno));
        return;
      }
      c.in.append(buf, static_cast<size_t>(r));
    }
    Response resp;
    while (!c.dead && take_response(&c.in, &resp)) {
      const std::string want = "/c" + std::to_string(k) + "/" + std::to_string(c.answered.load());
      if (!c.waiting) {
        fault(k, "an answer to no request");
      } else if (resp.status != 200 || resp.body != want) {
        fault(k, "answered " + std::to_string(resp.status) + " '" + resp.body + "', want '" + want +
                     "'");
      } else if (resp.close) {
        fault(k, "told to close (Connection: close): the connection drained");
      } else {
        c.answered.fetch_add(1);
        c.waiting = false;
        c.next_at = mono_now_ns() +
                    (kThinkMinMs +
                     static_cast<int64_t>((k * 7 + c.answered.load()) % uint64_t{kThinkSpanMs})) *
                        kMs;
      }
    }
  }
  void run() {
    epoll_event evs[256];
    while (!stop.load()) {
      const int n = epoll_wait(ep, evs, 256, 1);
      for (int i = 0; i < n; ++i) {
        const size_t k = evs[i].data.u64;
        if (!cs[k].dead) receive(k);
      }
      if (!sending.load()) {
        sends_stopped = true;
        continue;
      }
      const int64_t now = mono_now_ns();
      for (size_t k = 0; k < cs.size(); ++k)
        if (!cs[k].dead && !cs[k].waiting && now >= cs[k].next_at) send_next(k);
    }
  }
  std::string first_fault() {
    std::lock_guard<std::mutex> l(mu);
    return faults.empty() ? std::string() : faults[0];
  }
};

bool page_has(const SocketAddress& admin, const std::string& line, std::string* page) {
  return admin_get(admin, "/metrics", page) == 200 &&
         page->find("\n" + line + "\n") != std::string::npos;
}

// The proxy (one HTTP listener "web" in front of the test's upstream) on `backend`, as
// the first generation of a row of upgrades; the test is the subreaper of all of them.
struct ProxyUnderTest {
  std::vector<pid_t> running;
  KillLeftOvers kill_left_overs{running};
  Spawned first;
  std::string conf;
  SocketAddress at, admin;
  std::unique_ptr<FdLog> err;
  pid_t current = -1;

  void start(const char* backend, const std::string& upstream,
             const std::vector<std::string>& extra) {
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    ASSERT_EQ(setenv("RINGPOLL_BACKEND", backend, 1), 0);
    uint16_t admin_port = 0;
    ::close(listen_on(&admin_port));
    const std::string admin_at = "127.0.0.1:" + std::to_string(admin_port);
    conf = temp_file(
        "[[proxy.listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\npool = \"back\"\n"
        "protocol = \"http\"\n[[proxy.pool]]\nname = \"back\"\nupstreams = [\"" +
        upstream + "\"]\n[timeouts]\ndrain_ms = 20000\n[limits]\nmax_connections = " +
        std::to_string(kClients * 4) + "\n");
    std::vector<std::string> args{"--config", conf, "--admin", admin_at};
    args.insert(args.end(), extra.begin(), extra.end());
    first = spawn_piped(RINGPOLL_PROXY_BIN, args);
    ASSERT_GT(first.pid, 0);
    running.push_back(first.pid);
    current = first.pid;
    const std::string line = read_line(first.out, 20);
    ASSERT_TRUE(parse_address(address_after(line, "listening on "), &at).ok()) << line;
    ASSERT_TRUE(parse_address(admin_at, &admin).ok());
    err = std::make_unique<FdLog>(first.err);  // every generation writes here
  }
  std::string log() const { return err ? err->text() : std::string(); }
  // SIGUSR2 to the current generation; true once its successor (generation `gen`) serves
  // and the old one exited.
  void upgrade(int gen) {
    ASSERT_EQ(kill(current, SIGUSR2), 0);
    const std::string line = read_line(first.out, 20);
    ASSERT_NE(line.find(", generation " + std::to_string(gen) + " "), std::string::npos)
        << line << "\n"
        << log();
    const pid_t next = pid_in(line);
    ASSERT_GT(next, 0) << line;
    running.push_back(next);
    // Every client moved: nothing to drain, so the old generation exits well within
    // drain_ms (20 s); one left to drain would have been told to close (a fault).
    ASSERT_TRUE(exits_within(current, 15)) << "generation " << gen - 1 << " did not exit\n"
                                           << log();
    std::erase(running, current);
    current = next;
  }
  void stop() {
    kill(current, SIGTERM);
    EXPECT_TRUE(exits_within(current, 20));
    std::erase(running, current);
    err->stop();
    // Under a sanitizer, every generation's report (a leak at exit, an error) is a failure.
    EXPECT_EQ(log().find("Sanitizer"), std::string::npos) << log();
    ::close(first.out);
    ::close(first.err);
    std::remove(conf.c_str());
  }
  ~ProxyUnderTest() { unsetenv("RINGPOLL_BACKEND"); }
};

void http_clients_move_across_upgrades(const char* backend) {
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  ASSERT_GE(rl.rlim_cur, static_cast<rlim_t>(kClients) * 4) << "RLIMIT_NOFILE too low";
  Upstream upstream;
  ProxyUnderTest px;
  px.start(backend, upstream.address(), {});
  if (::testing::Test::HasFatalFailure()) return;

  Clients cl(static_cast<size_t>(kClients));
  cl.ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(cl.ep, 0);
  for (size_t k = 0; k < cl.cs.size(); ++k) {
    const int fd = connect_to(px.at);
    ASSERT_GE(fd, 0) << "connection " << k;
    cl.cs[k].fd = fd;
    cl.cs[k].port = local_of(fd).port();
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = k;
    ASSERT_EQ(epoll_ctl(cl.ep, EPOLL_CTL_ADD, fd, &ev), 0);
  }
  std::thread driver([&] { cl.run(); });
  StopAndJoin stop_driver(cl.stop, driver);
  const auto every_answered_past = [&](const std::vector<uint64_t>& base) {
    for (size_t k = 0; k < cl.cs.size(); ++k)
      if (cl.cs[k].answered.load() <= base[k] + 1) return false;
    return true;
  };
  const auto answered_now = [&] {
    std::vector<uint64_t> v;
    for (const Clients::Client& c : cl.cs) v.push_back(c.answered.load());
    return v;
  };
  ASSERT_TRUE(
      wait_for([&] { return every_answered_past(std::vector<uint64_t>(cl.cs.size(), 0)); }, 30))
      << "not every connection is answered before any upgrade: " << cl.first_fault() << "\n"
      << px.log();
  std::string page;
  const std::string n = std::to_string(kClients);
  ASSERT_TRUE(wait_for(
      [&] { return page_has(px.admin, "ringpoll_proxy_connections_active " + n, &page); }, 30))
      << page;

  for (int round = 0; round < kUpgrades; ++round) {
    const std::vector<uint64_t> before = answered_now();
    px.upgrade(round + 2);
    if (::testing::Test::HasFatalFailure()) return;
    // Every connection goes on being answered, by the new generation.
    ASSERT_TRUE(wait_for([&] { return every_answered_past(before) || cl.fault_count > 0; }, 30))
        << "round " << round << ": not every connection is answered since\n"
        << px.log();
    ASSERT_EQ(cl.fault_count.load(), 0u) << "round " << round << ": " << cl.first_fault() << "\n"
                                         << px.log();
  }
  // Stop sending; every request sent is answered. (Once the driver has seen the stop: a
  // request it was sending as the stop came is answered too, rather than left behind.)
  cl.sending = false;
  EXPECT_TRUE(wait_for([&] { return cl.sends_stopped.load(); }, 20));
  EXPECT_TRUE(wait_for(
      [&] {
        for (const Clients::Client& c : cl.cs)
          if (c.waiting && !c.dead) return false;
        return true;
      },
      20));
  cl.stop = true;
  driver.join();
  {
    std::lock_guard<std::mutex> l(cl.mu);
    for (const std::string& f : cl.faults) ADD_FAILURE() << f;
  }
  for (size_t k = 0; k < cl.cs.size(); ++k) {
    const Clients::Client& c = cl.cs[k];
    EXPECT_FALSE(c.dead) << "connection " << k;
    EXPECT_EQ(c.answered.load(), c.sent.load()) << "connection " << k;
    EXPECT_EQ(local_of(c.fd).port(), c.port) << "connection " << k;
  }
  // The counts: the last generation took every client from the one before, which moved all
  // and drained none; each generation said so in its log.
  const std::string prev = std::to_string(kUpgrades);
  EXPECT_TRUE(page_has(
      px.admin, "ringpoll_proxy_connections_moved_total{kind=\"http\",direction=\"in\"} " + n,
      &page))
      << page;
  EXPECT_TRUE(page_has(px.admin,
                       "ringpoll_proxy_upgrade_connections{generation=\"" + prev +
                           "\",kind=\"http\",outcome=\"moved\"} " + n,
                       &page))
      << page;
  EXPECT_TRUE(page_has(px.admin,
                       "ringpoll_proxy_upgrade_connections{generation=\"" + prev +
                           "\",kind=\"http\",outcome=\"drained\"} 0",
                       &page))
      << page;
  for (Clients::Client& c : cl.cs) ::close(c.fd);
  ::close(cl.ep);
  EXPECT_TRUE(wait_for(
      [&] { return page_has(px.admin, "ringpoll_proxy_connections_active 0", &page); }, 30));
  px.stop();
  const std::string all = px.log();
  for (int g = 1; g <= kUpgrades; ++g) {
    EXPECT_NE(all.find("upgrade: moved " + n + " established connections to generation " +
                       std::to_string(g + 1) + ", 0 drain here"),
              std::string::npos)
        << "generation " << g << ":\n"
        << all;
    EXPECT_NE(all.find("generation " + std::to_string(g) + " done: " + n +
                       " connections moved, 0 drained (0 of them aborted at the drain deadline); "
                       "l4 moved 0 drained 0, http moved " +
                       n + " drained 0"),
              std::string::npos)
        << all;
  }
  EXPECT_NE(all.find("(l4 moved 0 drained 0, http moved " + n +
                     " drained 0); taken here: l4 0, http " + n),
            std::string::npos)
      << all;
  EXPECT_EQ(all.find("could not be taken"), std::string::npos) << all;
  EXPECT_EQ(all.find("drain deadline: aborted"), std::string::npos) << all;
}

// A pipelined pair split across an upgrade: the first request is held at the upstream
// until the old process's move has begun, so the second, read with it, waits in the old
// process's buffer when the connection parks; it travels with the connection and the new
// process answers it (on an upstream connection of its own), in order.
void pipelined_pair_split_across_an_upgrade(const char* backend) {
  Upstream upstream;
  ProxyUnderTest px;
  px.start(backend, upstream.address(), {"--set", "engine.shards=1"});
  if (::testing::Test::HasFatalFailure()) return;
  const int fd = connect_to(px.at);
  ASSERT_GE(fd, 0);
  std::string buf;
  Response r;
  ASSERT_TRUE(ask(fd, &buf, "/first", &r));
  EXPECT_EQ(r.body, "/first");
  ASSERT_TRUE(send_all(fd, get("/hold/a") + get("/b")));
  ASSERT_TRUE(wait_for([&] { return upstream.held() == 1; }, 20)) << px.log();
  ASSERT_EQ(kill(px.current, SIGUSR2), 0);
  const std::string line = read_line(px.first.out, 20);
  ASSERT_NE(line.find(", generation 2 "), std::string::npos) << line << "\n" << px.log();
  const pid_t next = pid_in(line);
  ASSERT_GT(next, 0);
  px.running.push_back(next);
  // The old process says its successor serves just before it moves its connections; the
  // held answer comes well inside the move's 2 s bound for a request in flight.
  ASSERT_TRUE(wait_for(
      [&] { return px.log().find("upgrade: generation 2 (pid") != std::string::npos; }, 20))
      << px.log();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  upstream.release();
  Response a, b;
  ASSERT_TRUE(read_response(fd, &buf, &a, 20)) << "no answer to the held request\n" << px.log();
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "/hold/a");
  EXPECT_FALSE(a.close) << "the connection drained instead of moving";
  ASSERT_TRUE(read_response(fd, &buf, &b, 20)) << "no answer to the pipelined request\n"
                                               << px.log();
  EXPECT_EQ(b.status, 200);
  EXPECT_EQ(b.body, "/b");
  EXPECT_FALSE(b.close);
  // The old process would have sent it on its idle upstream connection (the held request's).
  EXPECT_NE(upstream.conn_of("/b"), upstream.conn_of("/hold/a"))
      << "the second request was answered by the old process";
  ASSERT_TRUE(exits_within(px.current, 15)) << px.log();
  std::erase(px.running, px.current);
  px.current = next;
  // The same connection goes on, on generation 2.
  Response c;
  ASSERT_TRUE(ask(fd, &buf, "/after", &c)) << px.log();
  EXPECT_EQ(c.body, "/after");
  std::string page;
  EXPECT_TRUE(wait_for(
      [&] {
        return page_has(px.admin,
                        "ringpoll_proxy_upgrade_connections{generation=\"1\",kind=\"http\","
                        "outcome=\"moved\"} 1",
                        &page);
      },
      10))
      << page;
  EXPECT_TRUE(page_has(px.admin,
                       "ringpoll_proxy_upgrade_connections{generation=\"1\",kind=\"http\","
                       "outcome=\"drained\"} 0",
                       &page))
      << page;
  ::close(fd);
  px.stop();
  EXPECT_NE(px.log().find("http moved 1 drained 0"), std::string::npos) << px.log();
}

// An idle client moves with what is left of its read deadline (timeouts.header_read_ms,
// 10 s here): moved 5 s after its last answer, it is closed by the new process about 10 s
// after that answer — not 10 s after the move (15 s), and not never.
void idle_client_keeps_what_is_left_of_its_deadline(const char* backend) {
  constexpr int64_t kIdleNs = 10 * kSec;
  Upstream upstream;
  ProxyUnderTest px;
  px.start(backend, upstream.address(), {"--set", "timeouts.header_read_ms=10000"});
  if (::testing::Test::HasFatalFailure()) return;
  const int fd = connect_to(px.at);
  ASSERT_GE(fd, 0);
  std::string buf;
  Response r;
  ASSERT_TRUE(ask(fd, &buf, "/only", &r));
  EXPECT_EQ(r.body, "/only");
  const int64_t answered = mono_now_ns();  // the deadline counts from just before this
  std::this_thread::sleep_for(std::chrono::seconds(5));
  px.upgrade(2);
  if (::testing::Test::HasFatalFailure()) return;
  // It moved (a drained one would close on the old process's clock too).
  std::string page;
  EXPECT_TRUE(page_has(px.admin,
                       "ringpoll_proxy_upgrade_connections{generation=\"1\",kind=\"http\","
                       "outcome=\"moved\"} 1",
                       &page))
      << page;
  ASSERT_TRUE(closed_within(fd, 20)) << "the moved connection was never closed\n" << px.log();
  const int64_t idle = mono_now_ns() - answered;
  EXPECT_GE(idle, kIdleNs - 2 * kSec) << "closed before its deadline";
  EXPECT_LE(idle, kIdleNs + 3 * kSec) << "its deadline began again in the new process";
  ::close(fd);
  px.stop();
}

TEST(HttpMove, KeepAliveClientsMoveAcrossARowOfUpgradesOnEpoll) {
  http_clients_move_across_upgrades("epoll");
}
TEST(HttpMove, KeepAliveClientsMoveAcrossARowOfUpgradesOnIoUringCompletion) {
  http_clients_move_across_upgrades("io_uring-completion");
}
TEST(HttpMove, PipelinedPairSplitAcrossAnUpgradeIsAnsweredInOrderOnEpoll) {
  pipelined_pair_split_across_an_upgrade("epoll");
}
TEST(HttpMove, PipelinedPairSplitAcrossAnUpgradeIsAnsweredInOrderOnIoUringCompletion) {
  pipelined_pair_split_across_an_upgrade("io_uring-completion");
}

TEST(HttpMove, IdleClientKeepsWhatIsLeftOfItsDeadlineOnEpoll) {
  idle_client_keeps_what_is_left_of_its_deadline("epoll");
}
TEST(HttpMove, IdleClientKeepsWhatIsLeftOfItsDeadlineOnIoUringCompletion) {
  idle_client_keeps_what_is_left_of_its_deadline("io_uring-completion");
}

}  // namespace
}  // namespace ringpoll::test
