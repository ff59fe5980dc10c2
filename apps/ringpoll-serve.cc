// ringpoll-serve: echo and HTTP/1.1 servers on the sharded engine, for benchmarks.
//
//   ringpoll-serve --mode echo|http|udp-echo --listen ADDR:PORT [--profile NAME|PATH]
//                  [--set key=value ...] [--print-config]
//
// udp-echo answers each UDP datagram with itself, on the packet path packet.path names
// (kernel sockets; DPDK or AF_XDP in a build with -DRINGPOLL_WITH_DPDK=ON /
// -DRINGPOLL_WITH_XDP=ON; apps/serve/udp_echo.h);
// --listen is then an IPv4 address, which on a bypass path is the address the program
// answers ARP for. Its first line adds ", path NAME".
//
// One shard per CPU unless engine.shards says otherwise, each with its own SO_REUSEPORT
// listener (TcpServer). What each mode answers, and the deadlines, are described in
// apps/serve/handlers.h and apps/http/response.h. Config keys used here: engine.*,
// io_uring.* (through the launcher), socket.{nodelay,keepalive,reuseport,backlog,rcvbuf,
// sndbuf}, timeouts.{idle_ms,header_read_ms,drain_ms}, limits.{max_connections,
// buffer_bytes,max_request_line,max_header_bytes}.
//
// The first line on stdout is "ringpoll-serve: MODE on ADDR:PORT, backend NAME, N shards"
// with the real port (--listen 127.0.0.1:0 picks a free one); benchmark harnesses wait
// for it. SIGINT/SIGTERM: stop accepting, let connections finish within
// timeouts.drain_ms, abort the rest, exit 0; a second signal exits 0 at once. Bad
// arguments: a message naming the argument, exit 2; a listen or engine failure: exit 1.
//
// Windows (mingw-w64, IOCP): echo and http, plain TCP. Ctrl-C, Ctrl-Break and closing the
// console take the SIGINT/SIGTERM path. TLS (no OpenSSL there) and udp-echo (the packet
// paths) are refused with a message saying so (exit 2).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "apps/common/fd_limit.h"
#include "apps/common/launch.h"
#include "apps/serve/handlers.h"
#include "engine/server.h"
#include "tuning/cli.h"
#ifndef _WIN32
#include "apps/common/packet_path.h"
#include "apps/serve/tls_serve.h"
#include "apps/serve/udp_echo.h"
#include "packet/kernel_queue.h"
#include "tls/ktls.h"
#include "tuning/tls_options.h"
#endif
#ifdef RINGPOLL_WITH_XDP
#include "packet/xdp_queue.h"
#endif

namespace ringpoll {
namespace {

constexpr const char* kProgram = "ringpoll-serve";

serve::ServeSettings settings_from(const tuning::Config& cfg) {
  constexpr int64_t kMsNs = 1'000'000;
  serve::ServeSettings s;
  s.buffer_bytes = static_cast<size_t>(cfg.limits.buffer_bytes);
  s.parser.max_request_line = static_cast<size_t>(cfg.limits.max_request_line);
  s.parser.max_header_bytes = static_cast<size_t>(cfg.limits.max_header_bytes);
  s.header_read_ns = cfg.timeouts.header_read_ms * kMsNs;
  s.idle_ns = cfg.timeouts.idle_ms * kMsNs;
  s.max_connections = cfg.limits.max_connections;
  s.keepalive = cfg.socket.keepalive;
  s.rcvbuf = static_cast<int>(cfg.socket.rcvbuf);
  s.sndbuf = static_cast<int>(cfg.socket.sndbuf);
  return s;
}

template <PollerBackend P>
int serve_on(Engine<P>& e, const tuning::Config& cfg, bool http, const SocketAddress& at) {
  typename TcpServer<P>::Options so;
  so.listen = tuning::listen_options(cfg);
  so.nodelay = cfg.socket.nodelay;
  TcpServer<P> srv(e, so);
  const serve::ServeSettings settings = settings_from(cfg);
  serve::ServeCounters counters;
  typename TcpServer<P>::ContextHandler handler;
  std::string why;
#ifdef _WIN32
  constexpr bool tls_ctx = false;  // refused with the config on Windows (tuning/config.cc)
  if (http) {
#else
  serve::TlsCounters tls_counters;
  std::unique_ptr<tls::TlsContext> tls_ctx;
  if (!cfg.tls.cert.empty()) {
    // The files were checked when the config was read; what can still fail is rare (out of
    // memory, a file changed in between).
    tls::TlsOptions to = tuning::tls_server_options(cfg);
    if (http) to.alpn = {"http/1.1"};  // what the HTTP handler speaks (curl would offer h2)
    tls_ctx = tls::TlsContext::server(to, &why);
    if (!tls_ctx) {
      std::fprintf(stderr, "%s: tls: %s\n", kProgram, why.c_str());
      return 1;
    }
    const int64_t hs_ns = cfg.tls.handshake_ms * 1'000'000;
    handler = [&, hs_ns](TcpStream<P>& c, ConnContext<P> cx) {
      return serve::serve_tls<P>(c, cx.sched(), *tls_ctx, http, hs_ns, settings, &counters,
                                 &tls_counters);
    };
  } else if (http) {
#endif
    handler = [&](TcpStream<P>& c, ConnContext<P>) {
      return serve::serve_http<P>(c, settings, &counters);
    };
  } else {
    handler = [&](TcpStream<P>& c, ConnContext<P>) {
      return serve::serve_echo<P>(c, settings, &counters);
    };
  }
  if (const Status st = srv.start(at, std::move(handler), &why); !st.ok()) {
    std::fprintf(stderr, "%s: cannot listen on %s: %s\n", kProgram, at.to_string().c_str(),
                 why.empty() ? st.message() : why.c_str());
    return 1;
  }
  // With TLS: the mode's name over TLS, and which path the record layer runs.
  const char* mode = tls_ctx ? (http ? "https" : "tls-echo") : (http ? "http" : "echo");
#ifdef _WIN32
  const std::string tls_line;
#else
  const std::string tls_line = tls_ctx ? ", tls " + tls::record_path_line() : "";
#endif
  std::printf("%s: %s on %s, backend %s, %zu shards%s\n", kProgram, mode,
              srv.address().to_string().c_str(), P::kName, e.size(), tls_line.c_str());
  std::fflush(stdout);

  const int64_t drain_ns = cfg.timeouts.drain_ms * 1'000'000;
  std::thread sig = shutdown_on_signals(
      [&] {
        const size_t aborted = srv.shutdown(drain_ns);
        std::fprintf(stderr, "%s: stopped (%zu connection%s aborted at the drain deadline)\n",
                     kProgram, aborted, aborted == 1 ? "" : "s");
      },
      [] {
        // The second signal: the kernel closes every socket as the process ends.
        std::fflush(stdout);
        std::_Exit(0);
      });
  sig.join();
#ifndef _WIN32
  if (tls_ctx) serve::print_tls_counters(kProgram, tls_counters);
#endif
  if (counters.refused.load() > 0) {
    std::fprintf(stderr, "%s: %llu connections refused over limits.max_connections\n", kProgram,
                 static_cast<unsigned long long>(counters.refused.load()));
  }
  return 0;
}

#ifndef _WIN32  // the packet paths are Linux only
packet::QueueSpec queue_spec(const tuning::Config& cfg, const SocketAddress& at, int shard) {
  packet::QueueSpec q = app::queue_sizes(cfg);
  q.queue = shard;
  q.local_ip = ntohl(reinterpret_cast<const sockaddr_in*>(at.sa())->sin_addr.s_addr);
  q.local_port = at.port();
  q.reuseport = cfg.socket.reuseport;
  return q;
}

template <PollerBackend P>
int serve_udp_on(Engine<P>& e, const tuning::Config& cfg, const SocketAddress& at) {
  auto ready = [&](auto& q0, uint16_t port) {
    std::printf("%s: udp-echo on %s:%u, backend %s, path %s, %zu shards\n", kProgram,
                packet::ipv4_to_string(queue_spec(cfg, at, 0).local_ip).c_str(), port, P::kName,
                packet::to_string(std::remove_reference_t<decltype(q0)>::kPath), e.size());
    std::fflush(stdout);
  };
  if (cfg.packet.path == tuning::PacketPath::kKernel) {
    uint16_t port = at.port();  // port 0: shard 0 picks one, the other shards share it
    return serve::run_udp_echo<P, packet::KernelQueue>(
        e, kProgram,
        [&](packet::KernelQueue& q, int shard, std::string* why) {
          packet::QueueSpec spec = queue_spec(cfg, at, shard);
          spec.local_port = port;
          const Status st = q.open(spec, why);
          if (st.ok()) port = q.local_port();
          return st;
        },
        [&](packet::KernelQueue& q0) { ready(q0, q0.local_port()); });
  }
  if (cfg.packet.path == tuning::PacketPath::kXdp) {
#ifdef RINGPOLL_WITH_XDP
    return serve::run_udp_echo<P, packet::XdpQueue>(
        e, kProgram,
        [&](packet::XdpQueue& q, int shard, std::string* why) {
          q.set_options({cfg.packet.xdp_iface, static_cast<uint32_t>(cfg.packet.xdp_frames)});
          return q.open(queue_spec(cfg, at, shard), why);
        },
        [&](packet::XdpQueue& q0) {
          ready(q0, at.port());
          std::fprintf(stderr, "%s: AF_XDP on %s, %s mode\n", kProgram,
                       cfg.packet.xdp_iface.c_str(), q0.mode());
        });
#else
    std::fprintf(stderr,
                 "%s: packet.path = \"xdp\": this build has no AF_XDP (configure with "
                 "-DRINGPOLL_WITH_XDP=ON)\n",
                 kProgram);
    return 2;
#endif
  }
#ifdef RINGPOLL_WITH_DPDK
  std::string why;
  if (const Status st = packet::DpdkPort::start(app::dpdk_port_options(cfg, e), &why); !st.ok()) {
    std::fprintf(stderr, "%s: DPDK: %s\n", kProgram, why.c_str());
    return 1;
  }
  const int rc = serve::run_udp_echo<P, packet::DpdkQueue>(
      e, kProgram,
      [&](packet::DpdkQueue& q, int shard, std::string* why) {
        return q.open(queue_spec(cfg, at, shard), why);
      },
      [&](packet::DpdkQueue& q0) { ready(q0, at.port()); });
  packet::DpdkPort::shutdown();
  return rc;
#else
  std::fprintf(stderr,
               "%s: packet.path = \"dpdk\": this build has no DPDK (configure with "
               "-DRINGPOLL_WITH_DPDK=ON)\n",
               kProgram);
  return 2;
#endif
}
#endif

}  // namespace
}  // namespace ringpoll

int main(int argc, char** argv) {
  using namespace ringpoll;
  CLI::App app{"ringpoll-serve: echo and HTTP/1.1 servers for benchmarks"};
  std::string mode;
  std::string listen;
  app.add_option("--mode", mode,
                 "echo: send back what is read; http: HTTP/1.1 server; udp-echo: datagrams back "
                 "to their sender on packet.path")
      ->required()
      ->check(CLI::IsMember({"echo", "http", "udp-echo"}));
  app.add_option("--listen", listen, "Address to listen on, e.g. 127.0.0.1:8080 (port 0: any)")
      ->required()
      ->type_name("ADDR:PORT");
  std::string tls_cert, tls_key;
  app.add_option("--tls-cert", tls_cert,
                 "Serve echo/http over TLS with this PEM certificate chain (tls.cert)")
      ->type_name("FILE");
  app.add_option("--tls-key", tls_key, "The certificate's PEM private key (tls.key)")
      ->type_name("FILE");
  tuning::CliConfig cc;
  tuning::add_config_options(app, &cc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 names the argument; help is exit 0, every refusal exit 2.
    return app.exit(e) == 0 ? 0 : 2;
  }
  // --tls-cert/--tls-key are --set tls.cert=/tls.key= after every other --set.
  if (!tls_cert.empty()) cc.sets.push_back("tls.cert=" + tls_cert);
  if (!tls_key.empty()) cc.sets.push_back("tls.key=" + tls_key);
  SocketAddress at;
  std::string why;
  if (!parse_address(listen, &at, &why).ok()) {
    std::fprintf(stderr, "%s: --listen: %s\n", kProgram, why.c_str());
    return 2;
  }
  tuning::Config cfg;
  if (const int rc = tuning::resolve_config(kProgram, cc, &cfg); rc >= 0) return rc;
  if (cfg.tls.cert.empty() != cfg.tls.key.empty()) {
    std::fprintf(stderr,
                 "%s: tls.cert and tls.key go together (--tls-cert/--tls-key): %s is "
                 "not set\n",
                 kProgram, cfg.tls.cert.empty() ? "tls.cert" : "tls.key");
    return 2;
  }
  if (!cfg.tls.cert.empty() && mode == "udp-echo") {
    std::fprintf(stderr, "%s: --mode udp-echo has no TLS (tls.cert is set)\n", kProgram);
    return 2;
  }

  // Blocked before the shards start, so they inherit the mask and the signal thread of
  // shutdown_on_signals is the only one that takes SIGINT/SIGTERM (Windows: the console
  // control handler is installed).
  block_stop_signals(/*with_reload=*/false);
#ifndef _WIN32
  signal(SIGPIPE, SIG_IGN);
#endif
  // One descriptor a connection: take all the hard limit gives (apps/common/fd_limit.h).
  (void)app::raise_fd_limit(0, "");

  if (mode == "udp-echo") {
#ifdef _WIN32
    std::fprintf(stderr, "%s: --mode udp-echo runs on the packet paths, which are Linux only\n",
                 kProgram);
    return 2;
#else
    if (at.family() != AF_INET) {
      std::fprintf(stderr, "%s: --listen: udp-echo takes an IPv4 address, got %s\n", kProgram,
                   listen.c_str());
      return 2;
    }
    return app::run_engine(kProgram, cfg,
                           [&]<class P>(Engine<P>& e) { return serve_udp_on<P>(e, cfg, at); });
#endif
  }
  const bool http = mode == "http";
  return app::run_engine(kProgram, cfg,
                         [&]<class P>(Engine<P>& e) { return serve_on<P>(e, cfg, http, at); });
}
