#include "tls/tls_support.h"
#include "support/spawn.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "support/test_env.h"

namespace ringpoll::test {
namespace {

// ---- OpenSSL heap counting ----
// Each block carries a header with its size and the allocating thread's tag, so a free on
// any thread takes it off the right count.
std::atomic<int64_t> g_heap[2];
thread_local int t_tag = 0;
constexpr size_t kHeader = 16;  // keeps the block's alignment (malloc's 16 bytes)

void* heap_malloc(size_t n, const char*, int) {
  auto* p = static_cast<unsigned char*>(::malloc(n + kHeader));
  if (!p) return nullptr;
  const uint64_t size = n;
  std::memcpy(p, &size, sizeof size);
  const int tag = t_tag;
  std::memcpy(p + 8, &tag, sizeof tag);
  g_heap[tag].fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
  return p + kHeader;
}
void heap_free(void* q, const char*, int) {
  if (!q) return;
  auto* p = static_cast<unsigned char*>(q) - kHeader;
  uint64_t size;
  int tag;
  std::memcpy(&size, p, sizeof size);
  std::memcpy(&tag, p + 8, sizeof tag);
  g_heap[tag].fetch_sub(static_cast<int64_t>(size), std::memory_order_relaxed);
  ::free(p);
}
void* heap_realloc(void* q, size_t n, const char* f, int l) {
  if (!q) return heap_malloc(n, f, l);
  if (n == 0) {
    heap_free(q, f, l);
    return nullptr;
  }
  uint64_t old;
  std::memcpy(&old, static_cast<unsigned char*>(q) - kHeader, sizeof old);
  void* r = heap_malloc(n, f, l);
  if (!r) return nullptr;
  std::memcpy(r, q, old < n ? old : n);
  heap_free(q, f, l);
  return r;
}

// Before main: OpenSSL accepts new memory functions only before its first allocation.
const bool g_heap_counting = CRYPTO_set_mem_functions(heap_malloc, heap_realloc, heap_free) == 1;

bool run(const std::string& cmd, std::string* out) {
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return false;
  char buf[512];
  for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) out->append(buf, n);
  return ::pclose(f) == 0;
}

}  // namespace

int64_t ssl_heap_bytes(int tag) {
  if (!g_heap_counting) ADD_FAILURE() << "CRYPTO_set_mem_functions was refused";
  return g_heap[tag].load();
}
void set_ssl_heap_tag(int tag) {
  t_tag = tag;
}

int open_fd_count() {
  return open_fd_count(getpid()) - 1;  // less the directory's own descriptor
}

int open_fd_count(pid_t pid) {
  int n = 0;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

// ---- programs ----

Program::~Program() {
  if (pid > 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  if (out >= 0) ::close(out);
  if (err >= 0) ::close(err);
}

int Program::finish(std::string* stderr_text) {
  int status = -1;
  const bool reaped = wait_child(pid, &status, 10);
  pid = -1;
  char buf[4096];
  for (ssize_t n; (n = ::read(err, buf, sizeof buf)) > 0;) stderr_text->append(buf, n);
  return reaped && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool Program::wait_stderr(const std::string& what, int secs) {
  for (int i = 0; i < secs * 100 && err_text.find(what) == std::string::npos; ++i) {
    pollfd pf{err, POLLIN, 0};
    if (poll(&pf, 1, 10) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(err, buf, sizeof buf);
    if (n <= 0) break;
    err_text.append(buf, static_cast<size_t>(n));
  }
  return err_text.find(what) != std::string::npos;
}

std::unique_ptr<Program> start_program(const char* bin, const std::vector<std::string>& args,
                                       bool want_line) {
  auto s = std::make_unique<Program>();
  const Spawned c = spawn_piped(bin, args);
  s->pid = c.pid;
  s->out = c.out;
  s->err = c.err;
  if (!want_line) return s;
  for (int i = 0; i < 1000; ++i) {  // the first line, 10 s at most
    pollfd pf{s->out, POLLIN, 0};
    if (poll(&pf, 1, 10) <= 0) continue;
    char ch;
    if (::read(s->out, &ch, 1) != 1 || ch == '\n') break;
    s->line.push_back(ch);
  }
  const std::string lo = "127.0.0.1:";
  for (size_t at = s->line.find(lo); at != std::string::npos; at = s->line.find(lo, at + 1))
    s->ports.push_back(std::atoi(s->line.c_str() + at + lo.size()));
  if (!s->ports.empty()) s->port = s->ports[0];
  return s;
}

bool sh(const std::string& cmd, std::string* out) {
  out->clear();
  return run(cmd, out);
}

// ---- an OpenSSL client ----

TlsClient::~TlsClient() {
  if (ssl) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
  }
  if (fd >= 0) ::close(fd);
}

bool tls_connect(SSL* fresh, int port, TlsClient* c) {
  c->ssl = fresh;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (!fresh || connect(c->fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return false;
  timeval tv{10, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const int one = 1;  // no delayed-ACK stalls between echo rounds
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  SSL_set_fd(fresh, c->fd);
  return SSL_connect(fresh) == 1;
}

bool echo_checked(SSL* ssl, size_t total, size_t* echoed) {
  constexpr size_t kChunk = 256 * 1024;
  std::vector<unsigned char> out(kChunk), in(kChunk);
  uint64_t sent = 1469598103934665603ull, back = sent;
  uint32_t x = 7;
  *echoed = 0;
  for (size_t off = 0; off < total; off += kChunk) {
    const size_t len = std::min(kChunk, total - off);
    for (size_t i = 0; i < len; ++i) {
      x = x * 1664525u + 1013904223u;
      out[i] = static_cast<unsigned char>(x >> 24);
      sent = (sent ^ out[i]) * 1099511628211ull;
    }
    for (size_t put = 0; put < len;) {  // the contexts allow partial writes
      const int n = SSL_write(ssl, out.data() + put, static_cast<int>(len - put));
      if (n <= 0) return false;
      put += static_cast<size_t>(n);
    }
    for (size_t got = 0; got < len;) {
      const int n = SSL_read(ssl, in.data(), static_cast<int>(len - got));
      if (n <= 0) return false;
      for (int i = 0; i < n; ++i) back = (back ^ in[i]) * 1099511628211ull;
      got += static_cast<size_t>(n);
      *echoed += static_cast<size_t>(n);
    }
  }
  return *echoed == total && back == sent;
}

const TestPki& test_pki() {
  static TestPki pki;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    char tmpl[] = "/tmp/ringpoll-tls-XXXXXX";
    if (!mkdtemp(tmpl)) {
      failure = "mkdtemp failed";
      return;
    }
    pki.dir = tmpl;
    const std::string d = pki.dir;
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    std::string script =
        "set -e; cd " + d + "; " + "openssl req -x509 " + ec +
        " -keyout ca.key -out ca.pem -days 3 -subj /CN=ringpoll-test-ca; " + "openssl req -x509 " +
        ec + " -keyout other-ca.key -out other-ca.pem -days 3 -subj /CN=other-ca; " +
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > local.ext; " +
        "printf 'subjectAltName=DNS:b.example\\n' > sni.ext; " +
        "printf 'subjectAltName=DNS:other.example\\n' > wronghost.ext; " +
        "leaf() { openssl req $2 -keyout $1.key -out $1.csr -subj /CN=$1; "
        "openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $1.pem "
        "-days $3 -extfile $4; }; " +
        "leaf ec '" + ec + "' 3 local.ext; " + "leaf rsa '-newkey rsa:2048 -nodes' 3 local.ext; " +
        "leaf sni '" + ec + "' 3 sni.ext; " + "leaf expired '" + ec + "' -1 local.ext; " +
        "leaf wronghost '" + ec + "' 3 wronghost.ext";
    const std::string file = d + "/make-pki.sh";
    if (FILE* f = std::fopen(file.c_str(), "w")) {
      std::fputs(script.c_str(), f);
      std::fclose(f);
    }
    std::string out;
    if (!run("sh " + file, &out)) failure = "making the test PKI failed: " + out;
    // The keys are throw-away; the directory goes when the process ends.
    static struct Remove {
      ~Remove() {
        std::string ignored;
        if (!pki.dir.empty()) run("rm -rf " + pki.dir, &ignored);
      }
    } remove;
  });
  if (!failure.empty()) ADD_FAILURE() << failure;
  return pki;
}

}  // namespace ringpoll::test
