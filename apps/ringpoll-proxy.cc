// ringpoll-proxy: an L4 TCP and UDP proxy and an HTTP/1.1 proxy on the sharded engine.
//
//   quick form:  ringpoll-proxy --listen ADDR:PORT --upstream ADDR:PORT [--upstream ...]
//                               [--balance round_robin|least_conn] [--proxy-protocol off|v1|v2]
//                               [--protocol tcp|udp|http]
//   full form:   ringpoll-proxy --config FILE        ([[proxy.listener]] / [[proxy.pool]] /
//                                                     [[proxy.route]])
//   both:        [--admin ADDR:PORT] [--profile NAME|PATH] [--set key=value ...] [--print-config]
//
// The first line on stdout says where it listens, once every listener is bound:
//   ringpoll-proxy: listening on 127.0.0.1:8080 (main -> pool main: 1 upstream), backend ...
// SIGHUP re-reads the profile, the --config file and the --set values: new connections
// use the new pools and timeouts, established ones drain on the old; TCP listeners may be
// added, removed and moved (apps/proxy/proxy.h reload). SIGINT/SIGTERM stop
// accepting and drain within timeouts.drain_ms; a second signal stops at once. SIGUSR2
// upgrades the binary: the program now at this one's path starts with the same arguments,
// takes the listening sockets over (apps/proxy/upgrade.h), and once it serves this one
// stops accepting, moves its established plain L4 relays (apps/proxy/relay_move.h) and its
// HTTP keep-alive clients between requests (apps/proxy/http_move.h) to it and drains the
// rest (TLS connections, tunnels, requests that take longer than 2 s); if it fails, this
// one keeps serving and says why.
// Bad arguments or config: a message naming the argument, key, file and line; exit 2.
//
// Windows (mingw-w64, IOCP; docs/windows.md): TCP, UDP and HTTP listeners, the config,
// the admin page. Ctrl-C, Ctrl-Break and closing the console take the SIGINT/SIGTERM
// path. Reload, for want of SIGHUP, is the named event Local\ringpoll-reload-<pid>:
// `ringpoll-proxy --reload PID` sets it (the start line names the pid). What Windows
// lacks is refused with the config, naming the key (TLS, names in pools, packet paths,
// splice); there is no binary upgrade. The places that differ are marked "Windows seam".
#include <signal.h>
#include <unistd.h>
#ifdef _WIN32
#include <windows.h>  // GetCurrentProcessId
#endif

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "apps/common/fd_limit.h"
#include "apps/common/launch.h"
#include "apps/proxy/from_config.h"
#include "apps/proxy/proxy.h"
#include "apps/proxy/upgrade.h"
#include "engine/allocator.h"
#include "engine/server.h"
#include "tuning/cli.h"
#ifndef _WIN32  // Windows seam: no packet paths, no TLS, no upgrade channel there
#include "apps/common/packet_path.h"
#include "apps/proxy/udp_bypass.h"
#include "engine/handover.h"
#include "tls/ktls.h"
#endif
#ifdef RINGPOLL_WITH_XDP
#include "packet/xdp_queue.h"
#endif

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
  if (q.protocol != "tcp" && q.proxy_protocol != "off") {
    *why = "--proxy-protocol is for TCP (--protocol " + q.protocol + ")";
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
  l.protocol = q.protocol == "udp"    ? tuning::ListenerProtocol::kUdp
               : q.protocol == "http" ? tuning::ListenerProtocol::kHttp
                                      : tuning::ListenerProtocol::kTcp;
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
  if (l.http) {
    const size_t r = l.http_settings.routes.size();
    return bound.to_string() + " (" + l.name + (l.tls ? " https: " : " http: ") +
           std::to_string(r) + (r == 1 ? " route)" : " routes)");
  }
  return bound.to_string() + " (" + l.name +
         (l.udp   ? " udp"
          : l.tls ? " tls"
                  : "") +
         " -> pool " + l.pool + ": " + std::to_string(n) + (n == 1 ? " upstream)" : " upstreams)");
}

// Whether UDP listeners run on DPDK or AF_XDP (any UDP listener, packet.path not kernel).
bool udp_on_packet_path(const proxy::ProxySettings& s) {
  return s.udp_path != packet::Path::kKernel &&
         std::any_of(s.listeners.begin(), s.listeners.end(),
                     [](const proxy::ListenerSettings& l) { return l.udp; });
}

#ifdef _WIN32
// Windows seam: the packet paths are Linux only (packet.path is refused with the config),
// so UDP listeners always run on kernel sockets.
template <PollerBackend P>
int use_packet_path(proxy::ProxyServer<P>&, const proxy::ProxySettings&, const tuning::Config&,
                    Engine<P>&, bool*) {
  return 0;
}

// --reload PID: sets the reload event of the ringpoll-proxy that runs as process PID.
int ask_reload(unsigned long pid) {
  std::string why;
  if (!signal_reload(pid, &why)) {
    std::fprintf(stderr, "%s: --reload %lu: %s\n", kProg, pid, why.c_str());
    return 1;
  }
  std::printf("%s: asked process %lu to reload\n", kProg, pid);
  return 0;
}
#else

// UDP listeners on a packet queue Q: each shard opens its queue with `open`.
template <PollerBackend P, packet::PacketQueue Q>
typename proxy::ProxyServer<P>::UdpPathStart bypass_start(
    const tuning::Config& cfg, typename proxy::UdpBypassListener<P, Q>::OpenFn open) {
  const packet::QueueSpec qs = app::queue_sizes(cfg);
  return [qs, open](Engine<P>& e, proxy::Metrics& m, proxy::UdpPickFn pick,
                    const proxy::ListenerSettings& l, const proxy::ProxySettings& s,
                    std::unique_ptr<proxy::UdpService>* out, std::string* why) -> Status {
    proxy::UdpBypassOptions o;
    o.port_base = s.udp_port_base;
    o.port_count = s.udp_port_count;
    o.queue = qs;
    auto u = std::make_unique<proxy::UdpBypassListener<P, Q> >(e, m, std::move(pick), open, o);
    const Status st = u->start(l.listen, why);
    if (!st.ok()) {
      u->shutdown(1'000'000'000);
      return st;
    }
    *out = std::move(u);
    return Status();
  };
}

// Puts the UDP listeners on the packet path packet.path names (kernel: nothing to do).
// DPDK's device is started here (one queue per shard); *dpdk says to shut it down at the
// end. 0: ready; otherwise the exit code, after a message.
template <PollerBackend P>
int use_packet_path([[maybe_unused]] proxy::ProxyServer<P>& px,
                    const proxy::ProxySettings& settings,
                    [[maybe_unused]] const tuning::Config& cfg, [[maybe_unused]] Engine<P>& engine,
                    [[maybe_unused]] bool* dpdk) {
  if (!udp_on_packet_path(settings)) return 0;
  if (settings.udp_path == packet::Path::kXdp) {
#ifdef RINGPOLL_WITH_XDP
    px.set_udp_path(bypass_start<P, packet::XdpQueue>(
        cfg, [&cfg](packet::XdpQueue& q, const packet::QueueSpec& qs, std::string* why) {
          q.set_options({cfg.packet.xdp_iface, static_cast<uint32_t>(cfg.packet.xdp_frames)});
          return q.open(qs, why);
        }));
    return 0;
#else
    std::fprintf(stderr,
                 "%s: packet.path = \"xdp\": this build has no AF_XDP (configure with "
                 "-DRINGPOLL_WITH_XDP=ON)\n",
                 kProg);
    return 2;
#endif
  }
#ifdef RINGPOLL_WITH_DPDK
  std::string why;
  if (const Status st = packet::DpdkPort::start(app::dpdk_port_options(cfg, engine), &why);
      !st.ok()) {
    std::fprintf(stderr, "%s: DPDK: %s\n", kProg, why.c_str());
    return 1;
  }
  *dpdk = true;
  px.set_udp_path(
      bypass_start<P, packet::DpdkQueue>(cfg, [](packet::DpdkQueue& q, const packet::QueueSpec& qs,
                                                 std::string* why) { return q.open(qs, why); }));
  return 0;
#else
  std::fprintf(stderr,
               "%s: packet.path = \"dpdk\": this build has no DPDK (configure with "
               "-DRINGPOLL_WITH_DPDK=ON)\n",
               kProg);
  return 2;
#endif
}
#endif  // _WIN32

int run(int argc, char** argv) {
  // A proxy holds many connections for long and meets bursts: the memory a burst freed (the
  // frames of hibernated relays, closed connections) goes back to the system at once rather
  // than when the quiet shard next allocates (engine/allocator.h).
  (void)return_freed_memory_at_once();
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
  app.add_option("--protocol", q.protocol,
                 "Quick form: tcp, udp (per-client flows) or http (HTTP/1.1, one default route)")
      ->check(CLI::IsMember({"tcp", "udp", "http"}));
  app.add_option("--admin", admin, "Serve Prometheus metrics at http://ADDR:PORT/metrics");
#ifdef _WIN32
  unsigned long reload_pid = 0;
  app.add_option("--reload", reload_pid,
                 "Windows: make the ringpoll-proxy of process PID reload its config (sets the "
                 "event Local\\ringpoll-reload-PID), then exit");
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  std::string why;
  proxy::UpgradeEnv up;  // generation 1 and no predecessor, unless an upgrade started us
#ifdef _WIN32
  if (reload_pid != 0) return ask_reload(reload_pid);
  // Windows seam: no binary upgrade, so nobody to tell.
  auto tell_old = [](const std::string&) {};
#else
  const proxy::SelfExec self = proxy::self_exec(argc, argv);
  if (!proxy::upgrade_env(&up, &why)) {
    std::fprintf(stderr, "%s: %s\n", kProg, why.c_str());
    return 2;
  }
  // A successor that cannot start tells its predecessor why (an exit says so too).
  auto tell_old = [&up](const std::string& note) {
    if (up.fd < 0) return;
    (void)send_note(up.fd, note);
    ::close(up.fd);
    up.fd = -1;
  };
#endif
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
    tell_old("failed: config error: " + why);
    return 2;
  }
  std::vector<HandedListener> handed;
#ifndef _WIN32
  if (up.fd >= 0 && !recv_listeners(up.fd, proxy::kUpgradeTimeoutMs, &handed, &why).ok()) {
    std::fprintf(stderr, "%s: upgrade: %s\n", kProg, why.c_str());
    tell_old("failed: " + why);
    return 1;
  }
#endif

  // Two descriptors a proxied connection (four more with splice's pipes), plus spares.
  const uint64_t max_conns = static_cast<uint64_t>(cfg.limits.max_connections);
  const app::FdLimit fds =
      app::raise_fd_limit(max_conns * (settings.splice ? 6 : 2) + 256,
                          "limits.max_connections " + std::to_string(max_conns));
  if (!fds.problem.empty()) std::fprintf(stderr, "%s: %s\n", kProg, fds.problem.c_str());
    // Windows seam: no upgrade there (SCM_RIGHTS and fork/exec are Linux).
#ifdef _WIN32
  constexpr bool kUpgrade = false;
#else
  constexpr bool kUpgrade = true;
#endif
  block_stop_signals(/*with_reload=*/true, /*with_upgrade=*/kUpgrade);
  return app::run_engine(kProg, cfg, [&]<class P>(Engine<P>& engine) -> int {
    proxy::ProxyServer<P> px(engine, settings);
    px.inherit(std::move(handed));
    bool dpdk = false;
    if (const int rc = use_packet_path(px, settings, cfg, engine, &dpdk); rc != 0) return rc;
    // At the end, after every queue closed (DPDK's EAL does not start twice).
    auto end_dpdk = [&dpdk] {
#ifdef RINGPOLL_WITH_DPDK
      if (dpdk) packet::DpdkPort::shutdown();
#endif
      (void)dpdk;
    };
    std::string err;
    // On a failed start, what did start is stopped first (UDP listeners' tasks hold
    // their sockets until then).
    if (!px.start(&err).ok()) {
      std::fprintf(stderr, "%s: %s\n", kProg, err.c_str());
      tell_old("failed: " + err);
      px.shutdown(0);
      end_dpdk();
      return 1;
    }
    if (!admin.empty() && !px.start_admin(admin_addr, &err).ok()) {
      std::fprintf(stderr, "%s: --admin %s: %s\n", kProg, admin.c_str(), err.c_str());
      tell_old("failed: --admin " + admin + ": " + err);
      px.shutdown(0);
      end_dpdk();
      return 1;
    }
    px.close_unused_inherited();
    std::string where;
    for (size_t i = 0; i < px.listeners(); ++i)
      where += (i ? ", " : "") + describe(settings, i, px.address(i));
    const bool bypass = udp_on_packet_path(settings);
#ifdef _WIN32
    // The pid --reload takes (Windows has no SIGHUP).
    where += ", pid " + std::to_string(GetCurrentProcessId());
#else
    // TLS listeners say which record path they run (kTLS is probed once, tls/ktls.h).
    if (std::any_of(settings.listeners.begin(), settings.listeners.end(),
                    [](const proxy::ListenerSettings& l) { return l.tls != nullptr; }))
      where += ", tls " + tls::record_path_line();
#endif
    px.metrics().set_process(up.generation, px.inherited_listeners());
#ifdef _WIN32
    const std::string gen;  // always generation 1
#else
    const std::string gen =
        up.generation == 1 ? std::string()
                           : ", generation " + std::to_string(up.generation) + " (" +
                                 std::to_string(px.inherited_listeners()) +
                                 " listeners taken over, pid " + std::to_string(getpid()) + ")";
#endif
    std::printf("%s: listening on %s, backend %s, %zu shards%s%s%s%s%s\n", kProg, where.c_str(),
                P::kName, engine.size(), bypass ? ", udp path " : "",
                bypass ? packet::to_string(settings.udp_path) : "",
                admin.empty() ? "" : ", admin on ",
                admin.empty() ? "" : px.admin_address().to_string().c_str(), gen.c_str());
    std::fflush(stdout);
#ifndef _WIN32
    if (up.fd >= 0) {
      // The channel stays open: the predecessor moves its established relays over it.
      (void)send_note(up.fd, proxy::ready_note(up.generation, px.movable_listeners(),
                                               px.http_movable_listeners()));
      px.adopt_from(std::exchange(up.fd, -1), [](const std::string& line) {
        std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
      });
    }
#endif

    const int64_t drain_ns = settings.drain_ns;
    proxy::Successor next;  // set once an upgrade's successor serves
    wait_stop_signals(
        [&] {
          // After an upgrade: the relays taken from the predecessor first (at most the
          // upgrade timeout), then this process's plain relays move to the successor.
          px.finish_adopting(next.channel >= 0 ? int64_t{proxy::kUpgradeTimeoutMs} * 1'000'000 : 0);
          typename proxy::ProxyServer<P>::UpgradeMoves moves;
#ifndef _WIN32
          if (next.channel >= 0) {
            moves = px.move_connections_to(next.channel, next.moves, next.http_moves);
            const std::string counts = px.moves_note(moves);
            (void)send_moves_end(next.channel, counts);
            ::close(std::exchange(next.channel, -1));
            std::fprintf(stderr,
                         "%s: upgrade: moved %llu established connections to generation %llu, "
                         "%llu drain here%s%s; %s\n",
                         kProg, static_cast<unsigned long long>(moves.moved()),
                         static_cast<unsigned long long>(up.generation + 1),
                         static_cast<unsigned long long>(moves.draining()),
                         moves.error.empty() ? "" : "; the channel failed: ", moves.error.c_str(),
                         counts.c_str());
            const proxy::MoveCounts& l4 = moves.l4;
            if (l4.stayed > 0 || l4.late_moves > 0)
              std::fprintf(stderr,
                           "%s: upgrade: l4 relays moved late (after the first %lld ms): %llu; "
                           "stayed: %llu still writing after twice that, %llu ending, %llu "
                           "with ring reads not stopped in %lld ms\n",
                           kProg, static_cast<long long>(proxy::kParkBoundNs / 1'000'000),
                           static_cast<unsigned long long>(l4.late_moves),
                           static_cast<unsigned long long>(l4.slow_to_park),
                           static_cast<unsigned long long>(l4.ending),
                           static_cast<unsigned long long>(l4.reads_not_stopped),
                           static_cast<long long>(proxy::kRecvStopBoundNs / 1'000'000));
          }
#endif
          const size_t aborted = px.shutdown(drain_ns);
          if (aborted > 0)
            std::fprintf(stderr, "%s: drain deadline: aborted %zu connections\n", kProg, aborted);
          if (next.pid > 0)
            std::fprintf(stderr,
                         "%s: generation %llu done: %llu connections moved, %llu drained "
                         "(%zu of them aborted at the drain deadline); l4 moved %llu drained "
                         "%llu, http moved %llu drained %llu\n",
                         kProg, static_cast<unsigned long long>(up.generation),
                         static_cast<unsigned long long>(moves.moved()),
                         static_cast<unsigned long long>(moves.draining()), aborted,
                         static_cast<unsigned long long>(moves.l4.moved),
                         static_cast<unsigned long long>(moves.l4.draining),
                         static_cast<unsigned long long>(moves.http.moved),
                         static_cast<unsigned long long>(moves.http.draining));
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
          std::string w, changes;
          if (!proxy::settings_from_config(next, &s, &w) ||
              !px.reload(std::move(s), &w, &changes)) {
            std::fprintf(stderr, "%s: reload refused: %s\n", kProg, w.c_str());
            return;
          }
          std::fprintf(stderr, "%s: reloaded: new connections use the new config%s%s\n", kProg,
                       changes.empty() ? "" : "; listeners ", changes.c_str());
        },
#ifdef _WIN32
        std::function<void()>());  // Windows seam: no upgrade
#else
        [&] {
          std::string w;
          if (next.pid > 0) {
            std::fprintf(stderr, "%s: upgrade: already handed over to pid %d\n", kProg, next.pid);
            return;
          }
          if (!proxy::start_successor(self, up.generation + 1, px.handover(),
                                      proxy::kUpgradeTimeoutMs, &next, &w)) {
            std::fprintf(stderr, "%s: upgrade failed, still serving: %s\n", kProg, w.c_str());
            return;
          }
          const pid_t child = next.pid;
          std::fprintf(stderr,
                       "%s: upgrade: generation %llu (pid %d) serves; this process stops "
                       "accepting and drains\n",
                       kProg, static_cast<unsigned long long>(up.generation + 1), child);
          kill(getpid(), SIGTERM);  // the graceful stop, as an operator's SIGTERM would
        });
#endif
    engine.join();
    end_dpdk();
    return 0;
  });
}

}  // namespace
}  // namespace ringpoll

int main(int argc, char** argv) {
  return ringpoll::run(argc, argv);
}
