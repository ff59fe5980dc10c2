// ringpoll-proxy's HTTP mode (apps/proxy/http_relay.h) end to end on every Linux backend:
// an in-process proxy, blocking HTTP upstreams and clients on their own threads. Routing,
// keep-alive reuse, forwarding and hop-by-hop fields, bodies both ways (length, chunked
// with trailers, close-delimited), pipelining split at every byte, 100-continue,
// HTTP/1.0, upstreams that close idle connections, 502/503/504, and every request
// smuggling case refused before an upstream sees a byte. Plus the message helpers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
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
  bool fill(int timeout_ms = 10000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char b[65536];
    const ssize_t k = ::recv(fd_, b, sizeof b, 0);
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

}  // namespace
}  // namespace ringpoll::test
