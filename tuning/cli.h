#pragma once
// The command-line glue every ringpoll program shares:
//
//   --profile NAME|PATH  a built-in profile (balanced, latency, throughput) or a TOML file
//   --config FILE        (programs that ask for it) a TOML file applied on the profile
//   --set key=value      one key, repeatable, applied last, in order
//   --print-config       print the effective config as TOML and exit 0
//
// Precedence: profile < --config file < each --set. Keys and ranges: tuning/README.md.
#include <string>
#include <vector>

#include "config.h"

namespace CLI {
class App;
}

namespace ringpoll::tuning {

struct CliConfig {
  std::string profile = "balanced";
  std::vector<std::string> sets;
  bool print = false;
  std::string config_file;
};

// Adds --profile NAME|PATH, --set key=value (repeatable), --print-config; and --config
// FILE when with_config_file.
void add_config_options(CLI::App& app, CliConfig* c, bool with_config_file = false);

// Loads the profile, then the --config file if any, then each --set in order. On error
// prints "PROGRAM: config error: <ConfigError::to_string()>" to stderr and returns 2.
// With --print-config prints the effective config to stdout and returns 0 (the caller
// exits 0). Otherwise returns -1 and fills *out.
int resolve_config(const char* program, const CliConfig& c, Config* out);

}  // namespace ringpoll::tuning
