#pragma once
// The TLS suites' fixtures: a throw-away PKI made with the `openssl` command at test time
// (no private key is committed), OpenSSL's heap counted per thread, and descriptor counts.
#include <dirent.h>
#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace ringpoll::test {

// Files of a test PKI in a temporary directory, made once per process:
//   ca.pem                the CA (ECDSA P-256) every leaf below chains to
//   ec.pem/ec.key         ECDSA P-256 leaf for localhost and 127.0.0.1
//   rsa.pem/rsa.key       RSA 2048 leaf for localhost and 127.0.0.1
//   sni.pem/sni.key       ECDSA leaf for b.example only
//   expired.pem/.key      ECDSA leaf for localhost that expired a day ago
//   wronghost.pem/.key    ECDSA leaf for other.example only
//   other-ca.pem          a CA that signed nothing here
struct TestPki {
  std::string dir;
  std::string path(const char* name) const { return dir + "/" + name; }
};
// Makes the PKI on the first call (fails the calling test with the command's output when
// `openssl` is missing or refuses); later calls return the same.
const TestPki& test_pki();

// OpenSSL's heap in bytes, by the thread that allocated it: tag 0 is every thread that did
// not call set_ssl_heap_tag (the test's own), tag 1 whatever thread did. Counting is on from
// the program's start (CRYPTO_set_mem_functions before OpenSSL's first allocation).
int64_t ssl_heap_bytes(int tag);
void set_ssl_heap_tag(int tag);

// Open descriptors of this process (entries of /proc/self/fd).
int open_fd_count();

}  // namespace ringpoll::test
