// ringpoll-proxy with TLS (issue 18), the binary against real peers on epoll and io_uring
// completion mode: termination (an OpenSSL client echoing 16 MiB each way through the
// proxy to a plain echo server, with checksums), origination (to ringpoll-serve's TLS echo,
// verified against the right CA, refused and counted against a wrong one), a TLS 1.2
// client against tls.min_version = "1.3" and a silent client, counted by reason in the
// admin endpoint, a SIGHUP that swaps the certificate under an open connection, and the
// config errors of the new keys.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "proxy/proxy_test_helpers.h"
#include "support/test_env.h"
#include "tls/tls_context.h"
#include "tls/tls_support.h"

namespace ringpoll::test {
namespace {

// An HTTP/1.1 keep-alive upstream's answer to each request: what it was sent, as
// "proto=<X-Forwarded-Proto> len=<body bytes> sum=<FNV-1a of the body>" (Content-Length
// bodies only).
void answer_what_was_seen(int fd) {
  std::string in;
  char b[65536];
  for (;;) {
    size_t end;
    while ((end = in.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t k = ::recv(fd, b, sizeof b, 0);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return;
      in.append(b, static_cast<size_t>(k));
    }
    const std::string head = in.substr(0, end + 2);
    in.erase(0, end + 4);
    auto field = [&](const std::string& name) {
      const size_t at = head.find("\r\n" + name + ": ");
      if (at == std::string::npos) return std::string();
      const size_t from = at + name.size() + 4;
      return head.substr(from, head.find("\r\n", from) - from);
    };
    const size_t len = static_cast<size_t>(std::atoll(field("Content-Length").c_str()));
    while (in.size() < len) {
      const ssize_t k = ::recv(fd, b, sizeof b, 0);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return;
      in.append(b, static_cast<size_t>(k));
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; ++i) h = (h ^ static_cast<uint8_t>(in[i])) * 1099511628211ull;
    in.erase(0, len);
    const std::string body = "proto=" + field("X-Forwarded-Proto") + " len=" + std::to_string(len) +
                             " sum=" + std::to_string(h) + "\n";
    const std::string out =
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size()))
      return;
  }
}

// The backends the proxy's TLS paths are run on, as the config selects them.
const char* const kBackendSets[] = {"engine.backend=epoll", "io_uring.mode=completion"};

std::string write_config(const std::string& name, const std::string& text) {
  const std::string path = test_pki().path(name.c_str());
  if (FILE* f = std::fopen(path.c_str(), "w")) {
    std::fputs(text.c_str(), f);
    std::fclose(f);
  }
  return path;
}

std::unique_ptr<Program> start_proxy(const std::string& config, const char* backend_set) {
  return start_program(RINGPOLL_PROXY_BIN, {"--config", config, "--admin", "127.0.0.1:0", "--set",
                                            "engine.shards=1", "--set", backend_set});
}

// ringpoll-serve's echo on an ephemeral port, plain or (with_tls) with the ECDSA leaf.
std::unique_ptr<Program> start_echo(bool with_tls) {
  const TestPki& pki = test_pki();
  std::vector<std::string> args = {"--mode",      "echo",  "--listen",
                                   "127.0.0.1:0", "--set", "engine.shards=1"};
  if (with_tls) {
    for (const std::string& a : {std::string("--tls-cert"), pki.path("ec.pem"),
                                 std::string("--tls-key"), pki.path("ec.key")})
      args.push_back(a);
  }
  return start_program(RINGPOLL_SERVE_BIN, args);
}

std::string pool_toml(const std::string& name, int port, const std::string& extra = "") {
  return "[[proxy.pool]]\nname = \"" + name +
         "\"\nupstreams = [\"127.0.0.1:" + std::to_string(port) + "\"]\n" + extra;
}
std::string listener_toml(const std::string& name, const std::string& pool,
                          const std::string& extra = "") {
  return "[[proxy.listener]]\nname = \"" + name + "\"\nlisten = \"127.0.0.1:0\"\npool = \"" + pool +
         "\"\n" + extra;
}
// A listener's tls.cert/tls.key lines for the PKI's leaf `leaf` ("ec", "rsa").
std::string tls_keys(const std::string& leaf) {
  const TestPki& pki = test_pki();
  return "tls.cert = \"" + pki.path((leaf + ".pem").c_str()) + "\"\ntls.key = \"" +
         pki.path((leaf + ".key").c_str()) + "\"\n";
}

// One listener "front" terminating TLS with the PKI's leaf `leaf` (and `extra` keys) in
// front of pool "echo" at 127.0.0.1:port; `before`: sections ahead of the pool.
std::string terminating_config(int port, const std::string& leaf, const std::string& extra = "",
                               const std::string& before = "") {
  return before + pool_toml("echo", port) + listener_toml("front", "echo", tls_keys(leaf) + extra);
}

// A plain echo upstream and a proxy on `backend_set` in front of it, configured by the
// file `name` holding make(upstream port).
struct Rig {
  std::unique_ptr<Program> up, px;
  std::string cfg;
  bool ok() const { return up->port > 0 && px->ports.size() >= 2; }
  std::string why() const { return up->line + " / " + px->line; }
};
template <class Make>
Rig start_rig(const std::string& name, const char* backend_set, Make&& make) {
  Rig r;
  r.up = start_echo(false);
  r.cfg = write_config(name, make(r.up->port));
  r.px = start_proxy(r.cfg, backend_set);
  return r;
}

// The value of one sample of the admin page (-1 when it is not there).
int64_t metric(int admin_port, const std::string& sample) {
  std::string out;
  sh("curl -sS http://127.0.0.1:" + std::to_string(admin_port) + "/metrics", &out);
  const size_t at = out.find("\n" + sample + " ");
  return at == std::string::npos ? -1 : std::atoll(out.c_str() + at + sample.size() + 2);
}
// Polls the sample until it reads `want` (the proxy counts after it answered): the last value.
int64_t wait_metric(int admin_port, const std::string& sample, int64_t want) {
  int64_t v = -1;
  for (int i = 0; i < 100 && (v = metric(admin_port, sample)) != want; ++i) usleep(50'000);
  return v;
}
std::string failures(const char* side, const char* reason) {
  return std::string("ringpoll_proxy_tls_handshake_failures_total{side=\"") + side +
         "\",reason=\"" + reason + "\"}";
}

std::unique_ptr<tls::TlsContext> client_ctx() {
  std::string why;
  tls::TlsOptions co;
  co.ca_file = test_pki().path("ca.pem");
  auto c = tls::TlsContext::client(co, &why);
  EXPECT_TRUE(c) << why;
  return c;
}

// Writes `text` and reads it back over an established TLS connection.
bool tls_echo(SSL* ssl, const std::string& text) {
  if (SSL_write(ssl, text.data(), static_cast<int>(text.size())) != static_cast<int>(text.size()))
    return false;
  std::string back(text.size(), '\0');
  for (size_t got = 0; got < back.size();) {
    const int n = SSL_read(ssl, back.data() + got, static_cast<int>(back.size() - got));
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return back == text;
}

// A blocking plain connection to 127.0.0.1:port with a 10 s receive timeout.
int plain_connect(int port) {
  const int fd = tcp_connect(static_cast<uint16_t>(port));
  if (fd < 0) return fd;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// The subject line `openssl s_client` prints for the certificate served on port.
std::string served_subject(int port) {
  std::string out;
  sh("timeout 10 openssl s_client -connect 127.0.0.1:" + std::to_string(port) + " -CAfile " +
         test_pki().path("ca.pem") + " </dev/null",
     &out);
  const size_t at = out.find("subject=");
  return at == std::string::npos ? "(no subject in: " + out + ")"
                                 : out.substr(at, out.find('\n', at) - at);
}

// Termination: an OpenSSL client verifies the proxy's certificate, echoes a line and then
// 16 MiB each way (checksums of what went and came back) through the proxy to a plain
// echo server; the handshake is counted; idle, the connection holds no relay buffer; the
// start-up line names the listener as TLS and its record path.
TEST(ProxyTls, TerminatesAndRelays16MiBEachWay) {
  auto cctx = client_ctx();
  ASSERT_TRUE(cctx);
  for (const char* b : kBackendSets) {
    SCOPED_TRACE(b);
    Rig r = start_rig("term.toml", b, [](int port) { return terminating_config(port, "ec"); });
    ASSERT_TRUE(r.ok()) << r.why();
    auto& px = r.px;
    EXPECT_NE(px->line.find("(front tls -> pool echo: 1 upstream)"), std::string::npos) << px->line;
    EXPECT_NE(px->line.find(", tls userspace"), std::string::npos) << px->line;
    TlsClient c;
    ASSERT_TRUE(tls_connect(cctx->new_ssl("localhost"), px->port, &c));
    EXPECT_TRUE(tls_echo(c.ssl, "hello through TLS\n"));
    size_t echoed = 0;
    EXPECT_TRUE(echo_checked(c.ssl, 16u << 20, &echoed)) << "echo stopped after " << echoed;
    const int admin = px->ports.back();
    // Idle, the open connection holds no relay buffer in either direction.
    EXPECT_EQ(wait_metric(admin, "ringpoll_proxy_relay_buffers", 0), 0);
    EXPECT_EQ(wait_metric(admin, "ringpoll_proxy_tls_handshakes_total{side=\"client\"}", 1), 1);
    const int64_t up_bytes = (16 << 20) + 18;
    EXPECT_EQ(wait_metric(admin, "ringpoll_proxy_bytes_total{direction=\"client_to_upstream\"}",
                          up_bytes),
              up_bytes);
  }
}

// An HTTP listener with tls.cert: curl verifies the proxy's certificate, negotiates
// http/1.1 by ALPN even when it offers h2, and sends a GET then a 1 MiB POST on one kept-alive
// connection; the upstream sees both, with X-Forwarded-Proto: https and every body byte
// (length and checksum); the handshake is counted once; idle, the connection holds no
// buffer; a client that is not TLS is refused and another is served after it.
TEST(ProxyTls, HttpListenerTerminatesTlsAndKeepsConnectionsAlive) {
  const TestPki& pki = test_pki();
  TestUpstream up(answer_what_was_seen);
  std::string body(1u << 20, '\0');
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < body.size(); ++i) {
    body[i] = static_cast<char>('a' + (i * 7 + i / 1000) % 26);
    h = (h ^ static_cast<uint8_t>(body[i])) * 1099511628211ull;
  }
  const std::string body_file = write_config("https-body.bin", body);
  for (const char* b : kBackendSets) {
    SCOPED_TRACE(b);
    const std::string cfg = write_config(
        "https.toml", pool_toml("web", up.address().port()) +
                          listener_toml("front", "web", "protocol = \"http\"\n" + tls_keys("ec")));
    auto px = start_proxy(cfg, b);
    ASSERT_GE(px->ports.size(), 2u) << px->line;
    EXPECT_NE(px->line.find("(front https: 1 route)"), std::string::npos) << px->line;
    const std::string url = "https://localhost:" + std::to_string(px->port);
    std::string out;
    ASSERT_TRUE(sh("curl -sS --http2 --max-time 20 --cacert " + pki.path("ca.pem") +
                       " --resolve localhost:" + std::to_string(px->port) +
                       ":127.0.0.1 -w 'version=%{http_version} connects=%{num_connects}\\n' " +
                       url + "/a --next --http2 --max-time 20 --cacert " + pki.path("ca.pem") +
                       " --data-binary @" + body_file +
                       " -w 'version=%{http_version} connects=%{num_connects}\\n' " + url + "/b",
                   &out))
        << out;
    EXPECT_NE(out.find("proto=https len=0 sum=1469598103934665603\nversion=1.1 connects=1\n"),
              std::string::npos)
        << out;
    EXPECT_NE(
        out.find("proto=https len=1048576 sum=" + std::to_string(h) + "\nversion=1.1 connects=0\n"),
        std::string::npos)
        << "the POST: every byte, on the same connection\n"
        << out;
    const int admin = px->ports.back();
    EXPECT_EQ(wait_metric(admin, "ringpoll_proxy_tls_handshakes_total{side=\"client\"}", 1), 1);
    // A plain-text request on the TLS port is a failed handshake, and the next client is served.
    const int fd = plain_connect(px->port);
    ASSERT_GE(fd, 0);
    const std::string plain = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(::send(fd, plain.data(), plain.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(plain.size()));
    char c;
    EXPECT_LE(::recv(fd, &c, 1, 0), 0) << "a plain-text client got an answer";
    ::close(fd);
    EXPECT_EQ(wait_metric(admin, failures("client", "other"), 1), 1);
    // An idle TLS keep-alive client holds no relay buffer between requests.
    auto cctx = client_ctx();
    ASSERT_TRUE(cctx);
    TlsClient tc;
    ASSERT_TRUE(tls_connect(cctx->new_ssl("localhost"), px->port, &tc));
    const std::string get = "GET /c HTTP/1.1\r\nHost: localhost\r\n\r\n";
    ASSERT_EQ(SSL_write(tc.ssl, get.data(), static_cast<int>(get.size())),
              static_cast<int>(get.size()));
    std::string answer;
    char rb[4096];
    while (answer.find("sum=") == std::string::npos) {
      const int n = SSL_read(tc.ssl, rb, sizeof rb);
      if (n <= 0) break;
      answer.append(rb, static_cast<size_t>(n));
    }
    EXPECT_NE(answer.find("proto=https len=0"), std::string::npos) << answer;
    EXPECT_EQ(wait_metric(admin, "ringpoll_proxy_relay_buffers", 0), 0);
  }
}

// Origination: a plain client through a pool with tls = true reaches ringpoll-serve's TLS
// echo, verified against the test CA and the name localhost; through a pool whose CA is
// another, the upstream's certificate is refused: the client is closed, and the failure is
// counted as bad_certificate and as a failed connect with no upstream left.
TEST(ProxyTls, OriginatesVerifyingTheUpstream) {
  const TestPki& pki = test_pki();
  for (const char* b : kBackendSets) {
    SCOPED_TRACE(b);
    auto up = start_echo(true);
    ASSERT_GT(up->port, 0) << up->line;
    const std::string name = "tls_server_name = \"localhost\"\n";
    const std::string cfg = write_config(
        "orig.toml",
        pool_toml("good", up->port,
                  "tls = true\ntls_ca = \"" + pki.path("ca.pem") + "\"\n" + name) +
            pool_toml("wrongca", up->port,
                      "tls = true\ntls_ca = \"" + pki.path("other-ca.pem") + "\"\n" + name) +
            listener_toml("good", "good") + listener_toml("bad", "wrongca"));
    auto px = start_proxy(cfg, b);
    ASSERT_EQ(px->ports.size(), 3u) << px->line;
    const int admin = px->ports[2];

    const int g = plain_connect(px->ports[0]);
    ASSERT_GE(g, 0);
    std::string sent(64 * 1024, '\0');
    for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>(i * 31 + 7);
    ASSERT_EQ(::write(g, sent.data(), sent.size()), static_cast<ssize_t>(sent.size()));
    std::string back(sent.size(), '\0');
    size_t got = 0;
    for (ssize_t n; got < back.size() && (n = ::read(g, back.data() + got, back.size() - got)) > 0;)
      got += static_cast<size_t>(n);
    EXPECT_EQ(got, sent.size());
    EXPECT_TRUE(back == sent);
    ::close(g);
    EXPECT_EQ(wait_metric(admin, "ringpoll_proxy_tls_handshakes_total{side=\"upstream\"}", 1), 1);

    const int w = plain_connect(px->ports[1]);
    ASSERT_GE(w, 0);
    ASSERT_EQ(::write(w, "x", 1), 1);
    char ch;
    const ssize_t n = ::read(w, &ch, 1);  // closed without an answer: EOF, or a reset
    EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n << " " << errno;
    ::close(w);
    EXPECT_EQ(wait_metric(admin, failures("upstream", "bad_certificate"), 1), 1);
    EXPECT_EQ(metric(admin, "ringpoll_proxy_errors_total{kind=\"no_upstream\"}"), 1);
    EXPECT_EQ(metric(admin, "ringpoll_proxy_tls_handshakes_total{side=\"upstream\"}"), 1);
  }
}

// tls.min_version = "1.3": a client that offers only TLS 1.2 is refused and counted as
// version; a TLS 1.3 client is served.
TEST(ProxyTls, Tls12ClientRefusedByMinVersion13) {
  for (const char* b : kBackendSets) {
    SCOPED_TRACE(b);
    Rig r = start_rig("minver.toml", b, [](int port) {
      return terminating_config(port, "ec", "tls.min_version = \"1.3\"\n");
    });
    ASSERT_TRUE(r.ok()) << r.why();
    auto& px = r.px;
    const int admin = px->ports.back();
    const std::string connect =
        "timeout 10 openssl s_client -connect 127.0.0.1:" + std::to_string(px->port);
    std::string out;
    EXPECT_FALSE(sh(connect + " -tls1_2 </dev/null", &out)) << out;
    EXPECT_EQ(wait_metric(admin, failures("client", "version"), 1), 1);
    EXPECT_TRUE(sh(connect + " -tls1_3 </dev/null", &out)) << out;
    EXPECT_NE(out.find("TLSv1.3"), std::string::npos) << out;
    EXPECT_EQ(wait_metric(admin, "ringpoll_proxy_tls_handshakes_total{side=\"client\"}", 1), 1);
    EXPECT_EQ(metric(admin, failures("client", "version")), 1);
  }
}

// A client that connects and sends nothing is closed at tls.handshake_ms, counted as a
// timeout, and the proxy holds no descriptor for it afterwards.
TEST(ProxyTls, SilentClientClosedAtTheHandshakeDeadline) {
  for (const char* b : kBackendSets) {
    SCOPED_TRACE(b);
    Rig r = start_rig("silent.toml", b, [](int port) {
      return terminating_config(port, "ec", "", "[tls]\nhandshake_ms = 300\n");
    });
    ASSERT_TRUE(r.ok()) << r.why();
    auto& px = r.px;
    const int admin = px->ports.back();
    EXPECT_EQ(metric(admin, failures("client", "timeout")), 0);  // and the admin page is warm
    usleep(200'000);  // the admin request's connection closed
    const int before = open_fd_count(px->pid);
    const int64_t t0 = mono_now_ns();
    const int fd = plain_connect(px->port);
    ASSERT_GE(fd, 0);
    char ch;
    const ssize_t n = ::read(fd, &ch, 1);  // closed by the proxy (the receive timeout is 10 s)
    EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n << " " << errno;
    const int64_t waited = mono_now_ns() - t0;
    EXPECT_GE(waited, 250 * kMs);
    EXPECT_LT(waited, 5 * kSec);
    ::close(fd);
    EXPECT_EQ(wait_metric(admin, failures("client", "timeout"), 1), 1);
    int after = -1;
    for (int i = 0; i < 100 && (after = open_fd_count(px->pid)) != before; ++i) usleep(20'000);
    EXPECT_EQ(after, before);
  }
}

// SIGHUP with the certificate changed in the config: the connection opened before keeps
// working on its session; a new one is served the new certificate. A reload naming a
// missing file is refused, saying which, and the last good certificate stays.
TEST(ProxyTls, SighupSwapsTheCertificateKeepingConnections) {
  auto cctx = client_ctx();
  ASSERT_TRUE(cctx);
  for (const char* b : kBackendSets) {
    SCOPED_TRACE(b);
    Rig r = start_rig("swap.toml", b, [](int port) { return terminating_config(port, "ec"); });
    ASSERT_TRUE(r.ok()) << r.why();
    auto& px = r.px;
    const std::string& cfg = r.cfg;
    const std::string head = pool_toml("echo", r.up->port);
    EXPECT_NE(served_subject(px->port).find("CN = ec"), std::string::npos);
    TlsClient before;
    ASSERT_TRUE(tls_connect(cctx->new_ssl("localhost"), px->port, &before));
    EXPECT_TRUE(tls_echo(before.ssl, "one\n"));

    write_config("swap.toml", head + listener_toml("front", "echo", tls_keys("rsa")));
    ASSERT_EQ(kill(px->pid, SIGHUP), 0);
    ASSERT_TRUE(px->wait_stderr("reloaded", 10)) << px->err_text;
    EXPECT_TRUE(tls_echo(before.ssl, "two\n"));
    EXPECT_NE(served_subject(px->port).find("CN = rsa"), std::string::npos);

    write_config("swap.toml", head + listener_toml("front", "echo",
                                                   "tls.cert = \"/nonexistent/swap.pem\"\n"
                                                   "tls.key = \"" +
                                                       test_pki().path("ec.key") + "\"\n"));
    ASSERT_EQ(kill(px->pid, SIGHUP), 0);
    ASSERT_TRUE(px->wait_stderr("reload refused", 10)) << px->err_text;
    EXPECT_NE(px->err_text.find(cfg + ":8: proxy.listener[0].tls.cert: certificate "
                                      "/nonexistent/swap.pem: No such file"),
              std::string::npos)
        << px->err_text;
    EXPECT_NE(served_subject(px->port).find("CN = rsa"), std::string::npos);
    EXPECT_TRUE(tls_echo(before.ssl, "three\n"));
  }
}

// The new keys' errors: exit 2, naming the file, the line and the key.
TEST(ProxyTls, ConfigErrorsNameFileLineAndKey) {
  const TestPki& pki = test_pki();
  const std::string pool = pool_toml("p", 9);  // lines 1-3
  const std::string ec = pki.path("ec.pem"), rsa_key = pki.path("rsa.key");
  struct Case {
    std::string text;
    std::string says;  // after "FILE:"
  };
  const Case cases[] = {
      {pool + listener_toml(
                  "l", "p",
                  "tls.cert = \"/nonexistent/c.pem\"\ntls.key = \"" + pki.path("ec.key") + "\"\n"),
       "8: proxy.listener[0].tls.cert: certificate /nonexistent/c.pem: No such file"},
      {pool + listener_toml("l", "p", "tls.cert = \"" + ec + "\"\ntls.key = \"" + rsa_key + "\"\n"),
       "9: proxy.listener[0].tls.key: key " + rsa_key + " does not match certificate " + ec},
      {pool + listener_toml("l", "p", "protocol = \"udp\"\n" + tls_keys("ec")),
       "9: proxy.listener[0].tls.cert: TLS termination is for protocol = \"tcp\" and \"http\" "
       "listeners (this one is udp)"},
      {pool + listener_toml("l", "p",
                            "protocol = \"http\"\n" + tls_keys("ec") + "tls.alpn = [\"h2\"]\n"),
       "11: proxy.listener[0].tls.alpn: an HTTP listener speaks HTTP/1.x: \"h2\" cannot be "
       "offered"},
      {pool + listener_toml("l", "p", "sni_routes = [\"a.example=p\"]\n" + tls_keys("ec")),
       "9: proxy.listener[0].tls.cert: TLS termination and sni_routes exclude each other"},
      {pool + listener_toml("l", "p",
                            tls_keys("ec") + "tls.sni_certs = [\"b.example=" + pki.path("sni.pem") +
                                ":" + rsa_key + "\"]\n"),
       "10: proxy.listener[0].tls.sni_certs: key " + rsa_key + " does not match certificate " +
           pki.path("sni.pem")},
      {pool_toml("p", 9, "tls = true\ntls_ca = \"/nonexistent/ca.pem\"\n") +
           listener_toml("l", "p"),
       "5: proxy.pool[0].tls_ca: CA file /nonexistent/ca.pem: No such file"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::string cfg = write_config("bad" + std::to_string(i++) + ".toml", c.text);
    SCOPED_TRACE(c.text);
    auto px = start_program(RINGPOLL_PROXY_BIN, {"--config", cfg}, false);
    std::string err;
    EXPECT_EQ(px->finish(&err), 2) << err;
    EXPECT_NE(err.find(cfg + ":" + c.says), std::string::npos) << err;
  }
}

// --print-config writes a listener's tls keys (dotted, in its [[proxy.listener]] table) and
// a pool's, and the printed config loads back to the same config.
TEST(ProxyTls, PrintedConfigLoadsBack) {
  const TestPki& pki = test_pki();
  const std::string cfg = write_config(
      "print.toml",
      pool_toml("p", 9, "tls = true\ntls_ca = \"" + pki.path("ca.pem") + "\"\n") +
          listener_toml("l", "p",
                        "tls.cert = [\"" + pki.path("ec.pem") + "\", \"" + pki.path("rsa.pem") +
                            "\"]\ntls.key = [\"" + pki.path("ec.key") + "\", \"" +
                            pki.path("rsa.key") + "\"]\ntls.alpn = [\"http/1.1\"]\n"));
  std::string first, second;
  ASSERT_TRUE(sh(std::string(RINGPOLL_PROXY_BIN) + " --config " + cfg + " --print-config", &first))
      << first;
  EXPECT_NE(
      first.find("tls.cert = [\"" + pki.path("ec.pem") + "\", \"" + pki.path("rsa.pem") + "\"]\n"),
      std::string::npos)
      << first;
  EXPECT_NE(first.find("tls.alpn = [\"http/1.1\"]\n"), std::string::npos) << first;
  EXPECT_NE(first.find("tls_ca = \"" + pki.path("ca.pem") + "\"\n"), std::string::npos) << first;
  const std::string printed = write_config("printed.toml", first);
  ASSERT_TRUE(
      sh(std::string(RINGPOLL_PROXY_BIN) + " --profile " + printed + " --print-config", &second))
      << second;
  EXPECT_EQ(second, first);
}

}  // namespace
}  // namespace ringpoll::test
