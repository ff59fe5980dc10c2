#include "tls/tls_support.h"

#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>

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
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
    --n;  // the directory's own descriptor
  }
  return n;
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
