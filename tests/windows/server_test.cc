// The sockets API and TcpServer on IOCP (issue 25): a server over two shards that hands
// its one listener's connections to both (no SO_REUSEPORT on Windows), echo integrity,
// half-close, the drain deadline, IPv6, connect with a deadline, names resolved off-shard,
// datagrams, the backlog a stopped listener still serves, and the refusals Windows needs
// (SO_REUSEPORT, a port in use).
#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/server.h"
#include "win_engine.h"

namespace ringpoll::test {
namespace {

using P = IocpPoller;
using E = WinEngine;

Task<void> echo(TcpStream<P>& c) {
  std::byte buf[16384];
  for (;;) {
    const IoResult r = co_await c.read(buf);
    if (!r.ok()) break;
    if (!(co_await c.write(std::span<const std::byte>(buf, r.n))).ok()) break;
  }
  // End of stream: the client half-closed; answer it with ours.
  (void)c.shutdown_write();
}

// A blocking client socket of `family` connected to `to`, reads bounded by 20 s.
SOCKET client(const SocketAddress& to) {
  const SOCKET c = WSASocketW(to.family(), SOCK_STREAM, IPPROTO_TCP, nullptr, 0, 0);
  if (c == INVALID_SOCKET) return c;
  if (::connect(c, to.sa(), to.len) != 0) {
    closesocket(c);
    return INVALID_SOCKET;
  }
  recv_timeout(static_cast<int>(c), 20'000);
  return c;
}

std::string payload(size_t n, int seed) {
  std::string s(n, '\0');
  uint32_t x = 2463534242u + static_cast<uint32_t>(seed);
  for (char& ch : s) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    ch = static_cast<char>(x);
  }
  return s;
}

// Sends `data` in full, half-closes, reads until the server's end of stream; returns what
// came back.
std::string round_trip(SOCKET c, const std::string& data) {
  size_t sent = 0;
  std::string got;
  char buf[65536];
  // Send and read in turns so neither side's buffers fill up.
  while (sent < data.size()) {
    const int n = ::send(c, data.data() + sent,
                         static_cast<int>(std::min<size_t>(data.size() - sent, 32768)), 0);
    if (n <= 0) return got;
    sent += static_cast<size_t>(n);
    u_long avail = 0;
    while (ioctlsocket(c, FIONREAD, &avail) == 0 && avail > 0) {
      const int r = ::recv(c, buf, sizeof buf, 0);
      if (r <= 0) return got;
      got.append(buf, static_cast<size_t>(r));
    }
  }
  ::shutdown(c, SD_SEND);
  for (;;) {
    const int r = ::recv(c, buf, sizeof buf, 0);
    if (r <= 0) break;
    got.append(buf, static_cast<size_t>(r));
  }
  return got;
}

// Starts srv as an echo server on `at`.
::testing::AssertionResult start_echo(TcpServer<P>& srv, const char* at) {
  SocketAddress a;
  std::string why;
  if (!parse_address(at, &a, &why).ok() || !srv.start(a, echo, &why).ok())
    return ::testing::AssertionFailure() << at << ": " << why;
  return ::testing::AssertionSuccess();
}

SocketAddress addr(const char* text) {
  SocketAddress a;
  EXPECT_TRUE(parse_address(text, &a).ok()) << text;
  return a;
}

TEST(WinServer, EchoesOverTwoShardsFromOneListener) {
  StartedEngine se(2);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  TcpServer<P> srv(e);
  ASSERT_TRUE(start_echo(srv, "127.0.0.1:0"));
  ASSERT_NE(srv.address().port(), 0);
  constexpr int kClients = 8;
  std::vector<std::thread> ts;
  std::atomic<int> intact{0};
  for (int i = 0; i < kClients; ++i) {
    ts.emplace_back([&, i] {
      const SOCKET c = client(srv.address());
      if (c == INVALID_SOCKET) return;
      const std::string want = payload(300'000 + static_cast<size_t>(i) * 7, i);
      if (round_trip(c, want) == want) intact.fetch_add(1);
      closesocket(c);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(intact.load(), kClients);
  const std::vector<uint64_t> per = srv.accepted_per_shard();
  ASSERT_EQ(per.size(), 2u);
  EXPECT_EQ(per[0] + per[1], static_cast<uint64_t>(kClients));
  // One listener, handed out in turn: both shards serve.
  EXPECT_GT(per[0], 0u);
  EXPECT_GT(per[1], 0u);
  EXPECT_TRUE(wait_for([&] { return srv.live() == 0; }));
  EXPECT_EQ(srv.shutdown(1 * kSec), 0u);
}

TEST(WinServer, ShutdownAbortsWhatOutlivesTheDrainDeadline) {
  StartedEngine se(2);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  TcpServer<P> srv(e);
  std::atomic<int> saw_closed{0};
  std::string why;
  ASSERT_TRUE(srv.start(
                     addr("127.0.0.1:0"),
                     [&](TcpStream<P>& c) -> Task<void> {
                       std::byte b[64];
                       for (;;) {
                         const IoResult r = co_await c.read(b);
                         if (r.err.closed()) saw_closed.fetch_add(1);
                         if (!r.ok()) co_return;
                       }
                     },
                     &why)
                  .ok())
      << why;
  std::vector<SOCKET> cs;
  for (int i = 0; i < 3; ++i) cs.push_back(client(srv.address()));
  for (SOCKET c : cs) ASSERT_NE(c, INVALID_SOCKET);
  ASSERT_TRUE(wait_for([&] { return srv.live() == 3; }));
  const int64_t t0 = mono_now_ns();
  EXPECT_EQ(srv.shutdown(200 * kMs), 3u);
  EXPECT_GE(mono_now_ns() - t0, 200 * kMs);
  EXPECT_EQ(saw_closed.load(), 3);
  EXPECT_EQ(srv.live(), 0u);
  // The clients see their connections end.
  for (SOCKET c : cs) {
    char b;
    EXPECT_LE(::recv(c, &b, 1, 0), 0);
    closesocket(c);
  }
}

// stop_listening() serves what the kernel had queued on the listener before it closes it
// (TcpServer's take_backlog, a non-blocking accept: iocp/compat's accept4). The shard is
// held busy while the clients connect, so their connections wait in the kernel's queue
// when the listener's close comes; none of them may be reset.
TEST(WinServer, StopListeningServesTheBacklog) {
  StartedEngine se(1);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  TcpServer<P> srv(e);
  ASSERT_TRUE(start_echo(srv, "127.0.0.1:0"));
  std::atomic<bool> held{false}, release{false};
  ASSERT_TRUE(E::post(e.shard(0), [&] {
    held.store(true);
    const int64_t end = mono_now_ns() + 20 * kSec;  // bounded, whatever the test does
    while (!release.load() && mono_now_ns() < end) sleep_ms(1);
  }));
  ASSERT_TRUE(wait_for([&] { return held.load(); }));
  constexpr int kClients = 12;
  std::vector<SOCKET> cs;
  for (int i = 0; i < kClients; ++i) cs.push_back(client(srv.address()));  // queued by the kernel
  for (SOCKET c : cs) ASSERT_NE(c, INVALID_SOCKET);
  std::thread stopper([&] { srv.stop_listening(); });
  sleep_ms(200);  // its close is queued behind the held shard
  release.store(true);
  stopper.join();
  int served = 0;
  for (int i = 0; i < kClients; ++i) {
    const std::string want = "queued client " + std::to_string(i);
    if (::send(cs[static_cast<size_t>(i)], want.data(), static_cast<int>(want.size()), 0) !=
        static_cast<int>(want.size()))
      continue;
    std::string got(want.size(), '\0');
    size_t n = 0;
    while (n < got.size()) {
      const int r =
          ::recv(cs[static_cast<size_t>(i)], got.data() + n, static_cast<int>(got.size() - n), 0);
      if (r <= 0) break;
      n += static_cast<size_t>(r);
    }
    if (n == got.size() && got == want) ++served;
  }
  EXPECT_EQ(served, kClients);
  // The listener is closed: a new client is refused.
  EXPECT_EQ(client(srv.address()), INVALID_SOCKET);
  for (SOCKET c : cs) closesocket(c);
  EXPECT_TRUE(wait_for([&] { return srv.live() == 0; }));
  EXPECT_EQ(srv.shutdown(1 * kSec), 0u);
}

TEST(WinServer, EchoesOverIPv6Loopback) {
  StartedEngine se(1);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  TcpServer<P> srv(e);
  ASSERT_TRUE(start_echo(srv, "[::1]:0"));
  EXPECT_EQ(srv.address().family(), AF_INET6);
  EXPECT_EQ(srv.address().to_string(), "[::1]:" + std::to_string(srv.address().port()));
  const SOCKET c = client(srv.address());
  ASSERT_NE(c, INVALID_SOCKET);
  const std::string want = payload(100'000, 6);
  EXPECT_EQ(round_trip(c, want), want);
  closesocket(c);
  EXPECT_EQ(srv.shutdown(1 * kSec), 0u);
}

// Windows has no SO_REUSEPORT: a listener asking for it is refused, saying so; a port
// another socket holds is EADDRINUSE with its name.
TEST(WinNet, ListenRefusalsNameTheCause) {
  StartedEngine se(1);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  E::call(e.shard(0), [&] {
    auto& s = E::current()->sched();
    TcpListener<P> a;
    std::string why;
    ListenOptions lo;
    lo.reuseport = true;
    EXPECT_EQ(a.listen(s, addr("127.0.0.1:0"), lo, &why).sys_errno(), EOPNOTSUPP);
    EXPECT_NE(why.find("Windows has no SO_REUSEPORT"), std::string::npos) << why;
    lo.reuseport = false;
    TcpListener<P> b;
    ASSERT_TRUE(b.listen(s, addr("127.0.0.1:0"), lo, &why).ok()) << why;
    TcpListener<P> c;
    const SocketAddress taken = b.local_address();
    EXPECT_EQ(c.listen(s, taken, lo, &why).sys_errno(), EADDRINUSE);
    EXPECT_NE(why.find("Address already in use"), std::string::npos) << why;
    EXPECT_NE(why.find(taken.to_string()), std::string::npos) << why;
  });
}

// connect: a name resolved on the resolver thread, a connect that meets its deadline, a
// refused one, and one whose deadline has passed.
TEST(WinNet, ConnectResolvesNamesAndKeepsItsDeadline) {
  StartedEngine se(1);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  TcpServer<P> srv(e);
  ASSERT_TRUE(start_echo(srv, "127.0.0.1:0"));
  const uint16_t port = srv.address().port();
  // A port nobody listens on: bound and closed.
  uint16_t dead = 0;
  close_fd(tcp_listener(&dead));
  // A listener whose accept queue is full drops further SYNs: a connect to it hangs until
  // its deadline. (Wine's sockets are the host's, so this is Linux's behaviour.)
  const SOCKET full = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, 0);
  sockaddr_in fa = loopback(0);
  ASSERT_EQ(bind(full, reinterpret_cast<sockaddr*>(&fa), sizeof fa), 0);
  ASSERT_EQ(listen(full, 0), 0);
  int falen = sizeof fa;
  getsockname(full, reinterpret_cast<sockaddr*>(&fa), &falen);
  std::vector<SOCKET> fillers;
  for (int i = 0; i < 4; ++i) {
    const SOCKET f = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, 0);
    u_long nb = 1;
    ioctlsocket(f, FIONBIO, &nb);
    ::connect(f, reinterpret_cast<sockaddr*>(&fa), sizeof fa);
    fillers.push_back(f);
  }
  sleep_ms(50);
  const uint16_t full_port = ntohs(fa.sin_port);
  struct Out {
    Status resolved, echoed, refused, late;
    std::string resolved_to, reply;
    int64_t late_ns = 0;
    std::atomic<bool> done{false};
  } out;
  spawn_on(
      e.shard(0),
      [](Scheduler<P>* s, uint16_t port, uint16_t dead, uint16_t full_port, Out* o) -> Task<void> {
        SocketAddress to;
        std::string w;
        o->resolved = co_await resolve(*s, "localhost:" + std::to_string(port), &to, &w);
        o->resolved_to = to.to_string() + " " + w;
        if (o->resolved.ok()) {
          std::unique_ptr<TcpStream<P>> c;
          o->echoed = co_await TcpStream<P>::connect(*s, to, 5 * kSec, &c);
          if (o->echoed.ok()) {
            (void)co_await c->write("hello over iocp");
            (void)c->shutdown_write();
            char b[64];
            const IoResult r = co_await c->read_exact(std::as_writable_bytes(std::span(b, 15)));
            o->reply.assign(b, r.n);
            (void)co_await c->close();
          }
        }
        std::unique_ptr<TcpStream<P>> x;
        o->refused = co_await TcpStream<P>::connect(
            *s, addr(("127.0.0.1:" + std::to_string(dead)).c_str()), 5 * kSec, &x);
        const int64_t t0 = mono_now_ns();
        o->late = co_await TcpStream<P>::connect(
            *s, addr(("127.0.0.1:" + std::to_string(full_port)).c_str()), 200 * kMs, &x);
        o->late_ns = mono_now_ns() - t0;
        o->done.store(true);
      }(&e.shard(0).sched(), port, dead, full_port, &out));
  ASSERT_TRUE(wait_for([&] { return out.done.load(); }));
  EXPECT_TRUE(out.resolved.ok()) << out.resolved_to;
  EXPECT_TRUE(out.echoed.ok()) << out.echoed.message();
  EXPECT_EQ(out.reply, "hello over iocp");
  EXPECT_EQ(out.refused.sys_errno(), ECONNREFUSED) << out.refused.message();
  EXPECT_STREQ(out.refused.message(), "Connection refused");
  EXPECT_TRUE(out.late.is(Errc::kConnectTimeout)) << out.late.message();
  EXPECT_GE(out.late_ns, 200 * kMs);
  EXPECT_LT(out.late_ns, 10 * kSec);
  for (SOCKET f : fillers) closesocket(f);
  closesocket(full);
  // An unknown name fails on the resolver thread with getaddrinfo's reason.
  std::atomic<bool> done{false};
  Status bad;
  std::string bad_why;
  spawn_on(e.shard(0),
           [](Scheduler<P>* s, Status* st, std::string* w, std::atomic<bool>* d) -> Task<void> {
             SocketAddress to;
             *st = co_await resolve(*s, "no-such-host.invalid:80", &to, w);
             d->store(true);
           }(&e.shard(0).sched(), &bad, &bad_why, &done));
  ASSERT_TRUE(wait_for([&] { return done.load(); }));
  EXPECT_TRUE(bad.is(Errc::kInvalidArgument));
  EXPECT_NE(bad_why.find("cannot resolve \"no-such-host.invalid\""), std::string::npos) << bad_why;
  EXPECT_EQ(srv.shutdown(1 * kSec), 0u);
}

TEST(WinNet, UdpSocketsExchangeDatagramsWithDeadlines) {
  StartedEngine se(1);
  ASSERT_TRUE(se.ok);
  E& e = se.e;
  struct Out {
    Status timed_out;
    std::string got, from;
    std::string a_addr;
    std::atomic<bool> done{false};
  } out;
  spawn_on(e.shard(0), [](Scheduler<P>* s, Out* o) -> Task<void> {
    UdpSocket<P> a, b;
    std::string w;
    if (!a.bind(*s, addr("127.0.0.1:0"), &w).ok() || !b.bind(*s, addr("127.0.0.1:0"), &w).ok()) {
      o->got = "bind failed: " + w;
      o->done.store(true);
      co_return;
    }
    std::byte buf[64];
    SocketAddress from;
    (void)a.set_read_deadline(mono_now_ns() + 50 * kMs);
    o->timed_out = (co_await a.recv_from(buf, &from)).err;
    (void)a.set_read_deadline(mono_now_ns() + 5 * kSec);
    (void)co_await b.send_to(std::as_bytes(std::span("datagram", 8)), a.local_address());
    const IoResult r = co_await a.recv_from(buf, &from);
    o->got.assign(reinterpret_cast<const char*>(buf), r.n);
    o->from = from.to_string();
    o->a_addr = b.local_address().to_string();
    (void)co_await a.close();
    (void)co_await b.close();
    o->done.store(true);
  }(&e.shard(0).sched(), &out));
  ASSERT_TRUE(wait_for([&] { return out.done.load(); }));
  EXPECT_TRUE(out.timed_out.is(Errc::kTimeout)) << out.timed_out.message();
  EXPECT_EQ(out.got, "datagram");
  EXPECT_EQ(out.from, out.a_addr);
}

}  // namespace
}  // namespace ringpoll::test
