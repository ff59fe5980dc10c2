// Config profiles (tuning/): built-in profiles, layering, every error kind with
// its file, line and key, the print/load round trip, the mapping to the
// engine's option structs and the CLI glue (parsed in-process; nothing external
// runs).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tuning/cli.h"
#include "tuning/config.h"

namespace ringpoll::tuning {

// GoogleTest shows a Config that differs as its TOML.
void PrintTo(const Config& c, std::ostream* os) {
  *os << "\n" << print_config(c);
}

namespace {

// A config error, checked field by field and as the printed line.
void expect_error(const std::optional<ConfigError>& e, const std::string& file, int line,
                  const std::string& key, const std::string& message_part) {
  ASSERT_TRUE(e.has_value()) << "expected an error at " << file << ":" << line << " " << key;
  EXPECT_EQ(e->file, file) << e->to_string();
  EXPECT_EQ(e->line, line) << e->to_string();
  EXPECT_EQ(e->key, key) << e->to_string();
  EXPECT_NE(e->message.find(message_part), std::string::npos) << e->to_string();
  const std::string where = line > 0 ? file + ":" + std::to_string(line) + ": " : file + ": ";
  EXPECT_EQ(e->to_string().rfind(where + (key.empty() ? "" : key + ": "), 0), 0u) << e->to_string();
}

std::optional<ConfigError> load_text(const std::string& text, Config* cfg,
                                     const std::string& file = "x.toml") {
  return apply_toml(text, file, cfg);
}

// A temporary directory for config files, removed with its files.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ringpoll-tuning-XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_NE(d, nullptr);
    dir_ = d ? d : "/tmp";
  }
  ~TempDir() {
    for (const auto& f : files_) unlink(f.c_str());
    rmdir(dir_.c_str());
  }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    files_.push_back(path);
    return path;
  }

 private:
  std::string dir_;
  std::vector<std::string> files_;
};

// A pool named "app", on lines 1-3 of a document that starts with it.
const std::string kAppPool = R"([[proxy.pool]]
name = "app"
upstreams = ["10.0.0.1:80"]
)";

const char* const kProxyDoc = R"(
[proxy]
splice = "auto"

[[proxy.listener]]
name = "web"
listen = "127.0.0.1:8080"
pool = "app"
proxy_protocol = "v2"

[[proxy.listener]]
name = "web6"
listen = "[::1]:8080"
pool = "app"

[[proxy.pool]]
name = "app"
balance = "least_conn"
upstreams = ["10.0.0.1:80", "[fe80::1]:8080"]
fail_threshold = 5
check_interval_ms = 2000
)";

TEST(TuningProfiles, EveryBuiltinLoadsAndValidates) {
  const std::vector<std::string> names = builtin_profiles();
  ASSERT_EQ(names.size(), 3u);
  EXPECT_EQ(names[0], "balanced");
  for (const char* want : {"balanced", "latency", "throughput"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }
  for (const std::string& name : names) {
    Config c;
    c.engine.shards = 7;  // a profile starts from the defaults, whatever was there
    const auto e = load_profile(name, &c);
    EXPECT_FALSE(e.has_value()) << name << ": " << e->to_string();
    Config again;
    EXPECT_FALSE(load_text(print_config(c), &again).has_value()) << name;
    EXPECT_EQ(again, c) << name;
  }
}

// The "section.key" names a TOML text assigns, one per `key = value` line under a
// `[section]` header (comments and [[arrays of tables]] skipped; enough for the profiles
// and for print_config's output).
std::set<std::string> assigned_keys(std::string_view text) {
  std::set<std::string> keys;
  std::string section;
  bool in_table_list = false;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    if (line.rfind("[[", 0) == 0) {
      in_table_list = true;
      continue;
    }
    if (line.front() == '[') {
      in_table_list = false;
      section = std::string(line.substr(1, line.find(']') - 1));
      continue;
    }
    const size_t eq = line.find('=');
    if (in_table_list || eq == std::string_view::npos) continue;
    std::string_view key = line.substr(0, eq);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
    keys.insert(section.empty() ? std::string(key) : section + "." + std::string(key));
  }
  return keys;
}

TEST(TuningProfiles, BalancedIsTheDefaults) {
  Config c;
  ASSERT_FALSE(load_profile("balanced", &c).has_value());
  EXPECT_EQ(c, Config{});
  // Every key, listed: a key missing from balanced.toml would still load as its default,
  // so the file's keys are compared with every key print_config writes.
  const std::optional<std::string_view> text = builtin_profile_text("balanced");
  ASSERT_TRUE(text.has_value());
  const std::set<std::string> listed = assigned_keys(*text);
  const std::set<std::string> every = assigned_keys(print_config(Config{}));
  ASSERT_FALSE(every.empty());
  for (const std::string& key : every) {
    EXPECT_TRUE(listed.count(key)) << key << " is missing from tuning/profiles/balanced.toml";
  }
  for (const std::string& key : listed) {
    EXPECT_TRUE(every.count(key)) << key << " in balanced.toml is not a key print_config writes";
  }
}

TEST(TuningProfiles, LatencyAndThroughputChangeWhatTheySay) {
  Config lat, thr;
  ASSERT_FALSE(load_profile("latency", &lat).has_value());
  ASSERT_FALSE(load_profile("throughput", &thr).has_value());
  const Config def;
  EXPECT_GT(lat.engine.busy_poll_us, 0);
  EXPECT_EQ(lat.engine.tick_us, 100);
  EXPECT_LT(lat.engine.fairness_batch, def.engine.fairness_batch);
  EXPECT_LT(lat.io_uring.entries, def.io_uring.entries);
  EXPECT_LT(lat.limits.buffer_bytes, def.limits.buffer_bytes);
  EXPECT_TRUE(lat.socket.nodelay);
  EXPECT_GT(thr.io_uring.entries, def.io_uring.entries);
  EXPECT_GT(thr.engine.fairness_batch, def.engine.fairness_batch);
  EXPECT_GT(thr.limits.buffer_bytes, def.limits.buffer_bytes);
  EXPECT_GT(thr.io_uring.buf_size, def.io_uring.buf_size);
  EXPECT_NE(thr.io_uring.zc_threshold, def.io_uring.zc_threshold);
  EXPECT_EQ(thr.engine.busy_poll_us, 0);
}

TEST(TuningProfiles, ProfileKeyInAFileStartsFromThatProfile) {
  Config c;
  c.engine.fairness_batch = 999;  // replaced: the file starts from latency
  ASSERT_FALSE(load_text("profile = \"latency\"\n[engine]\nshards = 3\n", &c).has_value());
  Config want;
  ASSERT_FALSE(load_profile("latency", &want).has_value());
  want.engine.shards = 3;
  EXPECT_EQ(c, want);
}

TEST(TuningProfiles, ProfileByPathAndUnknownName) {
  TempDir dir;
  const std::string path = dir.write("mine.toml", "[socket]\nbacklog = 77\n");
  Config c;
  ASSERT_FALSE(load_profile(path, &c).has_value());
  EXPECT_EQ(c.socket.backlog, 77);
  EXPECT_EQ(c.engine, Config{}.engine);

  const auto e = load_profile("fastest", &c);
  expect_error(e, "fastest", 0, "", "neither a built-in profile (balanced, latency, throughput)");
  expect_error(load_profile(path + ".missing", &c), path + ".missing", 0, "", "cannot open");
  EXPECT_EQ(c.socket.backlog, 77);  // failed loads change nothing
}

TEST(TuningPrecedence, ProfileThenFileThenSets) {
  TempDir dir;
  CliConfig cli;
  cli.profile = "latency";
  cli.config_file = dir.write("site.toml",
                              "[engine]\ntick_us = 200\nfairness_batch = 20\n"
                              "[limits]\nmax_connections = 1000\n");
  cli.sets = {"engine.tick_us=300", "limits.max_connections = 5", "limits.max_connections=6"};
  Config c;
  ASSERT_EQ(resolve_config("test", cli, &c), -1);
  EXPECT_EQ(c.engine.busy_poll_us, 50);      // from the profile
  EXPECT_EQ(c.engine.fairness_batch, 20);    // the file over the profile
  EXPECT_EQ(c.engine.tick_us, 300);          // --set over the file
  EXPECT_EQ(c.limits.max_connections, 6);    // the last --set wins
  EXPECT_EQ(c.io_uring.entries, 128);        // untouched latency value
  EXPECT_EQ(c.timeouts, TimeoutsSection{});  // untouched default
}

TEST(TuningPrecedence, ArraysOfTablesReplaceTheLayerBelow) {
  Config c;
  ASSERT_FALSE(load_text(kProxyDoc, &c).has_value());
  ASSERT_EQ(c.proxy.pools.size(), 1u);
  const char* const other = R"(
[[proxy.pool]]
name = "app"
upstreams = ["10.0.0.9:81"]
[[proxy.pool]]
name = "spare"
upstreams = ["10.0.0.8:81"]
)";
  ASSERT_FALSE(load_text(other, &c).has_value());
  ASSERT_EQ(c.proxy.pools.size(), 2u);
  EXPECT_EQ(c.proxy.pools[0].upstreams, std::vector<std::string>{"10.0.0.9:81"});
  EXPECT_EQ(c.proxy.pools[0].balance,
            Balance::kRoundRobin);          // a new table: defaults
  EXPECT_EQ(c.proxy.listeners.size(), 2u);  // kept: the file had none
}

TEST(TuningErrors, UnknownKey) {
  Config c;
  const auto e = load_text("[engine]\nshards = 2\nshardz = 2\n", &c);
  expect_error(e, "x.toml", 3, "engine.shardz", "unknown key; [engine] has backend, shards");
  EXPECT_EQ(c, Config{});  // the failed layer changed nothing, not even engine.shards
  expect_error(load_text("\nfoo = 1\n", &c), "x.toml", 2, "foo", "unknown key");
}

TEST(TuningErrors, UnknownSection) {
  Config c;
  expect_error(load_text("# comment\n[engin]\nshards = 1\n", &c), "x.toml", 2, "engin",
               "unknown section; sections are engine, io_uring, socket, timeouts, limits, proxy");
}

TEST(TuningErrors, WrongType) {
  Config c;
  expect_error(load_text("[io_uring]\n\nentries = \"256\"\n", &c), "x.toml", 3, "io_uring.entries",
               "must be an integer, got the string \"256\"");
  expect_error(load_text("[socket]\nnodelay = 1\n", &c), "x.toml", 2, "socket.nodelay",
               "must be a boolean, got the integer 1");
  expect_error(load_text("engine = 5\n", &c), "x.toml", 1, "engine",
               "must be a table, got the integer 5");
  expect_error(load_text("[engine]\ncpus = [0, \"1\"]\n", &c), "x.toml", 2, "engine.cpus[1]",
               "must be an integer");
}

TEST(TuningErrors, OutOfRange) {
  Config c;
  expect_error(load_text("[engine]\nfairness_batch = 0\n", &c), "x.toml", 2,
               "engine.fairness_batch", "must be in 1..100000, got 0");
  expect_error(load_text("[socket]\nrcvbuf = 100\n", &c), "x.toml", 2, "socket.rcvbuf",
               "must be 0 or in 4096..67108864, got 100");
  expect_error(load_text("[engine]\ncpus = [0, 1000000]\n", &c), "x.toml", 2, "engine.cpus[1]",
               "got 1000000");
  EXPECT_FALSE(load_text("[socket]\nrcvbuf = 0\n", &c).has_value());
}

TEST(TuningErrors, NotAPowerOfTwo) {
  std::string text;
  for (int i = 1; i < 11; ++i) text += "# line " + std::to_string(i) + "\n";
  text += "[io_uring]\nentries = 300\n";  // lines 11 and 12
  Config c;
  const auto e = load_text(text, &c, "tuning/profiles/x.toml");
  ASSERT_TRUE(e.has_value());
  const std::string want =
      "tuning/profiles/x.toml:12: io_uring.entries: must be a power of two in 8..32768, got 300";
  EXPECT_EQ(e->to_string(), want);
  expect_error(load_text("[engine]\ninbox_capacity = 1000\n", &c), "x.toml", 2,
               "engine.inbox_capacity", "power of two in 64..1048576");
}

TEST(TuningErrors, BadEnumString) {
  Config c;
  expect_error(load_text("[engine]\nbackend = \"kqueue\"\n", &c), "x.toml", 2, "engine.backend",
               "must be one of \"auto\", \"io_uring\", \"epoll\", got \"kqueue\"");
  expect_error(load_text("[proxy]\nsplice = true\n", &c), "x.toml", 2, "proxy.splice",
               "must be one of \"auto\", \"on\", \"off\", got the boolean true");
}

TEST(TuningErrors, BadAddress) {
  Config c;
  const char* const doc = R"([[proxy.pool]]
name = "app"
upstreams = ["10.0.0.1:80",
  "10.0.0.2"]
[[proxy.listener]]
name = "web"
listen = "::1:80"
pool = "app"
)";
  const auto e = load_text(doc, &c);
  expect_error(e, "x.toml", 4, "proxy.pool[0].upstreams[1]", "not an address: missing ':port'");
  const std::string listener = kAppPool + R"(
[[proxy.listener]]
name = "web"
listen = "::1:80"
pool = "app"
)";
  expect_error(load_text(listener, &c), "x.toml", 7, "proxy.listener[0].listen",
               "must be written in brackets");
}

TEST(TuningErrors, UnknownPoolReference) {
  Config c;
  const std::string doc = kAppPool + R"(
[[proxy.listener]]
name = "web"
listen = "0.0.0.0:80"
pool = "ap"
)";
  expect_error(load_text(doc, &c), "x.toml", 8, "proxy.listener[0].pool",
               "no [[proxy.pool]] is named \"ap\"");
}

TEST(TuningErrors, SniRoutesNameTheirEntryAndWhatIsWrong) {
  const std::string head = kAppPool + R"(
[[proxy.listener]]
name = "tls"
listen = "0.0.0.0:443"
pool = "app"
)";
  Config c;
  expect_error(
      load_text(head + "sni_routes = [\"api.example.com=app\", \"api.example.com\"]\n", &c),
      "x.toml", 9, "proxy.listener[0].sni_routes[1]", "must be \"HOST-PATTERN=POOL\"");
  expect_error(load_text(head + "sni_routes = [\"a.*.example.com=app\"]\n", &c), "x.toml", 9,
               "proxy.listener[0].sni_routes[0]", "host pattern \"a.*.example.com\": '*' only");
  expect_error(load_text(head + "sni_routes = [\"example.com.=app\"]\n", &c), "x.toml", 9,
               "proxy.listener[0].sni_routes[0]", "ends with a dot");
  expect_error(load_text(head + "sni_routes = [\"*.example.com=nope\"]\n", &c), "x.toml", 9,
               "proxy.listener[0].sni_routes",
               "route \"*.example.com=nope\": no [[proxy.pool]] is named \"nope\"");
  expect_error(load_text(head + "protocol = \"udp\"\nsni_routes = [\"*=app\"]\n", &c), "x.toml", 10,
               "proxy.listener[0].sni_routes", "SNI routing is for TCP listeners");
  expect_error(load_text(head + "sni_routes = \"*=app\"\n", &c), "x.toml", 9,
               "proxy.listener[0].sni_routes", "an array of \"HOST-PATTERN=POOL\" strings");
  ASSERT_FALSE(
      load_text(head + "sni_routes = [\"*.Example.com=app\", \"*=app\"]\n", &c).has_value());
  EXPECT_EQ(c.proxy.listeners[0].sni_routes,
            (std::vector<std::string>{"*.Example.com=app", "*=app"}));
  Config back;
  ASSERT_FALSE(load_text(print_config(c), &back, "printed.toml").has_value());
  EXPECT_EQ(back, c);
}

TEST(TuningErrors, DuplicateName) {
  Config c;
  const std::string doc = kAppPool + R"([[proxy.pool]]
name = "app"
upstreams = ["10.0.0.2:80"]
)";
  expect_error(load_text(doc, &c), "x.toml", 5, "proxy.pool[1].name",
               "duplicate pool name \"app\" (also proxy.pool[0].name)");
}

TEST(TuningErrors, MissingRequiredKey) {
  Config c;
  expect_error(load_text("\n[[proxy.pool]]\nname = \"app\"\n", &c), "x.toml", 2,
               "proxy.pool[0].upstreams", "is required");
  expect_error(load_text("[[proxy.pool]]\nname = \"a\"\nupstreams = []\n", &c), "x.toml", 3,
               "proxy.pool[0].upstreams", "at least one");
}

TEST(TuningErrors, TomlSyntaxError) {
  Config c;
  expect_error(load_text("[engine]\nshards = 1\npin = = true\n", &c), "x.toml", 3, "",
               "unknown value");
  expect_error(load_text("[engine]\n[engine]\n", &c), "x.toml", 2, "", "already exists");
  // Hostile nesting is refused before the recursive parser sees it.
  expect_error(load_text("a = 1\nb = " + std::string(100000, '['), &c), "x.toml", 2, "",
               "nested deeper than");
  EXPECT_EQ(c, Config{});
}

TEST(TuningErrors, OversizedDocumentIsRefusedUnparsed) {
  Config c;
  expect_error(load_text(std::string((1 << 20) + 1, '#'), &c), "x.toml", 0, "",
               "larger than 1048576 bytes");
}

TEST(TuningErrors, BadSetSyntax) {
  Config c;
  expect_error(apply_set("engine.shards", &c), "--set", 0, "engine.shards", "expected key=value");
  expect_error(apply_set("engine..shards=2", &c), "--set", 0, "engine..shards",
               "expected key=value");
  expect_error(apply_set(" = 2", &c), "--set", 0, "", "expected key=value");
  expect_error(apply_set("engine.shard s=2", &c), "--set", 0, "engine.shard s",
               "expected key=value");
  EXPECT_EQ(c, Config{});
}

TEST(TuningErrors, SetValueErrorsNameSetAndTheKey) {
  Config c;
  const auto e = apply_set("engine.backend=kqueue", &c);
  ASSERT_TRUE(e.has_value());
  const std::string want =
      R"(--set: engine.backend: must be one of "auto", "io_uring", "epoll", got "kqueue")";
  EXPECT_EQ(e->to_string(), want);
  expect_error(apply_set("io_uring.entries=300", &c), "--set", 0, "io_uring.entries",
               "power of two");
  expect_error(apply_set("engine.nope=1", &c), "--set", 0, "engine.nope", "unknown key");
  expect_error(apply_set("engine.shards=two", &c), "--set", 0, "engine.shards",
               "must be an integer, got the string \"two\"");
}

TEST(TuningErrors, EarliestLineIsReported) {
  Config c;
  expect_error(load_text("[socket]\nbacklog = 0\n[engine]\nshards = -1\n", &c), "x.toml", 2,
               "socket.backlog", "must be in 1..65535");
}

TEST(TuningSet, ValuesParseAsTomlElseAsBareStrings) {
  Config c;
  ASSERT_FALSE(apply_set("engine.backend=epoll", &c).has_value());
  ASSERT_FALSE(apply_set("io_uring.mode = \"readiness\"", &c).has_value());
  ASSERT_FALSE(apply_set("engine.cpus=[0]", &c).has_value());
  ASSERT_FALSE(apply_set("engine.pin=false", &c).has_value());
  ASSERT_FALSE(apply_set("socket.sndbuf=65536", &c).has_value());
  const char* const pools =
      R"(proxy.pool=[{name = "p", upstreams = ["127.0.0.1:9"], eject_ms = 1}])";
  ASSERT_FALSE(apply_set(pools, &c).has_value());
  EXPECT_EQ(c.engine.backend, BackendChoice::kEpoll);
  EXPECT_EQ(c.io_uring.mode, UringMode::kReadiness);
  EXPECT_EQ(c.engine.cpus, std::vector<int>{0});
  EXPECT_FALSE(c.engine.pin);
  EXPECT_EQ(c.socket.sndbuf, 65536);
  ASSERT_EQ(c.proxy.pools.size(), 1u);
  EXPECT_EQ(c.proxy.pools[0].eject_ms, 1);
  ASSERT_FALSE(apply_set("profile=throughput", &c).has_value());
  Config thr;
  ASSERT_FALSE(load_profile("throughput", &thr).has_value());
  EXPECT_EQ(c, thr);
}

TEST(TuningPrint, RoundTripWithListenersAndPools) {
  Config c;
  ASSERT_FALSE(load_profile("throughput", &c).has_value());
  ASSERT_FALSE(load_text(kProxyDoc, &c).has_value());
  c.engine.cpus = {0};
  c.engine.backend = BackendChoice::kEpoll;
  c.io_uring.mode = UringMode::kReadiness;
  c.proxy.pools[0].name = "odd \"name\"\\ with\ttab";
  c.proxy.listeners[0].pool = c.proxy.pools[0].name;
  c.proxy.listeners[1].pool = c.proxy.pools[0].name;
  const std::string text = print_config(c);
  Config back;
  const auto e = load_text(text, &back, "printed.toml");
  ASSERT_FALSE(e.has_value()) << e->to_string() << "\n" << text;
  EXPECT_EQ(back, c) << text;
  EXPECT_EQ(print_config(back), text);
  EXPECT_NE(text.find("[[proxy.listener]]"), std::string::npos);
  EXPECT_NE(text.find("upstreams = [\"10.0.0.1:80\", \"[fe80::1]:8080\"]"), std::string::npos);
}

TEST(TuningPrint, EveryKeyIsPrinted) {
  const std::string text = print_config(Config{});
  for (const char* key :
       {"backend", "busy_poll_us", "inbox_capacity", "sqpoll_idle_ms", "register_ring_fd",
        "zc_threshold", "sndbuf", "drain_ms", "max_header_bytes", "splice"}) {
    EXPECT_NE(text.find(std::string("\n") + key + " = "), std::string::npos) << key;
  }
}

TEST(TuningMapping, EngineOptions) {
  Config c;
  ASSERT_FALSE(load_text("[engine]\nshards = 3\ncpus = [0, 0, 0]\npin = false\n"
                         "inbox_capacity = 128\ntick_us = 250\nfairness_batch = 7\n"
                         "busy_poll_us = 20\nbackend = \"epoll\"\n",
                         &c)
                   .has_value());
  const EngineOptions o = engine_options(c);
  EXPECT_EQ(o.shards, 3);
  EXPECT_EQ(o.cpus, (std::vector<int>{0, 0, 0}));
  EXPECT_FALSE(o.pin);
  EXPECT_EQ(o.inbox_capacity, 128u);
  EXPECT_EQ(o.sched.tick_ns, 250'000);
  EXPECT_EQ(o.sched.fairness_batch, 7);
  EXPECT_EQ(o.sched.busy_poll_ns, 20'000);
  EXPECT_EQ(backend_choice(c), BackendChoice::kEpoll);
  EXPECT_EQ(backend_choice(Config{}), BackendChoice::kAuto);
}

TEST(TuningBusyPoll, AutoIsTheDefaultAndLoadsPrintsAndMaps) {
  // balanced (the default) says "auto"; a number still works; both print back as given.
  Config c;
  EXPECT_EQ(c.engine.busy_poll_us, kBusyPollAutoUs);
  EXPECT_EQ(engine_options(c).sched.busy_poll_ns, kBusyPollAuto);
  EXPECT_NE(print_config(c).find("\nbusy_poll_us = \"auto\"\n"), std::string::npos);
  ASSERT_FALSE(load_text("[engine]\nbusy_poll_us = 30\n", &c).has_value());
  EXPECT_EQ(engine_options(c).sched.busy_poll_ns, 30'000);
  EXPECT_NE(print_config(c).find("\nbusy_poll_us = 30\n"), std::string::npos);
  ASSERT_FALSE(load_text("[engine]\nbusy_poll_us = \"auto\"\n", &c).has_value());
  EXPECT_EQ(c.engine.busy_poll_us, kBusyPollAutoUs);
  ASSERT_FALSE(apply_set("engine.busy_poll_us=0", &c).has_value());
  EXPECT_EQ(engine_options(c).sched.busy_poll_ns, 0);
  ASSERT_FALSE(apply_set("engine.busy_poll_us=auto", &c).has_value());
  EXPECT_EQ(engine_options(c).sched.busy_poll_ns, kBusyPollAuto);
}

TEST(TuningBusyPoll, BadValuesNameFileLineAndKey) {
  const std::string want = "must be \"auto\" or an integer in 0..100000, got ";
  Config c;
  expect_error(load_text("[engine]\nshards = 1\nbusy_poll_us = \"fast\"\n", &c), "x.toml", 3,
               "engine.busy_poll_us", want + "\"fast\"");
  expect_error(load_text("[engine]\nbusy_poll_us = -1\n", &c), "x.toml", 2, "engine.busy_poll_us",
               want + "-1");
  expect_error(load_text("[engine]\nbusy_poll_us = 100001\n", &c), "x.toml", 2,
               "engine.busy_poll_us", want + "100001");
  expect_error(load_text("[engine]\nbusy_poll_us = 1.5\n", &c), "x.toml", 2, "engine.busy_poll_us",
               want);
  expect_error(apply_set("engine.busy_poll_us=Auto", &c), "--set", 0, "engine.busy_poll_us",
               want + "\"Auto\"");
  EXPECT_EQ(c.engine.busy_poll_us, kBusyPollAutoUs);  // failed layers changed nothing
}

TEST(TuningMapping, UringAndCompletionAndListenOptions) {
  Config c;
  ASSERT_FALSE(load_text(R"([io_uring]
entries = 64
sqpoll = true
sqpoll_idle_ms = 20
single_issuer = false
defer_taskrun = false
coop_taskrun = false
msg_ring_wake = false
register_ring_fd = false
multishot_accept = false
multishot_recv = false
buf_count = 8
buf_size = 1024
send_zc = false
zc_threshold = 4096
[socket]
reuseport = false
backlog = 99
)",
                         &c)
                   .has_value());
  const UringOptions u = uring_options(c);
  EXPECT_EQ(u.entries, 64u);
  EXPECT_TRUE(u.sqpoll);
  EXPECT_EQ(u.sqpoll_idle_ms, 20u);
  EXPECT_FALSE(u.single_issuer || u.defer_taskrun || u.coop_taskrun || u.msg_ring_wake ||
               u.register_ring_fd);
  const UringCompletionOptions k = completion_options(c);
  EXPECT_FALSE(k.multishot_accept || k.multishot_recv || k.send_zc);
  EXPECT_EQ(k.buf_count, 8u);
  EXPECT_EQ(k.buf_size, 1024u);
  EXPECT_EQ(k.zc_threshold, 4096u);
  const ListenOptions l = listen_options(c);
  EXPECT_FALSE(l.reuseport);
  EXPECT_EQ(l.backlog, 99);

  // The defaults map onto the engine's own defaults.
  const UringOptions du = uring_options(Config{});
  const UringOptions eu;
  EXPECT_EQ(du.entries, eu.entries);
  EXPECT_EQ(du.sqpoll_idle_ms, eu.sqpoll_idle_ms);
  const UringCompletionOptions dk = completion_options(Config{});
  const UringCompletionOptions ek;
  EXPECT_EQ(dk.buf_count, ek.buf_count);
  EXPECT_EQ(dk.buf_size, ek.buf_size);
  EXPECT_EQ(dk.zc_threshold, ek.zc_threshold);
  EXPECT_EQ(engine_options(Config{}).sched.tick_ns, SchedulerOptions{}.tick_ns);
  EXPECT_EQ(engine_options(Config{}).sched.fairness_batch, SchedulerOptions{}.fairness_batch);
}

// The CLI glue, parsed in-process: nothing external runs.
int run_cli(std::vector<const char*> args, Config* out, bool with_config_file = false) {
  CLI::App app("test");
  CliConfig cli;
  add_config_options(app, &cli, with_config_file);
  args.insert(args.begin(), "prog");
  app.parse(static_cast<int>(args.size()), args.data());
  return resolve_config("prog", cli, out);
}

TEST(TuningCli, DefaultsToBalanced) {
  Config c;
  c.engine.shards = 9;
  EXPECT_EQ(run_cli({}, &c), -1);
  EXPECT_EQ(c, Config{});
}

TEST(TuningCli, PrintConfigPrintsTheEffectiveConfig) {
  Config c;
  testing::internal::CaptureStdout();
  const int rc =
      run_cli({"--profile", "latency", "--set", "engine.shards=2", "--print-config"}, &c);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  Config printed, want;
  ASSERT_FALSE(load_text(out, &printed).has_value()) << out;
  ASSERT_FALSE(load_profile("latency", &want).has_value());
  want.engine.shards = 2;
  EXPECT_EQ(printed, want);
}

TEST(TuningCli, ErrorsGoToStderrWithExitCode2) {
  Config c;
  testing::internal::CaptureStderr();
  const int rc = run_cli({"--set", "engine.shards=5000"}, &c);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 2);
  const std::string want =
      "prog: config error: --set: engine.shards: must be in 0..1024, got 5000\n";
  EXPECT_EQ(err, want);
}

TEST(TuningCli, ConfigFileOnlyWhenTheProgramAsks) {
  TempDir dir;
  const std::string path = dir.write("c.toml", "[timeouts]\nidle_ms = 0\n");
  Config c;
  EXPECT_EQ(run_cli({"--config", path.c_str()}, &c, true), -1);
  EXPECT_EQ(c.timeouts.idle_ms, 0);
  EXPECT_THROW(run_cli({"--config", path.c_str()}, &c, false), CLI::ParseError);
}

}  // namespace
}  // namespace ringpoll::tuning
