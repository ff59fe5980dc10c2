#include "apps/load/options.h"

#include <arpa/inet.h>

#include <charconv>
#include <cmath>
#include <set>
#include <string_view>

namespace ringpoll::load {
namespace {

// Upper bounds that catch typos (an extra zero) rather than limit real use.
constexpr int kMaxConnections = 1'000'000;
constexpr int kMaxSize = 64 << 20;  // echo payload: 64 MiB
constexpr int kMaxPipeline = 4096;
constexpr int kMaxShards = 1024;
constexpr double kMaxSeconds = 7 * 24 * 3600.0;  // a week
constexpr double kMaxRate = 1e9;                 // requests/s

bool parse_int(std::string_view s, int lo, int hi, int* out) {
  int v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool parse_double(std::string_view s, double* out) {
  if (s.empty()) return false;
  double v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

bool parse_target(std::string_view v, LoadOptions* o) {
  const size_t colon = v.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string host(v.substr(0, colon));
  if (host == "localhost") host = "127.0.0.1";
  int port = 0;
  if (!parse_int(v.substr(colon + 1), 1, 65535, &port)) return false;
  sockaddr_in a{};
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return false;
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  o->target = a;
  o->target_text = std::string(v);
  return true;
}

std::string quoted(std::string_view v) {
  std::string q;  // appended, not "'" + s + "'": GCC 12 warns falsely (-Wrestrict) on that
  q.reserve(v.size() + 2);
  q.push_back('\'');
  q.append(v);
  q.push_back('\'');
  return q;
}

}  // namespace

const char* to_string(LoadMode m) noexcept {
  return m == LoadMode::kEcho ? "echo" : "http";
}

const char* load_usage() noexcept {
  return "usage: ringpoll-load --mode echo|http --target IPV4:PORT --connections N\n"
         "                     --duration S [--size M] [--warmup S] [--rate R] [--pipeline D]\n"
         "                     [--shards K] [--timeout S] [--json FILE]\n"
         "                     [--backend auto|epoll|io_uring]\n"
         "                     [--tls [--tls-ca FILE | --tls-insecure] [--tls-sni NAME]\n"
         "                      [--tls-resume] [--tls-handshake-per-request]]\n"
         "  --mode        echo: send M bytes, read them back, verify; http: GET /plaintext\n"
         "  --target      server address (IPv4 literal or localhost) and port\n"
         "  --connections connections in total, split over the shards\n"
         "  --duration    measured seconds (after the warm-up)\n"
         "  --size        echo payload bytes per request (default 64)\n"
         "  --warmup      seconds run before measuring (default 0)\n"
         "  --rate        open loop: total requests/s, latency corrected for coordinated\n"
         "                omission (from the intended send time); default: closed loop\n"
         "  --pipeline    requests in flight per connection (default 1)\n"
         "  --shards      engine shards (threads pinned to the allowed CPUs) (default 1)\n"
         "  --timeout     seconds a request (or a connect) may take (default 5)\n"
         "  --json        also write the results as JSON to FILE\n"
         "  --backend     poller backend (default auto: io_uring in completion mode, else\n"
         "                epoll; RINGPOLL_BACKEND=io_uring-readiness for readiness mode)\n"
         "  --tls         TLS to the server (handshake counted in the connect)\n"
         "  --tls-ca      CA file the server's certificate must chain to (default: system)\n"
         "  --tls-insecure  no certificate or host name check\n"
         "  --tls-sni     server name sent and verified (default: the --target host)\n"
         "  --tls-resume  resume the latest session (tickets) on every new connection\n"
         "  --tls-handshake-per-request  close after each answer: a handshake per request\n"
         "exit: 0 ok, 1 the run could not start, 2 bad arguments, 3 errors were counted\n";
}

ParseResult parse_load_args(const std::vector<std::string>& args) {
  ParseResult r;
  LoadOptions& o = r.options;
  auto fail = [&r](std::string msg) {
    r.kind = ParseResult::Kind::kError;
    r.error = std::move(msg);
    return r;
  };
  static const std::set<std::string_view> kFlags = {
      "--mode",     "--target", "--connections", "--size", "--duration", "--warmup", "--rate",
      "--pipeline", "--shards", "--timeout",     "--json", "--backend",  "--tls-ca", "--tls-sni"};
  // Flags that take no value.
  static const std::set<std::string_view> kSwitches = {
      "--tls", "--tls-resume", "--tls-handshake-per-request", "--tls-insecure"};
  std::set<std::string_view> seen;
  bool size_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view flag = args[i];
    if (flag == "-h" || flag == "--help") {
      r.kind = ParseResult::Kind::kHelp;
      return r;
    }
    std::string_view v;
    bool inline_value = false;
    if (const size_t eq = flag.find('='); flag.starts_with("--") && eq != std::string_view::npos) {
      v = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    if (const auto sw = kSwitches.find(flag); sw != kSwitches.end()) {
      if (inline_value) return fail(std::string(flag) + " takes no value");
      if (!seen.insert(*sw).second) return fail(std::string(flag) + " is given twice");
      if (*sw == "--tls") o.tls = true;
      if (*sw == "--tls-resume") o.tls_resume = true;
      if (*sw == "--tls-handshake-per-request") o.tls_handshake_per_request = true;
      if (*sw == "--tls-insecure") o.tls_insecure = true;
      continue;
    }
    const auto known = kFlags.find(flag);
    if (known == kFlags.end()) return fail("unknown argument " + quoted(args[i]));
    flag = *known;  // a view that outlives args[i]'s substrings
    if (!inline_value) {
      if (i + 1 >= args.size()) return fail(std::string(flag) + " needs a value");
      v = args[++i];
    }
    if (!seen.insert(flag).second) return fail(std::string(flag) + " is given twice");
    const std::string bad = std::string(flag) + ": " + quoted(v) + " ";

    if (flag == "--mode") {
      if (v == "echo") {
        o.mode = LoadMode::kEcho;
      } else if (v == "http") {
        o.mode = LoadMode::kHttp;
      } else {
        return fail(bad + "is not one of echo, http");
      }
    } else if (flag == "--target") {
      if (!parse_target(v, &o)) {
        return fail(bad + "is not IPV4:PORT (e.g. 127.0.0.1:8080; port 1..65535)");
      }
    } else if (flag == "--connections") {
      if (!parse_int(v, 1, kMaxConnections, &o.connections)) {
        return fail(bad + "is not a whole number in 1.." + std::to_string(kMaxConnections));
      }
    } else if (flag == "--size") {
      if (!parse_int(v, 1, kMaxSize, &o.size)) {
        return fail(bad + "is not a byte count in 1.." + std::to_string(kMaxSize));
      }
      size_given = true;
    } else if (flag == "--pipeline") {
      if (!parse_int(v, 1, kMaxPipeline, &o.pipeline)) {
        return fail(bad + "is not a depth in 1.." + std::to_string(kMaxPipeline));
      }
    } else if (flag == "--shards") {
      if (!parse_int(v, 1, kMaxShards, &o.shards)) {
        return fail(bad + "is not a shard count in 1.." + std::to_string(kMaxShards));
      }
    } else if (flag == "--duration" || flag == "--timeout") {
      double* out = flag == "--duration" ? &o.duration_s : &o.timeout_s;
      if (!parse_double(v, out) || *out <= 0 || *out > kMaxSeconds) {
        return fail(bad + "is not a number of seconds > 0 (at most a week)");
      }
    } else if (flag == "--warmup") {
      if (!parse_double(v, &o.warmup_s) || o.warmup_s < 0 || o.warmup_s > kMaxSeconds) {
        return fail(bad + "is not a number of seconds >= 0 (at most a week)");
      }
    } else if (flag == "--rate") {
      if (!parse_double(v, &o.rate) || o.rate <= 0 || o.rate > kMaxRate) {
        return fail(bad + "is not a rate in requests/s > 0 (at most 1e9)");
      }
    } else if (flag == "--json") {
      if (v.empty()) return fail("--json: the file name is empty");
      o.json_path = std::string(v);
    } else if (flag == "--tls-ca") {
      if (v.empty()) return fail("--tls-ca: the file name is empty");
      o.tls_ca = std::string(v);
    } else if (flag == "--tls-sni") {
      if (v.empty()) return fail("--tls-sni: the name is empty");
      o.tls_sni = std::string(v);
    } else if (flag == "--backend") {
      if (v == "io-uring" || !parse_backend_choice(v, &o.backend)) {
        return fail(bad + "is not one of auto, epoll, io_uring");
      }
    }
  }
  for (const char* required : {"--mode", "--target", "--connections", "--duration"}) {
    if (!seen.contains(required)) return fail(std::string("missing argument ") + required);
  }
  if (size_given && o.mode == LoadMode::kHttp) {
    return fail("--size: only applies to --mode echo (http sends GET /plaintext)");
  }
  if (o.shards > o.connections) {
    return fail("--shards: " + std::to_string(o.shards) + " is more than --connections (" +
                std::to_string(o.connections) + "); a shard needs a connection");
  }
  if (!o.tls) {
    for (const char* f : {"--tls-ca", "--tls-sni", "--tls-resume", "--tls-handshake-per-request",
                          "--tls-insecure"}) {
      if (seen.contains(f)) return fail(std::string(f) + ": needs --tls");
    }
  } else {
#ifdef _WIN32
    return fail("--tls: TLS needs OpenSSL, which the Windows build has not");
#else
    if (o.tls_insecure && !o.tls_ca.empty()) return fail("--tls-ca: not with --tls-insecure");
    // The CA file is read now, so a missing or unreadable one is an argument error.
    std::string why;
    if (!tls::TlsContext::client(tls_client_options(o), &why)) return fail("--tls-ca: " + why);
#endif
  }
  r.kind = ParseResult::Kind::kRun;
  return r;
}

#ifndef _WIN32
tls::TlsOptions tls_client_options(const LoadOptions& o) {
  tls::TlsOptions t;
  t.ca_file = o.tls_ca;
  t.verify = !o.tls_insecure;
  t.resume = o.tls_resume;
  return t;
}
#endif

}  // namespace ringpoll::load
