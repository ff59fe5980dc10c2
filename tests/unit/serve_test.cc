// ringpoll-serve end to end on loopback: the HTTP handler (pipelining in order,
// exact /bytes/N bodies, 431 and 400 answered then closed while other clients
// go on, the slowloris and idle deadlines) and the echo handler, on an
// in-process engine for every Linux backend; and the built binary (its first
// line, SIGTERM, bad arguments).
#include <fcntl.h>
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/wait.h>
#include <fstream>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "apps/serve/handlers.h"
#include "engine/server.h"
#include "support/serve_fixture.h"
#include "support/test_env.h"

namespace ringpoll::test {
namespace {

using serve::ServeCounters;
using serve::ServeSettings;

// A blocking loopback client; every receive waits at most 5 s, so no test can
// hang.
class Client {
 public:
  explicit Client(const SocketAddress& a) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd_, a.sa(), a.len) < 0) {
      ::close(fd_);
      fd_ = -1;
      return;
    }
    timeval tv{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  bool send_all(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + done, s.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  struct Reply {
    int status = 0;
    std::string head;
    std::string body;
  };
  // Reads one response framed by Content-Length (no body after a HEAD).
  bool read_reply(Reply* r, bool head_request = false) {
    size_t end = std::string::npos;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return false;
    }
    r->head = buf_.substr(0, end + 4);
    buf_.erase(0, end + 4);
    if (r->head.size() < 12 || !r->head.starts_with("HTTP/1.1 ")) return false;
    r->status = std::stoi(r->head.substr(9, 3));
    const size_t cl = r->head.find("\r\nContent-Length: ");
    if (cl == std::string::npos) return false;
    const size_t len = head_request ? 0 : std::stoull(r->head.substr(cl + 18));
    while (buf_.size() < len) {
      if (!fill()) return false;
    }
    r->body = buf_.substr(0, len);
    buf_.erase(0, len);
    return true;
  }

  // Reads exactly n bytes (fewer when the stream ends or 5 s pass without data).
  std::string read_n(size_t n) {
    while (buf_.size() < n) {
      if (!fill()) break;
    }
    std::string out = buf_.substr(0, std::min(n, buf_.size()));
    buf_.erase(0, out.size());
    return out;
  }

  // True once the server has closed the connection (end of stream or reset),
  // reading and dropping whatever comes first; false when 5 s pass without
  // that.
  bool wait_closed() {
    buf_.clear();
    for (int i = 0; i < 1000; ++i) {
      char tmp[4096];
      const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n == 0) return true;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno == ECONNRESET;
      // Data: keep reading until the end.
    }
    return false;
  }

 private:
  bool fill() {
    char tmp[65536];
    ssize_t n;
    do {
      n = ::recv(fd_, tmp, sizeof tmp, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
  std::string buf_;
};

std::string get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: test\r\n" + extra + "\r\n";
}

template <class P>
class ServeHttp : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
  }
};
template <class P>
class ServeEcho : public ServeHttp<P> {};
using ServeBackends = SocketBackendTypes;
TYPED_TEST_SUITE(ServeHttp, ServeBackends, BackendName);
TYPED_TEST_SUITE(ServeEcho, ServeBackends, BackendName);

TYPED_TEST(ServeHttp, PipelinedRequestsAreAnsweredInOrderInOneConnection) {
  ServeFixture<TypeParam> f(ServeSettings{}, true);
  ASSERT_TRUE(f.started());
  Client c(f.address());
  ASSERT_TRUE(c.ok());
  // 30 requests in one send, of different kinds, the last asking to close.
  std::string wire;
  std::vector<int> want_status;
  std::vector<size_t> want_len;
  for (int i = 0; i < 30; ++i) {
    if (i % 3 == 0) {
      wire += get("/plaintext");
      want_status.push_back(200);
      want_len.push_back(13);
    } else if (i % 3 == 1) {
      wire += get("/bytes/" + std::to_string(i * 100));
      want_status.push_back(200);
      want_len.push_back(static_cast<size_t>(i) * 100);
    } else {
      wire += get("/missing/" + std::to_string(i));
      want_status.push_back(404);
      want_len.push_back(10);
    }
  }
  wire += "POST /form HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello";
  want_status.push_back(405);
  want_len.push_back(19);
  wire += get("/plaintext", "Connection: close\r\n");
  want_status.push_back(200);
  want_len.push_back(13);
  ASSERT_TRUE(c.send_all(wire));
  for (size_t i = 0; i < want_status.size(); ++i) {
    Client::Reply r;
    ASSERT_TRUE(c.read_reply(&r)) << "response " << i;
    EXPECT_EQ(r.status, want_status[i]) << "response " << i;
    EXPECT_EQ(r.body.size(), want_len[i]) << "response " << i;
    EXPECT_NE(r.head.find("\r\nServer: ringpoll\r\n"), std::string::npos);
    EXPECT_NE(r.head.find("\r\nDate: "), std::string::npos);
    if (want_status[i] == 200 && want_len[i] == 13) {
      EXPECT_EQ(r.body, "Hello, World!");
    }
  }
  EXPECT_TRUE(c.wait_closed());  // Connection: close honoured
}

TYPED_TEST(ServeHttp, BytesBodiesHaveExactLengthsAboveAndBelowTheBufferSize) {
  ServeSettings s;
  s.buffer_bytes = 4096;
  ServeFixture<TypeParam> f(s, true);
  ASSERT_TRUE(f.started());
  Client c(f.address());
  ASSERT_TRUE(c.ok());
  const size_t sizes[] = {0,
                          1,
                          4095,
                          4097,
                          serve::kInlineBody,
                          serve::kInlineBody + 1,
                          65536 + 7,
                          3 * 1024 * 1024 + 11};
  std::string wire;
  for (size_t n : sizes) wire += get("/bytes/" + std::to_string(n));
  wire += "HEAD /bytes/1000000 HTTP/1.1\r\nHost: test\r\n\r\n";
  ASSERT_TRUE(c.send_all(wire));
  for (size_t n : sizes) {
    Client::Reply r;
    ASSERT_TRUE(c.read_reply(&r)) << n;
    EXPECT_EQ(r.status, 200);
    ASSERT_EQ(r.body.size(), n);
    EXPECT_EQ(r.body.find_first_not_of('x'), std::string::npos);
  }
  Client::Reply head;
  ASSERT_TRUE(c.read_reply(&head, /*head_request=*/true));
  EXPECT_NE(head.head.find("Content-Length: 1000000\r\n"), std::string::npos);
  // The connection is still in step: one more request after the HEAD.
  ASSERT_TRUE(c.send_all(get("/bytes/67108865")));
  Client::Reply big;
  ASSERT_TRUE(c.read_reply(&big));
  EXPECT_EQ(big.status, 400);  // over the documented cap
}

TYPED_TEST(ServeHttp, OversizedHeadersGet431AndCloseWhileOtherClientsAreServed) {
  ServeSettings s;
  s.parser.max_header_bytes = 1024;
  ServeFixture<TypeParam> f(s, true);
  ASSERT_TRUE(f.started());
  Client other(f.address());
  Client bad(f.address());
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(bad.ok());
  ASSERT_TRUE(bad.send_all(
      "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(8000, 'b') + "\r\n\r\n"));
  Client::Reply r;
  ASSERT_TRUE(bad.read_reply(&r));
  EXPECT_EQ(r.status, 431);
  EXPECT_NE(r.head.find("\r\nConnection: close\r\n"), std::string::npos);
  EXPECT_TRUE(bad.wait_closed());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(other.send_all(get("/plaintext")));
    ASSERT_TRUE(other.read_reply(&r));
    EXPECT_EQ(r.status, 200);
  }
  // Malformed and oversized request lines likewise, on fresh connections.
  for (const auto& [wire, status] : std::vector<std::pair<std::string, int>>{
           {"GET /\r\nHost: t\r\n\r\n", 400},
           {"GET /" + std::string(20000, 'a') + " HTTP/1.1\r\nHost: t\r\n\r\n", 414},
           {"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
            "chunked\r\n\r\n0\r\n\r\n",
            501},
       }) {
    Client c(f.address());
    ASSERT_TRUE(c.send_all(wire));
    ASSERT_TRUE(c.read_reply(&r)) << status;
    EXPECT_EQ(r.status, status);
    EXPECT_TRUE(c.wait_closed()) << status;
  }
  ASSERT_TRUE(other.send_all(get("/plaintext")));
  ASSERT_TRUE(other.read_reply(&r));
  EXPECT_EQ(r.status, 200);
}

TYPED_TEST(ServeHttp, SlowlorisIsClosedAtTheHeaderDeadlineWhileAnotherClientIsServed) {
  ServeSettings s;
  s.header_read_ns = 200 * kMs;
  s.idle_ns = 30 * kSec;  // far away: only the header deadline can close the slow client
  ServeFixture<TypeParam> f(s, true);
  ASSERT_TRUE(f.started());
  Client slow(f.address());
  Client trickle(f.address());
  Client good(f.address());
  ASSERT_TRUE(slow.ok() && trickle.ok() && good.ok());
  ASSERT_TRUE(slow.send_all("GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Wait"));
  // The trickling client sends one more byte every 20 ms: bytes do not push the
  // header deadline back, so it is closed long before its 500 bytes (10 s) are
  // out.
  std::atomic<bool> trickle_closed{false};
  std::thread t([&] {
    if (!trickle.send_all("GET /plaintext HTTP/1.1\r\nHost: t\r\n")) return;
    for (int i = 0; i < 500; ++i) {
      if (!trickle.send_all("X")) break;
      pollfd p{trickle.fd(), POLLIN, 0};
      if (poll(&p, 1, 20) > 0) break;  // readable: the server closed it
    }
    trickle_closed.store(trickle.wait_closed());
  });
  // Meanwhile the good client is answered, request after request.
  Client::Reply r;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(good.send_all(get("/plaintext")));
    ASSERT_TRUE(good.read_reply(&r));
    EXPECT_EQ(r.status, 200);
    usleep(30'000);
  }
  EXPECT_TRUE(slow.wait_closed());  // within the client's 5 s receive limit
  t.join();
  EXPECT_TRUE(trickle_closed.load());
  ASSERT_TRUE(good.send_all(get("/plaintext")));
  ASSERT_TRUE(good.read_reply(&r));
  EXPECT_EQ(r.status, 200);
}

TYPED_TEST(ServeHttp, IdleConnectionIsClosedAfterTheIdleDeadline) {
  ServeSettings s;
  s.idle_ns = 200 * kMs;
  ServeFixture<TypeParam> f(s, true);
  ASSERT_TRUE(f.started());
  Client c(f.address());
  ASSERT_TRUE(c.ok());
  Client::Reply r;
  ASSERT_TRUE(c.send_all(get("/plaintext")));
  ASSERT_TRUE(c.read_reply(&r));
  EXPECT_TRUE(c.wait_closed());  // no second request: closed after idle_ms
  for (int i = 0; i < 500 && f.live() > 0; ++i) usleep(2000);
  EXPECT_EQ(f.live(), 0);
}

TYPED_TEST(ServeHttp, Http10ClosesUnlessItAsksForKeepAlive) {
  ServeFixture<TypeParam> f(ServeSettings{}, true);
  ASSERT_TRUE(f.started());
  Client keep(f.address());
  ASSERT_TRUE(keep.send_all("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  Client::Reply r;
  ASSERT_TRUE(keep.read_reply(&r));
  EXPECT_NE(r.head.find("\r\nConnection: keep-alive\r\n"), std::string::npos);
  ASSERT_TRUE(keep.send_all("GET /plaintext HTTP/1.0\r\n\r\n"));
  ASSERT_TRUE(keep.read_reply(&r));
  EXPECT_NE(r.head.find("\r\nConnection: close\r\n"), std::string::npos);
  EXPECT_TRUE(keep.wait_closed());
}

TEST(ServeLimits, ConnectionsOverMaxConnectionsAreClosedAndTheRestServed) {
  ServeSettings s;
  s.max_connections = 2;
  ServeFixture<EpollPoller> f(s, true);
  ASSERT_TRUE(f.started());
  Client::Reply r;
  auto first = std::make_unique<Client>(f.address());
  Client second(f.address());
  for (Client* c : {first.get(), &second}) {
    ASSERT_TRUE(c->send_all(get("/plaintext")));
    ASSERT_TRUE(c->read_reply(&r));
    EXPECT_EQ(r.status, 200);
  }
  Client third(f.address());  // accepted by the kernel, closed by the server at once
  ASSERT_TRUE(third.ok());
  EXPECT_TRUE(third.wait_closed());
  ASSERT_TRUE(second.send_all(get("/plaintext")));
  ASSERT_TRUE(second.read_reply(&r));
  EXPECT_EQ(r.status, 200);
  // Once one leaves, a newcomer is served.
  first.reset();
  for (int i = 0; i < 500 && f.live() > 1; ++i) usleep(2000);
  ASSERT_EQ(f.live(), 1);
  Client fourth(f.address());
  ASSERT_TRUE(fourth.send_all(get("/plaintext")));
  ASSERT_TRUE(fourth.read_reply(&r));
  EXPECT_EQ(r.status, 200);
}

TYPED_TEST(ServeEcho, RoundTripsRandomData) {
  ServeSettings s;
  s.buffer_bytes = 4096;
  ServeFixture<TypeParam> f(s, false);
  ASSERT_TRUE(f.started());
  std::mt19937 rng(12345);
  for (int conn = 0; conn < 3; ++conn) {
    Client c(f.address());
    ASSERT_TRUE(c.ok());
    std::string data(1 << 20, '\0');
    for (char& ch : data) ch = static_cast<char>(rng());
    // A writer thread, so neither side's socket buffers can fill up and stall
    // the test.
    std::thread w([&] {
      for (size_t off = 0; off < data.size(); off += 7000) {
        if (!c.send_all(data.substr(off, 7000))) return;
      }
      shutdown(c.fd(), SHUT_WR);
    });
    const std::string back = c.read_n(data.size());
    w.join();
    ASSERT_EQ(back.size(), data.size());
    EXPECT_TRUE(back == data);
  }
}

TYPED_TEST(ServeEcho, ClosesWhenTheClientEndsItsStream) {
  // Found by this test: on io_uring readiness mode a connection whose data and FIN were
  // read without ever waiting was closed by the handler while its multishot poll (armed
  // at open, its first completion still deferred) made the removal fail with -EALREADY
  // and kept the kernel socket open. The backend now asks again.
  ServeFixture<TypeParam> f(ServeSettings{}, false);
  ASSERT_TRUE(f.started());
  for (int conn = 0; conn < 5; ++conn) {
    Client c(f.address());
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c.send_all("0123456789"));
    shutdown(c.fd(), SHUT_WR);
    EXPECT_EQ(c.read_n(10), "0123456789");
    EXPECT_TRUE(c.wait_closed()) << "connection " << conn;
  }
  for (int i = 0; i < 500 && f.live() > 0; ++i) usleep(2000);
  EXPECT_EQ(f.live(), 0);
}

#ifdef RINGPOLL_SERVE_BIN
// Runs the built binary with `args`; its stdout is readable from *out_fd.
// Starts ringpoll-serve with its stdout on *out_fd (and its stderr on *err_fd when given).
pid_t spawn_serve(const std::vector<std::string>& args, int* out_fd, int* err_fd = nullptr) {
  int p[2], e[2] = {-1, -1};
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  if (err_fd && pipe2(e, O_CLOEXEC) < 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    if (err_fd) dup2(e[1], 2);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(RINGPOLL_SERVE_BIN));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(RINGPOLL_SERVE_BIN, argv.data());
    _exit(127);
  }
  ::close(p[1]);
  *out_fd = p[0];
  if (err_fd) {
    ::close(e[1]);
    *err_fd = e[0];
  }
  return pid;
}

// Kills and reaps the child at scope exit unless the test reaped it already (wait_exit):
// an ASSERT that fails mid-test must not leave a server running that holds ctest's
// output open. A reaped pid is never signalled (waitpid then fails with ECHILD).
struct Reaper {
  pid_t pid;
  ~Reaper() {
    if (pid > 0 && waitpid(pid, nullptr, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

// Reads one line from fd, waiting at most 10 s in all.
std::string read_line(int fd) {
  std::string line;
  for (int i = 0; i < 1000; ++i) {
    pollfd pf{fd, POLLIN, 0};
    if (poll(&pf, 1, 10) <= 0) continue;
    char ch;
    if (::read(fd, &ch, 1) != 1 || ch == '\n') break;
    line.push_back(ch);
  }
  return line;
}

// Waits at most 10 s for the child; returns its exit status or -1.
int wait_exit(pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    usleep(10'000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

TEST(ServeBinary, FirstLineNamesTheRealPortAndSigtermExitsZero) {
  for (const char* mode : {"http", "echo"}) {
    int out = -1;
    const pid_t pid = spawn_serve(
        {"--mode", mode, "--listen", "127.0.0.1:0", "--set", "timeouts.drain_ms=200"}, &out);
    Reaper reap{pid};
    ASSERT_GT(pid, 0);
    const std::string line = read_line(out);
    const std::string want = std::string("ringpoll-serve: ") + mode + " on 127.0.0.1:";
    ASSERT_TRUE(line.starts_with(want)) << line;
    EXPECT_NE(line.find(", backend "), std::string::npos) << line;
    EXPECT_NE(line.find(" shards"), std::string::npos) << line;
    const int port = std::atoi(line.c_str() + want.size());
    ASSERT_GT(port, 0) << line;
    SocketAddress a;
    ASSERT_TRUE(parse_address("127.0.0.1:" + std::to_string(port), &a).ok());
    {
      Client c(a);
      ASSERT_TRUE(c.ok());
      if (std::string(mode) == "http") {
        ASSERT_TRUE(c.send_all(get("/plaintext")));
        Client::Reply r;
        ASSERT_TRUE(c.read_reply(&r));
        EXPECT_EQ(r.body, "Hello, World!");
      } else {
        ASSERT_TRUE(c.send_all("ping"));
        EXPECT_EQ(c.read_n(4), "ping");
      }
    }
    kill(pid, SIGTERM);
    EXPECT_EQ(wait_exit(pid), 0) << mode;
    ::close(out);
  }
}

TEST(ServeBinary, FirstSignalDrainsSecondSignalExitsAtOnce) {
  int out = -1;
  // A drain far longer than wait_exit's 10 s: only the second signal can end it in time.
  const pid_t pid = spawn_serve(
      {"--mode", "http", "--listen", "127.0.0.1:0", "--set", "timeouts.drain_ms=600000"}, &out);
  Reaper reap{pid};
  ASSERT_GT(pid, 0);
  const std::string line = read_line(out);
  const size_t colon = line.find("127.0.0.1:");
  ASSERT_NE(colon, std::string::npos) << line;
  SocketAddress a;
  ASSERT_TRUE(
      parse_address("127.0.0.1:" + std::to_string(std::atoi(line.c_str() + colon + 10)), &a).ok());
  Client idle(a);  // keeps the drain waiting
  ASSERT_TRUE(idle.ok());
  kill(pid, SIGTERM);
  // The graceful stop has begun once the listener is gone.
  bool refused = false;
  for (int i = 0; i < 500 && !refused; ++i) {
    Client probe(a);
    refused = !probe.ok();
    if (!refused) usleep(10'000);
  }
  EXPECT_TRUE(refused);
  kill(pid, SIGINT);
  EXPECT_EQ(wait_exit(pid), 0);
  EXPECT_TRUE(idle.wait_closed());
  ::close(out);
}

#ifdef RINGPOLL_LOAD_BIN
// The load generator against the real server, end to end (issue 6): a short HTTP run with
// pipelining, its JSON read back: requests answered, none failed.
TEST(ServeBinary, LoadGeneratorDrivesItWithoutErrors) {
  int out = -1;
  const pid_t pid = spawn_serve({"--mode", "http", "--listen", "127.0.0.1:0"}, &out);
  Reaper reap{pid};
  ASSERT_GT(pid, 0);
  const std::string line = read_line(out);
  const size_t colon = line.find("127.0.0.1:");
  ASSERT_NE(colon, std::string::npos) << line;
  const std::string target = "127.0.0.1:" + std::to_string(std::atoi(line.c_str() + colon + 10));
  char json[] = "/tmp/ringpoll-load-e2e-XXXXXX";
  const int jfd = mkstemp(json);
  ASSERT_GE(jfd, 0);
  ::close(jfd);
  const pid_t load = fork();
  if (load == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execl(RINGPOLL_LOAD_BIN, RINGPOLL_LOAD_BIN, "--mode", "http", "--target", target.c_str(),
          "--connections", "4", "--pipeline", "4", "--duration", "1", "--warmup", "0", "--json",
          json, static_cast<char*>(nullptr));
    _exit(127);
  }
  Reaper reap_load{load};
  EXPECT_EQ(wait_exit(load), 0);
  std::ifstream in(json);
  const std::string report((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(json);
  auto number_after = [&](const std::string& key) -> long long {
    const size_t k = report.find("\"" + key + "\": ");
    return k == std::string::npos ? -1 : std::atoll(report.c_str() + k + key.size() + 4);
  };
  EXPECT_GT(number_after("requests"), 0) << report;
  EXPECT_EQ(number_after("total"), 0) << report;  // errors.total
  kill(pid, SIGTERM);
  EXPECT_EQ(wait_exit(pid), 0);
  ::close(out);
}
#endif

// Issue 27 (4): a second ringpoll-serve on a port the first still serves used to start
// and take part of its connections (SO_REUSEPORT). It refuses now, saying why; with
// socket.allow_shared_port it starts.
TEST(ServeBinary, ASecondInstanceOnTheSamePortRefusesToStartUnlessAllowed) {
  int out1 = -1;
  const pid_t first = spawn_serve({"--mode", "echo", "--listen", "127.0.0.1:0"}, &out1);
  Reaper reap1{first};
  ASSERT_GT(first, 0);
  const std::string line = read_line(out1);
  const std::string want = "ringpoll-serve: echo on 127.0.0.1:";
  ASSERT_TRUE(line.starts_with(want)) << line;
  const std::string port = std::to_string(std::atoi(line.c_str() + want.size()));
  int out2 = -1, err2 = -1;
  const pid_t second =
      spawn_serve({"--mode", "echo", "--listen", "127.0.0.1:" + port}, &out2, &err2);
  Reaper reap2{second};
  ASSERT_GT(second, 0);
  EXPECT_EQ(wait_exit(second), 1);
  std::string said;
  for (std::string l; !(l = read_line(err2)).empty();) said += l + "\n";
  EXPECT_NE(said.find("cannot listen on 127.0.0.1:" + port), std::string::npos) << said;
  EXPECT_NE(said.find("another socket already listens"), std::string::npos) << said;
  ::close(out2);
  ::close(err2);
  int out3 = -1;
  const pid_t shared = spawn_serve({"--mode", "echo", "--listen", "127.0.0.1:" + port, "--set",
                                    "socket.allow_shared_port=true"},
                                   &out3);
  Reaper reap3{shared};
  ASSERT_GT(shared, 0);
  EXPECT_TRUE(read_line(out3).starts_with(want + port)) << "allow_shared_port did not start";
  kill(shared, SIGTERM);
  EXPECT_EQ(wait_exit(shared), 0);
  kill(first, SIGTERM);
  EXPECT_EQ(wait_exit(first), 0);
  ::close(out1);
  ::close(out3);
}

TEST(ServeBinary, BadArgumentsExitTwo) {
  const std::vector<std::vector<std::string>> bad = {
      {"--mode", "ftp", "--listen", "127.0.0.1:0"},
      {"--mode", "http"},
      {"--mode", "http", "--listen", "localhost"},
      {"--mode", "http", "--listen", "127.0.0.1:0", "--set", "no.such.key=1"},
      {"--mode", "http", "--listen", "127.0.0.1:0", "--bogus"},
  };
  for (const auto& args : bad) {
    int out = -1;
    const pid_t pid = spawn_serve(args, &out);
    Reaper reap{pid};
    ASSERT_GT(pid, 0);
    EXPECT_EQ(wait_exit(pid), 2) << args[args.size() - 1];
    ::close(out);
  }
}
#endif

}  // namespace
}  // namespace ringpoll::test
