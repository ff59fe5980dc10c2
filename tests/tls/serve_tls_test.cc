// ringpoll-serve --tls-cert/--tls-key against real clients: curl (100 MB bodies, the same
// bytes as over plain HTTP), an OpenSSL client echoing 100 MB both ways with checksums,
// `openssl s_client -sess_in` seeing its session resumed, wrk over https and h2load --h1;
// the config errors of the [tls] keys; the record path on the start-up line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "support/test_env.h"
#include "tls/ktls.h"
#include "tls/tls_context.h"
#include "tls/tls_support.h"

namespace ringpoll::test {
namespace {

std::unique_ptr<Program> start_serve(const std::vector<std::string>& args, bool want_line = true) {
  return start_program(RINGPOLL_SERVE_BIN, args, want_line);
}

std::vector<std::string> tls_args(const char* mode, const char* backend_set) {
  const TestPki& pki = test_pki();
  return {"--mode",     mode,
          "--listen",   "127.0.0.1:0",
          "--tls-cert", pki.path("ec.pem"),
          "--tls-key",  pki.path("ec.key"),
          "--set",      "engine.shards=1",
          "--set",      backend_set};
}

// The three socket backends, as the config selects them.
const char* const kBackendSets[] = {"engine.backend=epoll", "io_uring.mode=readiness",
                                    "io_uring.mode=completion"};

// 128 MiB over https (/bytes/N twice on one connection: N is at most 64 MiB), read by curl
// verifying the chain: the same bytes as the plain HTTP server sends (sha256 of both), on
// every backend.
TEST(ServeTls, CurlDownloads100MBSameAsPlainHttp) {
  const TestPki& pki = test_pki();
  auto plain =
      start_serve({"--mode", "http", "--listen", "127.0.0.1:0", "--set", "engine.shards=1"});
  ASSERT_GT(plain->port, 0) << plain->line;
  std::string want;
  const std::string path = "/bytes/67108864";
  ASSERT_TRUE(sh("curl -sS http://127.0.0.1:" + std::to_string(plain->port) + path +
                     " http://127.0.0.1:" + std::to_string(plain->port) + path + " | sha256sum",
                 &want));
  for (const char* b : kBackendSets) {
    SCOPED_TRACE(b);
    auto s = start_serve(tls_args("http", b));
    ASSERT_GT(s->port, 0) << s->line;
    EXPECT_NE(s->line.find("ringpoll-serve: https on "), std::string::npos) << s->line;
    std::string got, code;
    const std::string url = " https://localhost:" + std::to_string(s->port) + path;
    ASSERT_TRUE(sh("curl -sS --cacert " + pki.path("ca.pem") + url + url + " | sha256sum", &got));
    EXPECT_EQ(got, want);
    ASSERT_TRUE(
        sh("curl -sS -o /dev/null -o /dev/null -w '%{http_code} %{size_download} "
           "%{num_connects}\\n' --cacert " +
               pki.path("ca.pem") + url + url,
           &code));
    EXPECT_EQ(code, "200 67108864 1\n200 67108864 0\n");  // the second on the same connection
  }
}

// An OpenSSL client sends 100 MiB through the TLS echo server and reads them back,
// in rounds of 256 KiB; the checksums of what went and what came back are equal, on every backend.
TEST(ServeTls, Echo100MBBothWaysWithChecksums) {
  std::string why;
  tls::TlsOptions co;
  co.ca_file = test_pki().path("ca.pem");
  auto cctx = tls::TlsContext::client(co, &why);
  ASSERT_TRUE(cctx) << why;
  for (const char* b : kBackendSets) {
    SCOPED_TRACE(b);
    auto s = start_serve(tls_args("echo", b));
    ASSERT_GT(s->port, 0) << s->line;
    EXPECT_NE(s->line.find("ringpoll-serve: tls-echo on "), std::string::npos) << s->line;
    TlsClient c;
    ASSERT_TRUE(tls_connect(cctx->new_ssl("localhost"), s->port, &c));
    constexpr size_t kTotal = 100u << 20;
    size_t echoed = 0;
    EXPECT_TRUE(echo_checked(c.ssl, kTotal, &echoed)) << "echo stopped after " << echoed;
    EXPECT_EQ(echoed, kTotal);
  }
}

// s_client stores the session (-sess_out) and offers it again (-sess_in): "Reused", in
// TLS 1.3 and in TLS 1.2.
TEST(ServeTls, OpenSslSClientSeesItsSessionResumed) {
  auto s = start_serve(tls_args("http", "io_uring.mode=completion"));
  ASSERT_GT(s->port, 0) << s->line;
  const std::string sess = test_pki().path("sess.pem");
  for (const char* v : {"-tls1_3", "-tls1_2"}) {
    SCOPED_TRACE(v);
    const std::string base =
        "printf 'GET /plaintext HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' | "
        "timeout 10 openssl s_client -ign_eof " +
        std::string(v) + " -connect 127.0.0.1:" + std::to_string(s->port) + " ";
    std::string first, second;
    sh(base + "-sess_out " + sess, &first);
    EXPECT_NE(first.find("\nNew, TLSv1."), std::string::npos) << first;
    EXPECT_NE(first.find("HTTP/1.1 200"), std::string::npos) << first;
    sh(base + "-sess_in " + sess, &second);
    EXPECT_NE(second.find("\nReused, TLSv1."), std::string::npos) << second;
    EXPECT_NE(second.find("HTTP/1.1 200"), std::string::npos) << second;
  }
}

// wrk over https (one second, four connections) and h2load --h1 (200 requests): every
// answer a 200.
TEST(ServeTls, WrkAndH2loadOverHttps) {
  auto s = start_serve(tls_args("http", "io_uring.mode=completion"));
  ASSERT_GT(s->port, 0) << s->line;
  const std::string url = "https://127.0.0.1:" + std::to_string(s->port) + "/plaintext";
  std::string out;
  ASSERT_TRUE(sh("timeout 20 wrk -t1 -c4 -d1s " + url, &out)) << out;
  EXPECT_NE(out.find(" requests in "), std::string::npos) << out;
  EXPECT_EQ(out.find("Non-2xx"), std::string::npos) << out;
  EXPECT_EQ(out.find("Socket errors"), std::string::npos) << out;
  ASSERT_TRUE(sh("timeout 20 h2load --h1 -n 200 -c 4 " + url, &out)) << out;
  EXPECT_NE(out.find("200 succeeded, 0 failed, 0 errored"), std::string::npos) << out;
  EXPECT_NE(out.find("200 2xx"), std::string::npos) << out;
}

// The [tls] keys' errors: exit 2, naming the file, the line and the key (or the --set a
// flag became), and what is wrong with the file.
TEST(ServeTls, ConfigErrorsNameFileLineAndKey) {
  const TestPki& pki = test_pki();
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> says;
  };
  const std::string toml = pki.path("mismatch.toml");
  if (FILE* f = std::fopen(toml.c_str(), "w")) {
    std::fprintf(f, "[tls]\ncert = \"%s\"\nkey = \"%s\"\n", pki.path("ec.pem").c_str(),
                 pki.path("rsa.key").c_str());
    std::fclose(f);
  }
  const Case cases[] = {
      {{"--tls-cert", "/nonexistent/c.pem", "--tls-key", pki.path("ec.key")},
       {"config error: --set: tls.cert: certificate /nonexistent/c.pem: No such file"}},
      {{"--tls-cert", pki.path("ec.pem"), "--tls-key", pki.path("ca.pem")},
       {"tls.key: key " + pki.path("ca.pem") + ": "}},
      {{"--profile", toml},
       {toml + ":3: tls.key: key " + pki.path("rsa.key") + " does not match certificate " +
        pki.path("ec.pem")}},
      {{"--tls-cert", pki.path("ec.pem")},
       {"tls.cert and tls.key go together", "tls.key is not set"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"--mode", "http", "--listen", "127.0.0.1:0"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    auto s = start_serve(args, false);
    std::string err;
    EXPECT_EQ(s->finish(&err), 2) << err;
    for (const std::string& w : c.says) EXPECT_NE(err.find(w), std::string::npos) << err;
  }
}

// ringpoll-load --tls against ringpoll-serve over https: verified handshakes and no error;
// with --tls-resume --tls-handshake-per-request a handshake per request, resumed after the
// first on each connection; a wrong --tls-sni refused as a bad certificate (exit 3); an
// unreadable --tls-ca an argument error (exit 2).
TEST(LoadTls, HandshakesResumptionAndRefusals) {
  const TestPki& pki = test_pki();
  auto s = start_serve(tls_args("http", "io_uring.mode=completion"));
  ASSERT_GT(s->port, 0) << s->line;
  const std::string base = std::string(RINGPOLL_LOAD_BIN) +
                           " --mode http --target 127.0.0.1:" + std::to_string(s->port) +
                           " --duration 1 --tls ";
  std::string out;
  EXPECT_TRUE(sh(base + "--connections 4 --tls-ca " + pki.path("ca.pem"), &out)) << out;
  EXPECT_NE(out.find("errors 0:"), std::string::npos) << out;
  EXPECT_NE(out.find("tls handshakes 4 (0 resumed)"), std::string::npos) << out;

  EXPECT_TRUE(sh(base + "--connections 2 --tls-ca " + pki.path("ca.pem") +
                     " --tls-sni localhost --tls-resume --tls-handshake-per-request",
                 &out))
      << out;
  EXPECT_NE(out.find("errors 0:"), std::string::npos) << out;
  unsigned long long requests = 0, handshakes = 0, resumed = 0;
  const size_t r = out.find(" requests in ");
  ASSERT_NE(r, std::string::npos) << out;
  requests = std::stoull(out.substr(out.rfind('\n', r) + 1));
  const size_t h = out.find("tls handshakes ");
  ASSERT_NE(h, std::string::npos) << out;
  ASSERT_EQ(
      std::sscanf(out.c_str() + h, "tls handshakes %llu (%llu resumed)", &handshakes, &resumed), 2);
  EXPECT_GT(requests, 10u) << out;
  EXPECT_GE(handshakes, requests) << out;     // one per request (and one per unanswered end)
  EXPECT_GE(resumed, handshakes - 2) << out;  // all but each connection's first

  EXPECT_FALSE(sh(
      base + "--connections 1 --tls-ca " + pki.path("ca.pem") + " --tls-sni other.example", &out));
  EXPECT_NE(out.find("tls handshake: bad certificate: hostname mismatch"), std::string::npos)
      << out;

  const int rc = std::system((base + "--connections 1 --tls-ca /nonexistent/ca.pem 2>" +
                              pki.path("load.err") + " >/dev/null")
                                 .c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  std::string err;
  sh("cat " + pki.path("load.err"), &err);
  EXPECT_NE(err.find("--tls-ca: CA file /nonexistent/ca.pem: No such file or directory"),
            std::string::npos)
      << err;
}

// The start-up line says which record path the listener runs (here: user space, and why).
TEST(ServeTls, StartupLineSaysTheRecordPath) {
  auto s = start_serve(tls_args("echo", "engine.backend=epoll"));
  ASSERT_GT(s->port, 0) << s->line;
  EXPECT_NE(s->line.find(", tls " + tls::record_path_line()), std::string::npos) << s->line;
  if (!tls::process_ktls().available) {
    EXPECT_NE(s->line.find("tls userspace (kTLS unavailable: TCP_ULP tls: "), std::string::npos)
        << s->line;
  }
}

}  // namespace
}  // namespace ringpoll::test
