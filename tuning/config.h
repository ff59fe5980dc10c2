#pragma once
// Config profiles: every tunable of every ringpoll program, read from TOML.
//
// A Config is built in layers, each applied on top of the previous one:
//
//   1. a profile: a built-in name (balanced, latency, throughput — the files in
//      tuning/profiles/, embedded at build time) or the path of a TOML file;
//   2. the --config FILE of programs that take one;
//   3. each --set key=value, in order.
//
// A file may start with `profile = "NAME"` (a built-in name): the layer then starts from
// that profile and applies the rest of the file on top. Arrays of tables
// ([[proxy.listener]], [[proxy.pool]]) replace the whole list of the layer below; scalars
// replace one value. An unknown key or section, a value of the wrong type or out of range,
// and a TOML syntax error are ConfigErrors naming the file, the line and the key; a layer
// that fails changes nothing. The default of every key is the `balanced` profile; the
// table of keys, defaults and ranges is tuning/README.md (kept true by the tests, which
// load balanced.toml, compare its values with Config{} and its keys with every key
// print_config writes).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../engine/backend.h"
#include "../engine/engine.h"
#include "../engine/net.h"
#include "../uring/uring_options.h"

namespace ringpoll::tuning {

enum class UringMode { kReadiness, kCompletion };
enum class SpliceMode { kAuto, kOn, kOff };
enum class Balance { kRoundRobin, kLeastConn, kMaglev };
enum class ProxyProtocol { kOff, kV1, kV2 };
enum class ListenerProtocol { kTcp, kUdp, kHttp };
enum class PacketPath { kKernel, kDpdk, kXdp };
enum class TlsMinVersion { k12, k13 };
enum class AccessLogFormat { kText, kJson };

// A Maglev pool's key (hash_key): the client's address, or in the HTTP mode the value of a
// request header (its name matched without regard to case) or of a cookie (matched exactly).
enum class HashSource { kClient, kHeader, kCookie };
struct HashKey {
  HashSource source = HashSource::kClient;
  std::string name;  // the header's or the cookie's; empty for kClient
  bool operator==(const HashKey&) const = default;
};
// Parses "client", "header:NAME" or "cookie:NAME" (NAME an HTTP token, RFC 9110 5.6.2):
// "" when it is one of those, else what is wrong.
std::string parse_hash_key(std::string_view text, HashKey* out);
std::string to_string(const HashKey& k);

// engine.busy_poll_us = "auto": the adaptive controller (engine/adaptive_poll.h).
inline constexpr int64_t kBusyPollAutoUs = -1;

struct EngineSection {
  BackendChoice backend = BackendChoice::kAuto;
  int64_t shards = 0;     // 0: one per CPU in the process's affinity mask
  std::vector<int> cpus;  // CPU of shard i; empty: the allowed CPUs in order
  bool pin = true;
  int64_t fairness_batch = 61;             // tasks run between two non-blocking polls (Go's 61)
  int64_t tick_us = 1000;                  // level-0 timer wheel tick
  int64_t busy_poll_us = kBusyPollAutoUs;  // spin this long before blocking; -1: "auto"
  int64_t inbox_capacity = 4096;
  int64_t stall_ms = 200;  // stall detector: a loop that has not polled this long; 0: off
  bool operator==(const EngineSection&) const = default;
};

struct UringSection {
  UringMode mode = UringMode::kCompletion;
  int64_t entries = 256;
  bool sqpoll = false;
  int64_t sqpoll_idle_ms = 1000;
  bool single_issuer = true;
  bool defer_taskrun = true;
  bool coop_taskrun = true;
  bool msg_ring_wake = true;
  bool register_ring_fd = true;
  bool multishot_accept = true;
  bool multishot_recv = true;
  int64_t buf_count = 512;
  int64_t buf_size = 4096;
  int64_t buf_per_conn = 16;  // buffers one connection may hold unread (fairness bound)
  bool send_zc = true;
  int64_t zc_threshold = 16384;  // sends of at least this many bytes use send_zc
  bool operator==(const UringSection&) const = default;
};

struct SocketSection {
  bool nodelay = true;
  bool keepalive = false;
  bool reuseport = true;
  bool allow_shared_port = false;  // with reuseport: start even if another socket listens
  int64_t backlog = 4096;
  int64_t rcvbuf = 0;  // 0: the kernel's default
  int64_t sndbuf = 0;
  bool operator==(const SocketSection&) const = default;
};

struct TimeoutsSection {
  int64_t connect_ms = 5000;
  int64_t idle_ms = 60000;  // 0: none
  int64_t header_read_ms = 10000;
  int64_t drain_ms = 5000;
  bool operator==(const TimeoutsSection&) const = default;
};

struct LimitsSection {
  int64_t max_connections = 0;  // 0: unlimited
  int64_t buffer_bytes = 65536;
  int64_t max_request_line = 8192;
  int64_t max_header_bytes = 16384;
  bool operator==(const LimitsSection&) const = default;
};

// TLS termination on a TCP listener (`tls.cert`, `tls.key`, ... in its [[proxy.listener]]
// table): the proxy runs the handshake within tls.handshake_ms, then relays plaintext to
// the pool. Off while cert is empty. cert and key pair up by position (an ECDSA and an
// RSA chain may be given together; OpenSSL picks by what the client supports).
struct ListenerTls {
  std::vector<std::string> cert;       // PEM chains, leaf first ("x.pem" or ["a.pem", "b.pem"])
  std::vector<std::string> key;        // the private key of each, in the same order
  std::vector<std::string> sni_certs;  // "HOST-PATTERN=CERT:KEY": that chain for those names
  TlsMinVersion min_version = TlsMinVersion::k12;
  std::string ciphers;            // TLS 1.2 cipher list; "" = OpenSSL's default
  std::string ciphersuites;       // TLS 1.3 suites; "" = OpenSSL's default
  std::vector<std::string> alpn;  // protocols offered, in order of preference
  bool operator==(const ListenerTls&) const = default;
};

struct ProxyListener {
  std::string name;
  std::string listen;  // "ADDR:PORT", checked with parse_address
  std::string pool;    // names a ProxyPool
  ProxyProtocol proxy_protocol = ProxyProtocol::kOff;
  ListenerProtocol protocol = ListenerProtocol::kTcp;  // "udp": datagrams, per-client flows;
                                                       // "http": requests routed by [[proxy.route]]
  // Admission limits at accept (engine/accept_limits.h); 0: no limit.
  int64_t max_connections = 0;         // open at once on this listener
  int64_t max_conn_rate = 0;           // new connections per second on this listener
  int64_t max_client_connections = 0;  // open at once from one client address
  int64_t max_client_conn_rate = 0;    // new connections per second from one client address
  // TLS pass-through routing by server name: "PATTERN=POOL" entries, first match wins;
  // a client whose name matches none (or sends none) goes to `pool`. Empty: no routing.
  std::vector<std::string> sni_routes;
  ListenerTls tls;  // TLS termination (TCP listeners without sni_routes)
  bool operator==(const ProxyListener&) const = default;
};

// One route of an HTTP listener ([[proxy.route]]): requests whose Host, path and method
// match go to `pool`. Empty match keys match anything.
struct ProxyRoute {
  std::string name;
  std::string listener;     // names a ProxyListener with protocol = "http"
  std::string pool;         // names a ProxyPool
  std::string host;         // "" any, "a.example", "*.example"
  std::string path_prefix;  // "" any
  std::string method;       // "" any
  int64_t connect_ms = 5000;
  int64_t header_read_ms = 10000;      // 0: none
  int64_t response_header_ms = 30000;  // 0: none
  int64_t idle_ms = 60000;             // 0: none
  bool operator==(const ProxyRoute&) const = default;
};

struct ProxyPool {
  std::string name;
  Balance balance = Balance::kRoundRobin;
  HashKey hash_key;  // what Maglev hashes: "client", "header:NAME", "cookie:NAME" (HTTP mode)
  // At least one: "ADDR:PORT", "name:port" (A/AAAA records) or an SRV name
  // "_service._proto.zone", resolved by the proxy and followed at the records' TTL.
  std::vector<std::string> upstreams;
  int64_t resolve_min_ttl_s = 1;       // a name is resolved again after its TTL, at least this
  int64_t resolve_max_ttl_s = 300;     // and at most this
  int64_t slow_start_ms = 0;           // a new upstream's weight ramps up over this (0: none)
  int64_t fail_threshold = 3;          // consecutive failures (connects, resets) before ejection
  int64_t eject_ms = 10000;            // the first ejection; each following one doubles
  int64_t max_eject_ms = 300000;       // up to this
  int64_t max_ejection_percent = 100;  // the share of the pool that may be out at once
  int64_t check_interval_ms = 0;       // 0: no active health checks
  int64_t check_timeout_ms = 1000;
  // TLS to the upstreams (origination): the handshake is part of the connect (within
  // timeouts.connect_ms; a failed one is a failed connect). verify: the chain against
  // tls_ca (empty: the system's CAs) and the name tls_server_name (also sent as SNI;
  // empty: no name is sent or checked, the chain still is).
  bool tls = false;
  bool tls_verify = true;
  std::string tls_ca;
  std::string tls_server_name;
  bool operator==(const ProxyPool&) const = default;
};

struct ProxySection {
  SpliceMode splice = SpliceMode::kAuto;
  int64_t bulk_buffer_bytes = 1048576;   // a bulk direction's buffer or pipe
  int64_t hibernate_after_ms = 1000;     // a plain relay quiet this long sleeps; 0: never
  std::vector<ProxyListener> listeners;  // [[proxy.listener]]
  std::vector<ProxyPool> pools;          // [[proxy.pool]]
  std::vector<ProxyRoute> routes;        // [[proxy.route]], in order: first match wins
  std::vector<std::string> resolvers;    // "ADDR:PORT" nameservers for pool names; empty:
                                         // /etc/resolv.conf
  int64_t udp_idle_ms = 30000;           // a UDP flow with no datagram either way ends
  int64_t udp_max_flows = 65536;         // UDP flows at once (all listeners, all shards)
  bool operator==(const ProxySection&) const = default;
};

// ringpoll-proxy's HTTP listeners ([http]).
struct HttpSection {
  bool x_forwarded = true;               // X-Forwarded-For / X-Forwarded-Proto on requests
  bool forwarded = false;                // RFC 7239 Forwarded on requests
  bool via = true;                       // Via on requests and responses
  int64_t max_idle_per_upstream = 1024;  // idle keep-alive connections per shard and upstream
  int64_t max_requests_per_connection = 10000;
  int64_t upstream_idle_ms = 30000;  // an idle keep-alive connection is closed after this
  // One line per request (apps/proxy/access_log.h): "off", "stderr" or a file path.
  std::string access_log = "stderr";
  AccessLogFormat access_log_format = AccessLogFormat::kText;
  int64_t access_log_buffer_kib = 1024;  // per shard; a full buffer drops lines (counted)
  bool operator==(const HttpSection&) const = default;
};

// The packet-I/O paths (packet/): UDP datagrams polled by each shard.
struct PacketSection {
  PacketPath path = PacketPath::kKernel;
  int64_t ring_size = 1024;    // RX/TX descriptors per queue
  int64_t max_payload = 2048;  // largest datagram payload either way
  int64_t idle_spins = 64;     // idle loop rounds spent spinning before backing off
  int64_t idle_max_us = 1000;  // longest idle block once backed off
  std::string dpdk_args = "--no-huge --no-pci --no-shconf --no-telemetry -m 64 --vdev=net_ring0";
  std::string dpdk_port = "net_ring0";  // the DPDK device the shards' queues belong to
  int64_t dpdk_mbufs = 4096;            // mbufs per queue's pool
  std::string xdp_iface = "eth0";  // the interface whose queues the shards' AF_XDP sockets bind
  int64_t xdp_frames = 4096;       // UMEM frames (2 KiB each) per queue
  // ringpoll-proxy's UDP listeners on dpdk/xdp: the local ports of the flows (one each).
  int64_t udp_port_base = 40000;
  int64_t udp_port_count = 8192;
  bool operator==(const PacketSection&) const = default;
};

// TLS of ringpoll-serve's listener (tls/). Off while cert is empty; cert and key go
// together. The files are checked when the layer that names them is read (readable, a
// PEM OpenSSL loads, the key matching the certificate), so a bad one is a ConfigError at
// its key's line, not a failure at the first connection.
struct TlsSection {
  std::string cert;  // PEM chain, leaf first; "" = TLS off
  std::string key;   // PEM private key of the leaf
  TlsMinVersion min_version = TlsMinVersion::k12;
  std::string ciphers;             // TLS 1.2 cipher list; "" = OpenSSL's default
  std::string ciphersuites;        // TLS 1.3 suites; "" = OpenSSL's default
  std::string groups;              // key-exchange groups; "" = OpenSSL's default
  int64_t ticket_rotate_s = 3600;  // session-ticket key life; 0 = no tickets
  int64_t handshake_ms = 10000;    // a handshake not done by then is closed
  bool operator==(const TlsSection&) const = default;
};

struct Config {
  EngineSection engine;
  UringSection io_uring;
  SocketSection socket;
  TimeoutsSection timeouts;
  LimitsSection limits;
  ProxySection proxy;
  HttpSection http;
  PacketSection packet;
  TlsSection tls;
  bool operator==(const Config&) const = default;
};

// Where and why a layer was refused. line 0: no line (a --set, a file that cannot be
// read); key empty: the error is not about one key (a syntax error, an unreadable file).
struct ConfigError {
  std::string file;
  int line = 0;
  std::string key;
  std::string message;
  // "tuning/profiles/x.toml:12: io_uring.entries: must be a power of two in 8..32768,
  // got 300"; without a line "--set: engine.backend: ..."; without a key "x.toml:3: ...".
  std::string to_string() const;
};

// The built-in profiles, in a fixed order (balanced first).
std::vector<std::string> builtin_profiles();
// The text of a built-in profile, or nullopt for an unknown name.
std::optional<std::string_view> builtin_profile_text(std::string_view name);

// Each function below applies one layer to *cfg. On error it returns the error and leaves
// *cfg unchanged.

// A TOML document; `file` names it in errors.
std::optional<ConfigError> apply_toml(std::string_view text, std::string_view file, Config* cfg);
// The TOML file at `path`.
std::optional<ConfigError> apply_file(const std::string& path, Config* cfg);
// A built-in profile name, otherwise the path of a file. *cfg is first reset to the
// defaults, so the result is that profile alone.
std::optional<ConfigError> load_profile(std::string_view name_or_path, Config* cfg);
// One "--set key=value". The value is read as a TOML value when it parses as one (42,
// true, [0, 1], "text", {name = "x"}), else as a bare string (engine.backend=epoll).
std::optional<ConfigError> apply_set(std::string_view assignment, Config* cfg);

// The whole config as TOML, every key written, such that apply_toml of the text onto a
// default Config gives back an equal Config.
std::string print_config(const Config& cfg);

// Mapping to the engine's option structs.
EngineOptions engine_options(const Config& cfg);
UringOptions uring_options(const Config& cfg);
UringCompletionOptions completion_options(const Config& cfg);
BackendChoice backend_choice(const Config& cfg);
ListenOptions listen_options(const Config& cfg);

const char* to_string(UringMode m);
const char* to_string(SpliceMode m);
const char* to_string(Balance b);
const char* to_string(ProxyProtocol p);
const char* to_string(ListenerProtocol p);
const char* to_string(PacketPath p);
const char* to_string(TlsMinVersion v);

}  // namespace ringpoll::tuning
