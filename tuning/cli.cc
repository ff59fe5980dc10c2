#include "tuning/cli.h"

#include <CLI/CLI.hpp>
#include <cstdio>

namespace ringpoll::tuning {

void add_config_options(CLI::App& app, CliConfig* c, bool with_config_file) {
  std::string names;
  for (const std::string& n : builtin_profiles()) names += (names.empty() ? "" : ", ") + n;
  app.add_option("--profile", c->profile,
                 "Config profile: a built-in name (" + names + ") or a TOML file")
      ->type_name("NAME|PATH");
  if (with_config_file) {
    app.add_option("--config", c->config_file, "TOML file applied on top of the profile")
        ->type_name("FILE");
  }
  app.add_option("--set", c->sets,
                 "Override one key, e.g. --set engine.shards=2 (repeatable, applied last)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  app.add_flag("--print-config", c->print, "Print the effective config as TOML and exit");
}

int resolve_config(const char* program, const CliConfig& c, Config* out) {
  Config cfg;
  std::optional<ConfigError> err = load_profile(c.profile, &cfg);
  if (!err && !c.config_file.empty()) err = apply_file(c.config_file, &cfg);
  for (size_t i = 0; !err && i < c.sets.size(); ++i) err = apply_set(c.sets[i], &cfg);
  if (err) {
    std::fprintf(stderr, "%s: config error: %s\n", program, err->to_string().c_str());
    return 2;
  }
  if (c.print) {
    const std::string text = print_config(cfg);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return 0;
  }
  *out = std::move(cfg);
  return -1;
}

}  // namespace ringpoll::tuning
