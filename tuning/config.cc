#include "tuning/config.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <span>
#include <sstream>
#include <thread>
#include <toml.hpp>

#include "engine/host_name.h"
#ifndef _WIN32  // no OpenSSL in the mingw-w64 build: TLS keys are refused there
#include "tls/tls_context.h"
#include "tuning/tls_options.h"
#endif
#include "tuning/tuning_profiles.h"  // generated from tuning/profiles/*.toml

namespace ringpoll::tuning {
namespace {

// Larger documents are refused before parsing: a config is a page or two, and the parser
// holds the whole text plus a tree several times its size.
constexpr size_t kMaxDocumentBytes = 1 << 20;
// toml11 parses nested arrays and inline tables recursively; deeper nesting than this is
// refused before parsing so a hostile file cannot exhaust the stack (no key needs > 2).
constexpr int kMaxNesting = 32;
constexpr int64_t kMiB = 1 << 20;

template <class E>
struct Named {
  const char* name;
  E value;
};
constexpr Named<BackendChoice> kBackendNames[] = {{"auto", BackendChoice::kAuto},
                                                  {"io_uring", BackendChoice::kIoUring},
                                                  {"epoll", BackendChoice::kEpoll}};
constexpr Named<UringMode> kUringModeNames[] = {{"readiness", UringMode::kReadiness},
                                                {"completion", UringMode::kCompletion}};
constexpr Named<SpliceMode> kSpliceNames[] = {
    {"auto", SpliceMode::kAuto}, {"on", SpliceMode::kOn}, {"off", SpliceMode::kOff}};
constexpr Named<Balance> kBalanceNames[] = {{"round_robin", Balance::kRoundRobin},
                                            {"least_conn", Balance::kLeastConn},
                                            {"maglev", Balance::kMaglev}};
constexpr Named<ProxyProtocol> kProxyProtocolNames[] = {
    {"off", ProxyProtocol::kOff}, {"v1", ProxyProtocol::kV1}, {"v2", ProxyProtocol::kV2}};
constexpr Named<ListenerProtocol> kListenerProtocolNames[] = {{"tcp", ListenerProtocol::kTcp},
                                                              {"udp", ListenerProtocol::kUdp},
                                                              {"http", ListenerProtocol::kHttp}};
constexpr Named<PacketPath> kPacketPathNames[] = {
    {"kernel", PacketPath::kKernel}, {"dpdk", PacketPath::kDpdk}, {"xdp", PacketPath::kXdp}};
constexpr Named<TlsMinVersion> kTlsMinVersionNames[] = {{"1.2", TlsMinVersion::k12},
                                                        {"1.3", TlsMinVersion::k13}};
constexpr Named<AccessLogFormat> kAccessLogFormatNames[] = {{"text", AccessLogFormat::kText},
                                                            {"json", AccessLogFormat::kJson}};

template <class E>
const char* name_of(std::span<const Named<E>> names, E v) {
  for (const auto& n : names) {
    if (n.value == v) return n.name;
  }
  return "?";
}

// What a key accepts. Each key of the schema below pairs a field with one of these.
struct BoolSpec {};
struct IntSpec {
  int64_t lo;
  int64_t hi;
  bool pow2 = false;     // must also be a power of two
  bool zero_ok = false;  // 0 is accepted besides lo..hi (it means "off" / "default")
};
// An integer in lo..hi, or the string "auto" (stored as auto_value).
struct IntOrAutoSpec {
  int64_t lo;
  int64_t hi;
  int64_t auto_value;
};
template <class E>
struct EnumSpec {
  std::span<const Named<E>> names;
};
// kOptional: may be empty (a route's match keys, where empty matches anything; TLS files).
enum class TextKind { kName, kAddress, kPoolRef, kOptional };
struct TextSpec {
  TextKind kind;
};
struct CpuListSpec {};       // [int, ...], each a configured CPU
struct AddressListSpec {};   // ["ADDR:PORT", ...]
struct UpstreamListSpec {};  // ["ADDR:PORT" | "name:port" | "_svc._proto.zone", ...], at least one
struct SniRouteListSpec {};  // ["HOST-PATTERN=POOL", ...] (engine/host_name.h patterns)
struct PathListSpec {};      // "FILE" or ["FILE", ...]: non-empty paths (TLS cert and key files)
struct SniCertListSpec {};   // ["HOST-PATTERN=CERT:KEY", ...]
struct AlpnListSpec {};      // ["h2", "http/1.1", ...]: each 1..255 bytes
struct SubTableSpec {};      // a table of its own keys ("tls.cert = ..." in a listener)
struct TableListSpec {};     // [[section.key]] tables
struct HashKeySpec {};       // "client" | "header:NAME" | "cookie:NAME"

// The schema: one function per section listing (key, field, spec). The reader, the
// printer and the tests walk the same lists, so a key cannot be read but not printed.
template <class V>
void fields(EngineSection& s, V&& v) {
  v("backend", s.backend, EnumSpec<BackendChoice>{kBackendNames});
  v("shards", s.shards, IntSpec{0, 1024});
  v("cpus", s.cpus, CpuListSpec{});
  v("pin", s.pin, BoolSpec{});
  v("fairness_batch", s.fairness_batch, IntSpec{1, 100000});
  v("tick_us", s.tick_us, IntSpec{10, 1000000});
  v("busy_poll_us", s.busy_poll_us, IntOrAutoSpec{0, 100000, kBusyPollAutoUs});
  v("inbox_capacity", s.inbox_capacity, IntSpec{64, 1048576, true});
  v("stall_ms", s.stall_ms, IntSpec{0, 600000});
}
template <class V>
void fields(UringSection& s, V&& v) {
  v("mode", s.mode, EnumSpec<UringMode>{kUringModeNames});
  v("entries", s.entries, IntSpec{8, 32768, true});
  v("sqpoll", s.sqpoll, BoolSpec{});
  v("sqpoll_idle_ms", s.sqpoll_idle_ms, IntSpec{1, 60000});
  v("single_issuer", s.single_issuer, BoolSpec{});
  v("defer_taskrun", s.defer_taskrun, BoolSpec{});
  v("coop_taskrun", s.coop_taskrun, BoolSpec{});
  v("msg_ring_wake", s.msg_ring_wake, BoolSpec{});
  v("register_ring_fd", s.register_ring_fd, BoolSpec{});
  v("multishot_accept", s.multishot_accept, BoolSpec{});
  v("multishot_recv", s.multishot_recv, BoolSpec{});
  v("buf_count", s.buf_count, IntSpec{1, 32768, true});
  v("buf_size", s.buf_size, IntSpec{512, kMiB});
  v("buf_per_conn", s.buf_per_conn, IntSpec{1, 32768});
  v("send_zc", s.send_zc, BoolSpec{});
  v("zc_threshold", s.zc_threshold, IntSpec{0, 64 * kMiB});
}
template <class V>
void fields(SocketSection& s, V&& v) {
  v("nodelay", s.nodelay, BoolSpec{});
  v("keepalive", s.keepalive, BoolSpec{});
  v("reuseport", s.reuseport, BoolSpec{});
  v("allow_shared_port", s.allow_shared_port, BoolSpec{});
  v("backlog", s.backlog, IntSpec{1, 65535});
  v("rcvbuf", s.rcvbuf, IntSpec{4096, 64 * kMiB, false, true});
  v("sndbuf", s.sndbuf, IntSpec{4096, 64 * kMiB, false, true});
}
constexpr int64_t kHourMs = 3600 * 1000;
template <class V>
void fields(TimeoutsSection& s, V&& v) {
  v("connect_ms", s.connect_ms, IntSpec{1, kHourMs});
  v("idle_ms", s.idle_ms, IntSpec{0, 24 * kHourMs});
  v("header_read_ms", s.header_read_ms, IntSpec{0, kHourMs});
  v("drain_ms", s.drain_ms, IntSpec{0, kHourMs});
}
template <class V>
void fields(LimitsSection& s, V&& v) {
  v("max_connections", s.max_connections, IntSpec{0, 100000000});
  v("buffer_bytes", s.buffer_bytes, IntSpec{1024, 16 * kMiB});
  v("max_request_line", s.max_request_line, IntSpec{256, kMiB});
  v("max_header_bytes", s.max_header_bytes, IntSpec{1024, 16 * kMiB});
}
template <class V>
void fields(ProxyListener& s, V&& v) {
  v("name", s.name, TextSpec{TextKind::kName});
  v("listen", s.listen, TextSpec{TextKind::kAddress});
  v("pool", s.pool, TextSpec{TextKind::kPoolRef});
  v("proxy_protocol", s.proxy_protocol, EnumSpec<ProxyProtocol>{kProxyProtocolNames});
  v("protocol", s.protocol, EnumSpec<ListenerProtocol>{kListenerProtocolNames});
  v("max_connections", s.max_connections, IntSpec{0, 100000000});
  v("max_conn_rate", s.max_conn_rate, IntSpec{0, 100000000});
  v("max_client_connections", s.max_client_connections, IntSpec{0, 100000000});
  v("max_client_conn_rate", s.max_client_conn_rate, IntSpec{0, 100000000});
  v("sni_routes", s.sni_routes, SniRouteListSpec{});
  v("tls", s.tls, SubTableSpec{});
}
template <class V>
void fields(ListenerTls& s, V&& v) {
  v("cert", s.cert, PathListSpec{});
  v("key", s.key, PathListSpec{});
  v("sni_certs", s.sni_certs, SniCertListSpec{});
  v("min_version", s.min_version, EnumSpec<TlsMinVersion>{kTlsMinVersionNames});
  v("ciphers", s.ciphers, TextSpec{TextKind::kOptional});
  v("ciphersuites", s.ciphersuites, TextSpec{TextKind::kOptional});
  v("alpn", s.alpn, AlpnListSpec{});
}
template <class V>
void fields(ProxyPool& s, V&& v) {
  v("name", s.name, TextSpec{TextKind::kName});
  v("balance", s.balance, EnumSpec<Balance>{kBalanceNames});
  v("hash_key", s.hash_key, HashKeySpec{});
  v("upstreams", s.upstreams, UpstreamListSpec{});
  v("resolve_min_ttl_s", s.resolve_min_ttl_s, IntSpec{1, 86400});
  v("resolve_max_ttl_s", s.resolve_max_ttl_s, IntSpec{1, 86400});
  v("slow_start_ms", s.slow_start_ms, IntSpec{0, kHourMs});
  v("fail_threshold", s.fail_threshold, IntSpec{1, 1000});
  v("eject_ms", s.eject_ms, IntSpec{0, kHourMs});
  v("max_eject_ms", s.max_eject_ms, IntSpec{0, 24 * kHourMs});
  v("max_ejection_percent", s.max_ejection_percent, IntSpec{0, 100});
  v("check_interval_ms", s.check_interval_ms, IntSpec{0, kHourMs});
  v("check_timeout_ms", s.check_timeout_ms, IntSpec{1, kHourMs});
  v("tls", s.tls, BoolSpec{});
  v("tls_verify", s.tls_verify, BoolSpec{});
  v("tls_ca", s.tls_ca, TextSpec{TextKind::kOptional});
  v("tls_server_name", s.tls_server_name, TextSpec{TextKind::kOptional});
}
template <class V>
void fields(ProxyRoute& s, V&& v) {
  v("name", s.name, TextSpec{TextKind::kName});
  v("listener", s.listener, TextSpec{TextKind::kName});
  v("pool", s.pool, TextSpec{TextKind::kPoolRef});
  v("host", s.host, TextSpec{TextKind::kOptional});
  v("path_prefix", s.path_prefix, TextSpec{TextKind::kOptional});
  v("method", s.method, TextSpec{TextKind::kOptional});
  v("connect_ms", s.connect_ms, IntSpec{1, kHourMs});
  v("header_read_ms", s.header_read_ms, IntSpec{0, kHourMs});
  v("response_header_ms", s.response_header_ms, IntSpec{0, kHourMs});
  v("idle_ms", s.idle_ms, IntSpec{0, 24 * kHourMs});
}
template <class V>
void fields(HttpSection& s, V&& v) {
  v("x_forwarded", s.x_forwarded, BoolSpec{});
  v("forwarded", s.forwarded, BoolSpec{});
  v("via", s.via, BoolSpec{});
  v("max_idle_per_upstream", s.max_idle_per_upstream, IntSpec{0, 100000});
  v("max_requests_per_connection", s.max_requests_per_connection, IntSpec{1, 100000000});
  v("upstream_idle_ms", s.upstream_idle_ms, IntSpec{1, kHourMs});
  v("access_log", s.access_log, TextSpec{TextKind::kName});
  v("access_log_format", s.access_log_format, EnumSpec<AccessLogFormat>{kAccessLogFormatNames});
  v("access_log_buffer_kib", s.access_log_buffer_kib, IntSpec{4, 65536});
}
template <class V>
void fields(ProxySection& s, V&& v) {
  v("splice", s.splice, EnumSpec<SpliceMode>{kSpliceNames});
  v("bulk_buffer_bytes", s.bulk_buffer_bytes, IntSpec{4096, 16 * kMiB});
  v("hibernate_after_ms", s.hibernate_after_ms, IntSpec{0, 24 * kHourMs});
  v("listener", s.listeners, TableListSpec{});
  v("pool", s.pools, TableListSpec{});
  v("route", s.routes, TableListSpec{});
  v("resolvers", s.resolvers, AddressListSpec{});
  v("udp_idle_ms", s.udp_idle_ms, IntSpec{1, 24 * kHourMs});
  v("udp_max_flows", s.udp_max_flows, IntSpec{1, 100000000});
}
template <class V>
void fields(PacketSection& s, V&& v) {
  v("path", s.path, EnumSpec<PacketPath>{kPacketPathNames});
  v("ring_size", s.ring_size, IntSpec{64, 16384, true});
  v("max_payload", s.max_payload, IntSpec{64, 9000});
  v("idle_spins", s.idle_spins, IntSpec{0, 1000000});
  v("idle_max_us", s.idle_max_us, IntSpec{1, 100000});
  v("dpdk_args", s.dpdk_args, TextSpec{TextKind::kName});
  v("dpdk_port", s.dpdk_port, TextSpec{TextKind::kName});
  v("dpdk_mbufs", s.dpdk_mbufs, IntSpec{512, 1048576});
  v("xdp_iface", s.xdp_iface, TextSpec{TextKind::kName});
  v("xdp_frames", s.xdp_frames, IntSpec{256, 1048576, true});
  v("udp_port_base", s.udp_port_base, IntSpec{1024, 65535});
  v("udp_port_count", s.udp_port_count, IntSpec{1, 64512});
}
template <class V>
void fields(TlsSection& s, V&& v) {
  v("cert", s.cert, TextSpec{TextKind::kOptional});
  v("key", s.key, TextSpec{TextKind::kOptional});
  v("min_version", s.min_version, EnumSpec<TlsMinVersion>{kTlsMinVersionNames});
  v("ciphers", s.ciphers, TextSpec{TextKind::kOptional});
  v("ciphersuites", s.ciphersuites, TextSpec{TextKind::kOptional});
  v("groups", s.groups, TextSpec{TextKind::kOptional});
  v("ticket_rotate_s", s.ticket_rotate_s, IntSpec{0, 7 * 24 * 3600});
  v("handshake_ms", s.handshake_ms, IntSpec{0, kHourMs});
}
template <class V>
void sections(Config& c, V&& v) {
  v("engine", c.engine);
  v("io_uring", c.io_uring);
  v("socket", c.socket);
  v("timeouts", c.timeouts);
  v("limits", c.limits);
  v("proxy", c.proxy);
  v("http", c.http);
  v("packet", c.packet);
  v("tls", c.tls);
}

template <class S>
std::string key_list(S& s) {
  std::string out;
  fields(s, [&](const char* key, auto&, const auto&) {
    if (!out.empty()) out += ", ";
    out += key;
  });
  return out;
}

std::string section_list() {
  Config c;
  std::string out;
  sections(c, [&](const char* name, auto&) {
    if (!out.empty()) out += ", ";
    out += name;
  });
  return out;
}

std::string profile_list() {
  std::string out;
  for (const auto& p : embedded::kProfiles) {
    if (!out.empty()) out += ", ";
    out += p.name;
  }
  return out;
}

// A TOML basic string: quotes, backslashes and control characters escaped.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// "proxy.pool[1]": how errors name an element of an array.
std::string indexed(const std::string& key, size_t i) {
  return key + "[" + std::to_string(i) + "]";
}

std::string describe(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::boolean:
      return std::string("the boolean ") + (v.as_boolean() ? "true" : "false");
    case toml::value_t::integer:
      return "the integer " + std::to_string(v.as_integer());
    case toml::value_t::floating:
      return "a float";
    case toml::value_t::string:
      return "the string " + quote(v.as_string().str);
    case toml::value_t::array:
      return "an array";
    case toml::value_t::table:
      return "a table";
    case toml::value_t::empty:
      return "nothing";
    default:
      return "a date/time";
  }
}

// Reads the tables of one document into a Config, collecting every error.
class Reader {
 public:
  Reader(std::string file, bool lines) : file_(std::move(file)), lines_(lines) {}

  std::vector<ConfigError> errors;
  std::map<std::string, int> key_lines;  // where each key read by this layer stands

  int line(const toml::value& v) const {
    return lines_ ? static_cast<int>(v.location().line()) : 0;
  }
  void fail(int line, const std::string& key, std::string msg) {
    errors.push_back(ConfigError{file_, line, key, std::move(msg)});
  }
  void fail(const toml::value& v, const std::string& key, std::string msg) {
    fail(line(v), key, std::move(msg));
  }
  void wrong_type(const toml::value& v, const std::string& key, const char* want) {
    fail(v, key, std::string("must be ") + want + ", got " + describe(v));
  }

  template <class S>
  void table(const toml::value& t, const std::string& prefix, S& s) {
    for (const auto& entry : t.as_table()) {
      // Named references, not a structured binding: clang 14 cannot capture one in a lambda.
      const std::string& k = entry.first;
      const toml::value& v = entry.second;
      const std::string key = prefix + "." + k;
      key_lines[key] = line(v);
      bool known = false;
      fields(s, [&](const char* name, auto& field, const auto& spec) {
        if (k != name) return;
        known = true;
        read(v, key, field, spec);
      });
      if (!known) fail(v, key, "unknown key; [" + prefix + "] has " + key_list(s));
    }
  }

 private:
  void read(const toml::value& v, const std::string& key, bool& out, BoolSpec) {
    if (!v.is_boolean()) return wrong_type(v, key, "a boolean");
    out = v.as_boolean();
  }

  void read(const toml::value& v, const std::string& key, int64_t& out, IntSpec spec) {
    if (!v.is_integer()) return wrong_type(v, key, "an integer");
    const int64_t x = v.as_integer();
    const bool in_range = (x >= spec.lo && x <= spec.hi) || (spec.zero_ok && x == 0);
    if (in_range && (!spec.pow2 || (x & (x - 1)) == 0)) {
      out = x;
      return;
    }
    std::string want = spec.pow2 ? "a power of two in " : spec.zero_ok ? "0 or in " : "in ";
    fail(v, key,
         "must be " + want + std::to_string(spec.lo) + ".." + std::to_string(spec.hi) + ", got " +
             std::to_string(x));
  }

  void read(const toml::value& v, const std::string& key, int64_t& out, IntOrAutoSpec spec) {
    const std::string want =
        "\"auto\" or an integer in " + std::to_string(spec.lo) + ".." + std::to_string(spec.hi);
    if (v.is_string()) {
      if (v.as_string().str == "auto") {
        out = spec.auto_value;
        return;
      }
      return fail(v, key, "must be " + want + ", got " + quote(v.as_string().str));
    }
    if (!v.is_integer()) return wrong_type(v, key, want.c_str());
    const int64_t x = v.as_integer();
    if (x >= spec.lo && x <= spec.hi) {
      out = x;
      return;
    }
    fail(v, key, "must be " + want + ", got " + std::to_string(x));
  }

  template <class E>
  void read(const toml::value& v, const std::string& key, E& out, EnumSpec<E> spec) {
    std::string choices;
    for (const auto& n : spec.names) choices += (choices.empty() ? "" : ", ") + quote(n.name);
    if (!v.is_string()) return wrong_type(v, key, ("one of " + choices).c_str());
    for (const auto& n : spec.names) {
      if (v.as_string().str == n.name) {
        out = n.value;
        return;
      }
    }
    fail(v, key, "must be one of " + choices + ", got " + quote(v.as_string().str));
  }

  bool address(const toml::value& v, const std::string& key) {
    if (!v.is_string()) {
      wrong_type(v, key, "a string \"ADDR:PORT\"");
      return false;
    }
    SocketAddress sa;
    std::string why;
    if (parse_address(v.as_string().str, &sa, &why).ok()) return true;
    fail(v, key, "not an address: " + why);
    return false;
  }

  void read(const toml::value& v, const std::string& key, std::string& out, TextSpec spec) {
    if (spec.kind == TextKind::kAddress) {
      if (address(v, key)) out = v.as_string().str;
      return;
    }
    if (!v.is_string()) return wrong_type(v, key, "a string");
    if (v.as_string().str.empty() && spec.kind != TextKind::kOptional)
      return fail(v, key, "must not be empty");
    out = v.as_string().str;
  }

  void read(const toml::value& v, const std::string& key, std::vector<int>& out, CpuListSpec) {
    if (!v.is_array()) return wrong_type(v, key, "an array of CPU numbers");
#ifdef _WIN32
    const int64_t ncpu = std::max<int64_t>(std::thread::hardware_concurrency(), 1);
#else
    const int64_t ncpu = std::max<int64_t>(sysconf(_SC_NPROCESSORS_CONF), 1);
#endif
    std::vector<int> cpus;
    for (size_t i = 0; i < v.as_array().size(); ++i) {
      const toml::value& e = v.as_array()[i];
      const std::string ekey = indexed(key, i);
      if (!e.is_integer()) {
        wrong_type(e, ekey, "an integer");
      } else if (e.as_integer() < 0 || e.as_integer() >= ncpu) {
        fail(e, ekey,
             "must be a CPU number in 0.." + std::to_string(ncpu - 1) + " (this machine has " +
                 std::to_string(ncpu) + " configured), got " + std::to_string(e.as_integer()));
      } else {
        cpus.push_back(static_cast<int>(e.as_integer()));
      }
    }
    if (cpus.size() == v.as_array().size()) out = std::move(cpus);
  }

  void read(const toml::value& v, const std::string& key, std::vector<std::string>& out,
            AddressListSpec) {
    if (!v.is_array()) return wrong_type(v, key, "an array of \"ADDR:PORT\" strings");
    std::vector<std::string> addrs;
    for (size_t i = 0; i < v.as_array().size(); ++i) {
      const toml::value& e = v.as_array()[i];
      if (address(e, indexed(key, i))) addrs.push_back(e.as_string().str);
    }
    if (addrs.size() == v.as_array().size()) out = std::move(addrs);
  }

  // Upstreams: address literals, or names the proxy resolves (engine/host_name.h).
  void read(const toml::value& v, const std::string& key, std::vector<std::string>& out,
            UpstreamListSpec) {
    const char* want = "an array of \"ADDR:PORT\", \"name:port\" or SRV name strings";
    if (!v.is_array()) return wrong_type(v, key, want);
    if (v.as_array().empty()) return fail(v, key, "must name at least one upstream");
    strings(v, key, out, want, false, [](const std::string& t) -> std::string {
      SocketAddress sa;
      std::string why, host;
      uint16_t port = 0;
      if (parse_address(t, &sa, &why).ok()) return "";
      const std::string literal_why = why;
      if (parse_service_name(t, &host, &port, &why)) return "";
      // Looks like a literal (starts with a digit or '['): say what the literal lacks.
      if (!t.empty() && ((t[0] >= '0' && t[0] <= '9') || t[0] == '['))
        return "not an address: " + literal_why;
      return "not an address or a name: " + why;
    });
  }

  void read(const toml::value& v, const std::string& key, std::vector<std::string>& out,
            SniRouteListSpec) {
    const char* want = "an array of \"HOST-PATTERN=POOL\" strings";
    if (!v.is_array()) return wrong_type(v, key, want);
    std::vector<std::string> routes;
    for (size_t i = 0; i < v.as_array().size(); ++i) {
      const toml::value& e = v.as_array()[i];
      const std::string ekey = indexed(key, i);
      if (!e.is_string()) {
        wrong_type(e, ekey, "a string \"HOST-PATTERN=POOL\"");
        continue;
      }
      const std::string& t = e.as_string().str;
      const size_t eq = t.find('=');
      std::string why;
      if (eq == std::string::npos || eq + 1 == t.size()) {
        fail(e, ekey, "must be \"HOST-PATTERN=POOL\", got " + quote(t));
      } else if (!valid_host_pattern(std::string_view(t).substr(0, eq), &why)) {
        fail(e, ekey, "host pattern " + quote(t.substr(0, eq)) + ": " + why);
      } else {
        routes.push_back(t);
      }
    }
    if (routes.size() == v.as_array().size()) out = std::move(routes);
  }

  // Strings of an array (or one string where `one_ok`), each checked by `check` (which
  // returns "" or what is wrong); the whole list is taken only when every element passes.
  template <class Check>
  void strings(const toml::value& v, const std::string& key, std::vector<std::string>& out,
               const char* want, bool one_ok, Check&& check) {
    if (one_ok && v.is_string()) {
      if (const std::string why = check(v.as_string().str); !why.empty()) return fail(v, key, why);
      out = {v.as_string().str};
      return;
    }
    if (!v.is_array()) return wrong_type(v, key, want);
    std::vector<std::string> items;
    for (size_t i = 0; i < v.as_array().size(); ++i) {
      const toml::value& e = v.as_array()[i];
      const std::string ekey = indexed(key, i);
      if (!e.is_string()) {
        wrong_type(e, ekey, "a string");
      } else if (const std::string why = check(e.as_string().str); !why.empty()) {
        fail(e, ekey, why);
      } else {
        items.push_back(e.as_string().str);
      }
    }
    if (items.size() == v.as_array().size()) out = std::move(items);
  }

  void read(const toml::value& v, const std::string& key, std::vector<std::string>& out,
            PathListSpec) {
    strings(v, key, out, "a file name or an array of file names", true,
            [](const std::string& f) { return f.empty() ? "must not be empty" : ""; });
  }

  void read(const toml::value& v, const std::string& key, std::vector<std::string>& out,
            SniCertListSpec) {
    strings(v, key, out, "an array of \"HOST-PATTERN=CERT:KEY\" strings", false,
            [](const std::string& t) -> std::string {
              const size_t eq = t.find('=');
              const size_t colon = t.rfind(':');
              if (eq == std::string::npos || colon == std::string::npos || colon < eq + 2 ||
                  colon + 1 == t.size())
                return "must be \"HOST-PATTERN=CERT:KEY\", got " + quote(t);
              std::string why;
              if (!valid_host_pattern(std::string_view(t).substr(0, eq), &why))
                return "host pattern " + quote(t.substr(0, eq)) + ": " + why;
              return "";
            });
  }

  void read(const toml::value& v, const std::string& key, std::vector<std::string>& out,
            AlpnListSpec) {
    strings(v, key, out, "an array of protocol names (\"h2\", \"http/1.1\")", false,
            [](const std::string& p) -> std::string {
              if (p.empty() || p.size() > 255) return "a protocol name is 1..255 bytes";
              return "";
            });
  }

  void read(const toml::value& v, const std::string& key, HashKey& out, HashKeySpec) {
    if (!v.is_string()) return wrong_type(v, key, "a string");
    if (const std::string why = parse_hash_key(v.as_string().str, &out); !why.empty())
      fail(v, key, why);
  }

  template <class S>
  void read(const toml::value& v, const std::string& key, S& out, SubTableSpec) {
    if (!v.is_table())
      return wrong_type(v, key, ("a table (its keys as " + key + ".NAME = ...)").c_str());
    table(v, key, out);
  }

  template <class T>
  void read(const toml::value& v, const std::string& key, std::vector<T>& out, TableListSpec) {
    const std::string want = "an array of tables ([[" + key + "]])";
    if (!v.is_array()) return wrong_type(v, key, want.c_str());
    std::vector<T> items;
    for (size_t i = 0; i < v.as_array().size(); ++i) {
      const toml::value& e = v.as_array()[i];
      const std::string ekey = indexed(key, i);
      if (!e.is_table()) {
        wrong_type(e, ekey, "a table");
        continue;
      }
      T item;
      table(e, ekey, item);
      require(e, ekey, item);
      items.push_back(std::move(item));
    }
    out = std::move(items);
  }

  // Text keys of list tables have no default: each must be given.
  template <class T>
  void require(const toml::value& t, const std::string& prefix, T& item) {
    fields(item, [&](const char* name, auto&, const auto& spec) {
      using Spec = std::decay_t<decltype(spec)>;
      if constexpr (std::is_same_v<Spec, TextSpec>) {
        if (spec.kind != TextKind::kOptional && !t.as_table().count(name))
          fail(t, prefix + "." + name, "is required");
      } else if constexpr (std::is_same_v<Spec, UpstreamListSpec>) {
        if (!t.as_table().count(name)) fail(t, prefix + "." + name, "is required");
      }
    });
  }

  std::string file_;
  bool lines_;
};

#ifdef _WIN32
// What the Windows build cannot do, refused where a layer asks for it (a value other
// than the one that runs there), with the key's file and line: TLS (no OpenSSL for
// mingw-w64), a pinned Linux backend, the kernel-bypass packet paths, splice, names in
// pools (no c-ares for mingw-w64). The
// io_uring.* keys (every profile sets them) and socket.reuseport are read and have no
// effect there: Windows runs IOCP and listens once per address (engine/server.h).
template <class LineOf>
void check_windows(const Config& c, Reader& r, LineOf&& line_of) {
  auto refuse = [&](const std::string& key, const std::string& why) {
    r.fail(line_of(key), key, why + " (Windows build)");
  };
  if (c.engine.backend != BackendChoice::kAuto)
    refuse("engine.backend", std::string(to_string(c.engine.backend)) +
                                 " is a Linux backend; Windows runs iocp: use \"auto\"");
  if (!c.tls.cert.empty()) refuse("tls.cert", "TLS needs OpenSSL, which this build has not");
  if (!c.tls.key.empty()) refuse("tls.key", "TLS needs OpenSSL, which this build has not");
  if (c.packet.path != PacketPath::kKernel)
    refuse("packet.path", std::string(to_string(c.packet.path)) +
                              " is a Linux packet path; Windows has the kernel's sockets only");
  if (c.proxy.splice == SpliceMode::kOn)
    refuse("proxy.splice", "splice(2) is Linux only: use \"auto\" or \"off\"");
  for (size_t i = 0; i < c.proxy.listeners.size(); ++i) {
    if (!c.proxy.listeners[i].tls.cert.empty())
      refuse(indexed("proxy.listener", i) + ".tls.cert",
             "TLS termination needs OpenSSL, which this build has not");
  }
  for (size_t i = 0; i < c.proxy.pools.size(); ++i) {
    if (c.proxy.pools[i].tls)
      refuse(indexed("proxy.pool", i) + ".tls",
             "TLS to upstreams needs OpenSSL, which this build has not");
    // Names (A/AAAA, SRV) are resolved with c-ares, which has no mingw-w64 build here.
    for (const std::string& u : c.proxy.pools[i].upstreams) {
      SocketAddress sa;
      std::string why;
      if (parse_address(u, &sa, &why).ok()) continue;
      refuse(indexed("proxy.pool", i) + ".upstreams",
             quote(u) +
                 " is a name; pool names are resolved with c-ares, which this build has "
                 "not: give ADDR:PORT");
      break;
    }
  }
  if (!c.proxy.resolvers.empty())
    refuse("proxy.resolvers", "pool names are resolved with c-ares, which this build has not");
}
#else
// The TLS files as OpenSSL reads them: each named file alone (so a layer that sets only
// tls.cert is checked too), then the pair and the lists in a real server context. A pair
// with a half missing is the program's error (a later layer may still add it).
template <class LineOf>
void check_tls(const TlsSection& t, Reader& r, LineOf&& line_of) {
  std::string why;
  if (!t.cert.empty() && !tls::TlsContext::check_cert_file(t.cert, &why)) {
    r.fail(line_of("tls.cert"), "tls.cert", why);
    return;
  }
  if (!t.key.empty() && !tls::TlsContext::check_key_file(t.key, &why)) {
    r.fail(line_of("tls.key"), "tls.key", why);
    return;
  }
  if (t.cert.empty() || t.key.empty()) return;
  Config c;
  c.tls = t;
  tls::TlsField f = tls::TlsField::kNone;
  if (tls::TlsContext::server(tls_server_options(c), &why, &f)) return;
  const char* key = f == tls::TlsField::kCert ? "tls.cert"
                    : f == tls::TlsField::kKey ? "tls.key"
                    : f == tls::TlsField::kCiphers ? "tls.ciphers"
                    : f == tls::TlsField::kCiphersuites ? "tls.ciphersuites"
                    : f == tls::TlsField::kGroups ? "tls.groups"
                                                  : "tls.cert";
  r.fail(line_of(key), key, why);
}

const char* tls_field_key(tls::TlsField f) {
  switch (f) {
    case tls::TlsField::kKey:
      return "key";
    case tls::TlsField::kCiphers:
      return "ciphers";
    case tls::TlsField::kCiphersuites:
      return "ciphersuites";
    case tls::TlsField::kAlpn:
      return "alpn";
    default:
      return "cert";
  }
}

// A listener's tls keys (`at`: "proxy.listener[i]"): TCP and HTTP, not with sni_routes, cert
// and key in pairs, and every pair, SNI pair and list as a server context takes them.
template <class LineOf>
void check_listener_tls(const Config& c, const ProxyListener& l, const std::string& at, Reader& r,
                        LineOf&& line_of) {
  const ListenerTls& t = l.tls;
  auto fail = [&](const char* sub, const std::string& why) {
    const std::string key = at + ".tls." + sub;
    r.fail(line_of(key), key, why);
  };
  if (t.cert.empty()) {
    if (!t.key.empty()) fail("key", "needs tls.cert (the certificate of each key)");
    if (!t.sni_certs.empty()) fail("sni_certs", "needs tls.cert (the default certificate)");
    return;
  }
  if (l.protocol == ListenerProtocol::kUdp) {
    return fail("cert",
                "TLS termination is for protocol = \"tcp\" and \"http\" listeners (this "
                "one is udp)");
  }
  if (l.protocol == ListenerProtocol::kHttp) {
    // The HTTP mode speaks HTTP/1.x: offering h2 would have clients speak HTTP/2 to it.
    for (const std::string& p : t.alpn) {
      if (p != "http/1.1" && p != "http/1.0")
        return fail("alpn", "an HTTP listener speaks HTTP/1.x: " + quote(p) +
                                " cannot be offered (\"http/1.1\", \"http/1.0\")");
    }
  }
  if (!l.sni_routes.empty()) {
    return fail("cert",
                "TLS termination and sni_routes exclude each other (sni_routes pass TLS "
                "through without decrypting it)");
  }
  if (t.key.size() != t.cert.size()) {
    return fail("key", "one key per certificate: " + std::to_string(t.cert.size()) +
                           " certificates, " + std::to_string(t.key.size()) + " keys");
  }
  std::string why;
  tls::TlsField f = tls::TlsField::kNone;
  const tls::TlsOptions all = listener_tls_options(c, t);
  // Each SNI pair alone first, so that a bad one is blamed on sni_certs.
  for (const tls::SniCert& sc : all.sni) {
    tls::TlsOptions one;
    one.certs = {sc.cert};
    one.ticket_rotate_s = 0;
    if (!tls::TlsContext::server(one, &why, &f)) return fail("sni_certs", why);
  }
  if (!tls::TlsContext::server(all, &why, &f)) {
    if (f == tls::TlsField::kGroups) {
      r.fail(line_of("tls.groups"), "tls.groups", why);
      return;
    }
    fail(tls_field_key(f), why);
  }
}

// A pool's tls keys (`at`: "proxy.pool[i]"): the CA file loads; the other keys only with
// tls = true; not a pool of an HTTP listener (whose upstream connections are plain).
template <class LineOf>
void check_pool_tls(const Config& c, const ProxyPool& p, const std::string& at, Reader& r,
                    LineOf&& line_of) {
  auto fail = [&](const char* sub, const std::string& why) {
    const std::string key = at + "." + sub;
    r.fail(line_of(key), key, why);
  };
  if (!p.tls) {
    if (!p.tls_ca.empty()) fail("tls_ca", "needs tls = true");
    if (!p.tls_server_name.empty()) fail("tls_server_name", "needs tls = true");
    return;
  }
  for (const ProxyListener& l : c.proxy.listeners) {
    const bool routed = std::any_of(
        c.proxy.routes.begin(), c.proxy.routes.end(),
        [&](const ProxyRoute& rt) { return rt.listener == l.name && rt.pool == p.name; });
    if (l.protocol == ListenerProtocol::kHttp && (l.pool == p.name || routed)) {
      return fail("tls", "the pool of HTTP listener " + quote(l.name) +
                             ": TLS to upstreams is for TCP listeners' pools");
    }
  }
  std::string why;
  if (!p.tls_server_name.empty() && !valid_host_name(p.tls_server_name, &why)) {
    SocketAddress a;
    std::string w;
    if (!parse_address(p.tls_server_name + ":1", &a, &w).ok())
      return fail("tls_server_name", "neither a host name nor an address: " + why);
  }
  tls::TlsField f = tls::TlsField::kNone;
  if (!tls::TlsContext::client(pool_tls_options(p), &why, &f)) fail("tls_ca", why);
}

#endif

// http.access_log: "off", "stderr", or a file the proxy can append to — checked here
// (without creating it) so that a bad path is an error at its line, not at start.
template <class LineOf>
void check_access_log(const HttpSection& h, Reader& r, LineOf&& line_of) {
  const std::string& p = h.access_log;
  if (p == "off" || p == "stderr") return;
  const std::string key = "http.access_log";
  if (p.back() == '/') return r.fail(line_of(key), key, "names a directory: " + quote(p));
  const size_t slash = p.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : p.substr(0, slash);
  if (::access(p.c_str(), F_OK) == 0) {
    if (::access(p.c_str(), W_OK) != 0)
      r.fail(line_of(key), key, quote(p) + " is not writable: " + std::strerror(errno));
  } else if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    r.fail(line_of(key), key,
           "cannot create " + quote(p) + " in " + quote(dir) + ": " + std::strerror(errno));
  }
}

// A header or cookie key (hash_key): a Maglev pool's, and only of pools that HTTP
// listeners alone use (a TCP or UDP listener has no request to read it from).
template <class LineOf>
void check_hash_key(const Config& c, const ProxyPool& p, const std::string& at, Reader& r,
                    LineOf&& line_of) {
  if (p.hash_key.source == HashSource::kClient) return;
  const std::string key = at + ".hash_key";
  const std::string what = quote(to_string(p.hash_key));
  if (p.balance != Balance::kMaglev) {
    r.fail(line_of(key), key,
           what + " is a Maglev key: needs balance = \"maglev\" (this pool's is " +
               quote(to_string(p.balance)) + ")");
    return;
  }
  for (const ProxyListener& l : c.proxy.listeners) {
    if (l.protocol == ListenerProtocol::kHttp) continue;
    const bool uses =
        l.pool == p.name ||
        std::any_of(l.sni_routes.begin(), l.sni_routes.end(), [&](const std::string& route) {
          return route.substr(route.find('=') + 1) == p.name;
        });
    if (!uses) continue;
    r.fail(line_of(key), key,
           what + " needs the HTTP mode, but listener " + quote(l.name) +
               " (protocol = " + quote(to_string(l.protocol)) +
               ") uses this pool: it has no request to read it from (use \"client\")");
    return;
  }
}

// Names unique per list; every listener's pool exists. Runs on the merged result of a
// layer; an error points at the line where this layer set the key (0 when a lower layer
// did).
void cross_check(const Config& c, Reader& r) {
  auto line_of = [&](const std::string& key) {
    auto it = r.key_lines.find(key);
    return it == r.key_lines.end() ? 0 : it->second;
  };
  auto unique = [&](const auto& items, const std::string& list, const char* what) {
    for (size_t i = 0; i < items.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (items[i].name != items[j].name) continue;
        const std::string key = indexed(list, i) + ".name";
        r.fail(line_of(key), key,
               std::string("duplicate ") + what + " name " + quote(items[i].name) + " (also " +
                   indexed(list, j) + ".name)");
        break;
      }
    }
  };
  if (c.packet.udp_port_base + c.packet.udp_port_count - 1 > 65535) {
    const std::string key = "packet.udp_port_count";
    r.fail(line_of(key), key,
           "packet.udp_port_base + packet.udp_port_count must stay within 65536 (" +
               std::to_string(c.packet.udp_port_base) + " + " +
               std::to_string(c.packet.udp_port_count) + ")");
  }
#ifdef _WIN32
  check_windows(c, r, line_of);
#else
  check_tls(c.tls, r, line_of);
#endif
  check_access_log(c.http, r, line_of);
  unique(c.proxy.listeners, "proxy.listener", "listener");
  unique(c.proxy.pools, "proxy.pool", "pool");
  for (size_t i = 0; i < c.proxy.listeners.size(); ++i) {
    const ProxyListener& l = c.proxy.listeners[i];
    if (l.protocol == ListenerProtocol::kUdp && l.proxy_protocol != ProxyProtocol::kOff) {
      const std::string key = indexed("proxy.listener", i) + ".proxy_protocol";
      r.fail(line_of(key), key, "the PROXY protocol is for TCP listeners (this one is udp)");
    }
    if (l.protocol == ListenerProtocol::kHttp && l.proxy_protocol != ProxyProtocol::kOff) {
      const std::string key = indexed("proxy.listener", i) + ".proxy_protocol";
      r.fail(line_of(key), key, "HTTP listeners send X-Forwarded-For / Forwarded, not PROXY");
    }
    auto pool_named = [&](const std::string& name) {
      return std::any_of(c.proxy.pools.begin(), c.proxy.pools.end(),
                         [&](const ProxyPool& p) { return p.name == name; });
    };
    if (!l.sni_routes.empty() && l.protocol != ListenerProtocol::kTcp) {
      const std::string key = indexed("proxy.listener", i) + ".sni_routes";
      r.fail(line_of(key), key,
             std::string("SNI routing is for TCP listeners (this one is ") +
                 (l.protocol == ListenerProtocol::kUdp ? "udp" : "http") + ")");
    }
    for (const std::string& route : l.sni_routes) {
      const std::string pool = route.substr(route.find('=') + 1);
      if (pool_named(pool)) continue;
      const std::string key = indexed("proxy.listener", i) + ".sni_routes";
      r.fail(line_of(key), key,
             "route " + quote(route) + ": no [[proxy.pool]] is named " + quote(pool));
    }
#ifndef _WIN32
    check_listener_tls(c, l, indexed("proxy.listener", i), r, line_of);
#endif
    if (l.pool.empty() || pool_named(l.pool)) continue;  // empty: already reported as required
    const std::string key = indexed("proxy.listener", i) + ".pool";
    r.fail(line_of(key), key, "no [[proxy.pool]] is named " + quote(l.pool));
  }
  for (size_t i = 0; i < c.proxy.pools.size(); ++i) {
    const ProxyPool& p = c.proxy.pools[i];
    const std::string at = indexed("proxy.pool", i);
#ifndef _WIN32
    check_pool_tls(c, p, at, r, line_of);
#endif
    if (p.resolve_min_ttl_s > p.resolve_max_ttl_s)
      r.fail(line_of(at + ".resolve_min_ttl_s"), at + ".resolve_min_ttl_s",
             "must not be above resolve_max_ttl_s (" + std::to_string(p.resolve_max_ttl_s) + ")");
    if (p.eject_ms > p.max_eject_ms)
      r.fail(line_of(at + ".eject_ms"), at + ".eject_ms",
             "must not be above max_eject_ms (" + std::to_string(p.max_eject_ms) + ")");
    check_hash_key(c, p, at, r, line_of);
  }
  unique(c.proxy.routes, "proxy.route", "route");
  for (size_t i = 0; i < c.proxy.routes.size(); ++i) {
    const ProxyRoute& rt = c.proxy.routes[i];
    if (!rt.listener.empty()) {
      auto l = std::find_if(c.proxy.listeners.begin(), c.proxy.listeners.end(),
                            [&](const ProxyListener& x) { return x.name == rt.listener; });
      const std::string key = indexed("proxy.route", i) + ".listener";
      if (l == c.proxy.listeners.end()) {
        r.fail(line_of(key), key, "no [[proxy.listener]] is named " + quote(rt.listener));
      } else if (l->protocol != ListenerProtocol::kHttp) {
        r.fail(line_of(key), key,
               "listener " + quote(rt.listener) + " is not an HTTP listener (protocol = \"http\")");
      }
    }
    if (!rt.pool.empty() && std::none_of(c.proxy.pools.begin(), c.proxy.pools.end(),
                                         [&](const ProxyPool& p) { return p.name == rt.pool; })) {
      const std::string key = indexed("proxy.route", i) + ".pool";
      r.fail(line_of(key), key, "no [[proxy.pool]] is named " + quote(rt.pool));
    }
    if (!rt.host.empty() && (rt.host.find_first_of(" \t/:") != std::string::npos ||
                             rt.host.find('*', rt.host[0] == '*' ? 1 : 0) != std::string::npos ||
                             (rt.host[0] == '*' && rt.host.rfind("*.", 0) != 0))) {
      const std::string key = indexed("proxy.route", i) + ".host";
      r.fail(line_of(key), key,
             "must be a host name or \"*.\" and a domain, got " + quote(rt.host));
    }
    if (!rt.path_prefix.empty() && rt.path_prefix[0] != '/') {
      const std::string key = indexed("proxy.route", i) + ".path_prefix";
      r.fail(line_of(key), key, "must start with '/', got " + quote(rt.path_prefix));
    }
  }
}

// The deepest nesting of arrays and inline tables (and [[ ]] headers), outside strings
// and comments, with the line where it is reached. Approximate only in what it skips:
// it never under-counts a bracket the parser would recurse on.
std::pair<int, int> nesting(std::string_view t) {
  int depth = 0, deepest = 0, deepest_line = 1, line = 1;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '\n') {
      ++line;
    } else if (c == '#') {
      while (i + 1 < t.size() && t[i + 1] != '\n') ++i;
    } else if (c == '"' || c == '\'') {
      const std::string_view triple = c == '"' ? "\"\"\"" : "\'\'\'";
      const std::string_view delim = t.substr(i, 3) == triple ? triple : t.substr(i, 1);
      for (i += delim.size(); i < t.size(); ++i) {
        if (c == '"' && t[i] == '\\' && i + 1 < t.size()) {
          if (t[++i] == '\n') ++line;  // an escaped character, or a line-ending backslash
        } else if (t[i] == '\n') {
          ++line;
          if (delim.size() == 1) break;  // unterminated: the parser reports it
        } else if (t.substr(i, delim.size()) == delim) {
          i += delim.size() - 1;
          break;
        }
      }
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        deepest_line = line;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return {deepest, deepest_line};
}

// toml11 messages start "[error] toml::parse_array: what"; keep "what" and drop the
// excerpt that follows (the file and line are in the ConfigError already).
std::string syntax_message(const char* what) {
  std::string m(what);
  m = m.substr(0, m.find('\n'));
  if (m.rfind("[error] ", 0) == 0) m.erase(0, 8);
  if (m.rfind("toml::", 0) == 0) {
    const size_t colon = m.find(": ");
    if (colon != std::string::npos) m.erase(0, colon + 2);
  }
  return m.empty() ? "TOML syntax error" : m;
}

std::optional<ConfigError> parse(std::string_view text, const std::string& file, toml::value* out) {
  if (text.size() > kMaxDocumentBytes) {
    return ConfigError{file, 0, "", "larger than " + std::to_string(kMaxDocumentBytes) + " bytes"};
  }
  if (const auto [depth, line] = nesting(text); depth > kMaxNesting) {
    return ConfigError{file, line, "",
                       "arrays and tables nested deeper than " + std::to_string(kMaxNesting)};
  }
  try {
    std::istringstream in{std::string(text)};
    *out = toml::parse(in, file);
    return std::nullopt;
  } catch (const toml::exception& e) {
    return ConfigError{file, static_cast<int>(e.location().line()), "", syntax_message(e.what())};
  } catch (const std::exception& e) {
    return ConfigError{file, 0, "", syntax_message(e.what())};
  }
}

std::optional<ConfigError> apply_document(const toml::value& doc, const std::string& file,
                                          bool lines, bool builtin, Config* cfg);

std::optional<ConfigError> apply_builtin(std::string_view name, Config* cfg) {
  for (const auto& p : embedded::kProfiles) {
    if (name != p.name) continue;
    const std::string file = "tuning/profiles/" + std::string(name) + ".toml";
    toml::value doc;
    if (auto e = parse(p.text, file, &doc)) return e;
    *cfg = Config{};
    return apply_document(doc, file, true, true, cfg);
  }
  return ConfigError{std::string(name), 0, "",
                     "not a built-in profile (built-in: " + profile_list() + ")"};
}

std::optional<ConfigError> apply_document(const toml::value& doc, const std::string& file,
                                          bool lines, bool builtin, Config* cfg) {
  Config next = *cfg;
  Reader r(file, lines);
  const auto& top = doc.as_table();
  if (auto it = top.find("profile"); it != top.end()) {
    const toml::value& v = it->second;
    if (builtin) {
      r.fail(v, "profile", "a built-in profile cannot start from another");
    } else if (!v.is_string()) {
      r.wrong_type(v, "profile", "a built-in profile name");
    } else if (!builtin_profile_text(v.as_string().str)) {
      r.fail(
          v, "profile",
          "must be a built-in profile (" + profile_list() + "), got " + quote(v.as_string().str));
    } else if (auto e = apply_builtin(v.as_string().str, &next)) {
      return e;
    }
  }
  for (const auto& entry : top) {
    const std::string& k = entry.first;
    const toml::value& v = entry.second;
    if (k == "profile") continue;
    bool known = false;
    sections(next, [&](const char* name, auto& section) {
      if (k != name) return;
      known = true;
      if (!v.is_table()) return r.wrong_type(v, k, "a table");
      r.table(v, k, section);
    });
    if (known) continue;
    if (v.is_table()) {
      r.fail(v, k, "unknown section; sections are " + section_list());
    } else {
      r.fail(v, k, "unknown key; top-level keys are profile and the sections " + section_list());
    }
  }
  cross_check(next, r);
  if (!r.errors.empty()) {
    // The earliest line first: it is the one a reader fixes first.
    return *std::min_element(
        r.errors.begin(), r.errors.end(),
        [](const ConfigError& a, const ConfigError& b) { return a.line < b.line; });
  }
  *cfg = std::move(next);
  return std::nullopt;
}

bool bare_key(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::string_view trim(std::string_view s) {
  const auto ws = [](char c) { return c == ' ' || c == '\t'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

// The TOML spelling of one field's value.
class Printer {
 public:
  std::string out;

  template <class S>
  void table(const std::string& header, S& s) {
    out += "\n[" + header + "]\n";
    std::string lists;
    fields(s, [&](const char* key, auto& field, const auto& spec) {
      using Spec = std::decay_t<decltype(spec)>;
      if constexpr (std::is_same_v<Spec, TableListSpec>) {
        for (auto& item : field) {
          Printer p;
          p.table("[" + header + "." + key + "]", item);
          lists += p.out;
        }
      } else if constexpr (std::is_same_v<Spec, SubTableSpec>) {
        // Dotted keys inside this table: "tls.cert = [...]".
        fields(field, [&](const char* sub, auto& f, const auto& sub_spec) {
          if constexpr (!std::is_same_v<std::decay_t<decltype(sub_spec)>, SubTableSpec>)
            out += std::string(key) + "." + sub + " = " + value(f, sub_spec) + "\n";
        });
      } else {
        out += std::string(key) + " = " + value(field, spec) + "\n";
      }
    });
    out += lists;
  }

 private:
  static std::string value(bool b, BoolSpec) { return b ? "true" : "false"; }
  static std::string value(int64_t x, IntSpec) { return std::to_string(x); }
  static std::string value(int64_t x, IntOrAutoSpec spec) {
    return x == spec.auto_value ? quote("auto") : std::to_string(x);
  }
  template <class E>
  static std::string value(E e, EnumSpec<E> spec) {
    return quote(name_of(spec.names, e));
  }
  static std::string value(const std::string& s, TextSpec) { return quote(s); }
  static std::string value(const HashKey& k, HashKeySpec) { return quote(to_string(k)); }
  template <class T, class Spec>
  static std::string value(const std::vector<T>& xs, Spec) {
    std::string s = "[";
    for (const auto& x : xs) {
      if (s.size() > 1) s += ", ";
      if constexpr (std::is_same_v<T, std::string>) {
        s += quote(x);
      } else {
        s += std::to_string(x);
      }
    }
    return s + "]";
  }
};

}  // namespace

std::string ConfigError::to_string() const {
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line);
  s += ": ";
  if (!key.empty()) s += key + ": ";
  return s + message;
}

std::vector<std::string> builtin_profiles() {
  std::vector<std::string> names;
  for (const auto& p : embedded::kProfiles) names.emplace_back(p.name);
  return names;
}

std::optional<std::string_view> builtin_profile_text(std::string_view name) {
  for (const auto& p : embedded::kProfiles) {
    if (name == p.name) return std::string_view(p.text);
  }
  return std::nullopt;
}

std::optional<ConfigError> apply_toml(std::string_view text, std::string_view file, Config* cfg) {
  const std::string name(file);
  try {
    toml::value doc;
    if (auto e = parse(text, name, &doc)) return e;
    return apply_document(doc, name, true, false, cfg);
  } catch (const std::exception& e) {
    // Not expected (every access above checks the type first); never let it escape.
    return ConfigError{name, 0, "", std::string("internal error: ") + e.what()};
  }
}

std::optional<ConfigError> apply_file(const std::string& path, Config* cfg) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ConfigError{path, 0, "", std::string("cannot open: ") + std::strerror(errno)};
  std::ostringstream text;
  text << in.rdbuf();
  return apply_toml(text.str(), path, cfg);
}

std::optional<ConfigError> load_profile(std::string_view name_or_path, Config* cfg) {
  Config fresh;
  if (builtin_profile_text(name_or_path)) {
    if (auto e = apply_builtin(name_or_path, &fresh)) return e;
  } else {
    const std::string path(name_or_path);
    if (access(path.c_str(), F_OK) != 0 && path.find('/') == std::string::npos) {
      return ConfigError{path, 0, "",
                         "neither a built-in profile (" + profile_list() + ") nor a file"};
    }
    if (auto e = apply_file(path, &fresh)) return e;
  }
  *cfg = std::move(fresh);
  return std::nullopt;
}

std::optional<ConfigError> apply_set(std::string_view assignment, Config* cfg) {
  const std::string file = "--set";
  const size_t eq = assignment.find('=');
  const std::string_view key = trim(assignment.substr(0, eq));
  if (eq == std::string_view::npos) {
    return ConfigError{file, 0, std::string(key), "expected key=value"};
  }
  std::vector<std::string> path;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    path.emplace_back(key.substr(start, dot - start));
    if (!bare_key(path.back())) {
      return ConfigError{file, 0, std::string(key),
                         "expected key=value with a dotted key of letters, digits, _ and -"};
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  const std::string_view text = trim(assignment.substr(eq + 1));
  try {
    // The value as TOML when it is one value, else the text as a bare string.
    toml::value value = toml::string(std::string(text));
    toml::value parsed;
    if (!parse("v = " + std::string(text), file, &parsed) && parsed.as_table().size() == 1 &&
        parsed.contains("v")) {
      value = parsed.at("v");
    }
    for (size_t i = path.size(); i-- > 0;) {
      toml::value t(toml::table{});
      t.as_table()[path[i]] = std::move(value);
      value = std::move(t);
    }
    return apply_document(value, file, false, false, cfg);
  } catch (const std::exception& e) {
    return ConfigError{file, 0, std::string(key), std::string("internal error: ") + e.what()};
  }
}

std::string print_config(const Config& cfg) {
  Config c = cfg;  // the schema walks mutable sections; printing reads only
  Printer p;
  p.out = "# ringpoll effective configuration (loads back with --profile FILE)\n";
  sections(c, [&](const char* name, auto& section) { p.table(name, section); });
  return p.out;
}

EngineOptions engine_options(const Config& cfg) {
  EngineOptions o;
  o.shards = static_cast<int>(cfg.engine.shards);
  o.cpus = cfg.engine.cpus;
  o.pin = cfg.engine.pin;
  o.inbox_capacity = static_cast<size_t>(cfg.engine.inbox_capacity);
  o.sched.tick_ns = cfg.engine.tick_us * 1000;
  o.sched.fairness_batch = static_cast<int>(cfg.engine.fairness_batch);
  o.sched.busy_poll_ns =
      cfg.engine.busy_poll_us == kBusyPollAutoUs ? kBusyPollAuto : cfg.engine.busy_poll_us * 1000;
  o.sched.stall_threshold_ns = cfg.engine.stall_ms * 1'000'000;
  o.sched.source_idle_spins = static_cast<int>(cfg.packet.idle_spins);
  o.sched.source_idle_max_ns = cfg.packet.idle_max_us * 1000;
  return o;
}

UringOptions uring_options(const Config& cfg) {
  const UringSection& u = cfg.io_uring;
  UringOptions o;
  o.entries = static_cast<unsigned>(u.entries);
  o.single_issuer = u.single_issuer;
  o.defer_taskrun = u.defer_taskrun;
  o.coop_taskrun = u.coop_taskrun;
  o.sqpoll = u.sqpoll;
  o.sqpoll_idle_ms = static_cast<unsigned>(u.sqpoll_idle_ms);
  o.msg_ring_wake = u.msg_ring_wake;
  o.register_ring_fd = u.register_ring_fd;
  return o;
}

UringCompletionOptions completion_options(const Config& cfg) {
  const UringSection& u = cfg.io_uring;
  UringCompletionOptions o;
  o.multishot_accept = u.multishot_accept;
  o.multishot_recv = u.multishot_recv;
  o.buf_count = static_cast<unsigned>(u.buf_count);
  o.buf_size = static_cast<unsigned>(u.buf_size);
  o.buf_per_conn = static_cast<unsigned>(u.buf_per_conn);
  o.send_zc = u.send_zc;
  o.zc_threshold = static_cast<size_t>(u.zc_threshold);
  return o;
}

BackendChoice backend_choice(const Config& cfg) {
  return cfg.engine.backend;
}

ListenOptions listen_options(const Config& cfg) {
  ListenOptions o;
  o.reuseport = cfg.socket.reuseport;
  o.allow_shared_port = cfg.socket.allow_shared_port;
  o.backlog = static_cast<int>(cfg.socket.backlog);
  return o;
}

const char* to_string(UringMode m) {
  return name_of<UringMode>(kUringModeNames, m);
}
const char* to_string(SpliceMode m) {
  return name_of<SpliceMode>(kSpliceNames, m);
}
const char* to_string(Balance b) {
  return name_of<Balance>(kBalanceNames, b);
}
const char* to_string(ProxyProtocol p) {
  return name_of<ProxyProtocol>(kProxyProtocolNames, p);
}
const char* to_string(ListenerProtocol p) {
  return name_of<ListenerProtocol>(kListenerProtocolNames, p);
}
const char* to_string(PacketPath p) {
  return name_of<PacketPath>(kPacketPathNames, p);
}
const char* to_string(TlsMinVersion v) {
  return name_of<TlsMinVersion>(kTlsMinVersionNames, v);
}

std::string parse_hash_key(std::string_view text, HashKey* out) {
  const std::string forms = "must be \"client\", \"header:NAME\" or \"cookie:NAME\"";
  if (text == "client") {
    *out = HashKey{};
    return "";
  }
  const size_t colon = text.find(':');
  const std::string_view kind = text.substr(0, colon);
  HashKey k;
  if (colon == std::string_view::npos || (kind != "header" && kind != "cookie"))
    return forms + ", got " + quote(text);
  k.source = kind == "header" ? HashSource::kHeader : HashSource::kCookie;
  const std::string_view name = text.substr(colon + 1);
  if (name.empty()) return quote(text) + " names no " + std::string(kind);
  // Header and cookie names are both HTTP tokens (RFC 9110 5.6.2, RFC 6265 4.1.1).
  constexpr std::string_view kTokenPunct = "!#$%&'*+-.^_`|~";
  for (const char c : name) {
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && kTokenPunct.find(c) == std::string_view::npos)
      return "the " + std::string(kind) + " name " + quote(name) +
             " is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~)";
  }
  k.name = std::string(name);
  *out = std::move(k);
  return "";
}

std::string to_string(const HashKey& k) {
  switch (k.source) {
    case HashSource::kHeader:
      return "header:" + k.name;
    case HashSource::kCookie:
      return "cookie:" + k.name;
    default:
      return "client";
  }
}

#ifndef _WIN32
tls::TlsOptions tls_server_options(const Config& cfg) {
  tls::TlsOptions o;
  o.certs = {{cfg.tls.cert, cfg.tls.key}};
  o.min_version =
      cfg.tls.min_version == TlsMinVersion::k13 ? tls::TlsVersion::k13 : tls::TlsVersion::k12;
  o.ciphers = cfg.tls.ciphers;
  o.ciphersuites = cfg.tls.ciphersuites;
  o.groups = cfg.tls.groups;
  o.ticket_rotate_s = cfg.tls.ticket_rotate_s;
  return o;
}

tls::TlsOptions listener_tls_options(const Config& cfg, const ListenerTls& t) {
  tls::TlsOptions o;
  for (size_t i = 0; i < t.cert.size() && i < t.key.size(); ++i)
    o.certs.push_back({t.cert[i], t.key[i]});
  for (const std::string& e : t.sni_certs) {  // "PATTERN=CERT:KEY", checked by the reader
    const size_t eq = e.find('=');
    const size_t colon = e.rfind(':');
    o.sni.push_back({e.substr(0, eq), {e.substr(eq + 1, colon - eq - 1), e.substr(colon + 1)}});
  }
  o.min_version = t.min_version == TlsMinVersion::k13 ? tls::TlsVersion::k13 : tls::TlsVersion::k12;
  o.ciphers = t.ciphers;
  o.ciphersuites = t.ciphersuites;
  o.alpn = t.alpn;
  o.groups = cfg.tls.groups;
  o.ticket_rotate_s = cfg.tls.ticket_rotate_s;
  return o;
}

tls::TlsOptions pool_tls_options(const ProxyPool& p) {
  tls::TlsOptions o;
  o.ca_file = p.tls_ca;
  o.verify = p.tls_verify;
  o.ticket_rotate_s = 0;
  return o;
}
#endif

}  // namespace ringpoll::tuning
