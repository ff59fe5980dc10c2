#pragma once
// The options of ringpoll-load and their parser. The parser is a plain function so the
// tests can check every rejection without running the binary; main() turns a rejection
// into one line on stderr and exit code 2.
#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"
#ifndef _WIN32  // no OpenSSL in the Windows build: --tls is refused there
#include "tls/tls_context.h"
#endif

namespace ringpoll::load {

enum class LoadMode { kEcho, kHttp };
const char* to_string(LoadMode m) noexcept;

struct LoadOptions {
  LoadMode mode = LoadMode::kEcho;
  sockaddr_in target{};     // IPv4 address and port (network byte order)
  std::string target_text;  // as given, for the Host header and the report
  int connections = 0;
  int size = 64;  // echo: bytes per request
  double duration_s = 0;
  double warmup_s = 0;
  double rate = 0;       // total requests/s over all connections; 0: closed loop
  int pipeline = 1;      // requests in flight per connection
  int shards = 1;        // engine shards (threads pinned to the allowed CPUs)
  double timeout_s = 5;  // per request (and per connect)
  std::string json_path;
  BackendChoice backend = BackendChoice::kAuto;
  // Internal (no flag): measure open-loop latency from the intended send time (wrk2's
  // coordinated-omission correction). Tests turn it off to show what it corrects.
  bool co_correction = true;

  // TLS (--tls): the client side of tls::TlsStream, verifying the server against --tls-ca
  // (the system store when empty) and the --tls-sni name, unless --tls-insecure.
  bool tls = false;
  bool tls_resume = false;                 // offer the latest session (tickets) on reconnects
  bool tls_handshake_per_request = false;  // a new connection (and handshake) per request
  bool tls_insecure = false;               // no certificate or host name check
  std::string tls_ca;
  std::string tls_sni;  // SNI and verify name; default: the --target host

  bool open_loop() const noexcept { return rate > 0; }
};

struct ParseResult {
  enum class Kind { kRun, kHelp, kError };
  Kind kind = Kind::kError;
  LoadOptions options;
  std::string error;  // kError: names the argument and what was wrong
};

// args excludes the program name. Accepts "--flag value" and "--flag=value".
ParseResult parse_load_args(const std::vector<std::string>& args);

const char* load_usage() noexcept;

#ifndef _WIN32
// --tls-ca, --tls-insecure and --tls-resume as a client TlsContext's options.
tls::TlsOptions tls_client_options(const LoadOptions& o);
#endif

}  // namespace ringpoll::load
