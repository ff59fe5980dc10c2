// ringpoll-proxy's HTTP mode (apps/proxy/http_relay.h) end to end on every Linux backend:
// an in-process proxy, blocking HTTP upstreams and clients on their own threads. Routing,
// keep-alive reuse, forwarding and hop-by-hop fields, bodies both ways (length, chunked
// with trailers, close-delimited), pipelining split at every byte, 100-continue,
// HTTP/1.0, upstreams that close idle connections, retries with held bodies, 502/503/504,
// every request smuggling case refused before an upstream sees a byte, the access log
// (both formats; a stalled destination) and a WebSocket echo through the Upgrade tunnel.
// Plus the message helpers.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "apps/proxy/from_config.h"
#include "apps/proxy/http_message.h"
#include "apps/proxy/proxy.h"
#include "proxy/proxy_rig.h"
#include "proxy/proxy_test_helpers.h"
#include "support/test_env.h"
#include "tuning/config.h"
#include "uring/uring_completion.h"

namespace ringpoll::test {
namespace {

using proxy::HttpRoute;
using proxy::PoolSettings;
using proxy::ProxySettings;

constexpr size_t kBig = sized_for_build(100u << 20, 16u << 20);  // uploads and downloads

uint64_t fnv(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}
std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

// ---- a blocking HTTP/1.1 reader, for both the test upstream and the test client ----

struct Message {
  std::string head;  // through the empty line
  std::string body;  // decoded
  int status = 0;
  bool ok = false;
  std::string field(std::string_view name) const {
    std::string out;
    proxy::for_each_field(head, [&](std::string_view n, std::string_view v) {
      if (proxy::iequals(n, name)) {
        if (!out.empty()) out += ",";
        out.append(v);
      }
    });
    return out;
  }
};

class Reader {
 public:
  explicit Reader(int fd) : fd_(fd) {}
  // One message; is_response: parse a status line, head_request: no body.
  Message read(bool is_response, bool head_request = false, std::string* raw = nullptr) {
    Message m;
    size_t e;
    while ((e = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return m;
    }
    m.head = buf_.substr(0, e + 4);
    buf_.erase(0, e + 4);
    if (raw) *raw += m.head;
    if (is_response) m.status = std::atoi(m.head.c_str() + 9);
    const std::string te = m.field("transfer-encoding");
    const std::string cl = m.field("content-length");
    if (head_request || (is_response && (m.status < 200 || m.status == 204))) {
      m.ok = true;
      return m;
    }
    if (te == "chunked") {
      for (;;) {
        size_t le;
        while ((le = buf_.find("\r\n")) == std::string::npos)
          if (!fill()) return m;
        const size_t n = std::strtoull(buf_.c_str(), nullptr, 16);
        if (raw) *raw += buf_.substr(0, le + 2);
        buf_.erase(0, le + 2);
        if (n == 0) {
          // Trailers up to the empty line.
          for (;;) {
            while ((le = buf_.find("\r\n")) == std::string::npos)
              if (!fill()) return m;
            if (raw) *raw += buf_.substr(0, le + 2);
            trailers_ += buf_.substr(0, le + 2);
            buf_.erase(0, le + 2);
            if (le == 0) break;
          }
          m.ok = true;
          return m;
        }
        while (buf_.size() < n + 2)
          if (!fill()) return m;
        m.body += buf_.substr(0, n);
        if (raw) *raw += buf_.substr(0, n + 2);
        buf_.erase(0, n + 2);
      }
    }
    if (!cl.empty()) {
      const size_t n = std::strtoull(cl.c_str(), nullptr, 10);
      while (buf_.size() < n)
        if (!fill()) return m;
      m.body = buf_.substr(0, n);
      buf_.erase(0, n);
      if (raw) *raw += m.body;
      m.ok = true;
      return m;
    }
    if (!is_response) {
      m.ok = true;
      return m;
    }
    while (fill()) {
    }
    m.body = std::move(buf_);
    buf_.clear();
    m.ok = true;
    return m;
  }
  std::string& buffered() { return buf_; }
  const std::string& trailers() const { return trailers_; }
  // Waits for more bytes: false at the end of stream, an error, or after timeout_ms without
  // any (30 s: a 100 MiB upload answered at its end, on a loaded two-core machine). A wait
  // a signal cut short (EINTR: an in-process ring's task work) is waited again.
  bool fill(int timeout_ms = 30000) {
    pollfd p{fd_, POLLIN, 0};
    int r;
    while ((r = ::poll(&p, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    if (r <= 0) return false;
    char b[65536];
    ssize_t k;
    while ((k = ::recv(fd_, b, sizeof b, 0)) < 0 && errno == EINTR) {
    }
    if (k <= 0) return false;
    buf_.append(b, static_cast<size_t>(k));
    return true;
  }

 private:
  int fd_;
  std::string buf_;
  std::string trailers_;
};

// An HTTP upstream: answers each request with "<tag> <method> <target> <body bytes>
// <fnv of body>" (or, for GET /download/N, N pattern bytes; with "?chunked", chunked with
// a trailer), records every byte it received, keeps the connection alive.
struct UpstreamBehaviour {
  int close_idle_ms = 0;          // close a connection idle this long (0: never)
  bool close_after_each = false;  // close right after each response, no Connection: close
  bool never_answer = false;
  bool send_continue = false;  // answer Expect: 100-continue
  // Read each connection's second request whole, then close without a byte of answer:
  // the upstream that closed a keep-alive connection just as a request arrived.
  bool drop_second = false;
};

class HttpUpstream {
 public:
  explicit HttpUpstream(std::string tag, UpstreamBehaviour b = {})
      : tag_(std::move(tag)), b_(b), srv_([this](int fd) { serve(fd); }) {}
  const SocketAddress& address() const { return srv_.address(); }
  int accepted() const { return srv_.accepted(); }
  std::string received() {
    std::lock_guard<std::mutex> l(mu_);
    return received_;
  }
  int requests() const { return requests_.load(); }

 private:
  void serve(int fd) {
    Reader r(fd);
    int on_connection = 0;
    for (;;) {
      if (b_.close_idle_ms > 0 && r.buffered().empty()) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, b_.close_idle_ms) == 0) break;  // idle too long: close
      }
      std::string raw;
      // Peek the head first for Expect.
      size_t e;
      while ((e = r.buffered().find("\r\n\r\n")) == std::string::npos) {
        if (!r.fill(b_.close_idle_ms > 0 ? b_.close_idle_ms : 10000)) goto done;
      }
      if (b_.send_continue && r.buffered().substr(0, e).find("100-continue") != std::string::npos)
        send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
      {
        Message m = r.read(false, false, &raw);
        {
          std::lock_guard<std::mutex> l(mu_);
          received_ += raw;
        }
        if (!m.ok) break;
        requests_.fetch_add(1);
        if (b_.drop_second && ++on_connection == 2) break;
        if (b_.never_answer) {
          char c;
          while (::recv(fd, &c, 1, 0) > 0) {
          }
          break;
        }
        const size_t sp = m.head.find(' ');
        const std::string method = m.head.substr(0, sp);
        const std::string target = m.head.substr(sp + 1, m.head.find(' ', sp + 1) - sp - 1);
        std::string resp;
        if (target.rfind("/download/", 0) == 0) {
          const size_t n = std::strtoull(target.c_str() + 10, nullptr, 10);
          const std::string body = pattern(n);
          if (target.find("?chunked") != std::string::npos) {
            resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n";
            for (size_t p = 0; p < n; p += 100000) {
              const size_t k = std::min<size_t>(100000, n - p);
              char hex[32];
              std::snprintf(hex, sizeof hex, "%zx;ext=1\r\n", k);
              resp += hex + body.substr(p, k) + "\r\n";
            }
            resp += "0\r\nX-Sum: " + std::to_string(fnv(body)) + "\r\n\r\n";
          } else {
            resp = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(n) + "\r\n\r\n" + body;
          }
        } else {
          const std::string body = tag_ + " " + method + " " + target + " " +
                                   std::to_string(m.body.size()) + " " +
                                   std::to_string(fnv(m.body));
          resp = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                 "\r\nKeep-Alive: timeout=5\r\nX-Up: " + tag_ + "\r\n\r\n";
          if (method != "HEAD") resp += body;
        }
        if (!send_all(fd, resp.data(), resp.size())) break;
        if (b_.close_after_each) break;
      }
    }
  done:
    ::shutdown(fd, SHUT_RDWR);
  }

  std::string tag_;
  UpstreamBehaviour b_;
  std::mutex mu_;
  std::string received_;
  std::atomic<int> requests_{0};
  TestUpstream srv_;
};

HttpRoute route(std::string name, std::string pool, std::string host = "", std::string prefix = "",
                std::string method = "") {
  HttpRoute r;
  r.name = std::move(name);
  r.pool = std::move(pool);
  r.host = std::move(host);
  r.path_prefix = std::move(prefix);
  r.method = std::move(method);
  return r;
}

// One HTTP listener; pools "a" (and "b" when given) and the routes given (default: one
// default route to "a").
ProxySettings http_settings(SocketAddress a, const SocketAddress* b = nullptr,
                            std::vector<HttpRoute> routes = {}) {
  ProxySettings s = main_listener_settings({a});  // 2 s drain
  s.pools[0].name = "a";
  if (b) {
    PoolSettings p = s.pools[0];
    p.name = "b";
    p.upstreams = {*b};
    s.pools.push_back(p);
  }
  proxy::ListenerSettings& l = s.listeners[0];
  l.name = "web";
  l.pool = "a";
  l.http = true;
  if (routes.empty()) routes.push_back(route("default", "a"));
  l.http_settings.routes = std::move(routes);
  return s;
}

template <class P>
struct HttpRig : ProxyRig<P> {
  using ProxyRig<P>::ProxyRig;
  proxy::HttpMetrics& hm() { return this->px->http_metrics(); }
  uint64_t reused() { return hm().total(&proxy::HttpShardMetrics::upstream_reused); }
  uint64_t fresh() { return hm().total(&proxy::HttpShardMetrics::upstream_new); }
};

int client(const SocketAddress& at) {
  const int c = connect_to(at);
  const int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return c;
}

bool send_str(int fd, const std::string& s) {
  return send_all(fd, s.data(), s.size());
}

std::string get(std::string target, std::string host = "example.com", std::string extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n" + extra + "\r\n";
}

template <class B>
class HttpProxy : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!B::available().ok) GTEST_SKIP() << B::kName << ": " << B::available().why;
  }
};
using HttpBackends = ::testing::Types<EpollPoller, UringPoller, UringCompletionPoller>;
TYPED_TEST_SUITE(HttpProxy, HttpBackends, BackendName);

TYPED_TEST(HttpProxy, KeepAliveReusesOneUpstreamConnectionAndRewritesFields) {
  HttpUpstream up("A");
  HttpRig<TypeParam> rig(http_settings(up.address()));
  ASSERT_TRUE(rig.started);
  const int c = client(rig.addr);
  Reader r(c);
  constexpr int kRequests = 50;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(send_str(c, get("/r" + std::to_string(i), "example.com",
                                "Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                                "Keep-Alive: 5\r\nX-Forwarded-For: 10.0.0.9\r\n")));
    const Message m = r.read(true);
    ASSERT_TRUE(m.ok) << i;
    EXPECT_EQ(m.status, 200);
    const std::string want = "A GET /r" + std::to_string(i) + " 0 ";
    EXPECT_EQ(m.body.substr(0, want.size()), want);
    EXPECT_EQ(m.field("keep-alive"), "") << "hop-by-hop field relayed to the client";
    EXPECT_EQ(m.field("via"), "1.1 ringpoll");
    EXPECT_EQ(m.field("x-up"), "A");
  }
  ::close(c);
  EXPECT_EQ(up.accepted(), 1) << "every request after the first reuses the connection";
  // Counted after the last byte went out: the client may read it first.
  EXPECT_TRUE(wait_for([&] { return rig.hm().status_class(0, 2) == kRequests; }));
  EXPECT_EQ(rig.reused(), static_cast<uint64_t>(kRequests - 1));
  EXPECT_EQ(rig.fresh(), 1u);
  const std::string got = up.received();
  EXPECT_EQ(got.find("X-Secret"), std::string::npos) << "a field named in Connection";
  EXPECT_EQ(got.find("Keep-Alive"), std::string::npos);
  EXPECT_EQ(got.find("Connection"), std::string::npos);
  EXPECT_NE(got.find("X-Forwarded-For: 10.0.0.9, 127.0.0.1\r\n"), std::string::npos) << got;
  EXPECT_NE(got.find("X-Forwarded-Proto: http\r\n"), std::string::npos);
  EXPECT_NE(got.find("Via: 1.1 ringpoll\r\n"), std::string::npos);
}

// A keep-alive client waiting for its next request holds no buffer: its input and
// response buffers go back to the shard's pool (they were ~15 KiB of RSS per idle
// connection, bench/http/compare.py) and come back with its next request.
TYPED_TEST(HttpProxy, IdleKeepAliveClientsHoldNoBuffers) {
  HttpUpstream up("A");
  HttpRig<TypeParam> rig(http_settings(up.address()));
  ASSERT_TRUE(rig.started);
  constexpr int kClients = 20;
  std::vector<int> cs;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kClients; ++i) {
      if (round == 0) cs.push_back(client(rig.addr));
      ASSERT_TRUE(send_str(cs[i], get("/idle" + std::to_string(round))));
      const Message m = Reader(cs[i]).read(true);
      ASSERT_TRUE(m.ok) << "round " << round << ", client " << i;
      EXPECT_EQ(m.status, 200);
      EXPECT_EQ(m.body.substr(0, 15), "A GET /idle" + std::to_string(round) + " 0 ");
    }
    const auto& pm = rig.px->metrics();
    EXPECT_TRUE(wait_for([&] { return pm.total(&proxy::ShardMetrics::relay_buffers) == 0; }, 5))
        << pm.total(&proxy::ShardMetrics::relay_buffers) << " buffers held by " << kClients
        << " idle keep-alive clients, round " << round;
    EXPECT_EQ(pm.total_active(), kClients) << "the idle clients stay connected";
  }
  for (const int c : cs) ::close(c);
}

TYPED_TEST(HttpProxy, RoutesByHostWildcardPathAndMethodFirstMatchWins) {
  HttpUpstream a("A"), b("B");
  const SocketAddress ba = b.address();
  HttpRig<TypeParam> rig(http_settings(
      a.address(), &ba,
      {route("exact", "b", "api.example.com"), route("wild", "b", "*.cdn.example.com"),
       route("post", "b", "", "/upload", "POST"), route("static", "b", "", "/static/"),
       route("default", "a")}));
  ASSERT_TRUE(rig.started);
  struct Case {
    std::string req;
    char want;
  };
  const Case cases[] = {
      {get("/", "api.example.com"), 'B'},
      {get("/", "API.Example.com:8080"), 'B'},
      {get("/", "x.api.example.com"), 'A'},
      {get("/", "img.cdn.example.com"), 'B'},
      {get("/", "cdn.example.com"), 'A'},
      {"POST /upload/x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz", 'B'},
      {get("/upload/x", "h"), 'A'},
      {get("/static/app.js", "h"), 'B'},
      {get("/staticx", "h"), 'A'},
  };
  const int c = client(rig.addr);
  Reader r(c);
  for (const Case& k : cases) {
    ASSERT_TRUE(send_str(c, k.req));
    const Message m = r.read(true);
    ASSERT_TRUE(m.ok) << k.req;
    EXPECT_EQ(m.body[0], k.want) << k.req;
  }
  ::close(c);
}

// A route with no idle timeout (timeouts.idle_ms = 0) serves its requests: 0 is "none",
// not "now" (every request was answered 502 when it was read as a deadline).
TYPED_TEST(HttpProxy, NoIdleTimeoutMeansNoneNotNow) {
  HttpUpstream a("A");
  HttpRoute r = route("default", "a");
  r.idle_ns = 0;
  HttpRig<TypeParam> rig(http_settings(a.address(), nullptr, {r}));
  ASSERT_TRUE(rig.started);
  const int c = client(rig.addr);
  Reader rd(c);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(send_str(c, get("/n" + std::to_string(i))));
    const Message m = rd.read(true);
    ASSERT_TRUE(m.ok) << "request " << i;
    EXPECT_EQ(m.status, 200) << "request " << i << ": " << m.body;
  }
  ::close(c);
}

TYPED_TEST(HttpProxy, NoRouteIs503AndSaysSo) {
  HttpUpstream a("A");
  HttpRig<TypeParam> rig(http_settings(a.address(), nullptr, {route("only", "a", "only.test")}));
  ASSERT_TRUE(rig.started);
  const int c = client(rig.addr);
  ASSERT_TRUE(send_str(c, get("/", "other.test")));
  const std::string got = recv_all(c);
  EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 503");
  EXPECT_NE(got.find("no route"), std::string::npos);
  EXPECT_EQ(a.accepted(), 0);
  ::close(c);
}

TYPED_TEST(HttpProxy, BodiesStreamBothWaysWithChecksums) {
  HttpUpstream up("A");
  ProxySettings s = http_settings(up.address());
  s.buffer_bytes = 16384;
  HttpRig<TypeParam> rig(s);
  ASSERT_TRUE(rig.started);
  const int c = client(rig.addr);
  Reader r(c);
  const std::string body = pattern(kBig);
  // Upload with Content-Length.
  std::thread tx([&] {
    send_str(c, "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\n\r\n");
    send_str(c, body);
  });
  Message m = r.read(true);
  tx.join();
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.body, "A PUT /up " + std::to_string(body.size()) + " " + std::to_string(fnv(body)));
  // Upload chunked, with a trailer.
  std::thread tx2([&] {
    send_str(c, "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t p = 0; p < body.size(); p += 1000000) {
      const size_t k = std::min<size_t>(1000000, body.size() - p);
      char hex[32];
      std::snprintf(hex, sizeof hex, "%zX\r\n", k);
      send_str(c, hex + body.substr(p, k) + "\r\n");
    }
    send_str(c, "0\r\nX-T: 1\r\n\r\n");
  });
  m = r.read(true);
  tx2.join();
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.body, "A POST /up " + std::to_string(body.size()) + " " + std::to_string(fnv(body)));
  // Downloads: Content-Length, then chunked with a trailer.
  ASSERT_TRUE(send_str(c, get("/download/" + std::to_string(kBig))));
  m = r.read(true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.body.size(), kBig);
  EXPECT_EQ(fnv(m.body), fnv(body));
  ASSERT_TRUE(send_str(c, get("/download/" + std::to_string(kBig) + "?chunked")));
  m = r.read(true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(fnv(m.body), fnv(body));
  EXPECT_NE(r.trailers().find("X-Sum: " + std::to_string(fnv(body))), std::string::npos);
  ::close(c);
  EXPECT_EQ(up.accepted(), 1);
}

TYPED_TEST(HttpProxy, PipelinedRequestsSplitAtEveryByteAreAnsweredInOrder) {
  HttpUpstream up("A");
  HttpRig<TypeParam> rig(http_settings(up.address()));
  ASSERT_TRUE(rig.started);
  const std::string reqs = get("/one") +
                           "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" +
                           "POST /three HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3\r\nabc\r\n0\r\n\r\n" +
                           get("/four");
  for (size_t k = 1; k < reqs.size(); ++k) {
    const int c = client(rig.addr);
    ASSERT_TRUE(send_str(c, reqs.substr(0, k)));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(send_str(c, reqs.substr(k)));
    Reader r(c);
    const char* want[] = {"A GET /one 0", "A POST /two 5", "A POST /three 3", "A GET /four 0"};
    for (const char* w : want) {
      const Message m = r.read(true);
      ASSERT_TRUE(m.ok) << "split at " << k << ", waiting for " << w;
      EXPECT_EQ(m.body.substr(0, std::strlen(w)), w) << "split at " << k;
    }
    ::close(c);
  }
}

TYPED_TEST(HttpProxy, ExpectContinueReachesTheClientBeforeItSendsTheBody) {
  UpstreamBehaviour b;
  b.send_continue = true;
  HttpUpstream up("A", b);
  HttpRig<TypeParam> rig(http_settings(up.address()));
  ASSERT_TRUE(rig.started);
  const int c = client(rig.addr);
  ASSERT_TRUE(send_str(c,
                       "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                       "Expect: 100-continue\r\n\r\n"));
  Reader r(c);
  const Message interim = r.read(true);
  ASSERT_TRUE(interim.ok);
  EXPECT_EQ(interim.status, 100);
  ASSERT_TRUE(send_str(c, "data"));
  const Message m = r.read(true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.body.substr(0, 12), "A PUT /x 4 " + std::string(1, m.body[11]));
  ::close(c);
}

TYPED_TEST(HttpProxy, Http10ClientGetsItsAnswerAndAClose) {
  HttpUpstream up("A");
  HttpRig<TypeParam> rig(http_settings(up.address()));
  ASSERT_TRUE(rig.started);
  const int c = client(rig.addr);
  ASSERT_TRUE(send_str(c, "GET /old HTTP/1.0\r\n\r\n"));
  const std::string got = recv_all(c);  // ends: the proxy closes
  EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 200");
  EXPECT_NE(got.find("Connection: close"), std::string::npos);
  EXPECT_NE(got.find("A GET /old 0"), std::string::npos);
  EXPECT_NE(up.received().find("GET /old HTTP/1.0\r\n"), std::string::npos);
  ::close(c);
}

TYPED_TEST(HttpProxy, UpstreamsThatCloseIdleConnectionsNeverFailARequest) {
  // The case: an upstream that closes connections idle for 1 s. The proxy sees
  // the close (its sweeper, or take()'s check) and never sends a request on it: no
  // request fails, and none needed a retry.
  {
    UpstreamBehaviour b;
    b.close_idle_ms = 1000;
    HttpUpstream up("A", b);
    HttpRig<TypeParam> rig(http_settings(up.address()));
    ASSERT_TRUE(rig.started);
    const int c = client(rig.addr);
    Reader r(c);
    for (int i = 0; i < 3; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1200));
      ASSERT_TRUE(send_str(c, get("/s" + std::to_string(i))));
      const Message m = r.read(true);
      ASSERT_TRUE(m.ok) << "request " << i;
      EXPECT_EQ(m.status, 200) << "request " << i << ": " << m.body;
    }
    ::close(c);
    EXPECT_EQ(up.accepted(), 3);
    EXPECT_EQ(rig.hm().total(&proxy::HttpShardMetrics::retries), 0u)
        << "a request was sent on a connection the upstream had closed";
  }
  for (const bool each : {false, true}) {
    UpstreamBehaviour b;
    b.close_idle_ms = 100;
    b.close_after_each = each;  // the tightest race: closed right after answering
    HttpUpstream up("A", b);
    HttpRig<TypeParam> rig(http_settings(up.address()));
    ASSERT_TRUE(rig.started);
    const int c = client(rig.addr);
    Reader r(c);
    for (int i = 0; i < 20; ++i) {
      // Around the upstream's idle limit, and right after a response.
      std::this_thread::sleep_for(std::chrono::milliseconds(i % 2 ? 150 : 0));
      ASSERT_TRUE(send_str(c, get("/i" + std::to_string(i))));
      const Message m = r.read(true);
      ASSERT_TRUE(m.ok) << "request " << i << (each ? " (closed after each)" : "");
      EXPECT_EQ(m.status, 200) << "request " << i << ": " << m.body;
    }
    ::close(c);
  }
}

TYPED_TEST(HttpProxy, ErrorsSayWhy502503504) {
  // Connect refused: 502.
  {
    HttpRig<TypeParam> rig(http_settings(dead_address()));
    ASSERT_TRUE(rig.started);
    const int c = client(rig.addr);
    ASSERT_TRUE(send_str(c, get("/")));
    const std::string got = recv_all(c);
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 502") << got;
    EXPECT_NE(got.find("refused"), std::string::npos) << got;
    ::close(c);
  }
  // Response header timeout: 504.
  {
    UpstreamBehaviour b;
    b.never_answer = true;
    HttpUpstream up("A", b);
    ProxySettings s = http_settings(up.address());
    s.listeners[0].http_settings.routes[0].response_header_ns = 200 * kMs;
    HttpRig<TypeParam> rig(s);
    ASSERT_TRUE(rig.started);
    const int c = client(rig.addr);
    ASSERT_TRUE(send_str(c, get("/")));
    const std::string got = recv_all(c);
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 504") << got;
    EXPECT_NE(got.find("response header timeout"), std::string::npos) << got;
    ::close(c);
  }
  // Connect timeout: 504 (a listener whose queue is full drops the SYN).
  {
    const FullListener full;
    ProxySettings s = http_settings(full.at);
    s.listeners[0].http_settings.routes[0].connect_timeout_ns = 200 * kMs;
    s.max_attempts = 1;
    HttpRig<TypeParam> rig(s);
    ASSERT_TRUE(rig.started);
    const int c = client(rig.addr);
    ASSERT_TRUE(send_str(c, get("/")));
    const std::string got = recv_all(c);
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 504") << got;
    EXPECT_NE(got.find("connect timed out"), std::string::npos) << got;
    ::close(c);
  }
}

// Each smuggling case: 400, the connection closed, the reason counted, and the upstream
// never saw a byte of it.
TYPED_TEST(HttpProxy, SmugglingIsRefusedCountedAndNeverRelayed) {
  using http::Refusal;
  struct Case {
    const char* name;
    std::string req;
    Refusal reason;  // kNone: the chunked-body counter
  };
  const Case cases[] = {
      {"CL and TE",
       "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: "
       "chunked\r\n\r\n0\r\n\r\n",
       Refusal::kLengthAndEncoding},
      {"duplicate CL",
       "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
       Refusal::kDuplicateLength},
      {"differing CL",
       "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
       Refusal::kDuplicateLength},
      {"CL list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
       Refusal::kBadLength},
      {"TE xchunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
       Refusal::kBadTransferEncoding},
      {"TE list", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
       Refusal::kBadTransferEncoding},
      {"TE twice",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
       "chunked\r\n\r\n0\r\n\r\n",
       Refusal::kBadTransferEncoding},
      {"TE with a vertical tab",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \vchunked\r\n\r\n", Refusal::kOther},
      {"TE space before colon", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
       Refusal::kOther},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  continued\r\n\r\n", Refusal::kObsFold},
      {"bare LF in a field", "GET / HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n", Refusal::kBareLf},
      {"bare LF request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", Refusal::kBareLf},
      {"NUL in a value", std::string("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n", 38),
       Refusal::kNul},
      {"bad chunk size",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
       "zz\r\nabc\r\n0\r\n\r\n",
       Refusal::kNone},
      {"chunk size with sign",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
       "-3\r\nabc\r\n0\r\n\r\n",
       Refusal::kNone},
      {"chunk size overflow",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
       "10000000000000003\r\nabc\r\n0\r\n\r\n",
       Refusal::kNone},
      {"chunk data too long",
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
       "2\r\nabc\r\n0\r\n\r\n",
       Refusal::kNone},
  };
  HttpUpstream up("A");
  HttpRig<TypeParam> rig(http_settings(up.address()));
  ASSERT_TRUE(rig.started);
  auto counted = [&](Refusal r) {
    return r == Refusal::kNone ? rig.hm().refused_chunk() : rig.hm().refused(r);
  };
  for (const Case& k : cases) {
    const uint64_t before = counted(k.reason);
    const int c = client(rig.addr);
    ASSERT_TRUE(send_str(c, k.req));
    const std::string got = recv_all(c);  // returns at the proxy's close
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 400") << k.name << ": " << got;
    EXPECT_NE(got.find("Connection: close"), std::string::npos) << k.name;
    EXPECT_EQ(counted(k.reason), before + 1)
        << k.name << " counted under "
        << (k.reason == Refusal::kNone ? "bad_chunk" : http::to_string(k.reason));
    ::close(c);
  }
  EXPECT_EQ(up.accepted(), 0) << "an upstream saw a refused request";
  EXPECT_EQ(up.received(), "");
}

// A chunked body whose bad chunk arrives after the head went upstream: the client gets a
// 400, and the upstream's connection is closed (never reused with half a request).
TYPED_TEST(HttpProxy, ABadChunkAfterTheHeadEndsBothSides) {
  HttpUpstream up("A");
  HttpRig<TypeParam> rig(http_settings(up.address()));
  ASSERT_TRUE(rig.started);
  const int c = client(rig.addr);
  ASSERT_TRUE(send_str(c,
                       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\n"));
  // The head and the good chunk reach the upstream first.
  ASSERT_TRUE(wait_for([&] { return up.accepted() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(send_str(c, "zz\r\n"));
  const std::string got = recv_all(c);
  EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 400") << got;
  EXPECT_EQ(rig.hm().refused_chunk(), 1u);
  EXPECT_TRUE(wait_for([&] { return up.received().find("abc") != std::string::npos; }));
  EXPECT_EQ(up.received().find("zz"), std::string::npos);
  EXPECT_EQ(up.requests(), 0) << "the upstream saw a complete request";
  ::close(c);
}

// ---- retry: a reused connection that closes before any response byte ----

// Idempotent requests are sent again on a new connection, with the body bytes the proxy
// holds (up to 64 KiB, Content-Length or chunked); a larger body, or a POST, is a 502.
TYPED_TEST(HttpProxy, IdempotentRequestsMetByACloseAreRetriedWithTheirBody) {
  UpstreamBehaviour b;
  b.drop_second = true;
  HttpUpstream up("A", b);
  HttpRig<TypeParam> rig(http_settings(up.address()));
  ASSERT_TRUE(rig.started);
  auto put = [](const std::string& method, const std::string& target, const std::string& body) {
    return method + " " + target +
           " HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
           body;
  };
  const std::string small = pattern(1000), big = pattern(100 * 1024);
  {
    const int c = client(rig.addr);
    Reader r(c);
    ASSERT_TRUE(send_str(c, get("/first")));  // a new connection: the upstream's first
    Message m = r.read(true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.status, 200);
    // The reused connection reads this whole and closes: sent again, body included.
    ASSERT_TRUE(send_str(c, put("PUT", "/p", small)));
    m = r.read(true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.status, 200) << m.body;
    EXPECT_EQ(m.body, "A PUT /p 1000 " + std::to_string(fnv(small)));
    EXPECT_EQ(up.accepted(), 2);
    EXPECT_EQ(rig.hm().total(&proxy::HttpShardMetrics::retries), 1u);
    // Too large to hold: not sent again.
    ASSERT_TRUE(send_str(c, put("PUT", "/big", big)));
    m = r.read(true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.status, 502);
    EXPECT_NE(m.body.find("too large to send again"), std::string::npos) << m.body;
    ::close(c);
  }
  EXPECT_EQ(up.accepted(), 2) << "a body over 64 KiB was sent again";
  {
    const int c = client(rig.addr);
    Reader r(c);
    ASSERT_TRUE(send_str(c, put("POST", "/n", small)));
    Message m = r.read(true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.status, 200);
    ASSERT_TRUE(send_str(c, put("POST", "/n", small)));  // not idempotent: never again
    m = r.read(true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.status, 502);
    ::close(c);
  }
  EXPECT_EQ(up.accepted(), 3);
  {
    const int c = client(rig.addr);
    Reader r(c);
    ASSERT_TRUE(send_str(c, get("/g")));
    Message m = r.read(true);
    ASSERT_TRUE(m.ok);
    // A chunked body, its second chunk sent after the head went upstream.
    ASSERT_TRUE(send_str(c,
                         "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "5\r\nhello\r\n"));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(send_str(c, "6\r\n world\r\n0\r\n\r\n"));
    m = r.read(true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.status, 200) << m.body;
    EXPECT_EQ(m.body, "A PUT /c 11 " + std::to_string(fnv("hello world")));
    ::close(c);
  }
  EXPECT_EQ(up.accepted(), 5);
  EXPECT_EQ(rig.hm().total(&proxy::HttpShardMetrics::retries), 2u);
}

// ---- the access log ----

struct TempDir {
  std::string path;
  TempDir() {
    char p[] = "/tmp/ringpoll-http-log-XXXXXX";
    if (mkdtemp(p)) path = p;
  }
  ~TempDir() {
    if (!path.empty()) (void)shell("rm -rf " + path);
  }
};

std::string read_text(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t k;
  while ((k = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, k);
  std::fclose(f);
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  size_t p = 0;
  while (p < s.size()) {
    size_t e = s.find(sep, p);
    if (e == std::string::npos) e = s.size();
    v.push_back(s.substr(p, e - p));
    p = e + 1;
  }
  return v;
}

// A strict reader of one flat JSON object ({"key": string | number | null | bool, ...}),
// as RFC 8259 has them; values come back as their text (strings unescaped).
bool parse_flat_json(const std::string& t, std::map<std::string, std::string>* out) {
  size_t i = 0;
  auto ws = [&] {
    while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) ++i;
  };
  auto str = [&](std::string* v) {
    if (i >= t.size() || t[i] != '"') return false;
    for (++i; i < t.size() && t[i] != '"'; ++i) {
      const auto u = static_cast<unsigned char>(t[i]);
      if (u < 0x20) return false;
      if (t[i] != '\\') {
        v->push_back(t[i]);
        continue;
      }
      if (++i >= t.size()) return false;
      const char e = t[i];
      if (e == 'u') {
        if (i + 4 >= t.size()) return false;
        const std::string hex = t.substr(i + 1, 4);
        if (hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return false;
        const unsigned long cp = std::strtoul(hex.c_str(), nullptr, 16);
        if (cp > 0xff) return false;  // enough for this log, which escapes bytes only
        v->push_back(static_cast<char>(cp));
        i += 4;
      } else if (std::string_view("\"\\/bfnrt").find(e) != std::string_view::npos) {
        v->push_back(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e);
      } else {
        return false;
      }
    }
    if (i >= t.size()) return false;
    ++i;
    return true;
  };
  ws();
  if (i >= t.size() || t[i++] != '{') return false;
  for (;;) {
    ws();
    std::string k, v;
    if (!str(&k)) return false;
    ws();
    if (i >= t.size() || t[i++] != ':') return false;
    ws();
    if (i < t.size() && t[i] == '"') {
      if (!str(&v)) return false;
    } else {
      const size_t b = i;
      while (i < t.size() &&
             std::string_view("-+.0123456789eEnulltrufas").find(t[i]) != std::string_view::npos)
        ++i;
      v = t.substr(b, i - b);
      const bool word = v == "null" || v == "true" || v == "false";
      char* end = nullptr;
      if (!word && (v.empty() || (std::strtod(v.c_str(), &end), *end != '\0'))) return false;
    }
    if (out->count(k)) return false;  // a duplicate key
    (*out)[k] = v;
    ws();
    if (i < t.size() && t[i] == ',') {
      ++i;
      continue;
    }
    if (i < t.size() && t[i] == '}') {
      ++i;
      ws();
      return i == t.size();
    }
    return false;
  }
}

// What curl says of one request: status, bytes it sent and received, its local port.
struct CurlRun {
  int status = 0;
  uint64_t sent = 0, received = 0;
  std::string port;
};
CurlRun curl(const std::string& args) {
  const std::string out = shell(
      "timeout 20 curl -sS -o /dev/null -w '%{http_code} %{size_request} %{size_upload} "
      "%{size_header} %{size_download} %{local_port}' " +
      args);
  const auto f = split(out, ' ');
  CurlRun r;
  if (f.size() != 6) return r;
  r.status = std::atoi(f[0].c_str());
  // size_request counts the body curl sent with the head (these bodies are small), so
  // size_upload (f[2]) is not added.
  r.sent = std::strtoull(f[1].c_str(), nullptr, 10);
  r.received = std::strtoull(f[3].c_str(), nullptr, 10) + std::strtoull(f[4].c_str(), nullptr, 10);
  r.port = f[5];
  return r;
}

// curl requests through the proxy, each logged with the fields it had: text, then JSON.
TYPED_TEST(HttpProxy, AccessLogHasALinePerRequestWithItsFieldsTextAndJson) {
  for (const bool json : {false, true}) {
    SCOPED_TRACE(json ? "json" : "text");
    HttpUpstream up("A");
    TempDir dir;
    ASSERT_FALSE(dir.path.empty());
    ProxySettings s = http_settings(up.address(), nullptr, {route("api", "a", "", "/api")});
    s.access_log.path = dir.path + "/access.log";
    s.access_log.json = json;
    HttpRig<TypeParam> rig(s);
    ASSERT_TRUE(rig.started);
    const std::string base = "http://" + rig.addr.to_string();
    struct Want {
      std::string method, target;
      CurlRun run;
      bool routed;
    };
    std::vector<Want> want = {
        {"GET", "/api/one?x=1&y=%22q%22", curl("'" + base + "/api/one?x=1&y=%22q%22'"), true},
        {"POST", "/api/form", curl("-d 'a=1&b=2' " + base + "/api/form"), true},
        {"HEAD", "/api/h", curl("-I " + base + "/api/h"), true},
        {"GET", "/elsewhere", curl(base + "/elsewhere"), false},
    };
    EXPECT_EQ(want[0].run.status, 200);
    EXPECT_EQ(want[1].run.status, 200);
    EXPECT_EQ(want[2].run.status, 200);
    EXPECT_EQ(want[3].run.status, 503);
    const std::string path = s.access_log.path;
    ASSERT_TRUE(wait_for([&] { return split(read_text(path), '\n').size() == want.size(); }))
        << read_text(path);
    // Each line as its fields, found by the client's port (curl's were sequential, but a
    // line is written when its response is out, which a client may see first).
    std::map<std::string, std::map<std::string, std::string>> by_client;
    for (const std::string& line : split(read_text(path), '\n')) {
      SCOPED_TRACE(line);
      std::map<std::string, std::string> f;
      if (json) {
        ASSERT_TRUE(parse_flat_json(line, &f)) << "not a JSON object";
        EXPECT_EQ(f.size(), 11u);
      } else {
        // TIME CLIENT "METHOD TARGET" STATUS IN OUT UPSTREAM ROUTE TTFB TOTAL
        const auto t = split(line, ' ');
        ASSERT_EQ(t.size(), 11u);
        ASSERT_EQ(t[2].front(), '"');
        ASSERT_EQ(t[3].back(), '"');
        f = {{"time", t[0]},
             {"client", t[1]},
             {"method", t[2].substr(1)},
             {"target", t[3].substr(0, t[3].size() - 1)},
             {"status", t[4]},
             {"bytes_in", t[5]},
             {"bytes_out", t[6]},
             {"upstream", t[7]},
             {"route", t[8]},
             {"ttfb_ms", t[9]},
             {"total_ms", t[10]}};
      }
      by_client[f["client"]] = f;
    }
    for (const Want& w : want) {
      SCOPED_TRACE(w.method + " " + w.target);
      ASSERT_EQ(by_client.count("127.0.0.1:" + w.run.port), 1u) << read_text(path);
      auto& f = by_client["127.0.0.1:" + w.run.port];
      const std::string& time = f["time"];
      ASSERT_EQ(time.size(), 24u);
      EXPECT_EQ(time[10], 'T');
      EXPECT_EQ(time.back(), 'Z');
      EXPECT_EQ(f["method"], w.method);
      EXPECT_EQ(f["target"], w.target);
      EXPECT_EQ(f["status"], std::to_string(w.run.status));
      EXPECT_EQ(f["bytes_in"], std::to_string(w.run.sent));
      EXPECT_EQ(f["bytes_out"], std::to_string(w.run.received));
      const std::string none = json ? "" : "-";
      EXPECT_EQ(f["upstream"], w.routed ? up.address().to_string() : none);
      EXPECT_EQ(f["route"], w.routed ? "web/api" : none);
      EXPECT_EQ(f["ttfb_ms"] == (json ? "null" : "-"), !w.routed);
      const double total = std::atof(f["total_ms"].c_str());
      EXPECT_GE(total, 0.0);
      EXPECT_LT(total, 20000.0);
      if (w.routed) {
        EXPECT_LE(std::atof(f["ttfb_ms"].c_str()), total);
      }
    }
    ASSERT_NE(rig.px->access_log(), nullptr);
    EXPECT_EQ(rig.px->access_log()->lines(), want.size());
    EXPECT_EQ(rig.px->access_log()->dropped(), 0u);
  }
}

// The line formats themselves, with fields a line must not be split or broken by.
TEST(HttpAccessLog, LinesEscapeWhatWouldSplitThemAndSayDashOrNullWhenUnknown) {
  proxy::AccessRecord r;
  r.wall_ns = 1'796'623'262'123'456'789;  // 2026-12-07T06:01:02.123Z
  r.client = "127.0.0.1:40312";
  r.method = "GET";
  r.target = std::string_view("/a b\"c\\d\x01\x80", 10);
  r.status = 200;
  r.bytes_in = 78;
  r.bytes_out = 311;
  r.upstream = "127.0.0.1:8080";
  r.listener = "web";
  r.route = "api";
  r.ttfb_ns = 412'345;
  r.total_ns = 1'530'000;
  std::string text, json;
  proxy::format_access_line(r, false, &text);
  proxy::format_access_line(r, true, &json);
  EXPECT_EQ(
      text,
      "2026-12-07T06:01:02.123Z 127.0.0.1:40312 \"GET /a\\x20b\\x22c\\x5cd\\x01\\x80\" 200 78 "
      "311 127.0.0.1:8080 web/api 0.412 1.530\n");
  EXPECT_EQ(json,
            "{\"time\":\"2026-12-07T06:01:02.123Z\",\"client\":\"127.0.0.1:40312\","
            "\"method\":\"GET\",\"target\":\"/a b\\\"c\\\\d\\u0001\\u0080\",\"status\":200,"
            "\"bytes_in\":78,\"bytes_out\":311,\"upstream\":\"127.0.0.1:8080\","
            "\"route\":\"web/api\",\"ttfb_ms\":0.412,\"total_ms\":1.530}\n");
  std::map<std::string, std::string> f;
  ASSERT_TRUE(parse_flat_json(json.substr(0, json.size() - 1), &f));
  EXPECT_EQ(f["target"], std::string(r.target));
  proxy::AccessRecord none;
  none.wall_ns = r.wall_ns;
  none.status = 400;
  text.clear();
  json.clear();
  proxy::format_access_line(none, false, &text);
  proxy::format_access_line(none, true, &json);
  EXPECT_EQ(text, "2026-12-07T06:01:02.123Z - \"- -\" 400 0 0 - - - 0.000\n");
  EXPECT_NE(json.find("\"method\":\"\",\"target\":\"\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"route\":\"\",\"ttfb_ms\":null,\"total_ms\":0.000}"), std::string::npos)
      << json;
}

// A log on a FIFO whose reader never reads: the writer cannot write, the shard's buffer
// fills, and lines are dropped and counted while every request is answered at once.
TYPED_TEST(HttpProxy, AccessLogNobodyReadsDropsLinesAndNeverStallsRequests) {
  HttpUpstream up("A");
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string fifo = dir.path + "/log.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // never reads
  ASSERT_GE(reader, 0);
  {
    ProxySettings s = http_settings(up.address());
    s.access_log.path = fifo;
    s.access_log.buffer_bytes = 4096;
    HttpRig<TypeParam> rig(s);
    ASSERT_TRUE(rig.started);
    ASSERT_TRUE(rig.start_admin());
    const int c = client(rig.addr);
    Reader r(c);
    // 2000 lines of ~110 bytes: three times what the FIFO (64 KiB) and the buffer hold.
    constexpr int kRequests = 2000;
    for (int i = 0; i < kRequests; ++i) {
      ASSERT_TRUE(send_str(c, get("/n" + std::to_string(i))));
      const Message m = r.read(true);  // waits at most 10 s: a stalled shard fails here
      ASSERT_TRUE(m.ok) << "request " << i;
      ASSERT_EQ(m.status, 200) << "request " << i;
    }
    ::close(c);
    const proxy::AccessLog* log = rig.px->access_log();
    ASSERT_NE(log, nullptr);
    EXPECT_TRUE(wait_for([&] { return log->lines() + log->dropped() == kRequests; }));
    EXPECT_GT(log->dropped(), 0u);
    std::string metrics;
    ASSERT_EQ(admin_get(rig.px->admin_address(), "/metrics", &metrics), 200);
    const std::string key = "\nringpoll_proxy_access_log_dropped_total ";
    const size_t p = metrics.find(key);
    ASSERT_NE(p, std::string::npos) << metrics;
    EXPECT_GT(std::strtoull(metrics.c_str() + p + key.size(), nullptr, 10), 0u);
  }
  ::close(reader);
}

// ---- Upgrade: a WebSocket echo through the tunnel ----

// SHA-1 (FIPS 180-4), for the handshake's Sec-WebSocket-Accept.
std::string sha1(const std::string& msg) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  std::string m = msg;
  m.push_back(static_cast<char>(0x80));
  while (m.size() % 64 != 56) m.push_back('\0');
  const uint64_t bits = static_cast<uint64_t>(msg.size()) * 8;
  for (int i = 7; i >= 0; --i) m.push_back(static_cast<char>(bits >> (i * 8)));
  auto rol = [](uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
  for (size_t off = 0; off < m.size(); off += 64) {
    uint32_t w[80];
    for (int i = 0; i < 16; ++i) {
      w[i] = 0;
      for (int k = 0; k < 4; ++k)
        w[i] = (w[i] << 8) | static_cast<unsigned char>(m[off + static_cast<size_t>(i * 4 + k)]);
    }
    for (int i = 16; i < 80; ++i) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; ++i) {
      const uint32_t f = i < 20   ? (b & c) | (~b & d)
                         : i < 40 ? b ^ c ^ d
                         : i < 60 ? (b & c) | (b & d) | (c & d)
                                  : b ^ c ^ d;
      const uint32_t k = i < 20   ? 0x5A827999
                         : i < 40 ? 0x6ED9EBA1
                         : i < 60 ? 0x8F1BBCDC
                                  : 0xCA62C1D6;
      const uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d;
      d = c;
      c = rol(b, 30);
      b = a;
      a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
  }
  std::string out;
  for (uint32_t x : h)
    for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>(x >> (i * 8)));
  return out;
}

std::string base64(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) v |= static_cast<unsigned char>(in[i + 2]);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back(i + 2 < in.size() ? kAlphabet[v & 63] : '=');
  }
  return out;
}

std::string ws_accept(const std::string& key) {
  return base64(sha1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"));  // RFC 6455 1.3
}

// One WebSocket frame (RFC 6455 5.2), FIN set; masked as a client must.
std::string ws_frame(int opcode, const std::string& payload, bool masked) {
  std::string f;
  f.push_back(static_cast<char>(0x80 | opcode));
  const char mbit = masked ? static_cast<char>(0x80) : 0;
  if (payload.size() < 126) {
    f.push_back(static_cast<char>(mbit | static_cast<char>(payload.size())));
  } else if (payload.size() < 65536) {
    f.push_back(static_cast<char>(mbit | 126));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size()));
  } else {
    f.push_back(static_cast<char>(mbit | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>(payload.size() >> (i * 8)));
  }
  const char mask[4] = {0x12, 0x34, 0x56, 0x78};
  if (masked) f.append(mask, 4);
  for (size_t i = 0; i < payload.size(); ++i)
    f.push_back(masked ? static_cast<char>(payload[i] ^ mask[i % 4]) : payload[i]);
  return f;
}

// Reads one frame from r (unmasking it); false at the end of the stream or on a bad one.
bool ws_read(Reader& r, int* opcode, std::string* payload) {
  std::string& b = r.buffered();
  auto need = [&](size_t n) {
    while (b.size() < n)
      if (!r.fill()) return false;
    return true;
  };
  if (!need(2)) return false;
  *opcode = b[0] & 0x0f;
  const bool masked = (b[1] & 0x80) != 0;
  uint64_t len = b[1] & 0x7f;
  size_t hdr = 2;
  if (len == 126 || len == 127) {
    const size_t n = len == 126 ? 2 : 8;
    if (!need(2 + n)) return false;
    len = 0;
    for (size_t i = 0; i < n; ++i) len = (len << 8) | static_cast<unsigned char>(b[2 + i]);
    hdr += n;
  }
  const size_t mask_at = hdr;
  if (masked) hdr += 4;
  if (!need(hdr + len)) return false;
  payload->assign(b, hdr, len);
  if (masked)
    for (size_t i = 0; i < len; ++i) (*payload)[i] ^= b[mask_at + i % 4];
  b.erase(0, hdr + len);
  return true;
}

// A WebSocket echo server: the handshake (101 with its accept key, then a "hello" frame in
// the same write), then every data frame echoed until a close frame, which is answered.
class WsEchoUpstream {
 public:
  WsEchoUpstream() : srv_([this](int fd) { serve(fd); }) {}
  const SocketAddress& address() const { return srv_.address(); }
  std::string head() {
    std::lock_guard<std::mutex> l(mu_);
    return head_;
  }

 private:
  void serve(int fd) {
    Reader r(fd);
    const Message req = r.read(false);
    if (!req.ok) return;
    {
      std::lock_guard<std::mutex> l(mu_);
      head_ = req.head;
    }
    const std::string resp =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: " +
        ws_accept(req.field("sec-websocket-key")) + "\r\n\r\n" + ws_frame(1, "hello", false);
    send_all(fd, resp.data(), resp.size());
    int op = 0;
    std::string p;
    while (ws_read(r, &op, &p)) {
      const std::string f = ws_frame(op, p, false);
      send_all(fd, f.data(), f.size());
      if (op == 8) break;  // close: answered, then the connection ends
    }
    ::shutdown(fd, SHUT_RDWR);
  }
  std::mutex mu_;
  std::string head_;
  TestUpstream srv_;
};

TYPED_TEST(HttpProxy, UpgradeTurnsTheConnectionIntoAWebSocketTunnel) {
  WsEchoUpstream ws;
  HttpUpstream plain("B");
  const SocketAddress pb = plain.address();
  HttpRig<TypeParam> rig(
      http_settings(ws.address(), &pb, {route("plain", "b", "", "/plain"), route("ws", "a")}));
  ASSERT_TRUE(rig.started);
  const std::string key = "dGhlIHNhbXBsZSBub25jZQ==";  // RFC 6455 1.3's example
  const std::string hs =
      "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
      "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " +
      key + "\r\nSec-WebSocket-Version: 13\r\n\r\n";
  {
    const int c = client(rig.addr);
    Reader r(c);
    // The first frame rides in the same packet as the handshake.
    ASSERT_TRUE(send_str(c, hs + ws_frame(1, "early", true)));
    const Message m = r.read(true);
    ASSERT_TRUE(m.ok);
    ASSERT_EQ(m.status, 101) << m.head << r.buffered();
    EXPECT_EQ(m.field("upgrade"), "websocket");
    EXPECT_EQ(m.field("connection"), "upgrade");
    EXPECT_EQ(m.field("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    Message upm;
    upm.head = ws.head();
    const std::string& up_head = upm.head;
    EXPECT_EQ(upm.field("upgrade"), "websocket") << up_head;
    EXPECT_NE(up_head.find("\r\nConnection: upgrade\r\n"), std::string::npos) << up_head;
    EXPECT_EQ(up_head.find("keep-alive"), std::string::npos) << up_head;
    int op = 0;
    std::string p;
    ASSERT_TRUE(ws_read(r, &op, &p));
    EXPECT_EQ(op, 1);
    EXPECT_EQ(p, "hello");
    ASSERT_TRUE(ws_read(r, &op, &p));
    EXPECT_EQ(p, "early");
    for (const size_t n : {size_t{10}, size_t{300}, size_t{70000}, size_t{1} << 20}) {
      const std::string payload = pattern(n);
      ASSERT_TRUE(send_str(c, ws_frame(2, payload, true)));
      ASSERT_TRUE(ws_read(r, &op, &p)) << n;
      EXPECT_EQ(op, 2);
      EXPECT_EQ(p.size(), n);
      EXPECT_EQ(fnv(p), fnv(payload)) << n;
    }
    ASSERT_TRUE(send_str(c, ws_frame(8, "", true)));
    ASSERT_TRUE(ws_read(r, &op, &p));
    EXPECT_EQ(op, 8);
    EXPECT_TRUE(closed_within(c, 5)) << "the upstream's close reaches the client";
    ::close(c);
  }
  EXPECT_TRUE(wait_for([&] { return rig.hm().status_class(1, 1) == 1; }));
  // An upgrade the upstream declines (200): the connection stays HTTP, keep-alive.
  {
    const int c = client(rig.addr);
    Reader r(c);
    ASSERT_TRUE(send_str(c,
                         "GET /plain/x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\n\r\n"));
    Message m = r.read(true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.status, 200);
    ASSERT_TRUE(send_str(c, get("/plain/y")));
    m = r.read(true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.body.substr(0, 12), "B GET /plain");
    ::close(c);
  }
  // Without "upgrade" in Connection, Upgrade is hop-by-hop: removed, and a 101 is refused.
  {
    const int c = client(rig.addr);
    ASSERT_TRUE(send_str(c,
                         "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                         "Sec-WebSocket-Key: " +
                             key + "\r\n\r\n"));
    const std::string got = recv_all(c);
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 502") << got;
    ::close(c);
  }
}

// ---- the message helpers ----

TEST(HttpMessage, ChunkedReaderStopsAtTheEndAndRefusesBadFraming) {
  const std::string ok = "4;a=b\r\nwxyz\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\nNEXT";
  for (size_t split = 0; split <= ok.size() - 4; ++split) {
    proxy::ChunkedReader r;
    size_t used1 = 0, used2 = 0;
    auto res = r.feed(ok.data(), split, &used1);
    EXPECT_EQ(used1, split);
    if (res != proxy::ChunkedReader::Result::kDone)
      res = r.feed(ok.data() + split, ok.size() - split, &used2);
    EXPECT_EQ(res, proxy::ChunkedReader::Result::kDone) << split;
    EXPECT_EQ(used1 + used2, ok.size() - 4) << "stops before the next request, split " << split;
  }
  for (const char* bad : {"\r\n", "g\r\n", "4\nwxyz\r\n", "4\r\nwxyzz\r\n", "1234567890abcdef0\r\n",
                          "4 \r\nwxyz\r\n", "0\r\nT: v\n\r\n", "0\r\n v\r\n\r\n"}) {
    proxy::ChunkedReader r;
    size_t used = 0;
    EXPECT_EQ(r.feed(bad, std::strlen(bad), &used), proxy::ChunkedReader::Result::kError) << bad;
  }
}

TEST(HttpMessage, ResponseHeadsWithAmbiguousFramingAreRefused) {
  proxy::ResponseHead h;
  std::string why;
  EXPECT_TRUE(
      proxy::parse_response_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, &h, &why));
  EXPECT_EQ(h.framing, proxy::ResponseHead::Framing::kLength);
  EXPECT_TRUE(proxy::parse_response_head("HTTP/1.1 200 OK\r\n\r\n", false, &h, &why));
  EXPECT_EQ(h.framing, proxy::ResponseHead::Framing::kClose);
  EXPECT_FALSE(h.keep_alive);
  EXPECT_TRUE(
      proxy::parse_response_head("HTTP/1.1 304 OK\r\nContent-Length: 5\r\n\r\n", false, &h, &why));
  EXPECT_EQ(h.framing, proxy::ResponseHead::Framing::kNone);
  for (const char* bad :
       {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nX: 1\r\n  fold\r\n\r\n"}) {
    EXPECT_FALSE(proxy::parse_response_head(bad, false, &h, &why)) << bad;
  }
  EXPECT_EQ(proxy::response_head_length("HTTP/1.1 200 OK\nX: 1\r\n\r\n", 24, 1000), -1);
  EXPECT_EQ(proxy::response_head_length("HTTP/1.1 200 OK\r\n\r\n", 19, 1000), 19);
  EXPECT_EQ(proxy::response_head_length("HTTP/1.1 200 OK\r\n\r", 18, 1000), 0);
}

// ---- the config: [[proxy.route]] and [http] ----

constexpr const char* kHttpConfigHead =
    "[[proxy.pool]]\nname = \"a\"\nupstreams = [\"127.0.0.1:9\"]\n"                 // lines 1-3
    "[[proxy.pool]]\nname = \"b\"\nupstreams = [\"127.0.0.1:10\"]\n"                // lines 4-6
    "[[proxy.listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n"                // lines 7-9
    "pool = \"a\"\nprotocol = \"http\"\n"                                           // lines 10-11
    "[[proxy.listener]]\nname = \"l4\"\nlisten = \"127.0.0.1:0\"\npool = \"a\"\n";  // 12-15

TEST(HttpConfig, RoutesReachTheListenerInOrderWithTheirTimeouts) {
  tuning::Config c;
  const std::string text = std::string(kHttpConfigHead) +
                           "[[proxy.route]]\nname = \"api\"\nlistener = \"web\"\npool = \"b\"\n"
                           "host = \"*.example.com\"\npath_prefix = \"/api\"\nmethod = \"GET\"\n"
                           "connect_ms = 7\nresponse_header_ms = 8\n"
                           "[[proxy.route]]\nname = \"rest\"\nlistener = \"web\"\npool = \"a\"\n"
                           "[http]\nforwarded = true\nvia = false\nupstream_idle_ms = 1500\n";
  const auto err = tuning::apply_toml(text, "http.toml", &c);
  ASSERT_FALSE(err) << err->to_string();
  ProxySettings s;
  std::string why;
  ASSERT_TRUE(proxy::settings_from_config(c, &s, &why)) << why;
  ASSERT_TRUE(s.listeners[0].http);
  EXPECT_FALSE(s.listeners[1].http);
  const auto& h = s.listeners[0].http_settings;
  ASSERT_EQ(h.routes.size(), 2u);
  EXPECT_EQ(h.routes[0].name, "api");
  EXPECT_EQ(h.routes[0].host, "*.example.com");
  EXPECT_EQ(h.routes[0].pool_index, 1);
  EXPECT_EQ(h.routes[0].connect_timeout_ns, 7 * kMs);
  EXPECT_EQ(h.routes[0].response_header_ns, 8 * kMs);
  EXPECT_EQ(h.routes[1].pool_index, 0);
  EXPECT_TRUE(h.forwarded);
  EXPECT_FALSE(h.via);
  EXPECT_EQ(h.upstream_idle_ns, 1500 * kMs);
  // The printed config reads back the same.
  tuning::Config again;
  ASSERT_FALSE(tuning::apply_toml(tuning::print_config(c), "printed", &again));
  EXPECT_TRUE(again == c);
  // A listener without routes gets one default route to its own pool.
  tuning::Config d;
  ASSERT_FALSE(tuning::apply_toml(kHttpConfigHead, "d.toml", &d));
  ASSERT_TRUE(proxy::settings_from_config(d, &s, &why)) << why;
  ASSERT_EQ(s.listeners[0].http_settings.routes.size(), 1u);
  EXPECT_EQ(s.listeners[0].http_settings.routes[0].pool, "a");
}

TEST(HttpConfig, BadRoutesNameTheFileLineAndKey) {
  struct Case {
    std::string route;
    const char* says;
  } cases[] = {
      {"name = \"r\"\nlistener = \"nope\"\npool = \"a\"\n",
       "http.toml:18: proxy.route[0].listener: no [[proxy.listener]] is named \"nope\""},
      {"name = \"r\"\nlistener = \"l4\"\npool = \"a\"\n",
       "http.toml:18: proxy.route[0].listener: listener \"l4\" is not an HTTP listener"},
      {"name = \"r\"\nlistener = \"web\"\npool = \"zz\"\n",
       "http.toml:19: proxy.route[0].pool: no [[proxy.pool]] is named \"zz\""},
      {"name = \"r\"\nlistener = \"web\"\npool = \"a\"\nhost = \"a.*.com\"\n",
       "http.toml:20: proxy.route[0].host: must be a host name"},
      {"name = \"r\"\nlistener = \"web\"\npool = \"a\"\npath_prefix = \"api\"\n",
       "http.toml:20: proxy.route[0].path_prefix: must start with '/'"},
      {"name = \"r\"\nlistener = \"web\"\npool = \"a\"\nconnect_ms = 0\n",
       "http.toml:20: proxy.route[0].connect_ms: must be in 1..3600000, got 0"},
      {"name = \"r\"\npool = \"a\"\n", "proxy.route[0].listener: is required"},
  };
  for (const Case& k : cases) {
    tuning::Config c;
    const auto err = tuning::apply_toml(
        std::string(kHttpConfigHead) + "[[proxy.route]]\n" + k.route, "http.toml", &c);
    ASSERT_TRUE(err) << k.route;
    EXPECT_NE(err->to_string().find(k.says), std::string::npos)
        << err->to_string() << "\nwanted: " << k.says;
  }
  tuning::Config c;
  const auto err = tuning::apply_toml(
      "[[proxy.pool]]\nname = \"a\"\nupstreams = [\"127.0.0.1:9\"]\n[[proxy.listener]]\n"
      "name = \"web\"\nlisten = \"127.0.0.1:0\"\npool = \"a\"\nprotocol = \"http\"\n"
      "proxy_protocol = \"v1\"\n",
      "pp.toml", &c);
  ASSERT_TRUE(err);
  EXPECT_NE(err->to_string().find("pp.toml:9: proxy.listener[0].proxy_protocol: HTTP listeners"),
            std::string::npos)
      << err->to_string();
}

TEST(HttpConfig, AccessLogKeysReachTheSettingsAndBadOnesNameTheLine) {
  char dir[] = "/tmp/ringpoll-http-cfg-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string log = std::string(dir) + "/access.log";
  tuning::Config c;
  const auto err =
      tuning::apply_toml(std::string(kHttpConfigHead) + "[http]\naccess_log = \"" + log +
                             "\"\naccess_log_format = \"json\"\n"
                             "access_log_buffer_kib = 8\n",
                         "http.toml", &c);
  ASSERT_FALSE(err) << err->to_string();
  ProxySettings s;
  std::string why;
  ASSERT_TRUE(proxy::settings_from_config(c, &s, &why)) << why;
  EXPECT_EQ(s.access_log.path, log);
  EXPECT_TRUE(s.access_log.json);
  EXPECT_EQ(s.access_log.buffer_bytes, 8192u);
  EXPECT_EQ(::access(log.c_str(), F_OK), -1) << "reading the config created the log";
  ::rmdir(dir);
  struct Case {
    std::string line;
    const char* says;
  } cases[] = {
      {"access_log = \"/nonexistent-ringpoll-dir/a.log\"",
       "http.toml:17: http.access_log: cannot create \"/nonexistent-ringpoll-dir/a.log\" in "
       "\"/nonexistent-ringpoll-dir\""},
      {"access_log = \"/tmp/\"", "http.toml:17: http.access_log: names a directory"},
      {"access_log = \"\"", "http.toml:17: http.access_log: must not be empty"},
      {"access_log_format = \"xml\"",
       "http.toml:17: http.access_log_format: must be one of \"text\", \"json\""},
      {"access_log_buffer_kib = 1",
       "http.toml:17: http.access_log_buffer_kib: must be in 4..65536"},
  };
  for (const Case& k : cases) {
    tuning::Config bad;
    const auto e = tuning::apply_toml(std::string(kHttpConfigHead) + "[http]\n" + k.line + "\n",
                                      "http.toml", &bad);
    ASSERT_TRUE(e) << k.line;
    EXPECT_NE(e->to_string().find(k.says), std::string::npos)
        << e->to_string() << "\nwanted: " << k.says;
  }
  // The access log is on by default and off in the throughput profile.
  tuning::Config d, t;
  ASSERT_FALSE(tuning::load_profile("balanced", &d));
  EXPECT_EQ(d.http.access_log, "stderr");
  ASSERT_FALSE(tuning::load_profile("throughput", &t));
  EXPECT_EQ(t.http.access_log, "off");
}

}  // namespace
}  // namespace ringpoll::test
