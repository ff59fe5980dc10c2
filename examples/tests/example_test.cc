// example_test KIND BIN_DIR: runs the example KIND (echo, http, proxy, client, counter)
// from BIN_DIR on loopback and checks what it does from the outside, with plain blocking
// sockets. Every wait is bounded (socket timeouts, an alarm for the whole run); a failed
// check prints what was expected and exits 1.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr unsigned kWholeRunSeconds = 60;  // alarm(): no run outlives this
constexpr int kSocketTimeoutSeconds = 5;   // any single blocking send/recv

std::string g_bin_dir;
std::vector<pid_t> g_children;

#define CHECK(cond, ...)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                     \
      std::fprintf(stderr, "\n");                                            \
      for (pid_t p : g_children) kill(p, SIGKILL);                           \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A running example whose first stdout line says "... listening on ADDRESS[,...]".
struct Server {
  pid_t pid = -1;
  std::string address;
};

pid_t spawn(const std::vector<std::string>& args, int* out_fd) {
  int p[2];
  CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe: %s", std::strerror(errno));
  const pid_t pid = fork();
  CHECK(pid >= 0, "fork: %s", std::strerror(errno));
  if (pid == 0) {
    dup2(p[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  close(p[1]);
  g_children.push_back(pid);
  *out_fd = p[0];
  return pid;
}

// Reads what fd delivers until EOF or until it holds `until` (empty: EOF), for at most
// timeout_ms.
std::string read_output(int fd, const std::string& until, int timeout_ms) {
  std::string s;
  const int64_t end = now_ms() + timeout_ms;
  while (until.empty() || s.find(until) == std::string::npos) {
    pollfd pfd{fd, POLLIN, 0};
    const int left = static_cast<int>(end - now_ms());
    if (left <= 0 || poll(&pfd, 1, left) <= 0) break;
    char buf[512];
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  return s;
}

Server start_server(const std::string& name, std::vector<std::string> args) {
  args.insert(args.begin(), g_bin_dir + "/" + name);
  int fd = -1;
  Server s;
  s.pid = spawn(args, &fd);
  const std::string line = read_output(fd, "\n", 10'000);
  close(fd);  // the example's later output (none expected) would get EPIPE: it ignores it
  const size_t at = line.find("listening on ");
  CHECK(at != std::string::npos, "%s did not start: its first line was '%s'", name.c_str(),
        line.c_str());
  const size_t from = at + std::strlen("listening on ");
  s.address = line.substr(from, line.find_first_of(",\n", from) - from);
  return s;
}

// SIGTERM starts the graceful shutdown; the example must exit 0 within 10 s.
void stop_server(const Server& s, const char* name) {
  kill(s.pid, SIGTERM);
  int status = 0;
  const int64_t end = now_ms() + 10'000;
  pid_t r = 0;
  while ((r = waitpid(s.pid, &status, WNOHANG)) == 0 && now_ms() < end) usleep(10'000);
  CHECK(r == s.pid, "%s did not exit within 10 s of SIGTERM", name);
  g_children.erase(std::find(g_children.begin(), g_children.end(), s.pid));
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: exit status %d after SIGTERM", name,
        status);
}

sockaddr_in parse(const std::string& addr) {
  sockaddr_in a{};
  const size_t colon = addr.rfind(':');
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(addr.c_str() + colon + 1)));
  CHECK(colon != std::string::npos &&
            inet_pton(AF_INET, addr.substr(0, colon).c_str(), &a.sin_addr) == 1,
        "not an IPv4 address: '%s'", addr.c_str());
  return a;
}

int dial(const std::string& addr) {
  const sockaddr_in a = parse(addr);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0, "connect %s: %s",
        addr.c_str(), std::strerror(errno));
  timeval tv{kSocketTimeoutSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

void send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    CHECK(n > 0, "send: %s", std::strerror(errno));
    off += static_cast<size_t>(n);
  }
}

std::string recv_exact(int fd, size_t len) {
  std::string s(len, '\0');
  size_t off = 0;
  while (off < len) {
    const ssize_t n = recv(fd, s.data() + off, len - off, 0);
    CHECK(n > 0, "recv after %zu of %zu bytes: %s", off, len,
          n == 0 ? "EOF" : std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  return s;
}

// True when the peer closed (recv returns 0) within the socket timeout.
bool peer_closed(int fd) {
  char c;
  return recv(fd, &c, 1, 0) == 0;
}

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return s;
}

// ---- the examples ----

void test_echo() {
  const Server srv = start_server("echo_server", {"127.0.0.1:0"});
  // Several connections at once, one of them carrying 1 MiB (many reads and writes).
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) fds.push_back(dial(srv.address));
  for (int i = 0; i < 4; ++i) {
    const std::string msg = pattern(i == 0 ? 1 << 20 : 100 + i, static_cast<unsigned>(i));
    std::thread writer([&] { send_all(fds[i], msg); });  // reads run while it writes
    const std::string back = recv_exact(fds[i], msg.size());
    writer.join();
    CHECK(back == msg, "connection %d: %zu bytes echoed differently", i, msg.size());
  }
  // The client's half-close ends the echo: the server closes its side.
  shutdown(fds[1], SHUT_WR);
  CHECK(peer_closed(fds[1]), "the server did not close after the client's EOF");
  for (int fd : fds) close(fd);
  stop_server(srv, "echo_server");
}

void test_http() {
  const std::string resp =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
  const std::string req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  const Server srv = start_server("http_responder", {"127.0.0.1:0"});
  const int fd = dial(srv.address);
  send_all(fd, req + req + req);  // pipelined: three answers, in order
  CHECK(recv_exact(fd, 3 * resp.size()) == resp + resp + resp, "three pipelined responses");
  // A request split across two sends gets one answer, on the same (kept-alive) connection.
  send_all(fd, req.substr(0, 10));
  usleep(50'000);
  send_all(fd, req.substr(10));
  CHECK(recv_exact(fd, resp.size()) == resp, "response to a request sent in two pieces");
  close(fd);
  stop_server(srv, "http_responder");
}

void test_proxy() {
  const Server echo = start_server("echo_server", {"127.0.0.1:0"});
  constexpr int kIdleMs = 400;
  const Server px =
      start_server("tcp_proxy", {"127.0.0.1:0", echo.address, std::to_string(kIdleMs)});
  const int fd = dial(px.address);
  send_all(fd, "through the proxy");
  CHECK(recv_exact(fd, 17) == "through the proxy", "echo through the proxy");
  // Traffic keeps the connection alive past the idle deadline: 10 round trips 100 ms apart
  // span 1 s, 2.5 times the deadline.
  for (int i = 0; i < 10; ++i) {
    usleep(100'000);
    const std::string m = "ping" + std::to_string(i);
    send_all(fd, m);
    CHECK(recv_exact(fd, m.size()) == m, "round trip %d while active", i);
  }
  // Silence: the proxy closes the connection one idle deadline later (the wheel's tick and
  // scheduling add a little; 3 s is far beyond any honest delay).
  const int64_t t0 = now_ms();
  CHECK(peer_closed(fd), "the proxy did not close an idle connection");
  const int64_t waited = now_ms() - t0;
  CHECK(waited >= kIdleMs - 50 && waited < 3000, "idle close after %lld ms, deadline %d ms",
        static_cast<long long>(waited), kIdleMs);
  close(fd);
  // A half-close from the client reaches the upstream, whose EOF comes back.
  const int fd2 = dial(px.address);
  send_all(fd2, "bye");
  shutdown(fd2, SHUT_WR);
  CHECK(recv_exact(fd2, 3) == "bye", "echo before the half-close");
  CHECK(peer_closed(fd2), "the half-close did not travel through the proxy and back");
  close(fd2);
  stop_server(px, "tcp_proxy");
  stop_server(echo, "echo_server");
}

// Runs the client example; returns its exit code, its stdout in *out.
int run_client(const std::vector<std::string>& args, std::string* out, int64_t* took_ms) {
  std::vector<std::string> argv{g_bin_dir + "/client"};
  argv.insert(argv.end(), args.begin(), args.end());
  int fd = -1;
  const int64_t t0 = now_ms();
  const pid_t pid = spawn(argv, &fd);
  *out = read_output(fd, "", 10'000);
  close(fd);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status), "client did not exit normally");
  g_children.erase(std::find(g_children.begin(), g_children.end(), pid));
  *took_ms = now_ms() - t0;
  return WEXITSTATUS(status);
}

void test_client() {
  std::string out;
  int64_t took = 0;
  const Server echo = start_server("echo_server", {"127.0.0.1:0"});
  int rc = run_client({echo.address, "hello ringpoll"}, &out, &took);
  CHECK(rc == 0 && out == "reply: hello ringpoll\n", "rc %d, output '%s'", rc, out.c_str());
  stop_server(echo, "echo_server");

  // A server that accepts (the kernel completes the handshake) but never answers: the read
  // deadline fires, exit 3.
  const int mute = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  CHECK(bind(mute, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && listen(mute, 16) == 0,
        "mute listener: %s", std::strerror(errno));
  getsockname(mute, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string mute_addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  rc = run_client({mute_addr, "anyone there?", "300"}, &out, &took);
  CHECK(rc == 3, "a silent server: exit %d, want 3 (timeout)", rc);
  CHECK(took >= 300 && took < 5000, "timed out after %lld ms, deadline 300 ms",
        static_cast<long long>(took));

  // Nobody listening (the port of a closed listener): refused at once, exit 1.
  close(mute);
  rc = run_client({mute_addr, "x", "300"}, &out, &took);
  CHECK(rc == 1, "a closed port: exit %d, want 1 (refused)", rc);
}

void test_counter() {
  const Server srv = start_server("cross_shard_counter", {"127.0.0.1:0", "2"});
  // 32 connections (SO_REUSEPORT spreads them over both shards), each sending 10 single
  // increments and then a batch of 10 in one write: 640 increments.
  constexpr int kConns = 32, kEach = 20;
  std::vector<int> fds;
  for (int i = 0; i < kConns; ++i) fds.push_back(dial(srv.address));
  std::vector<long> values;
  int served_by[2] = {0, 0};
  auto take = [&](int fd, int lines) {
    std::string got;
    while (std::count(got.begin(), got.end(), '\n') < lines) {
      char buf[512];
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      CHECK(n > 0, "counter reply: %s", n == 0 ? "EOF" : std::strerror(errno));
      got.append(buf, static_cast<size_t>(n));
    }
    size_t pos = 0;
    for (int l = 0; l < lines; ++l) {
      const size_t nl = got.find('\n', pos);
      long v = 0;
      int shard = -1;
      CHECK(std::sscanf(got.c_str() + pos, "%ld %d", &v, &shard) == 2 && shard >= 0 && shard < 2,
            "reply line '%s'", got.substr(pos, nl - pos).c_str());
      values.push_back(v);
      ++served_by[shard];
      pos = nl + 1;
    }
  };
  for (int round = 0; round < kEach / 2; ++round) {
    for (int fd : fds) send_all(fd, "incr\n");
    for (int fd : fds) take(fd, 1);
  }
  std::string batch;
  for (int i = 0; i < kEach / 2; ++i) batch += "incr\n";
  for (int fd : fds) send_all(fd, batch);
  for (int fd : fds) take(fd, kEach / 2);
  // One owner, no lost or doubled update: the values are exactly 1..640.
  std::sort(values.begin(), values.end());
  for (size_t i = 0; i < values.size(); ++i) {
    CHECK(values[i] == static_cast<long>(i + 1), "sorted value %zu is %ld", i, values[i]);
  }
  CHECK(values.size() == static_cast<size_t>(kConns * kEach), "%zu replies", values.size());
  // Both shards served connections, so increments really crossed from shard 1 to shard 0.
  CHECK(served_by[0] > 0 && served_by[1] > 0, "replies by shard: %d and %d", served_by[0],
        served_by[1]);
  for (int fd : fds) close(fd);
  stop_server(srv, "cross_shard_counter");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: example_test echo|http|proxy|client|counter BIN_DIR\n");
    return 2;
  }
  alarm(kWholeRunSeconds);  // SIGALRM ends a stuck run (its children get SIGHUP-free EOFs)
  signal(SIGPIPE, SIG_IGN);
  g_bin_dir = argv[2];
  const std::string kind = argv[1];
  if (kind == "echo") {
    test_echo();
  } else if (kind == "http") {
    test_http();
  } else if (kind == "proxy") {
    test_proxy();
  } else if (kind == "client") {
    test_client();
  } else if (kind == "counter") {
    test_counter();
  } else {
    std::fprintf(stderr, "example_test: unknown example '%s'\n", kind.c_str());
    return 2;
  }
  std::printf("example_test %s: passed\n", kind.c_str());
  return 0;
}
