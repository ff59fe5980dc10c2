// Fuzzes the config loader (tuning/config.cc) with arbitrary bytes as a TOML document.
// Beyond "no crash, no leak, no exception out", it checks two properties on every input:
//   - a document that is refused leaves the config exactly as it was;
//   - a document that loads prints (print_config) to TOML that loads back to an equal
//     config, and printing that gives the same text.
// The first line of the input is also tried as a --set assignment.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "tuning/config.h"

using ringpoll::tuning::Config;

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "config_fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  Config set;
  if (const auto e = ringpoll::tuning::apply_set(text.substr(0, text.find('\n')), &set)) {
    if (!(set == Config{})) fail("a refused --set changed the config", e->to_string());
  }

  Config cfg;
  if (const auto e = ringpoll::tuning::apply_toml(text, "fuzz.toml", &cfg)) {
    (void)e->to_string();
    if (!(cfg == Config{})) fail("a refused document changed the config", e->to_string());
    return 0;
  }
  const std::string printed = ringpoll::tuning::print_config(cfg);
  Config back;
  if (const auto e = ringpoll::tuning::apply_toml(printed, "printed.toml", &back)) {
    fail("the printed config does not load", e->to_string() + "\n" + printed);
  }
  if (!(back == cfg)) fail("the printed config loads to a different config", printed);
  if (ringpoll::tuning::print_config(back) != printed) fail("printing is not stable", printed);
  return 0;
}
