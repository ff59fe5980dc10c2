// ringpoll-proxy: an L4 TCP and UDP proxy on the sharded engine.
//
//   quick form:  ringpoll-proxy --listen ADDR:PORT --upstream ADDR:PORT [--upstream ...]
//                               [--balance round_robin|least_conn] [--proxy-protocol off|v1|v2]
//                               [--protocol tcp|udp]
//   full form:   ringpoll-proxy --config FILE        ([[proxy.listener]] / [[proxy.pool]])
//   both:        [--admin ADDR:PORT] [--profile NAME|PATH] [--set key=value ...] [--print-config]
//
// The first line on stdout says where it listens, once every listener is bound:
//   ringpoll-proxy: listening on 127.0.0.1:8080 (main -> pool main: 1 upstream), backend ...
// SIGHUP re-reads the profile, the --config file and the --set values: new connections
// use the new pools and timeouts, established ones drain on the old. SIGINT/SIGTERM stop
// accepting and drain within timeouts.drain_ms; a second signal stops at once.
// Bad arguments or config: a message naming the argument, key, file and line; exit 2.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "apps/common/launch.h"
#include "apps/proxy/from_config.h"
#include "apps/proxy/proxy.h"
#include "engine/server.h"
#include "tuning/cli.h"

namespace ringpoll {
namespace {

constexpr const char* kProg = "ringpoll-proxy";

struct QuickForm {
  std::string listen;
  std::vector<std::string> upstreams;
  std::string balance = "round_robin";
  std::string proxy_protocol = "off";
  std::string protocol = "tcp";
};

// The quick form becomes the config's one listener and one pool, as a file would give them.
bool apply_quick_form(const QuickForm& q, tuning::Config* cfg, std::string* why) {
  if (q.listen.empty() && q.upstreams.empty()) return true;
  if (q.listen.empty()) {
    *why = "--upstream needs --listen";
    return false;
  }
  if (q.upstreams.empty()) {
    *why = "--listen needs at least one --upstream";
    return false;
  }
  if (q.protocol == "udp" && q.proxy_protocol != "off") {
    *why = "--proxy-protocol is for TCP (--protocol udp)";
    return false;
  }
  SocketAddress a;
  std::string w;
  if (!parse_address(q.listen, &a, &w).ok()) {
    *why = "--listen: " + w;
    return false;
  }
  for (const std::string& u : q.upstreams) {
    if (!parse_address(u, &a, &w).ok()) {
      *why = "--upstream: " + w;
      return false;
    }
  }
  tuning::ProxyPool pool;
  pool.name = "main";
  pool.balance =
      q.balance == "least_conn" ? tuning::Balance::kLeastConn : tuning::Balance::kRoundRobin;
  pool.upstreams = q.upstreams;
  tuning::ProxyListener l;
  l.name = "main";
  l.listen = q.listen;
  l.pool = "main";
  l.proxy_protocol = q.proxy_protocol == "v1"   ? tuning::ProxyProtocol::kV1
                     : q.proxy_protocol == "v2" ? tuning::ProxyProtocol::kV2
                                                : tuning::ProxyProtocol::kOff;
  l.protocol =
      q.protocol == "udp" ? tuning::ListenerProtocol::kUdp : tuning::ListenerProtocol::kTcp;
  cfg->proxy.pools = {pool};
  cfg->proxy.listeners = {l};
  return true;
}

// Profile, --config file, --set values, then the quick form. -1: loaded; otherwise the
// exit code (an error was printed).
int load_config(const tuning::CliConfig& cc, const QuickForm& q, tuning::Config* cfg) {
  tuning::CliConfig quiet = cc;
  quiet.print = false;
  if (const int rc = tuning::resolve_config(kProg, quiet, cfg); rc >= 0) return rc;
  std::string why;
  if (!apply_quick_form(q, cfg, &why)) {
    std::fprintf(stderr, "%s: %s\n", kProg, why.c_str());
    return 2;
  }
  return -1;
}

std::string describe(const proxy::ProxySettings& s, size_t i, const SocketAddress& bound) {
  const proxy::ListenerSettings& l = s.listeners[i];
  const int k = proxy::pool_index(s, l.pool);
  const size_t n = k >= 0 ? s.pools[static_cast<size_t>(k)].upstreams.size() : 0;
  return bound.to_string() + " (" + l.name + (l.udp ? " udp" : "") + " -> pool " + l.pool + ": " +
         std::to_string(n) + (n == 1 ? " upstream)" : " upstreams)");
}

int run(int argc, char** argv) {
  CLI::App app{"ringpoll-proxy: L4 TCP and UDP proxy on the ringpoll engine"};
  tuning::CliConfig cc;
  tuning::add_config_options(app, &cc, /*with_config_file=*/true);
  QuickForm q;
  std::string admin;
  app.add_option("--listen", q.listen, "Quick form: listen on ADDR:PORT");
  app.add_option("--upstream", q.upstreams, "Quick form: an upstream ADDR:PORT (repeatable)");
  app.add_option("--balance", q.balance, "Quick form: round_robin or least_conn")
      ->check(CLI::IsMember({"round_robin", "least_conn"}));
  app.add_option("--proxy-protocol", q.proxy_protocol, "Quick form: off, v1 or v2")
      ->check(CLI::IsMember({"off", "v1", "v2"}));
  app.add_option("--protocol", q.protocol, "Quick form: tcp or udp (per-client flows)")
      ->check(CLI::IsMember({"tcp", "udp"}));
  app.add_option("--admin", admin, "Serve Prometheus metrics at http://ADDR:PORT/metrics");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  std::string why;
  SocketAddress admin_addr;
  if (!admin.empty() && !parse_address(admin, &admin_addr, &why).ok()) {
    std::fprintf(stderr, "%s: --admin: %s\n", kProg, why.c_str());
    return 2;
  }
  tuning::Config cfg;
  if (const int rc = load_config(cc, q, &cfg); rc >= 0) return rc;
  if (cc.print) {
    std::fputs(tuning::print_config(cfg).c_str(), stdout);
    return 0;
  }
  proxy::ProxySettings settings;
  if (!proxy::settings_from_config(cfg, &settings, &why)) {
    std::fprintf(stderr, "%s: config error: %s\n", kProg, why.c_str());
    return 2;
  }

  block_stop_signals(/*with_reload=*/true);
  return app::run_engine(kProg, cfg, [&]<class P>(Engine<P>& engine) -> int {
    proxy::ProxyServer<P> px(engine, settings);
    std::string err;
    // On a failed start, what did start is stopped first (UDP listeners' tasks hold
    // their sockets until then).
    if (!px.start(&err).ok()) {
      std::fprintf(stderr, "%s: %s\n", kProg, err.c_str());
      px.shutdown(0);
      return 1;
    }
    if (!admin.empty() && !px.start_admin(admin_addr, &err).ok()) {
      std::fprintf(stderr, "%s: --admin %s: %s\n", kProg, admin.c_str(), err.c_str());
      px.shutdown(0);
      return 1;
    }
    std::string where;
    for (size_t i = 0; i < px.listeners(); ++i)
      where += (i ? ", " : "") + describe(settings, i, px.address(i));
    std::printf("%s: listening on %s, backend %s, %zu shards%s%s\n", kProg, where.c_str(), P::kName,
                engine.size(), admin.empty() ? "" : ", admin on ",
                admin.empty() ? "" : px.admin_address().to_string().c_str());
    std::fflush(stdout);

    const int64_t drain_ns = settings.drain_ns;
    wait_stop_signals(
        [&] {
          const size_t aborted = px.shutdown(drain_ns);
          if (aborted > 0)
            std::fprintf(stderr, "%s: drain deadline: aborted %zu connections\n", kProg, aborted);
          engine.stop();
        },
        [&] {
          std::fflush(stdout);
          std::fflush(stderr);
          _exit(0);  // at once: the kernel closes every socket
        },
        [&] {
          tuning::Config next;
          if (load_config(cc, q, &next) >= 0) {
            std::fprintf(stderr, "%s: reload refused; still running the previous config\n", kProg);
            return;
          }
          proxy::ProxySettings s;
          std::string w;
          if (!proxy::settings_from_config(next, &s, &w) || !px.reload(std::move(s), &w)) {
            std::fprintf(stderr, "%s: reload refused: %s\n", kProg, w.c_str());
            return;
          }
          std::fprintf(stderr, "%s: reloaded: new connections use the new config\n", kProg);
        });
    engine.join();
    return 0;
  });
}

}  // namespace
}  // namespace ringpoll

int main(int argc, char** argv) {
  return ringpoll::run(argc, argv);
}
