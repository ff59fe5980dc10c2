// The built ringpoll-proxy: the quick form relays and SIGTERM exits 0; bad arguments and
// each kind of config error exit 2 with a message naming the file, line and key; SIGHUP
// reloads the config file for new connections while an established one keeps relaying;
// SIGUSR2 upgrades lose no connection, on each backend and under an open-loop load.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/clock.h"
#include "proxy/proxy_test_helpers.h"
#include "support/fd_log.h"
#include "support/spawn.h"
#include "support/stop_join.h"

#ifdef RINGPOLL_PROXY_BIN
namespace ringpoll::test {
namespace {

using Child = Spawned;

Child spawn_program(const char* bin, const std::vector<std::string>& args) {
  return spawn_piped(bin, args);
}
Child spawn_proxy(const std::vector<std::string>& args) {
  return spawn_program(RINGPOLL_PROXY_BIN, args);
}

// Waits at most 10 s for the child; its exit status, or -1 (killed).
int wait_exit(const Child& c) {
  int rc = -1;
  for (int i = 0; i < 1000; ++i) {
    int st = 0;
    if (waitpid(c.pid, &st, WNOHANG) == c.pid) {
      rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      break;
    }
    usleep(10'000);
    if (i == 999) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, nullptr, 0);
    }
  }
  return rc;
}

// Everything left on fd (after the child exited).
std::string drain_fd(int fd) {
  std::string s;
  char buf[4096];
  for (;;) {
    const ssize_t k = ::read(fd, buf, sizeof buf);
    if (k <= 0) break;
    s.append(buf, static_cast<size_t>(k));
  }
  return s;
}

struct Outcome {
  int rc;
  std::string out, err;
};
Outcome run_to_exit(const std::vector<std::string>& args) {
  Child c = spawn_proxy(args);
  Outcome o;
  o.rc = wait_exit(c);
  o.out = drain_fd(c.out);
  o.err = drain_fd(c.err);
  ::close(c.out);
  ::close(c.err);
  return o;
}

// The port in a "... listening on 127.0.0.1:PORT (..." line.
SocketAddress listening_address(const std::string& line) {
  SocketAddress a;
  const size_t at = line.find("listening on ");
  if (at == std::string::npos) return a;
  const size_t start = at + 13;
  parse_address(line.substr(start, line.find(' ', start) - start), &a);
  return a;
}

TEST(ProxyBinary, QuickFormRelaysAndSigtermExitsZero) {
  TestUpstream up(echo);
  Child c = spawn_proxy({"--listen", "127.0.0.1:0", "--upstream", up.address().to_string(), "--set",
                         "timeouts.drain_ms=500"});
  ASSERT_GT(c.pid, 0);
  const std::string line = read_line(c.out);
  ASSERT_TRUE(line.starts_with("ringpoll-proxy: listening on 127.0.0.1:")) << line;
  EXPECT_NE(line.find("(main -> pool main: 1 upstream)"), std::string::npos) << line;
  EXPECT_NE(line.find(", backend "), std::string::npos) << line;
  const SocketAddress at = listening_address(line);
  const int s = connect_to(at);
  ASSERT_GE(s, 0);
  ASSERT_TRUE(send_all(s, "through the binary", 18));
  ::shutdown(s, SHUT_WR);
  EXPECT_EQ(recv_all(s), "through the binary");
  ::close(s);
  kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c), 0);
  ::close(c.out);
  ::close(c.err);
}

TEST(ProxyBinary, QuickFormUdpRelaysDatagramsAndServesUdpMetrics) {
  UdpUpstream up('U');
  Child c = spawn_proxy({"--listen", "127.0.0.1:0", "--protocol", "udp", "--upstream",
                         up.address().to_string(), "--admin", "127.0.0.1:0"});
  ASSERT_GT(c.pid, 0);
  const std::string line = read_line(c.out);
  EXPECT_NE(line.find("(main udp -> pool main: 1 upstream)"), std::string::npos) << line;
  const SocketAddress at = listening_address(line);
  UdpClient u;
  EXPECT_EQ(u.ask(at, "ping"), "Uping");
  EXPECT_EQ(u.ask(at, "pong"), "Upong");
  EXPECT_EQ(up.sources(), 1u);
  kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c), 0);
  ::close(c.out);
  ::close(c.err);
}

TEST(ProxyBinary, PrintConfigShowsTheQuickFormAsConfig) {
  const Outcome o =
      run_to_exit({"--listen", "127.0.0.1:7000", "--upstream", "127.0.0.1:7001", "--upstream",
                   "[::1]:7002", "--balance", "least_conn", "--print-config"});
  EXPECT_EQ(o.rc, 0) << o.err;
  EXPECT_NE(o.out.find("[[proxy.listener]]"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("listen = \"127.0.0.1:7000\""), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("upstreams = [\"127.0.0.1:7001\", \"[::1]:7002\"]"), std::string::npos)
      << o.out;
  EXPECT_NE(o.out.find("balance = \"least_conn\""), std::string::npos) << o.out;
}

TEST(ProxyBinary, BadArgumentsExitTwoNamingTheArgument) {
  struct Case {
    std::vector<std::string> args;
    const char* says;
  } cases[] = {
      {{"--listen", "127.0.0.1:0"}, "--listen needs at least one --upstream"},
      {{"--upstream", "127.0.0.1:1"}, "--upstream needs --listen"},
      {{"--listen", "localhost:80", "--upstream", "127.0.0.1:1"}, "--listen"},
      {{"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1"}, "--upstream"},
      {{"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--balance", "random"},
       "--balance"},
      {{"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--admin", "nowhere"}, "--admin"},
      {{"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--protocol", "sctp"},
       "--protocol"},
      {{"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--protocol", "udp",
        "--proxy-protocol", "v1"},
       "--proxy-protocol is for TCP"},
      {{"--bogus"}, "bogus"},
      {{}, "no [[proxy.listener]] configured"},
  };
  for (const Case& k : cases) {
    const Outcome o = run_to_exit(k.args);
    EXPECT_EQ(o.rc, 2) << k.says;
    EXPECT_NE(o.err.find(k.says), std::string::npos) << "stderr: " << o.err;
  }
}

TEST(ProxyBinary, ConfigErrorsNameTheFileLineAndKey) {
  const std::string good_pool = "[[proxy.pool]]\nname = \"p\"\nupstreams = [\"127.0.0.1:9\"]\n";
  struct Case {
    std::string text;
    int line;
    const char* key;
  } cases[] = {
      // A listener naming a pool that does not exist.
      {"[[proxy.listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\npool = \"nope\"\n" + good_pool,
       4, "pool"},
      // An unknown key.
      {"[limits]\nbuffer_bytez = 4096\n", 2, "limits.buffer_bytez"},
      // A wrong type.
      {"[engine]\nshards = \"two\"\n", 2, "engine.shards"},
      // Out of range.
      {"[limits]\n\nbuffer_bytes = 1\n", 3, "limits.buffer_bytes"},
      // An upstream that is not an address.
      {"[[proxy.pool]]\nname = \"p\"\nupstreams = [\"example\"]\n", 3, "upstreams"},
      // A bad enum value.
      {"[[proxy.pool]]\nname = \"p\"\nbalance = \"random\"\nupstreams = [\"127.0.0.1:9\"]\n", 3,
       "balance"},
  };
  for (const Case& k : cases) {
    const std::string path = temp_file(k.text);
    ASSERT_FALSE(path.empty());
    const Outcome o = run_to_exit({"--config", path});
    EXPECT_EQ(o.rc, 2) << k.key << ": " << o.err;
    const std::string where = path + ":" + std::to_string(k.line) + ":";
    EXPECT_NE(o.err.find(where), std::string::npos) << "want " << where << " in: " << o.err;
    EXPECT_NE(o.err.find(k.key), std::string::npos) << "want " << k.key << " in: " << o.err;
    std::remove(path.c_str());
  }
  const Outcome missing = run_to_exit({"--config", "/nonexistent/ringpoll.toml"});
  EXPECT_EQ(missing.rc, 2);
  EXPECT_NE(missing.err.find("/nonexistent/ringpoll.toml"), std::string::npos) << missing.err;
}

std::string config_with_upstream(const SocketAddress& up) {
  return "[[proxy.listener]]\nname = \"front\"\nlisten = \"127.0.0.1:0\"\npool = \"back\"\n"
         "[[proxy.pool]]\nname = \"back\"\nupstreams = [\"" +
         up.to_string() + "\"]\n[timeouts]\ndrain_ms = 500\n";
}

TEST(ProxyBinary, SighupReloadsTheFileForNewConnections) {
  auto greeter = [](char letter) {
    return [letter](int fd) {
      send_all(fd, &letter, 1);
      echo(fd);
    };
  };
  TestUpstream a(greeter('A')), b(greeter('B'));
  const std::string path = temp_file(config_with_upstream(a.address()));
  Child c = spawn_proxy({"--config", path});
  ASSERT_GT(c.pid, 0);
  const SocketAddress at = listening_address(read_line(c.out));
  const int c1 = connect_to(at);
  ASSERT_GE(c1, 0);
  EXPECT_EQ(recv_all(c1, 1), "A");

  std::ofstream(path) << config_with_upstream(b.address());
  kill(c.pid, SIGHUP);
  // New connections reach B once the reload has run (bounded wait).
  EXPECT_TRUE(wait_for([&] {
    const int s = connect_to(at);
    const std::string g = s >= 0 ? recv_all(s, 1) : "";
    if (s >= 0) ::close(s);
    return g == "B";
  }));
  // The established connection still relays to A.
  ASSERT_TRUE(send_all(c1, "old", 3));
  EXPECT_EQ(recv_all(c1, 3), "old");
  ::close(c1);

  // A broken file is refused and the proxy keeps the config it has.
  std::ofstream(path) << "[engine]\nshards = -1\n";
  kill(c.pid, SIGHUP);
  std::string err;
  EXPECT_TRUE(wait_for([&] {
    pollfd pf{c.err, POLLIN, 0};
    char buf[512];
    while (::poll(&pf, 1, 0) > 0) {
      const ssize_t k = ::read(c.err, buf, sizeof buf);
      if (k <= 0) break;
      err.append(buf, static_cast<size_t>(k));
    }
    return err.find("reload refused") != std::string::npos;
  })) << err;
  EXPECT_NE(err.find("engine.shards"), std::string::npos) << err;
  const int c2 = connect_to(at);
  EXPECT_EQ(recv_all(c2, 1), "B") << "still serving with the last good config";
  ::close(c2);

  kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c), 0);
  ::close(c.out);
  ::close(c.err);
  std::remove(path.c_str());
}

// ---- the HTTP mode with real clients (curl, wrk, h2load --h1, ab) and real upstreams
// (ringpoll-serve, nginx) ----

// A running child stopped (SIGTERM, then SIGKILL) at the end of the scope.
struct Running {
  Child c;
  ~Running() {
    if (c.pid <= 0) return;
    kill(c.pid, SIGTERM);
    (void)wait_exit(c);
    ::close(c.out);
    ::close(c.err);
  }
};

// ringpoll-proxy with one HTTP listener in front of `upstream`, and its admin page.
struct HttpProxyProcess {
  Running r;
  SocketAddress at, admin;
  std::string conf;
  explicit HttpProxyProcess(const std::string& upstream) {
    conf = temp_file("[[proxy.pool]]\nname = \"up\"\nupstreams = [\"" + upstream +
                     "\"]\n[[proxy.listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n"
                     "pool = \"up\"\nprotocol = \"http\"\n"
                     "[[proxy.route]]\nname = \"all\"\nlistener = \"web\"\npool = \"up\"\n");
    r.c = spawn_proxy({"--config", conf, "--admin", "127.0.0.1:0", "--set", "engine.shards=1"});
    const std::string line = read_line(r.c.out);
    EXPECT_NE(line.find("(web http: 1 route)"), std::string::npos) << line;
    at = listening_address(line);
    const size_t a = line.find("admin on ");
    if (a != std::string::npos) parse_address(line.substr(a + 9), &admin);
  }
  ~HttpProxyProcess() { std::remove(conf.c_str()); }
  std::string url(const std::string& path) const { return "http://" + at.to_string() + path; }
  // Upstream requests on a new connection and on a reused one (-1: not found).
  void upstream_requests(double* fresh, double* reused) const {
    const std::string m = shell("curl -sS http://" + admin.to_string() + "/metrics");
    for (auto [kind, out] : {std::pair{"new", fresh}, std::pair{"reused", reused}}) {
      const std::string key = "\nringpoll_proxy_http_upstream_requests_total{connection=\"" +
                              std::string(kind) + "\"} ";
      const size_t p = m.find(key);
      *out = p == std::string::npos ? -1 : std::atof(m.c_str() + p + key.size());
    }
  }
};

// Real clients through the proxy to an upstream that serves /plaintext-like `path`.
void real_clients(const HttpProxyProcess& px, const std::string& path) {
  int rc = 0;
  std::string out = shell("timeout 30 curl -sS -i " + px.url(path), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(out.starts_with("HTTP/1.1 200")) << out;
  EXPECT_NE(out.find("Via: 1.1 ringpoll"), std::string::npos) << out;
  out = shell("timeout 30 wrk -t1 -c16 -d1s " + px.url(path), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("requests in"), std::string::npos) << out;
  EXPECT_EQ(out.find("Non-2xx"), std::string::npos) << out;
  EXPECT_EQ(out.find("Socket errors"), std::string::npos) << out;
  // Keep-alive: a new upstream connection for curl's request and each of wrk's 16, plus
  // those an upstream closed after its keep-alive request limit (nginx: 1,000) and a few
  // more; a count, not a ratio, so that a slow build (sanitizers: fewer requests in the
  // second) is held to the same bound.
  double fresh = 0, reused = 0;
  px.upstream_requests(&fresh, &reused);
  ASSERT_GE(fresh, 0);
  ASSERT_GE(reused, 0);
  EXPECT_LE(fresh, 21 + (fresh + reused) / 500)
      << "keep-alive reuse under wrk: " << fresh << " new upstream connections, " << reused
      << " requests on reused ones";
  out = shell("timeout 30 h2load --h1 -n 2000 -c 8 " + px.url(path), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("2000 succeeded, 0 failed, 0 errored"), std::string::npos) << out;
  out = shell("timeout 30 ab -q -k -n 2000 -c 8 " + px.url(path), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("Complete requests:      2000"), std::string::npos) << out;
  EXPECT_NE(out.find("Failed requests:        0"), std::string::npos) << out;
  EXPECT_EQ(out.find("Non-2xx"), std::string::npos) << out;
}

// ringpoll-serve --mode http on a free loopback port, run by *serve: its address ("" when
// it did not say where it listens).
std::string start_http_serve(Running* serve) {
  serve->c = spawn_program(RINGPOLL_SERVE_BIN, {"--mode", "http", "--listen", "127.0.0.1:0",
                                                "--set", "engine.shards=1"});
  const std::string line = read_line(serve->c.out);
  const size_t on = line.find(" on ");
  return on == std::string::npos ? "" : line.substr(on + 4, line.find(',', on) - on - 4);
}

TEST(HttpProxyBinary, RealClientsThroughTheProxyToRingpollServe) {
  Running serve;
  const std::string up = start_http_serve(&serve);
  ASSERT_FALSE(up.empty()) << "ringpoll-serve did not start";
  HttpProxyProcess px(up);
  ASSERT_NE(px.at.port(), 0);
  real_clients(px, "/plaintext");
  // A 64 MiB download, byte for byte what the upstream sends directly.
  int rc = 0;
  const std::string direct =
      shell("timeout 60 curl -sS http://" + up + "/bytes/67108864 | sha256sum", &rc);
  const std::string proxied =
      shell("timeout 60 curl -sS " + px.url("/bytes/67108864") + " | sha256sum");
  EXPECT_EQ(direct, proxied);
  EXPECT_EQ(shell("timeout 60 curl -sS " + px.url("/bytes/67108864") + " | wc -c"), "67108864\n");
}

TEST(HttpProxyBinary, RealClientsThroughTheProxyToNginx) {
  char dir[] = "/tmp/ringpoll-nginx-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string d = dir;
  const SocketAddress port = dead_address();
  std::ofstream(d + "/nginx.conf")
      << "daemon off;\nmaster_process off;\npid " << d << "/nginx.pid;\nerror_log stderr;\n"
      << "events { worker_connections 256; }\nhttp {\n access_log off;\n"
      << " client_body_temp_path " << d << ";\n proxy_temp_path " << d << ";\n"
      << " fastcgi_temp_path " << d << ";\n uwsgi_temp_path " << d << ";\n"
      << " scgi_temp_path " << d << ";\n keepalive_requests 100000;\n"
      << " server {\n  listen " << port.to_string() << ";\n"
      << "  location / { return 200 \"nginx upstream\\n\"; }\n }\n}\n";
  Running nginx;
  nginx.c = spawn_program("/usr/sbin/nginx", {"-p", d, "-c", d + "/nginx.conf", "-e", "stderr"});
  ASSERT_TRUE(wait_for([&] {
    const int s = connect_to(port);
    if (s >= 0) ::close(s);
    return s >= 0;
  })) << "nginx did not start";
  HttpProxyProcess px(port.to_string());
  ASSERT_NE(px.at.port(), 0);
  EXPECT_EQ(shell("timeout 30 curl -sS " + px.url("/x")), "nginx upstream\n");
  real_clients(px, "/x");
  (void)shell("rm -rf " + d);
}

// `openssl s_server -www` with a self-signed ECDSA P-256 certificate for `cn`, on a free
// loopback port; killed with the object.
struct TlsServer {
  Child c;
  SocketAddress at;
  TlsServer(const std::string& dir, const std::string& cn) {
    const std::string cert = dir + "/" + cn + ".pem", key = dir + "/" + cn + ".key";
    shell(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=" +
        cn + " -keyout " + key + " -out " + cert);
    int o[2];
    if (pipe2(o, O_CLOEXEC) < 0) return;
    c.pid = fork();
    if (c.pid == 0) {
      dup2(o[1], 1);
      const int null = ::open("/dev/null", O_WRONLY);
      dup2(null, 2);
      execlp("openssl", "openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", cert.c_str(),
             "-key", key.c_str(), "-www", nullptr);
      _exit(127);
    }
    ::close(o[1]);
    c.out = o[0];
    for (int i = 0; i < 5; ++i) {  // "ACCEPT 127.0.0.1:PORT", maybe after other lines
      const std::string line = read_line(c.out);
      if (line.starts_with("ACCEPT ")) {
        parse_address(line.substr(7), &at);
        break;
      }
    }
  }
  ~TlsServer() {
    if (c.pid > 0) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, nullptr, 0);
    }
    if (c.out >= 0) ::close(c.out);
  }
};

// Real TLS clients (openssl s_client, curl) through an SNI-routing listener reach the
// server their name selects, and complete the handshake with it end to end: the proxy
// passed the ClientHello and everything after it through untouched.
TEST(ProxyBinary, SniRoutesRealTlsClientsToTheServerTheirNameSelects) {
  ASSERT_NE(shell("openssl version").find("OpenSSL 3"), std::string::npos)
      << "the openssl command is needed (Debian package openssl)";
  char dir_tmpl[] = "/tmp/ringpoll-sni-XXXXXX";
  const std::string dir = mkdtemp(dir_tmpl);
  TlsServer a(dir, "a.example"), b(dir, "b.example");
  ASSERT_NE(a.at.port(), 0);
  ASSERT_NE(b.at.port(), 0);
  const std::string path = temp_file(
      "[[proxy.listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\npool = \"a\"\n"
      "sni_routes = [\"*.b.example=b\", \"b.example=b\"]\n"
      "[[proxy.pool]]\nname = \"a\"\nupstreams = [\"" +
      a.at.to_string() + "\"]\n[[proxy.pool]]\nname = \"b\"\nupstreams = [\"" + b.at.to_string() +
      "\"]\n[timeouts]\ndrain_ms = 500\n");
  Child c = spawn_proxy({"--config", path});
  ASSERT_GT(c.pid, 0);
  const SocketAddress at = listening_address(read_line(c.out));
  ASSERT_NE(at.port(), 0);
  const std::string connect = " -connect " + at.to_string();
  auto subject = [&](const std::string& name) {
    const std::string out =
        shell("timeout 10 openssl s_client -brief" + connect +
              (name.empty() ? " -noservername" : " -servername " + name) + " </dev/null");
    const size_t k = out.find("Peer certificate: ");
    return k == std::string::npos ? out : out.substr(k + 18, out.find('\n', k) - k - 18);
  };
  EXPECT_EQ(subject("www.b.example"), "CN = b.example");
  EXPECT_EQ(subject("B.EXAMPLE"), "CN = b.example");
  EXPECT_EQ(subject("a.example"), "CN = a.example");
  EXPECT_EQ(subject("unknown.org"), "CN = a.example");
  EXPECT_EQ(subject(""), "CN = a.example");  // no name: the listener's pool
  // curl, TLS 1.2 and 1.3, a whole HTTPS exchange with s_server's status page.
  for (const char* v : {"--tlsv1.2 --tls-max 1.2", "--tlsv1.3"}) {
    const std::string page =
        shell(std::string("timeout 10 curl -sk ") + v +
              " --resolve x.b.example:" + std::to_string(at.port()) +
              ":127.0.0.1 https://x.b.example:" + std::to_string(at.port()) + "/");
    EXPECT_NE(page.find("s_server -accept 127.0.0.1:0"), std::string::npos) << v << ": " << page;
  }
  kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c), 0);
  ::close(c.out);
  ::close(c.err);
  std::remove(path.c_str());
  shell("rm -rf " + dir);
}

// ---- binary upgrade (SIGUSR2, apps/proxy/upgrade.h) ----

// Waits at most 10 s for a child of ours (or, as subreaper, an orphaned descendant).
int wait_pid(pid_t pid) {
  Child c;
  c.pid = pid;
  return wait_exit(c);
}

// Reads stderr until `what` appears (at most 10 s); everything read so far.
std::string stderr_until(int fd, const std::string& what) {
  std::string err;
  wait_for([&] {
    pollfd pf{fd, POLLIN, 0};
    char buf[512];
    while (::poll(&pf, 1, 0) > 0) {
      const ssize_t k = ::read(fd, buf, sizeof buf);
      if (k <= 0) break;
      err.append(buf, static_cast<size_t>(k));
    }
    return err.find(what) != std::string::npos;
  });
  return err;
}

// Both processes run on `backend` (RINGPOLL_BACKEND), whose start line names it `name`. In io_uring
// completion mode the old process's multishot accept takes connections ahead of its accept loop:
// stopping it must hand those to handlers too (engine/server.h close_listener), or they are reset.
void upgrade_loses_no_connection(const char* backend, const char* name) {
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // the new proxy is reparented to us
  ASSERT_EQ(setenv("RINGPOLL_BACKEND", backend, 1), 0);
  struct Unset {
    ~Unset() { unsetenv("RINGPOLL_BACKEND"); }
  } unset;
  TestUpstream up(echo);
  const std::string path = temp_file(
      "[[proxy.listener]]\nname = \"front\"\nlisten = \"127.0.0.1:0\"\npool = \"back\"\n"
      "[[proxy.pool]]\nname = \"back\"\nupstreams = [\"" +
      up.address().to_string() + "\"]\n[timeouts]\ndrain_ms = 2000\n");
  // A fixed admin port, as operators have: the successor takes that socket over too.
  uint16_t admin_port = 0;
  ::close(listen_on(&admin_port));
  const std::string admin_at = "127.0.0.1:" + std::to_string(admin_port);
  Child old = spawn_proxy({"--config", path, "--admin", admin_at});
  ASSERT_GT(old.pid, 0);
  const std::string first = read_line(old.out);
  const SocketAddress at = listening_address(first);
  ASSERT_NE(at.port(), 0) << first;
  // A connection established before the upgrade, and clients connecting all along.
  const int held = connect_to(at);
  ASSERT_TRUE(send_all(held, "a", 1));
  ASSERT_EQ(recv_all(held, 1), "a");
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread clients([&] {
    const timeval limit{2, 0};  // a connection nobody serves counts as failed, not a hang
    for (int i = 0; i < 100000 && !stop.load(); ++i) {
      const int c = connect_to(at);
      if (c >= 0) setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      const bool good = c >= 0 && send_all(c, "ping", 4) && recv_all(c, 4) == "ping";
      (good ? ok : failed).fetch_add(1);
      if (c >= 0) ::close(c);
    }
  });
  StopAndJoin join(stop, clients);
  ASSERT_TRUE(wait_for([&] { return ok.load() > 50; }));
  ASSERT_EQ(kill(old.pid, SIGUSR2), 0);
  // The new process prints its line on the same stdout.
  const std::string second = read_line(old.out);
  EXPECT_NE(second.find(", generation 2 (1 listeners taken over, pid "), std::string::npos)
      << second;
  EXPECT_NE(second.find(std::string("backend ") + name + ","), std::string::npos) << second;
  EXPECT_EQ(listening_address(second).to_string(), at.to_string()) << "the same socket";
  const pid_t next = pid_in(second);
  ASSERT_GT(next, 0) << second;
  const std::string err = stderr_until(old.err, "stops accepting and drains");
  EXPECT_NE(err.find("upgrade: generation 2 (pid " + std::to_string(next) + ") serves"),
            std::string::npos)
      << err;
  // The old process still serves what it had while it drains.
  ASSERT_TRUE(send_all(held, "b", 1));
  EXPECT_EQ(recv_all(held, 1), "b");
  ::close(held);
  EXPECT_EQ(wait_exit(old), 0) << "the old process drains and exits";
  const int before = ok.load();
  EXPECT_TRUE(wait_for([&] { return ok.load() > before + 50; })) << "the new one serves";
  stop = true;
  clients.join();
  EXPECT_GT(ok.load(), 100);
  EXPECT_EQ(failed.load(), 0) << "of " << ok.load() << " connections across the upgrade";
  // The new process's admin endpoint, on the same port, names its generation.
  EXPECT_NE(second.find("admin on " + admin_at + ","), std::string::npos) << second;
  SocketAddress admin;
  parse_address(admin_at, &admin);
  const int m = connect_to(admin);
  ASSERT_GE(m, 0) << second;
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  send_all(m, req.data(), req.size());
  const std::string page = recv_all(m);
  ::close(m);
  EXPECT_NE(page.find("\nringpoll_proxy_process_generation 2\n"), std::string::npos) << page;
  EXPECT_NE(page.find("\nringpoll_proxy_inherited_listeners 1\n"), std::string::npos);
  kill(next, SIGTERM);
  EXPECT_EQ(wait_pid(next), 0);
  ::close(old.out);
  ::close(old.err);
  std::remove(path.c_str());
}

TEST(ProxyBinary, Sigusr2UpgradeTakesTheListenersOverAndNoConnectionFailsOnEpoll) {
  upgrade_loses_no_connection("epoll", "epoll");
}
TEST(ProxyBinary, Sigusr2UpgradeTakesTheListenersOverAndNoConnectionFailsOnIoUringCompletion) {
  upgrade_loses_no_connection("io_uring-completion", "io_uring-completion");
}
TEST(ProxyBinary, Sigusr2UpgradeTakesTheListenersOverAndNoConnectionFailsOnIoUringReadiness) {
  upgrade_loses_no_connection("io_uring-readiness", "io_uring");
}

// ---- open-loop load across a row of upgrades (issue 20) ----

// The number after "\"key\": " in a JSON text (the first one), or -1.
double json_number(const std::string& json, const std::string& key) {
  const size_t k = json.find("\"" + key + "\": ");
  return k == std::string::npos ? -1 : std::atof(json.c_str() + k + key.size() + 4);
}

// The load runs long enough for every round: about 20 to 100 ms each here (fork, exec,
// setup, handover), several times that under sanitizers; the budget leaves room.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kUpgradeRounds = 10;
constexpr double kRoundBudgetS = 1.0;
// Each round starts an instrumented process (seconds of CPU on a shared core), so the
// open-loop client may fall behind its schedule for a while: the floor below only says
// that the load ran through the rounds; what is lost is counted by the errors.
constexpr double kServedShare = 0.75;
#else
constexpr int kUpgradeRounds = 100;
constexpr double kRoundBudgetS = 0.45;
constexpr double kServedShare = 0.9;
#endif

// ringpoll-load at a fixed rate (open loop, HTTP keep-alive) through an HTTP listener of
// the proxy while it is upgraded kUpgradeRounds times in a row, each upgrade waiting for
// the new generation on the admin page before the next: no failed connect, no reset, every
// request answered. A draining process ends each keep-alive connection after its next
// answer (Connection: close), so the load reconnects, to the successor.
void open_loop_upgrades(const char* backend) {
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // the successors are reparented to us
  ASSERT_EQ(setenv("RINGPOLL_BACKEND", backend, 1), 0);
  struct Unset {
    ~Unset() { unsetenv("RINGPOLL_BACKEND"); }
  } unset;
  Running serve;
  const std::string up = start_http_serve(&serve);
  ASSERT_FALSE(up.empty()) << "ringpoll-serve did not start";
  uint16_t admin_port = 0;
  ::close(listen_on(&admin_port));
  const std::string admin_at = "127.0.0.1:" + std::to_string(admin_port);
  const std::string conf = temp_file(
      "[[proxy.pool]]\nname = \"up\"\nupstreams = [\"" + up +
      "\"]\n[[proxy.listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\npool = \"up\"\n"
      "protocol = \"http\"\n[[proxy.route]]\nname = \"all\"\nlistener = \"web\"\npool = \"up\"\n"
      "[timeouts]\ndrain_ms = 3000\n");
  Child first = spawn_proxy({"--config", conf, "--admin", admin_at, "--set", "engine.shards=1"});
  ASSERT_GT(first.pid, 0);
  const SocketAddress at = listening_address(read_line(first.out));
  ASSERT_NE(at.port(), 0);
  // Every generation writes to the same stderr: read it all along, so none blocks on it.
  FdLog err_log(first.err);
  const int rate = 1000;
  const int seconds = 5 + static_cast<int>(kUpgradeRounds * kRoundBudgetS);
  const std::string json = temp_file("");
  Child load = spawn_program(RINGPOLL_LOAD_BIN,
                             {"--mode", "http", "--target", at.to_string(), "--connections", "8",
                              "--rate", std::to_string(rate), "--duration", std::to_string(seconds),
                              "--timeout", "5", "--json", json});
  ASSERT_GT(load.pid, 0);
  // An assertion that ends the test early leaves no process behind.
  std::vector<pid_t> running{first.pid, load.pid};
  KillLeftOvers kill_left_overs{running};
  const int64_t load_end = mono_now_ns() + int64_t{seconds} * 1'000'000'000;
  usleep(1'000'000);  // steady state first
  pid_t current = first.pid;
  std::vector<pid_t> old;
  SocketAddress admin;
  parse_address(admin_at, &admin);
  int rounds = 0;
  for (; rounds < kUpgradeRounds && mono_now_ns() < load_end - 2'000'000'000; ++rounds) {
    const uint64_t next_gen = static_cast<uint64_t>(rounds) + 2;
    ASSERT_EQ(kill(current, SIGUSR2), 0) << "round " << rounds;
    const std::string line = read_line(first.out);
    ASSERT_NE(line.find(", generation " + std::to_string(next_gen) + " "), std::string::npos)
        << "round " << rounds << ": " << line;
    const pid_t next = pid_in(line);
    ASSERT_GT(next, 0) << line;
    // The admin page (the same port, taken over) names the new generation.
    ASSERT_TRUE(wait_for([&] {
      std::string body;
      const int code = admin_get(admin, "/metrics", &body);
      return code == 200 && body.find("\nringpoll_proxy_process_generation " +
                                      std::to_string(next_gen) + "\n") != std::string::npos;
    })) << "round "
        << rounds;
    old.push_back(current);
    current = next;
    running.push_back(next);
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }
  EXPECT_EQ(rounds, kUpgradeRounds) << "the load's window was too short for every round";
  int load_rc = -1;  // the load ends at its duration; killed if it overruns it by 20 s
  for (int i = 0; i < (seconds + 20) * 100; ++i) {
    int st = 0;
    if (waitpid(load.pid, &st, WNOHANG) == load.pid) {
      load_rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      break;
    }
    usleep(10'000);
  }
  if (load_rc == -1) {
    kill(load.pid, SIGKILL);
    waitpid(load.pid, nullptr, 0);
  }
  std::erase(running, load.pid);
  const std::string load_out = drain_fd(load.out);
  std::string report;
  {
    std::ifstream in(json);
    report.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_EQ(load_rc, 0) << load_out << drain_fd(load.err);
  EXPECT_EQ(json_number(report, "total"), 0) << report;
  EXPECT_EQ(json_number(report, "connect"), 0) << "failed connects";
  EXPECT_EQ(json_number(report, "reset"), 0) << "resets";
  EXPECT_EQ(json_number(report, "timeout"), 0) << "unanswered requests";
  EXPECT_GT(json_number(report, "requests"),
            kServedShare * rate * json_number(report, "measured_s"))
      << report;
  // The keep-alive clients move to each successor between two requests (issue 20,
  // apps/proxy/http_move.h) instead of being told to close: before, each upgrade closed
  // every one of them (at least `rounds` closes); a request that outlasts the move's 2 s
  // bound may still drain and close, rarely.
  EXPECT_LT(json_number(report, "server_closes"), rounds)
      << "clients closed, not moved: " << report;
  // Every old generation drained and exited (reaped here: we are their subreaper).
  EXPECT_TRUE(wait_for([&] {
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    return std::none_of(old.begin(), old.end(), [](pid_t p) { return kill(p, 0) == 0; });
  })) << "an old generation is still running";
  kill(current, SIGTERM);
  EXPECT_EQ(wait_pid(current), 0);
  running.clear();  // all exited and reaped
  err_log.stop();
  const std::string err = err_log.text();
  EXPECT_EQ(err.find("upgrade failed"), std::string::npos) << err;
  EXPECT_EQ(err.find("drain deadline: aborted"), std::string::npos)
      << "a drain cut connections: " << err;
  ::close(first.out);
  ::close(first.err);
  ::close(load.out);
  ::close(load.err);
  std::remove(conf.c_str());
  std::remove(json.c_str());
}

TEST(ProxyBinary, OpenLoopLoadAcrossARowOfUpgradesLosesNothingOnEpoll) {
  open_loop_upgrades("epoll");
}
TEST(ProxyBinary, OpenLoopLoadAcrossARowOfUpgradesLosesNothingOnIoUringCompletion) {
  open_loop_upgrades("io_uring-completion");
}

TEST(ProxyBinary, AFailedUpgradeLeavesTheOldProcessServingAndSaysWhy) {
  TestUpstream up(echo);
  const std::string good = config_with_upstream(up.address());
  const std::string path = temp_file(good);
  Child c = spawn_proxy({"--config", path});
  ASSERT_GT(c.pid, 0);
  const SocketAddress at = listening_address(read_line(c.out));
  // The new binary cannot start: its configuration is broken.
  std::ofstream(path) << "[engine]\nshards = -1\n";
  ASSERT_EQ(kill(c.pid, SIGUSR2), 0);
  std::string err = stderr_until(c.err, "upgrade failed");
  EXPECT_NE(err.find("upgrade failed, still serving: the new process (pid "), std::string::npos)
      << err;
  EXPECT_NE(err.find("exited with status 2 before it served"), std::string::npos) << err;
  EXPECT_NE(err.find("engine.shards"), std::string::npos) << "its own error is seen too: " << err;
  int s = connect_to(at);
  ASSERT_TRUE(send_all(s, "x", 1));
  EXPECT_EQ(recv_all(s, 1), "x") << "still serving";
  ::close(s);
  // It cannot take the listener over: its listener moved to an address that is taken.
  uint16_t busy_port = 0;
  const int busy = listen_on(&busy_port);
  std::ofstream(path) << "[[proxy.listener]]\nname = \"front\"\nlisten = \"127.0.0.1:" +
                             std::to_string(busy_port) +
                             "\"\npool = \"back\"\n[[proxy.pool]]\nname = \"back\"\n"
                             "upstreams = [\"" +
                             up.address().to_string() + "\"]\n";
  ASSERT_EQ(kill(c.pid, SIGUSR2), 0);
  err = stderr_until(c.err, "could not start");
  EXPECT_NE(err.find("could not start: failed: listener 'front'"), std::string::npos) << err;
  s = connect_to(at);
  ASSERT_TRUE(send_all(s, "y", 1));
  EXPECT_EQ(recv_all(s, 1), "y") << "still serving";
  ::close(s);
  ::close(busy);
  kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c), 0);
  ::close(c.out);
  ::close(c.err);
  std::remove(path.c_str());
}

TEST(ProxyBinary, AnUpgradeToTheOtherBackendFamilyIsRefusedAndTheOldOneServes) {
  // The two processes share the listening sockets' file flags (O_NONBLOCK on for a
  // readiness backend, off for io_uring completion mode): the successor refuses to turn
  // them over under the old one.
  TestUpstream up(echo);
  const std::string base = config_with_upstream(up.address());
  const std::string path =
      temp_file(base + "[engine]\nbackend = \"io_uring\"\n[io_uring]\nmode = \"completion\"\n");
  Child c = spawn_proxy({"--config", path});
  ASSERT_GT(c.pid, 0);
  const std::string line = read_line(c.out);
  ASSERT_NE(line.find("io_uring-completion"), std::string::npos) << line;
  const SocketAddress at = listening_address(line);
  std::ofstream(path) << base + "[engine]\nbackend = \"epoll\"\n";
  ASSERT_EQ(kill(c.pid, SIGUSR2), 0);
  const std::string err = stderr_until(c.err, "could not start");
  EXPECT_NE(err.find("listener 'front': the old process runs io_uring completion mode and this "
                     "one a readiness backend"),
            std::string::npos)
      << err;
  const int s = connect_to(at);
  ASSERT_TRUE(send_all(s, "z", 1));
  EXPECT_EQ(recv_all(s, 1), "z") << "still serving";
  ::close(s);
  kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c), 0);
  ::close(c.out);
  ::close(c.err);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace ringpoll::test
#endif
