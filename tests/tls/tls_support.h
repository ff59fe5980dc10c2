#pragma once
// The TLS suites' fixtures: a throw-away PKI made with the `openssl` command at test time
// (no private key is committed), OpenSSL's heap counted per thread, and descriptor counts.
#include <dirent.h>
#include <openssl/ssl.h>

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
// Open descriptors of process `pid` (entries of /proc/PID/fd).
int open_fd_count(pid_t pid);

// A program the test started (ringpoll-serve, ringpoll-proxy): its first stdout line and
// the ports of that line; SIGKILLed and reaped when dropped.
struct Program {
  pid_t pid = -1;
  int out = -1, err = -1;
  std::string line;
  int port = 0;            // the first "127.0.0.1:PORT" of the line
  std::vector<int> ports;  // every "127.0.0.1:PORT" of the line, in order
  std::string err_text;    // stderr read so far (wait_stderr)
  ~Program();
  // Everything the program wrote to stderr until it exits (at most 10 s); its exit code.
  int finish(std::string* stderr_text);
  // Reads stderr until it holds `what` (true) or `secs` pass (false).
  bool wait_stderr(const std::string& what, int secs);
};
// Starts `bin` with `args`; with want_line, waits (10 s at most) for its first line.
std::unique_ptr<Program> start_program(const char* bin, const std::vector<std::string>& args,
                                       bool want_line = true);

// Runs a shell command; its stdout (and stderr) and whether it exited 0.
bool sh(const std::string& cmd, std::string* out);

// A blocking OpenSSL client connection (closed with close_notify when dropped).
struct TlsClient {
  int fd = -1;
  SSL* ssl = nullptr;
  TlsClient() = default;
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;
  ~TlsClient();
};
// Connects TCP to 127.0.0.1:port (blocking, 10 s receive timeout, no Nagle) and runs the
// handshake of `fresh` (TlsContext::new_ssl: its name and CA set) on it; *c owns both
// after the call, and false means the handshake (or the connect) failed.
bool tls_connect(SSL* fresh, int port, TlsClient* c);
// Sends `total` pseudo-random bytes in rounds of 256 KiB and reads each round back; true
// when every byte came back and the checksums (FNV-1a) of what went and came back agree.
// *echoed: the bytes read back.
bool echo_checked(SSL* ssl, size_t total, size_t* echoed);

}  // namespace ringpoll::test
