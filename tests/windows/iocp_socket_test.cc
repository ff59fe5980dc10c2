// Socket behaviour of the IOCP backend through the sockets layer (engine/poll_fd.h):
// accept, connect, echo, end of stream, a refused connect, datagrams.
#include <cstdio>

#include "win_env.h"

namespace ringpoll::test {
namespace {

TYPED_TEST(IocpWine, Socket_AcceptConnectAndEchoThroughThePort) {
  using P = TypeParam;
  auto& s = this->sched();
  uint16_t port = 0;
  const int l = tcp_listener(&port);
  ASSERT_GE(l, 0);
  PollFd<P> lf;
  ASSERT_TRUE(lf.open(s, l).ok());
  const SOCKET c = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
  ASSERT_NE(c, INVALID_SOCKET);
  PollFd<P> cf;
  ASSERT_TRUE(cf.open(s, static_cast<int>(c)).ok());
  Op a, k;
  s.spawn(do_accept(&lf, &a));
  s.spawn(do_connect(&cf, &k, loopback(port)));
  ASSERT_TRUE(this->env().run_until([&] { return a.done && k.done; }));
  ASSERT_TRUE(a.a.err.ok()) << a.a.err.message();
  ASSERT_TRUE(k.st.ok()) << k.st.message();
  PollFd<P> sf;
  ASSERT_TRUE(sf.open(s, a.a.fd).ok());
  // The accepted socket knows its peer (SO_UPDATE_ACCEPT_CONTEXT) and the connected one
  // its peer (SO_UPDATE_CONNECT_CONTEXT).
  sockaddr_in peer{};
  int plen = sizeof peer;
  EXPECT_EQ(getpeername(sock(cf.fd()), reinterpret_cast<sockaddr*>(&peer), &plen), 0);
  EXPECT_EQ(ntohs(peer.sin_port), port);
  plen = sizeof peer;
  EXPECT_EQ(getpeername(sock(sf.fd()), reinterpret_cast<sockaddr*>(&peer), &plen), 0);

  for (int round = 0; round < 20; ++round) {
    const std::string msg = "ping " + std::to_string(round);
    Op w, r;
    s.spawn(do_read(&sf, &r));
    s.spawn([](PollFd<P>* f, Op* op, std::string m) -> Task<void> {
      op->r = co_await f->write(std::as_bytes(std::span(m.data(), m.size())));
      op->done = true;
    }(&cf, &w, msg));
    ASSERT_TRUE(this->env().run_until([&] { return w.done && r.done; })) << round;
    ASSERT_TRUE(w.r.ok()) << w.r.err.message();
    EXPECT_EQ(w.r.n, msg.size());
    ASSERT_TRUE(r.r.ok()) << r.r.err.message();
    EXPECT_EQ(std::string(r.buf, r.r.n), msg);
  }
  // The peer's shutdown is end of stream for a reader.
  ASSERT_TRUE(cf.shutdown(SHUT_WR).ok());
  Op eof;
  s.spawn(do_read(&sf, &eof));
  ASSERT_TRUE(this->env().run_until([&] { return eof.done; }));
  EXPECT_TRUE(eof.r.err.is(Errc::kEof)) << eof.r.err.message();
}

TYPED_TEST(IocpWine, Socket_RefusedConnectReportsTheKernelError) {
  using P = TypeParam;
  auto& s = this->sched();
  uint16_t port = 0;
  const int l = tcp_listener(&port);
  ASSERT_GE(l, 0);
  close_fd(l);  // nobody listens on port now
  const SOCKET c = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
  PollFd<P> cf;
  ASSERT_TRUE(cf.open(s, static_cast<int>(c)).ok());
  Op k;
  s.spawn(do_connect(&cf, &k, loopback(port)));
  ASSERT_TRUE(this->env().run_until([&] { return k.done; }));
  EXPECT_EQ(k.st.sys_errno(), ECONNREFUSED) << k.st.message();
}

TYPED_TEST(IocpWine, Socket_PeerResetFailsAPendingRead) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_tcp(p, f));
  Op r;
  s.spawn(do_read(&f, &r));
  this->env().settle();
  ASSERT_FALSE(r.done);
  linger lg{1, 0};  // close with RST
  setsockopt(sock(p.b), SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&lg), sizeof lg);
  close_fd(p.take_b());
  ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
  EXPECT_FALSE(r.r.ok());
  EXPECT_FALSE(r.r.err.timeout());
  EXPECT_FALSE(r.r.err.closed());
  EXPECT_EQ(r.r.n, 0u);
}

TYPED_TEST(IocpWine, Socket_DatagramsCarryTheSendersAddress) {
  using P = TypeParam;
  auto& s = this->sched();
  auto udp = [](sockaddr_in* bound) {
    const SOCKET u = WSASocketW(AF_INET, SOCK_DGRAM, IPPROTO_UDP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    sockaddr_in a = loopback(0);
    bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a);
    int len = sizeof *bound;
    getsockname(u, reinterpret_cast<sockaddr*>(bound), &len);
    return static_cast<int>(u);
  };
  sockaddr_in ra{}, sa{};
  PollFd<P> rx, tx;
  ASSERT_TRUE(rx.open(s, udp(&ra)).ok());
  ASSERT_TRUE(tx.open(s, udp(&sa)).ok());
  bool got = false, sent = false;
  IoResult rr, sr;
  char buf[64] = {};
  sockaddr_storage from{};
  socklen_t fromlen = 0;
  s.spawn([](PollFd<P>* f, char* b, sockaddr_storage* fr, socklen_t* fl, IoResult* out,
             bool* d) -> Task<void> {
    *out = co_await f->recv_from(std::as_writable_bytes(std::span(b, 64)), fr, fl);
    *d = true;
  }(&rx, buf, &from, &fromlen, &rr, &got));
  this->env().settle();
  EXPECT_FALSE(got);
  static const char kMsg[] = "datagram";
  s.spawn([](PollFd<P>* f, sockaddr_in to, IoResult* out, bool* d) -> Task<void> {
    *out = co_await f->send_to(std::as_bytes(std::span(kMsg, 8)),
                               reinterpret_cast<const sockaddr*>(&to), sizeof to);
    *d = true;
  }(&tx, ra, &sr, &sent));
  ASSERT_TRUE(this->env().run_until([&] { return got && sent; }));
  ASSERT_TRUE(sr.ok()) << sr.err.message();
  ASSERT_TRUE(rr.ok()) << rr.err.message();
  EXPECT_EQ(std::string(buf, rr.n), "datagram");
  ASSERT_EQ(fromlen, static_cast<socklen_t>(sizeof(sockaddr_in)));
  EXPECT_EQ(reinterpret_cast<sockaddr_in*>(&from)->sin_port, sa.sin_port);
}

// writev goes out as WSASend with one WSABUF per buffer, at most kMaxBufs a call; the
// sockets layer goes round again for the rest, so every byte arrives in order.
TYPED_TEST(IocpWine, Socket_WritevSendsEveryBufferInOrder) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_tcp(p, f));
  std::vector<std::string> parts;
  std::string want;
  for (size_t i = 0; i < P::kMaxBufs * 2 + 3; ++i) {
    parts.push_back("part" + std::to_string(i) + ";");
    want += parts.back();
  }
  std::vector<iovec> iov;
  for (std::string& part : parts) iov.push_back(iovec{part.data(), part.size()});
  bool done = false;
  IoResult res;
  s.spawn([](PollFd<P>* f, std::span<const iovec> v, IoResult* out, bool* d) -> Task<void> {
    *out = co_await f->writev(v);
    *d = true;
  }(&f, iov, &res, &done));
  ASSERT_TRUE(this->env().run_until([&] { return done; }));
  ASSERT_TRUE(res.ok()) << res.err.message();
  EXPECT_EQ(res.n, want.size());
  recv_timeout(p.b, 2000);
  std::string got(want.size(), '\0');
  ASSERT_EQ(recv_exact(p.b, got.data(), got.size()), want.size());
  EXPECT_EQ(got, want);
}

// FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: with it, a receive whose data is already there
// finishes at submit and its waiter never parks; without it the result comes through the
// port. Either way the reader gets the same bytes.
TYPED_TEST(IocpWine, Socket_ResultsReadyAtSubmitSkipThePortWhenAllowed) {
  using P = TypeParam;
  auto& s = this->sched();
  std::printf("%s\n", s.backend().describe().c_str());
  FdPair p;
  PollFd<P> f;
  ASSERT_TRUE(this->open_tcp(p, f));
  put(p.b, "ready");
  for (int i = 0; i < 200 && readable_bytes(f.fd()) < 5; ++i) sleep_ms(5);
  ASSERT_EQ(readable_bytes(f.fd()), 5);
  const auto c0 = s.backend().counters();
  Op r;
  s.spawn(do_read(&f, &r));
  s.run_ready();  // one pass, no poll
  const auto c1 = s.backend().counters();
  if (s.backend().skipping()) {
    ASSERT_TRUE(r.done) << "skip-on-success is on, yet the ready receive waited for a poll";
    EXPECT_EQ(c1.inline_done, c0.inline_done + 1);
  } else {
    EXPECT_FALSE(r.done);
    EXPECT_EQ(c1.inline_done, c0.inline_done);
    ASSERT_TRUE(this->env().run_until([&] { return r.done; }));
    EXPECT_EQ(s.backend().counters().completions, c0.completions + 1);
  }
  if (std::string(P::kName) == "iocp-noskip") {
    EXPECT_FALSE(s.backend().skipping());
  }
  if (std::string(P::kName) == "iocp-forceskip") {
    EXPECT_TRUE(s.backend().skipping());
    // No packet followed the inline result (Winsock honoured the flag).
    this->env().settle();
    sleep_ms(20);
    this->env().settle();
    EXPECT_EQ(s.backend().counters().completions, c0.completions);
    EXPECT_EQ(s.backend().counters().stale_dropped, c0.stale_dropped);
  }
  EXPECT_EQ(std::string(r.buf, r.r.n), "ready");
}

// S19 on IOCP: there are no readiness events and no event-error bit here; an error is
// one operation's own result. Injected through the result hook (g_iocp_result_hook,
// iocp/iocp_poller.h): the receive's completion says ECONNRESET. It fails the reader and
// only the reader: the writer, its send still in flight, is not touched.
void recv_reset(IocpOpKind kind, int32_t* res) {
  if (kind == IocpOpKind::kRecv) *res = -ECONNRESET;
}

TYPED_TEST(IocpWine, S19_AnErrorCompletionFailsItsOwnOperationOnly) {
  using P = TypeParam;
  auto& s = this->sched();
  FdPair p;
  PollFd<P> f;
  Op r, w;
  ASSERT_TRUE(this->park_reader_and_writer(p, f, r, w));
  g_iocp_result_hook.store(&recv_reset);
  ASSERT_EQ(::send(sock(p.b), "!", 1, 0), 1);
  const bool failed = this->env().run_until([&] { return r.done; });
  g_iocp_result_hook.store(nullptr);
  ASSERT_TRUE(failed) << "the receive's error completion did not reach the reader";
  EXPECT_EQ(r.r.err.sys_errno(), ECONNRESET) << r.r.err.message();
  EXPECT_EQ(r.r.n, 0u);
  EXPECT_EQ(f.pd()->info.load() & kInfoEventErr, 0u);
  EXPECT_FALSE(w.done) << "the reader's error reached the writer: " << w.r.err.message();
  EXPECT_TRUE(parked(f.pd(), Mode::kWrite));
  Status cst;
  bool closed = false;
  s.spawn(do_close(&f, &cst, &closed));
  ASSERT_TRUE(this->env().run_until([&] { return w.done && closed; }));
  EXPECT_TRUE(w.r.err.closed()) << w.r.err.message();
}

}  // namespace
}  // namespace ringpoll::test
