// ringpoll-load: a load generator on the engine, for echo and HTTP/1.1 servers.
//
//   ringpoll-load --mode echo|http --target IPV4:PORT --connections N --duration S
//                 [--size M] [--warmup S] [--rate R] [--pipeline D] [--shards K]
//                 [--timeout S] [--json FILE] [--backend auto|epoll|io_uring]
//
// Closed loop by default (each connection keeps --pipeline requests in flight and sends
// the next when an answer arrives); open loop at a total of --rate requests/s with
// latency measured from each request's intended send time (coordinated-omission
// correction, as wrk2 does). The generator (apps/load/) is a client on the engine: its
// connections are coroutines on Engine shards. This file is the command line, the
// progress line and the report. See load_usage() for the exit codes.
#include <signal.h>
#include <unistd.h>
#ifdef _WIN32
#include <io.h>  // _isatty
#endif

#include <cstdio>
#include <string>
#include <vector>

#include "apps/load/generator.h"
#include "apps/load/options.h"
#include "apps/load/report.h"

int main(int argc, char** argv) {
  using namespace ringpoll::load;
  const std::vector<std::string> args(argv + 1, argv + argc);
  const ParseResult parsed = parse_load_args(args);
  if (parsed.kind == ParseResult::Kind::kHelp) {
    std::fputs(load_usage(), stdout);
    return 0;
  }
  if (parsed.kind == ParseResult::Kind::kError) {
    std::fprintf(stderr, "ringpoll-load: %s\n%s", parsed.error.c_str(), load_usage());
    return 2;
  }
#ifdef _WIN32
  const bool tty = _isatty(_fileno(stdout)) != 0;  // Winsock raises no SIGPIPE
#else
  signal(SIGPIPE, SIG_IGN);  // a reset peer is an error value, not a signal

  // On a terminal the progress line rewrites itself; otherwise one plain line a second.
  const bool tty = isatty(STDOUT_FILENO) == 1;
#endif
  bool drew = false;
  auto progress = [tty, &drew](const ProgressSample& s) {
    const std::string line = progress_line(s);
    if (tty) {
      std::printf("\r%s\x1b[K", line.c_str());
      drew = true;
    } else {
      std::printf("%s\n", line.c_str());
    }
    std::fflush(stdout);
  };
  const LoadReport rep = run_load(parsed.options, progress);
  if (drew) std::printf("\n");
  print_report(stdout, rep);
  std::fflush(stdout);
  if (!parsed.options.json_path.empty()) {
    std::string err;
    if (!write_json(parsed.options.json_path, rep, &err)) {
      std::fprintf(stderr, "ringpoll-load: --json: %s\n", err.c_str());
      return 1;
    }
  }
  if (!rep.failure.empty()) return 1;
  return rep.counters.errors() > 0 ? 3 : 0;
}
