// Established L4 relays move to the new process on each binary upgrade (issue 20, items 3
// and 4; apps/proxy/relay_move.h): long-lived connections, each streaming a checksummed
// sequence both ways through ringpoll-proxy to an echo upstream, across a row of upgrades —
// no byte lost, duplicated or reordered, none closed, every old generation gone at once
// (nothing left to drain), and the counts on the admin page and in the log. On epoll and
// io_uring completion mode (its provided buffers: what they hold travels in the record).
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
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
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

// 1,000 connections across 20 upgrades; under sanitizers (about 10x slower) 100 across 4.
const int kConns = kSanitized ? 100 : 1000;
const int kRounds = kSanitized ? 4 : 20;
// Bytes a connection may have sent and not yet had back: the stream keeps moving while
// the proxy holds at most this much of it.
constexpr uint64_t kWindow = 3000;

// Byte i of connection c's sequence: a hash, so a byte lost, repeated or out of place
// shows as a wrong byte (or a count that does not add up at the end).
uint8_t seq_byte(uint64_t c, uint64_t i) {
  uint64_t x = (c + 1) * 0x9E3779B97F4A7C15ull ^ (i * 0xBF58476D1CE4E5B9ull);
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  return static_cast<uint8_t>(x >> 56);
}

// The streams: every connection sends its sequence (chunks of 1..600 bytes, at most
// kWindow ahead of what came back) and checks every byte the echo returns.
struct Streams {
  struct Conn {
    int fd = -1;
    uint64_t sent = 0, got = 0;
    bool closed = false;
  };
  std::vector<Conn> conns;
  int ep = -1;
  std::atomic<bool> sending{true}, stop{false};
  std::atomic<uint64_t> total_got{0};
  std::mutex mu;
  std::vector<std::string> faults;  // what went wrong, by connection and offset

  void fault(const std::string& f) {
    std::lock_guard<std::mutex> l(mu);
    if (faults.size() < 20) faults.push_back(f);
  }
  void send_some(size_t c) {
    Conn& k = conns[c];
    if (k.closed || !sending.load() || k.sent - k.got >= kWindow) return;
    uint8_t buf[600];
    const size_t n =
        std::min<uint64_t>(1 + (k.sent * 131 + c) % sizeof buf, kWindow - (k.sent - k.got));
    for (size_t i = 0; i < n; ++i) buf[i] = seq_byte(c, k.sent + i);
    const ssize_t w = ::send(k.fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) k.sent += static_cast<uint64_t>(w);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      k.closed = true;
      fault("connection " + std::to_string(c) + ": send failed: " + std::strerror(errno));
    }
  }
  void receive(size_t c) {
    Conn& k = conns[c];
    uint8_t buf[4096];
    for (;;) {
      const ssize_t r = ::recv(k.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (r <= 0) {
        k.closed = true;
        fault("connection " + std::to_string(c) + " closed after " + std::to_string(k.got) +
              " of " + std::to_string(k.sent) +
              " bytes: " + (r == 0 ? std::string("end of stream") : std::strerror(errno)));
        return;
      }
      for (ssize_t i = 0; i < r; ++i) {
        if (buf[i] != seq_byte(c, k.got + static_cast<uint64_t>(i))) {
          k.closed = true;
          fault("connection " + std::to_string(c) + ": wrong byte at offset " +
                std::to_string(k.got + static_cast<uint64_t>(i)));
          return;
        }
      }
      if (k.got + static_cast<uint64_t>(r) > k.sent) {
        k.closed = true;
        fault("connection " + std::to_string(c) + ": more came back than was sent");
        return;
      }
      k.got += static_cast<uint64_t>(r);
      total_got.fetch_add(static_cast<uint64_t>(r));
    }
  }
  // The streaming thread: receives what is there, and every 2 ms sends a chunk on a tenth
  // of the connections in turn (a steady stream that leaves the CPU to the proxy).
  // (at most ~1,000 rounds a second: the proxy, not this thread, should have the CPU).
  // Once sending stops it publishes what is still in flight.
  void run() {
    epoll_event evs[256];
    size_t next = 0;
    while (!stop.load()) {
      const int n = epoll_wait(ep, evs, 256, 2);
      for (int i = 0; i < n; ++i) receive(evs[i].data.u64);
      for (size_t k = 0; k < conns.size() / 10 + 1; ++k) send_some(next++ % conns.size());
      if (!sending.load()) {
        uint64_t f = 0;
        for (const Conn& k : conns) f += k.closed ? 0 : k.sent - k.got;
        in_flight.store(f);
      }
      usleep(1'000);
    }
  }
  std::atomic<uint64_t> in_flight{UINT64_MAX};
};

// N connections streaming through the proxy on `backend` while it is upgraded kRounds
// times in a row; each round waits for the old generation to exit, which it does at once
// when every relay moved (a relay left to drain keeps it for drain_ms, then is cut).
// The test process reaps the proxies' generations (they are its grandchildren after an
// upgrade) and pins their backend through RINGPOLL_BACKEND, unset again at the end.
struct UpgradeTestProcess {
  explicit UpgradeTestProcess(const char* backend) {
    EXPECT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    EXPECT_EQ(setenv("RINGPOLL_BACKEND", backend, 1), 0);
  }
  ~UpgradeTestProcess() { unsetenv("RINGPOLL_BACKEND"); }
};

// Starts ringpoll-proxy's first generation on `conf` (and `extra` arguments), recorded in
// `running`, and reads the address it listens on from its first line.
void start_first_generation(const std::string& conf, const std::vector<std::string>& extra,
                            std::vector<pid_t>* running, Spawned* first, SocketAddress* at) {
  std::vector<std::string> args{"--config", conf};
  args.insert(args.end(), extra.begin(), extra.end());
  *first = spawn_piped(RINGPOLL_PROXY_BIN, args);
  ASSERT_GT(first->pid, 0);
  running->push_back(first->pid);
  const std::string line1 = read_line(first->out, 20);
  ASSERT_TRUE(parse_address(address_after(line1, "listening on "), at).ok()) << line1;
}

void relays_move_across_upgrades(const char* backend) {
  const UpgradeTestProcess as_reaper(backend);
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;  // the test's connections, and its children's
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  ASSERT_GE(rl.rlim_cur, static_cast<rlim_t>(kConns) * 3) << "RLIMIT_NOFILE too low";
  std::vector<pid_t> running;
  KillLeftOvers kill_left_overs{running};
  Spawned serve = spawn_piped(RINGPOLL_SERVE_BIN, {"--mode", "echo", "--listen", "127.0.0.1:0",
                                                   "--set", "engine.shards=1"});
  ASSERT_GT(serve.pid, 0);
  running.push_back(serve.pid);
  const std::string up = address_after(read_line(serve.out, 20), " on ");
  ASSERT_FALSE(up.empty()) << "ringpoll-serve did not start";
  uint16_t admin_port = 0;
  ::close(listen_on(&admin_port));
  const std::string admin_at = "127.0.0.1:" + std::to_string(admin_port);
  const std::string conf = temp_file(
      "[[proxy.listener]]\nname = \"front\"\nlisten = \"127.0.0.1:0\"\npool = \"back\"\n"
      "[[proxy.pool]]\nname = \"back\"\nupstreams = [\"" +
      up + "\"]\n[timeouts]\ndrain_ms = 3000\nidle_ms = 120000\n[limits]\nmax_connections = " +
      std::to_string(kConns * 2) + "\n");
  Spawned first;
  SocketAddress at;
  start_first_generation(conf, {"--admin", admin_at}, &running, &first, &at);
  if (::testing::Test::HasFatalFailure()) return;
  // Every generation writes to the same stderr: read it all along.
  FdLog err(first.err);
  const auto log = [&] { return err.text(); };

  Streams st;
  st.ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(st.ep, 0);
  st.conns.resize(static_cast<size_t>(kConns));
  for (size_t c = 0; c < st.conns.size(); ++c) {
    const int fd = connect_to(at);
    ASSERT_GE(fd, 0) << "connection " << c;
    st.conns[c].fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = c;
    ASSERT_EQ(epoll_ctl(st.ep, EPOLL_CTL_ADD, fd, &ev), 0);
  }
  std::thread streamer([&] { st.run(); });
  StopAndJoin stop_streamer(st.stop, streamer);
  ASSERT_TRUE(wait_for([&] { return st.total_got.load() > uint64_t(kConns) * 1000; }, 30))
      << "the streams do not move before any upgrade: " << st.total_got.load() << "\n"
      << log();

  pid_t current = first.pid;
  SocketAddress admin;
  parse_address(admin_at, &admin);
  // Every connection is relayed (none still queued on the listener) before the first upgrade:
  // each generation then moves all of them, which the log is checked for below.
  ASSERT_TRUE(wait_for(
      [&] {
        std::string body;
        return admin_get(admin, "/metrics", &body) == 200 &&
               body.find("\nringpoll_proxy_connections_active " + std::to_string(kConns) + "\n") !=
                   std::string::npos;
      },
      30));
  for (int round = 0; round < kRounds; ++round) {
    const std::string gen = std::to_string(round + 2);
    const uint64_t before = st.total_got.load();
    ASSERT_EQ(kill(current, SIGUSR2), 0) << "round " << round;
    const std::string line = read_line(first.out, 20);
    ASSERT_NE(line.find(", generation " + gen + " "), std::string::npos)
        << "round " << round << ": " << line << "\n"
        << log();
    const pid_t next = pid_in(line);
    ASSERT_GT(next, 0) << line;
    running.push_back(next);
    // Every relay moved: nothing to drain, so the old generation exits at once (well
    // within drain_ms = 3 s, after which it would cut what stayed).
    ASSERT_TRUE(exits_within(current, 20))
        << "round " << round << ": generation " << round + 1 << " did not exit\n"
        << log();
    std::erase(running, current);
    current = next;
    // The streams go on through the new generation.
    ASSERT_TRUE(wait_for([&] { return st.total_got.load() > before + uint64_t(kConns) * 200; }, 30))
        << "round " << round << ": the streams stopped\n"
        << log();
    {
      std::lock_guard<std::mutex> l(st.mu);
      ASSERT_TRUE(st.faults.empty()) << "round " << round << ": " << st.faults[0] << "\n" << log();
    }
  }
  // Stop sending; everything sent comes back.
  st.sending = false;
  EXPECT_TRUE(wait_for([&] { return st.in_flight.load() == 0; }, 30))
      << st.in_flight.load() << " bytes never came back";
  st.stop = true;
  streamer.join();
  {
    std::lock_guard<std::mutex> l(st.mu);
    for (const std::string& f : st.faults) ADD_FAILURE() << f;
  }
  uint64_t least = UINT64_MAX;
  for (const Streams::Conn& k : st.conns) {
    EXPECT_FALSE(k.closed);
    EXPECT_EQ(k.got, k.sent);
    least = std::min(least, k.got);
  }
  EXPECT_GT(least, 0u) << "a connection that never streamed";
  // The counts: the last generation took every connection from the one before, which
  // moved all and drained none; each generation said so in its last lines.
  const std::string last_gen = std::to_string(kRounds + 1), prev_gen = std::to_string(kRounds);
  std::string page;
  ASSERT_EQ(admin_get(admin, "/metrics", &page), 200);
  const std::string n = std::to_string(kConns);
  EXPECT_NE(page.find("\nringpoll_proxy_connections_moved_total{kind=\"l4\",direction=\"in\"} " +
                      n + "\n"),
            std::string::npos)
      << page;
  EXPECT_NE(page.find("\nringpoll_proxy_upgrade_connections{generation=\"" + prev_gen +
                      "\",kind=\"l4\",outcome=\"moved\"} " + n + "\n"),
            std::string::npos)
      << page;
  EXPECT_NE(page.find("\nringpoll_proxy_upgrade_connections{generation=\"" + prev_gen +
                      "\",kind=\"l4\",outcome=\"drained\"} 0\n"),
            std::string::npos)
      << page;
  // The clients close; the proxy's relays end with them (so its stop has nothing to cut).
  for (Streams::Conn& k : st.conns) ::close(k.fd);
  ::close(st.ep);
  EXPECT_TRUE(wait_for(
      [&] {
        std::string body;
        return admin_get(admin, "/metrics", &body) == 200 &&
               body.find("\nringpoll_proxy_connections_active 0\n") != std::string::npos;
      },
      30));
  kill(current, SIGTERM);
  EXPECT_TRUE(exits_within(current, 20));
  std::erase(running, current);
  err.stop();
  const std::string all = log();
  for (int g = 1; g <= kRounds; ++g) {
    EXPECT_NE(all.find("upgrade: moved " + n + " established connections to generation " +
                       std::to_string(g + 1) + ", 0 drain here"),
              std::string::npos)
        << "generation " << g << ":\n"
        << all;
    EXPECT_NE(all.find("generation " + std::to_string(g) + " done: " + n +
                       " connections moved, 0 drained"),
              std::string::npos)
        << all;
  }
  EXPECT_NE(all.find("upgrade: took over " + n +
                     " established connections; the predecessor: moved " + n + " drained 0"),
            std::string::npos)
      << all;
  EXPECT_EQ(all.find("could not be taken"), std::string::npos) << all;
  EXPECT_EQ(all.find("drain deadline: aborted"), std::string::npos) << all;
  kill(serve.pid, SIGTERM);
  EXPECT_TRUE(exits_within(serve.pid, 20));
  running.clear();
  ::close(first.out);
  ::close(first.err);
  ::close(serve.out);
  ::close(serve.err);
  std::remove(conf.c_str());
}

// A relay whose write is held up past the first park bound (its client reads nothing for
// a while: a slow receiver, or a loaded machine) still moves, on the mover's second
// chance, instead of staying to drain (and, if long-lived, being cut at the drain
// deadline). The upstream (the test's own) sends 64 MiB and the client reads nothing, with
// a small receive buffer, so the relay's downward pump waits in a write; the client starts
// reading 2.5 s after the successor serves (after the first 2 s bound, within the second)
// and gets every byte, in order, on the same connection.
// SIGUSR2 to the first generation; the second's pid, from the first's next line (recorded
// in `running`).
pid_t upgrade_to_second(const Spawned& first, FdLog& err, std::vector<pid_t>* running) {
  EXPECT_EQ(kill(first.pid, SIGUSR2), 0);
  const std::string line = read_line(first.out, 20);
  EXPECT_NE(line.find(", generation 2 "), std::string::npos) << line << "\n" << err.text();
  const pid_t next = pid_in(line);
  if (next <= 0) {
    ADD_FAILURE() << "no second generation: " << line;
    return -1;
  }
  running->push_back(next);
  return next;
}

void a_late_relay_moves_on_the_second_chance(const char* backend) {
  const UpgradeTestProcess as_reaper(backend);
  constexpr size_t kBytes = 64 << 20;
  uint16_t up_port = 0;
  const int lfd = listen_on(&up_port);
  ASSERT_GE(lfd, 0);
  std::atomic<bool> upstream_done{false};
  std::thread upstream([&] {
    const int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    std::vector<uint8_t> chunk(64 << 10);
    for (size_t off = 0; c >= 0 && off < kBytes;) {
      const size_t n = std::min(chunk.size(), kBytes - off);
      for (size_t i = 0; i < n; ++i) chunk[i] = seq_byte(7, off + i);
      const ssize_t w = ::send(c, chunk.data(), n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    if (c >= 0) {
      ::shutdown(c, SHUT_WR);
      char b[64];
      while (::recv(c, b, sizeof b, 0) > 0) {
      }
      ::close(c);
    }
    upstream_done = true;
  });
  struct CloseJoin {
    int fd;
    std::thread& t;
    ~CloseJoin() {
      ::shutdown(fd, SHUT_RDWR);
      ::close(fd);
      if (t.joinable()) t.join();
    }
  } close_join{lfd, upstream};
  std::vector<pid_t> running;
  KillLeftOvers kill_left_overs{running};
  const std::string conf = temp_file(
      "[proxy]\nsplice = \"off\"\n[[proxy.listener]]\nname = \"front\"\nlisten = "
      "\"127.0.0.1:0\"\npool = \"back\"\n[[proxy.pool]]\nname = \"back\"\nupstreams = "
      "[\"127.0.0.1:" +
      std::to_string(up_port) + "\"]\n[timeouts]\ndrain_ms = 20000\nidle_ms = 60000\n");
  Spawned first;
  SocketAddress at;
  start_first_generation(conf, {}, &running, &first, &at);
  if (::testing::Test::HasFatalFailure()) return;
  FdLog err(first.err);

  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  const int small = 16 << 10;
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  ASSERT_EQ(::connect(fd, at.sa(), at.len), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the buffers fill
  ASSERT_FALSE(upstream_done.load()) << "the upstream sent everything: the relay is not held up";

  const pid_t next = upgrade_to_second(first, err, &running);
  if (::testing::Test::HasFatalFailure()) return;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  // Now read everything, to the upstream's end of stream.
  size_t got = 0, wrong = 0;
  bool eof = false;
  std::vector<uint8_t> buf(1 << 16);
  const int64_t until = mono_now_ns() + 60'000'000'000;
  while (!eof && mono_now_ns() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      eof = n == 0;
      break;
    }
    for (ssize_t i = 0; i < n; ++i)
      wrong += buf[static_cast<size_t>(i)] != seq_byte(7, got + static_cast<size_t>(i));
    got += static_cast<size_t>(n);
  }
  EXPECT_TRUE(eof) << "the stream did not end with the upstream's";
  EXPECT_EQ(got, kBytes) << err.text();
  EXPECT_EQ(wrong, 0u) << "bytes out of place";
  ASSERT_TRUE(exits_within(first.pid, 20)) << err.text();
  std::erase(running, first.pid);
  err.stop();
  const std::string log = err.text();
  EXPECT_NE(log.find("upgrade: moved 1 established connections to generation 2, 0 drain here"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("moved late (after the first 2000 ms): 1;"), std::string::npos) << log;
  ::close(fd);
  kill(next, SIGTERM);
  EXPECT_TRUE(exits_within(next, 20));
  running.clear();
  for (int f : {first.out, first.err}) ::close(f);
  std::remove(conf.c_str());
}

// Relays hibernating when the upgrade comes (proxy.hibernate_after_ms: their pumps' tasks
// gone, apps/proxy/relay.h) are woken by the move, park and move like any other, none left
// to drain; in the successor they relay intact and fall asleep again.
int64_t admin_value(const SocketAddress& admin, const std::string& name) {
  std::string body;
  if (admin_get(admin, "/metrics", &body) != 200) return -1;
  const size_t at = body.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::atoll(body.c_str() + at + name.size() + 2);
}
void hibernating_relays_move(const char* backend) {
  constexpr int kRelays = 50;
  const UpgradeTestProcess as_reaper(backend);
  TestUpstream up([](int fd) { echo(fd); });
  std::vector<pid_t> running;
  KillLeftOvers kill_left_overs{running};
  uint16_t admin_port = 0;
  ::close(listen_on(&admin_port));
  SocketAddress admin;
  ASSERT_TRUE(parse_address("127.0.0.1:" + std::to_string(admin_port), &admin).ok());
  const std::string conf = temp_file(
      "[proxy]\nhibernate_after_ms = 100\n[[proxy.listener]]\nname = \"front\"\nlisten = "
      "\"127.0.0.1:0\"\npool = \"back\"\n[[proxy.pool]]\nname = \"back\"\nupstreams = [\"" +
      up.address().to_string() + "\"]\n[timeouts]\ndrain_ms = 20000\nidle_ms = 60000\n");
  Spawned first;
  SocketAddress at;
  start_first_generation(conf, {"--admin", "127.0.0.1:" + std::to_string(admin_port)}, &running,
                         &first, &at);
  if (::testing::Test::HasFatalFailure()) return;
  FdLog err(first.err);
  std::vector<int> cs;
  for (int i = 0; i < kRelays; ++i) {
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(c, 0);
    ASSERT_EQ(::connect(c, at.sa(), at.len), 0);
    const timeval tv{10, 0};
    (void)setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cs.push_back(c);
    ASSERT_EQ(round_trip(c, "before " + std::to_string(i)), "before " + std::to_string(i));
  }
  ASSERT_TRUE(wait_for(
      [&] { return admin_value(admin, "ringpoll_proxy_relays_hibernating") == kRelays; }, 10))
      << admin_value(admin, "ringpoll_proxy_relays_hibernating") << " hibernating\n"
      << err.text();
  const pid_t next = upgrade_to_second(first, err, &running);
  if (::testing::Test::HasFatalFailure()) return;
  // Every relay moved: the old generation has nothing to drain and exits at once.
  ASSERT_TRUE(exits_within(first.pid, 15)) << err.text();
  std::erase(running, first.pid);
  err.stop();
  const std::string log = err.text();
  EXPECT_NE(log.find("upgrade: moved " + std::to_string(kRelays) +
                     " established connections to generation 2, 0 drain here"),
            std::string::npos)
      << log;
  for (int i = 0; i < kRelays; ++i) {
    const std::string msg = "after " + std::to_string(i) + std::string(5000, 'z');
    EXPECT_EQ(round_trip(cs[static_cast<size_t>(i)], msg), msg) << "relay " << i;
  }
  EXPECT_TRUE(wait_for(
      [&] { return admin_value(admin, "ringpoll_proxy_relays_hibernating") == kRelays; }, 10))
      << "in the successor: " << admin_value(admin, "ringpoll_proxy_relays_hibernating");
  for (int c : cs) ::close(c);
  kill(next, SIGTERM);
  EXPECT_TRUE(exits_within(next, 20));
  running.clear();
  for (int f : {first.out, first.err}) ::close(f);
  std::remove(conf.c_str());
}

TEST(RelayMove, HibernatingRelaysMoveAndSleepAgainOnEpoll) {
  hibernating_relays_move("epoll");
}
TEST(RelayMove, HibernatingRelaysMoveAndSleepAgainOnIoUringCompletion) {
  hibernating_relays_move("io_uring-completion");
}

TEST(RelayMove, ALateRelayMovesOnTheSecondChanceOnEpoll) {
  a_late_relay_moves_on_the_second_chance("epoll");
}
TEST(RelayMove, ALateRelayMovesOnTheSecondChanceOnIoUringCompletion) {
  a_late_relay_moves_on_the_second_chance("io_uring-completion");
}

TEST(RelayMove, LongLivedStreamsMoveAcrossARowOfUpgradesOnEpoll) {
  relays_move_across_upgrades("epoll");
}
TEST(RelayMove, LongLivedStreamsMoveAcrossARowOfUpgradesOnIoUringCompletion) {
  relays_move_across_upgrades("io_uring-completion");
}

}  // namespace
}  // namespace ringpoll::test
