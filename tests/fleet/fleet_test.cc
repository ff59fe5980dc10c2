// A fleet of proxies (issue 21), the parts one process can show exactly: the Maglev table
// (key movement on removing an upstream, agreement between two pools), smooth weighted
// round robin, weighted least connections, slow start, ejection backoff and its cap,
// membership changes per shard, the DNS TTL walker, and the config keys and their errors.
// The fleet itself (dnsmasq, two proxies, four upstreams in namespaces) is
// fleet_netns_test.cc.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "apps/proxy/from_config.h"
#include "apps/proxy/hash_key.h"
#include "apps/proxy/pool.h"
#include "apps/proxy/resolver.h"
#include "apps/proxy/settings.h"
#include "support/spawn.h"
#include "support/test_env.h"
#include "tuning/config.h"

namespace ringpoll::proxy {
namespace {

SocketAddress addr(const std::string& text) {
  SocketAddress a;
  EXPECT_TRUE(parse_address(text, &a).ok()) << text;
  return a;
}

// Members 10.0.0.<i>:80 for i in ids, weight 1.
std::vector<Member> set_of(const std::vector<int>& ids, const std::vector<uint32_t>& w = {}) {
  std::vector<Member> v;
  for (size_t k = 0; k < ids.size(); ++k)
    v.push_back({addr("10.0.0." + std::to_string(ids[k]) + ":80"), w.empty() ? 1 : w[k]});
  return v;
}

PoolSettings settings(Balance b) {
  PoolSettings s;
  s.name = std::string("p");  // a moved string: g++ 12 -Wrestrict misfires on = "p" here
  s.balance = b;
  return s;
}

// The client key of 10.<a>.<b>.<c>.
uint64_t key_of(int i) {
  return client_key(addr("10." + std::to_string(1 + i / 65536) + "." +
                         std::to_string((i / 256) % 256) + "." + std::to_string(i % 256) + ":1"));
}

// The label of the upstream `pool` gives key i (released at once).
std::string pick_for(Pool& pool, int i, int64_t now = 0) {
  Upstream* u = pool.acquire(now, {}, PickHint{-1, key_of(i)});
  EXPECT_NE(u, nullptr);
  if (!u) return "";
  pool.release(u);
  return u->label();
}

TEST(FleetMaglev, TableSizeIsAPrimeOfAtLeastAHundredPerUpstream) {
  for (int n : {1, 3, 4, 7, 20}) {
    Pool p(settings(Balance::kMaglev));
    std::vector<int> ids;
    for (int i = 1; i <= n; ++i) ids.push_back(i);
    auto m = p.publish(set_of(ids), 0);
    const size_t size = m->maglev.size();
    EXPECT_GE(size, static_cast<size_t>(100 * n));
    bool prime = size > 1;
    for (size_t d = 2; d * d <= size && prime; ++d) prime = size % d != 0;
    EXPECT_TRUE(prime) << size;
    // Every upstream has a fair share of the slots (equal weights: within 10%).
    std::vector<size_t> count(static_cast<size_t>(n));
    for (uint32_t e : m->maglev) ++count.at(e);
    for (size_t c : count)
      EXPECT_NEAR(static_cast<double>(c), static_cast<double>(size) / n, 0.1 * size / n);
  }
}

TEST(FleetMaglev, RemovingOneOfNMovesAtMostItsShareAndFivePercent) {
  constexpr int kKeys = 20000;
  for (int n : {3, 4, 5, 8, 10}) {
    std::vector<int> all;
    for (int i = 1; i <= n; ++i) all.push_back(i);
    for (int gone = 1; gone <= n; gone += std::max(1, n / 3)) {
      Pool before(settings(Balance::kMaglev)), after(settings(Balance::kMaglev));
      before.publish(set_of(all), 0);
      std::vector<int> rest;
      for (int i : all)
        if (i != gone) rest.push_back(i);
      after.publish(set_of(rest), 0);
      int moved = 0;
      for (int k = 0; k < kKeys; ++k) moved += pick_for(before, k) != pick_for(after, k);
      const double share = static_cast<double>(moved) / kKeys;
      EXPECT_LE(share, 1.0 / n + 0.05) << "n " << n << ", removed 10.0.0." << gone;
      EXPECT_GE(share, 1.0 / n - 0.05) << "the removed upstream's keys must move";
    }
  }
}

TEST(FleetMaglev, TwoPoolsWithTheSameSetAgreeOnEveryKeyWhateverTheOrder) {
  Pool a(settings(Balance::kMaglev), 2), b(settings(Balance::kMaglev), 3);
  a.publish(set_of({1, 2, 3, 4}), 0);
  b.publish(set_of({4, 2, 3, 1}), 0);
  std::map<std::string, int> spread;
  for (int k = 0; k < 5000; ++k) {
    const std::string x = pick_for(a, k);
    ASSERT_EQ(x, pick_for(b, k)) << "key " << k;
    ++spread[x];
  }
  EXPECT_EQ(spread.size(), 4u);
}

TEST(FleetMaglev, AnEjectedUpstreamsKeysGoElsewhereAndTheOthersStay) {
  PoolSettings s = settings(Balance::kMaglev);
  s.fail_threshold = 1;
  s.eject_ns = 1000;
  Pool p(s);
  p.publish(set_of({1, 2, 3, 4}), 0);
  std::vector<std::string> first;
  for (int k = 0; k < 2000; ++k) first.push_back(pick_for(p, k, 10));
  Upstream* bad = nullptr;
  for (Upstream* u : p.members()->ups)
    if (u->label() == "10.0.0.2:80") bad = u;
  ASSERT_NE(bad, nullptr);
  p.connect_failed(bad, 10);
  ASSERT_FALSE(bad->healthy(10));
  for (int k = 0; k < 2000; ++k) {
    const std::string now = pick_for(p, k, 20);
    EXPECT_NE(now, "10.0.0.2:80");
    if (first[static_cast<size_t>(k)] != "10.0.0.2:80") {
      EXPECT_EQ(now, first[static_cast<size_t>(k)]);
    }
  }
}

TEST(FleetBalance, SmoothWeightedRoundRobinInterleaves) {
  Pool p(settings(Balance::kRoundRobin));
  p.publish(set_of({1, 2, 3}, {5, 1, 1}), 0);
  std::string seq;
  for (int i = 0; i < 14; ++i) {
    Upstream* u = p.acquire(0);
    seq += static_cast<char>('a' + (u->label()[7] - '1'));
    p.release(u);
  }
  // nginx's smooth WRR for {a:5, b:1, c:1}: never b and c together, a at most twice in
  // a row, the same cycle again.
  EXPECT_EQ(seq, "aabacaaaabacaa");
}

TEST(FleetBalance, WeightedLeastConnectionsCountsPerUnitOfWeight) {
  Pool p(settings(Balance::kLeastConn));
  p.publish(set_of({1, 2}, {3, 1}), 0);
  std::map<std::string, int> held;
  for (int i = 0; i < 8; ++i) ++held[p.acquire(0)->label()];  // kept open
  EXPECT_EQ(held["10.0.0.1:80"], 6);
  EXPECT_EQ(held["10.0.0.2:80"], 2);
}

TEST(FleetBalance, SlowStartRampsANewUpstreamsWeight) {
  PoolSettings s = settings(Balance::kRoundRobin);
  constexpr int64_t kRamp = 10'000'000'000;
  s.slow_start_ns = kRamp;
  Pool p(s);
  p.publish(set_of({1, 2}), 0);  // the first set: no ramp
  constexpr int64_t kT0 = 100'000'000'000;
  p.publish(set_of({1, 2, 3}), kT0);  // 10.0.0.3 joins at kT0
  auto share_of_new = [&](int64_t now) {
    int n = 0;
    for (int i = 0; i < 2010; ++i) {
      Upstream* u = p.acquire(now);
      n += u->label() == "10.0.0.3:80";
      p.release(u);
    }
    return n / 2010.0;
  };
  EXPECT_LT(share_of_new(kT0), 0.01) << "1% of its weight at first";
  EXPECT_NEAR(share_of_new(kT0 + kRamp / 2), 0.5 / 2.5, 0.01) << "half way: half its weight";
  EXPECT_NEAR(share_of_new(kT0 + kRamp), 1.0 / 3, 0.01) << "full weight after slow_start";
  // The old ones never ramp.
  p.publish(set_of({1, 2, 3}), kT0 + kRamp);
  EXPECT_NEAR(share_of_new(kT0 + kRamp + 1), 1.0 / 3, 0.01) << "a republished set changes nothing";
}

TEST(FleetOutliers, EjectionTimeDoublesPerRepeatUpToTheCapAndResetsAfterAQuietSpell) {
  PoolSettings s = settings(Balance::kRoundRobin);
  s.fail_threshold = 2;
  s.eject_ns = 1000;
  s.max_eject_ns = 5000;
  Pool p(s);
  p.publish(set_of({1, 2, 3, 4}), 0);
  Upstream* u = p.members()->ups[0];
  auto eject_at = [&](int64_t now) {
    p.connect_failed(u, now);
    p.connect_failed(u, now);
    EXPECT_FALSE(u->healthy(now));
    return u->ejected_until() - now;
  };
  EXPECT_EQ(eject_at(0), 1000);
  EXPECT_EQ(eject_at(1500), 2000) << "again soon after the first ended: doubled";
  EXPECT_EQ(eject_at(4000), 4000);
  EXPECT_EQ(eject_at(9000), 5000) << "capped at max_eject_ns";
  EXPECT_EQ(eject_at(15000), 5000);
  EXPECT_EQ(eject_at(20000 + 5001 + 1), 1000) << "healthy for over max_eject_ns: starts over";
  EXPECT_EQ(u->ejections(), 6u);
}

// A round-robin pool of 10.0.0.1 and .2 that ejects after 3 failures, for 1 µs.
std::unique_ptr<Pool> pool_of_two() {
  PoolSettings s = settings(Balance::kRoundRobin);
  s.fail_threshold = 3;
  s.eject_ns = 1000;
  auto p = std::make_unique<Pool>(s);
  p->publish(set_of({1, 2}), 0);
  return p;
}

TEST(FleetOutliers, ResetsCountAsFailuresAndASuccessfulConnectStartsTheCountAgain) {
  auto pool = pool_of_two();
  Pool& p = *pool;
  Upstream* u = p.members()->ups[1];
  p.stream_reset(u, 5);
  p.stream_reset(u, 5);
  p.connect_succeeded(u);
  p.stream_reset(u, 5);
  p.connect_failed(u, 5);
  EXPECT_TRUE(u->healthy(5)) << "2 in a row since the success";
  p.stream_reset(u, 5);
  EXPECT_FALSE(u->healthy(5)) << "resets and failed connects, 3 in a row";
  EXPECT_EQ(u->ejections(), 1u);
}

TEST(FleetOutliers, ConsecutiveFiveHundredsEjectEvenWhenEveryConnectSucceeds) {
  auto pool = pool_of_two();
  Pool& p = *pool;
  Upstream* u = p.members()->ups[0];
  for (int i = 0; i < 2; ++i) {
    p.connect_succeeded(u);
    p.answered(u, false, 5);
  }
  p.answered(u, true, 5);  // a good answer ends the run
  for (int i = 0; i < 2; ++i) {
    p.connect_succeeded(u);
    p.answered(u, false, 5);
  }
  EXPECT_TRUE(u->healthy(5));
  p.connect_succeeded(u);
  p.answered(u, false, 5);
  EXPECT_FALSE(u->healthy(5)) << "three 5xx in a row";
}

TEST(FleetOutliers, NoMoreThanMaxEjectionPercentOfThePoolIsOut) {
  PoolSettings s = settings(Balance::kRoundRobin);
  s.fail_threshold = 1;
  s.eject_ns = 1'000'000;
  s.max_ejection_percent = 50;
  Pool p(s, 2);
  p.publish(set_of({1, 2, 3, 4}), 0);
  for (Upstream* u : p.members()->ups) p.connect_failed(u, 10);
  EXPECT_EQ(p.healthy_count(10), 2u);
  EXPECT_EQ(p.ejections_refused(), 2u);
  // The healthy half takes the traffic.
  for (int i = 0; i < 10; ++i) {
    Upstream* u = p.acquire(20);
    EXPECT_TRUE(u->healthy(20));
    p.release(u);
  }
  // Once back, each returns (counted) and another may go.
  Upstream* first = p.members()->ups[0];
  const int64_t later = first->ejected_until() + 1;
  for (int i = 0; i < 4; ++i) p.release(p.acquire(later));
  EXPECT_EQ(first->returns(), 1u);
  EXPECT_EQ(p.healthy_count(later), 4u);
}

TEST(FleetMembership, ShardsSwitchOnInstallAndRemovedUpstreamsStayValidForTheirConnections) {
  Pool p(settings(Balance::kRoundRobin), 2);
  auto m1 = p.publish(set_of({1, 2}), 0);
  p.install(0, m1);
  p.install(1, m1);
  Upstream* held = p.acquire(0, {}, PickHint{0, 0});  // a connection on shard 0
  ASSERT_NE(held, nullptr);
  const std::string held_label = held->label();
  // A new set without it: shard 1 has it installed, shard 0 not yet.
  std::vector<int> rest =
      held_label == "10.0.0.1:80" ? std::vector<int>{2, 3} : std::vector<int>{1, 3};
  auto m2 = p.publish(set_of(rest), 5);
  p.install(1, m2);
  for (int i = 0; i < 6; ++i) {
    Upstream* u = p.acquire(10, {}, PickHint{1, 0});
    EXPECT_NE(u->label(), held_label) << "no new connection to a removed upstream";
    p.release(u);
  }
  bool old_seen = false;
  for (int i = 0; i < 4; ++i) {
    Upstream* u = p.acquire(10, {}, PickHint{0, 0});
    old_seen = old_seen || u->label() == held_label;
    p.release(u);
  }
  EXPECT_TRUE(old_seen) << "shard 0 keeps its set until its install runs";
  p.install(0, m2);
  EXPECT_EQ(held->active(), 1) << "the established connection's upstream is intact";
  p.release(held);
  // Back again: the same object, its counts kept.
  p.publish(set_of({1, 2, 3}), 10);
  bool same = false;
  for (Upstream* u : p.members()->ups) same = same || u == held;
  EXPECT_TRUE(same);
  // An empty set: nothing to pick (the no-upstream path).
  auto empty = p.publish({}, 20);
  p.install(0, empty);
  EXPECT_EQ(p.acquire(30, {}, PickHint{0, 0}), nullptr);
  EXPECT_EQ(p.acquire(30), nullptr);
}

// A DNS response: one question, answers with the given TTLs (type A, 4 bytes of data).
std::vector<unsigned char> response_with_ttls(const std::vector<uint32_t>& ttls) {
  std::vector<unsigned char> m = {0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0};
  m[7] = static_cast<unsigned char>(ttls.size());
  const unsigned char qname[] = {3, 'a', 'p', 'p', 4, 't', 'e', 's', 't', 0};
  m.insert(m.end(), qname, qname + sizeof qname);
  m.insert(m.end(), {0, 1, 0, 1});
  for (uint32_t t : ttls) {
    m.insert(m.end(), {0xc0, 12, 0, 1, 0, 1});  // a pointer to the question's name
    m.insert(m.end(), {static_cast<unsigned char>(t >> 24), static_cast<unsigned char>(t >> 16),
                       static_cast<unsigned char>(t >> 8), static_cast<unsigned char>(t)});
    m.insert(m.end(), {0, 4, 10, 0, 0, 1});
  }
  return m;
}

TEST(FleetResolver, TheLowestAnswerTtlIsTakenAndBrokenMessagesAreRefused) {
  uint32_t ttl = 77;
  auto m = response_with_ttls({30, 5, 600});
  ASSERT_TRUE(dns_answer_min_ttl(m.data(), static_cast<int>(m.size()), &ttl));
  EXPECT_EQ(ttl, 5u);
  ttl = 77;
  auto none = response_with_ttls({});
  ASSERT_TRUE(dns_answer_min_ttl(none.data(), static_cast<int>(none.size()), &ttl));
  EXPECT_EQ(ttl, 77u) << "no answers: untouched";
  EXPECT_FALSE(dns_answer_min_ttl(m.data(), static_cast<int>(m.size()) - 3, &ttl))
      << "a truncated record";
}

// A request head with these field lines.
std::string head_with(const std::vector<std::string>& fields) {
  std::string h = "GET /a HTTP/1.1\r\nHost: app\r\n";
  for (const std::string& f : fields) h += f + "\r\n";
  return h + "\r\n";
}

// The value hash_key_value finds, or "(none)".
std::string value_of(const std::vector<std::string>& fields, HashSource src, const char* name) {
  std::string v;
  return hash_key_value(head_with(fields), HashKey{src, name}, &v) ? v : "(none)";
}

TEST(FleetHashKey, HeaderNamesMatchWithoutCaseAndRepeatedFieldsAreOneList) {
  const auto h = HashSource::kHeader;
  EXPECT_EQ(value_of({"X-User: alice"}, h, "X-User"), "alice");
  EXPECT_EQ(value_of({"x-user: alice"}, h, "X-User"), "alice");
  EXPECT_EQ(value_of({"X-USER:\t alice \t"}, h, "x-user"), "alice") << "blanks around the value";
  EXPECT_EQ(value_of({"X-Users: bob", "X-User: alice"}, h, "X-User"), "alice")
      << "a longer name is another field";
  EXPECT_EQ(value_of({"X-User: a", "Accept: */*", "x-user: b"}, h, "X-User"), "a, b");
  EXPECT_EQ(value_of({"Accept: */*"}, h, "X-User"), "(none)");
  EXPECT_EQ(value_of({"X-User:"}, h, "X-User"), "(none)") << "empty is no value";
  EXPECT_EQ(value_of({"X-User:   "}, h, "X-User"), "(none)");
  EXPECT_EQ(value_of({"X-User: a"}, HashSource::kClient, ""), "(none)");
  // The request line is not a field, even when it looks like one.
  std::string v;
  EXPECT_FALSE(hash_key_value("X-User: a HTTP/1.1\r\nHost: h\r\n\r\n", {h, "X-User"}, &v));
}

TEST(FleetHashKey, CookiesAreFoundAmongSeveralQuotedOrNotAndKeepTheirCase) {
  const auto c = HashSource::kCookie;
  EXPECT_EQ(value_of({"Cookie: session=abc"}, c, "session"), "abc");
  EXPECT_EQ(value_of({"Cookie: theme=dark; session=abc; lang=en"}, c, "session"), "abc");
  EXPECT_EQ(value_of({"Cookie: xsession=1; session_id=2; session=3"}, c, "session"), "3")
      << "names that contain or start with NAME are other cookies";
  EXPECT_EQ(value_of({"Cookie: theme=dark;session=abc"}, c, "session"), "abc") << "no blank";
  EXPECT_EQ(value_of({"Cookie: session=\"abc def\""}, c, "session"), "abc def") << "quoted";
  EXPECT_EQ(value_of({"Cookie: session=\"\""}, c, "session"), "(none)") << "quoted empty";
  EXPECT_EQ(value_of({"Cookie: session=a=b"}, c, "session"), "a=b") << "'=' in the value";
  EXPECT_EQ(value_of({"Cookie: Session=abc"}, c, "session"), "(none)") << "names keep case";
  EXPECT_EQ(value_of({"cookie: session=abc"}, c, "session"), "abc") << "the field name has none";
  EXPECT_EQ(value_of({"Cookie: a=1; session=first; session=second"}, c, "session"), "first");
  EXPECT_EQ(value_of({"Cookie: a=1", "Cookie: session=two"}, c, "session"), "two")
      << "a second Cookie field";
  EXPECT_EQ(value_of({"Cookie: a=1; b=2"}, c, "session"), "(none)");
  EXPECT_EQ(value_of({"Cookie: session"}, c, "session"), "(none)") << "no '='";
  EXPECT_EQ(value_of({"Cookie: session="}, c, "session"), "(none)");
  EXPECT_EQ(value_of({"X-Session: abc", "Set-Cookie: session=x"}, c, "session"), "(none)")
      << "only Cookie fields";
}

TEST(FleetHashKey, TheSameValueIsTheSameKeyAndPicksTheSameUpstreamInTwoPools) {
  EXPECT_EQ(text_key("alice"), text_key(std::string("alice")));
  EXPECT_NE(text_key("alice"), text_key("bob"));
  // A value is not an address's key: its own seed.
  const SocketAddress a = addr("10.0.0.1:80");
  const auto* in = reinterpret_cast<const sockaddr_in*>(a.sa());
  EXPECT_NE(text_key(std::string_view(reinterpret_cast<const char*>(&in->sin_addr), 4)),
            client_key(a));
  Pool p1(settings(Balance::kMaglev)), p2(settings(Balance::kMaglev));
  p1.publish(set_of({1, 2, 3, 4}), 0);
  p2.publish(set_of({3, 1, 4, 2}), 0);
  std::map<std::string, int> spread;
  for (int k = 0; k < 2000; ++k) {
    const uint64_t key = text_key("user-" + std::to_string(k));
    Upstream* u1 = p1.acquire(0, {}, PickHint{-1, key});
    Upstream* u2 = p2.acquire(0, {}, PickHint{-1, key});
    ASSERT_TRUE(u1 && u2);
    EXPECT_EQ(u1->label(), u2->label()) << "user-" << k;
    ++spread[u1->label()];
    p1.release(u1);
    p2.release(u2);
  }
  for (const auto& [label, n] : spread) EXPECT_NEAR(n, 500, 100) << label;
}

// The proxy settings of a config document, or the error.
std::string settings_or_error(const std::string& doc, ProxySettings* out) {
  tuning::Config c;
  if (auto e = tuning::apply_toml(doc, "fleet.toml", &c)) return e->to_string();
  std::string why;
  if (!settings_from_config(c, out, &why)) return why;
  return "";
}

const char* const kListener = R"([[proxy.listener]]
name = "web"
listen = "127.0.0.1:0"
pool = "app"
)";

TEST(FleetConfig, NamesSrvAndTheNewKeysReachThePoolSettings) {
  ProxySettings s;
  const std::string doc = std::string(R"([proxy]
resolvers = ["10.0.0.53:53", "[fd00::53]:5353"]

)") + kListener + R"(
[[proxy.pool]]
name = "app"
balance = "maglev"
upstreams = ["10.0.0.1:80", "app.fleet.test:8080", "_http._tcp.fleet.test"]
resolve_min_ttl_s = 2
resolve_max_ttl_s = 30
slow_start_ms = 5000
max_eject_ms = 60000
max_ejection_percent = 40
)";
  ASSERT_EQ(settings_or_error(doc, &s), "");
  ASSERT_EQ(s.pools.size(), 1u);
  const PoolSettings& p = s.pools[0];
  EXPECT_EQ(p.balance, Balance::kMaglev);
  ASSERT_EQ(p.upstreams.size(), 1u);
  ASSERT_EQ(p.names.size(), 2u);
  EXPECT_EQ(p.names[0], (UpstreamName{"app.fleet.test", 8080}));
  EXPECT_TRUE(p.names[1].srv());
  EXPECT_EQ(p.names[1].host, "_http._tcp.fleet.test");
  EXPECT_EQ(p.resolve_min_ttl_ns, 2'000'000'000);
  EXPECT_EQ(p.resolve_max_ttl_ns, 30'000'000'000);
  EXPECT_EQ(p.slow_start_ns, 5'000'000'000);
  EXPECT_EQ(p.max_eject_ns, 60'000'000'000);
  EXPECT_EQ(p.max_ejection_percent, 40);
  EXPECT_EQ(s.resolvers, (std::vector<std::string>{"10.0.0.53:53", "[fd00::53]:5353"}));
}

TEST(FleetConfig, BadNamesAndKeysAreErrorsNamingFileLineAndKey) {
  struct Case {
    std::string pool_lines;
    std::string want;  // in the message
  };
  const Case cases[] = {
      {"upstreams = [\"app.fleet.test\"]",
       "fleet.toml:8: proxy.pool[0].upstreams[0]: not an address or a name: missing ':port'"},
      {"upstreams = [\"app..test:80\"]", "fleet.toml:8: proxy.pool[0].upstreams[0]:"},
      {"upstreams = [\"app.test:0\"]", "is not 1..65535"},
      {"upstreams = [\"10.0.0.300:80\"]", "proxy.pool[0].upstreams[0]: not an address"},
      {"upstreams = [\"_http._tcp.fleet.test:80\"]", "takes no port"},
      {"upstreams = [\"_http.fleet\"]", "an SRV name is \"_service._proto.zone\""},
      {"upstreams = [\"a:1\"]\nresolve_min_ttl_s = 10\nresolve_max_ttl_s = 5",
       "fleet.toml:9: proxy.pool[0].resolve_min_ttl_s: must not be above resolve_max_ttl_s (5)"},
      {"upstreams = [\"a:1\"]\nresolve_max_ttl_s = 0",
       "fleet.toml:9: proxy.pool[0].resolve_max_ttl_s"},
      {"upstreams = [\"a:1\"]\neject_ms = 9000\nmax_eject_ms = 1000",
       "fleet.toml:9: proxy.pool[0].eject_ms: must not be above max_eject_ms (1000)"},
      {"upstreams = [\"a:1\"]\nmax_ejection_percent = 101",
       "fleet.toml:9: proxy.pool[0].max_ejection_percent: must be in 0..100, got 101"},
      {"upstreams = [\"a:1\"]\nbalance = \"ring\"", "\"maglev\""},
  };
  for (const Case& c : cases) {
    ProxySettings s;
    const std::string doc =
        std::string(kListener) + "\n[[proxy.pool]]\nname = \"app\"\n" + c.pool_lines + "\n";
    const std::string err = settings_or_error(doc, &s);
    EXPECT_NE(err.find(c.want), std::string::npos) << c.pool_lines << "\n -> " << err;
  }
  ProxySettings s;
  const std::string bad_resolver = "[proxy]\nresolvers = [\"dns.example\"]\n" +
                                   std::string(kListener) +
                                   "\n[[proxy.pool]]\nname = \"app\"\nupstreams = [\"a:1\"]\n";
  const std::string err = settings_or_error(bad_resolver, &s);
  EXPECT_NE(err.find("fleet.toml:2: proxy.resolvers[0]: not an address"), std::string::npos) << err;
}

const char* const kHttpListener = R"([[proxy.listener]]
name = "web"
listen = "127.0.0.1:0"
pool = "app"
protocol = "http"
)";

TEST(FleetConfig, HashKeyReachesThePoolSettingsAndPrintsBack) {
  for (const auto& [text, src, name] :
       {std::tuple{"header:X-User", HashSource::kHeader, "X-User"},
        std::tuple{"cookie:session", HashSource::kCookie, "session"},
        std::tuple{"client", HashSource::kClient, ""}}) {
    const std::string doc = std::string(kHttpListener) +
                            "\n[[proxy.pool]]\nname = \"app\"\nbalance = \"maglev\"\n"
                            "upstreams = [\"10.0.0.1:80\"]\nhash_key = \"" +
                            text + "\"\n";
    ProxySettings s;
    ASSERT_EQ(settings_or_error(doc, &s), "") << text;
    EXPECT_EQ(s.pools.at(0).hash, (HashKey{src, name})) << text;
    tuning::Config c;
    ASSERT_FALSE(tuning::apply_toml(doc, "fleet.toml", &c).has_value());
    EXPECT_NE(tuning::print_config(c).find(std::string("hash_key = \"") + text + "\""),
              std::string::npos)
        << text;
  }
  ProxySettings s;
  ASSERT_EQ(settings_or_error(std::string(kHttpListener) +
                                  "\n[[proxy.pool]]\nname = \"app\"\nupstreams = [\"a:1\"]\n",
                              &s),
            "");
  EXPECT_EQ(s.pools.at(0).hash, HashKey{}) << "the default: the client's address";
}

TEST(FleetConfig, BadHashKeysAreErrorsNamingFileLineAndKey) {
  struct Case {
    const char* listener;
    const char* balance;   // the pool's
    const char* hash_key;  // its value, as written in the file
    std::string want;      // in the message
  };
  const Case cases[] = {
      {kHttpListener, "maglev", "\"query:user\"",
       "fleet.toml:11: proxy.pool[0].hash_key: must be \"client\", \"header:NAME\" or "
       "\"cookie:NAME\", got \"query:user\""},
      {kHttpListener, "maglev", "\"X-User\"",
       "fleet.toml:11: proxy.pool[0].hash_key: must be \"client\""},
      {kHttpListener, "maglev", "\"Header:X-User\"", "proxy.pool[0].hash_key: must be"},
      {kHttpListener, "maglev", "\"header:\"",
       "fleet.toml:11: proxy.pool[0].hash_key: \"header:\" names no header"},
      {kHttpListener, "maglev", "\"cookie:\"",
       "fleet.toml:11: proxy.pool[0].hash_key: \"cookie:\" names no cookie"},
      {kHttpListener, "maglev", "\"header:X User\"",
       "fleet.toml:11: proxy.pool[0].hash_key: the header name \"X User\" is not an HTTP token"},
      {kHttpListener, "maglev", "\"cookie:a;b\"", "the cookie name \"a;b\" is not an HTTP token"},
      {kHttpListener, "maglev", "7",
       "fleet.toml:11: proxy.pool[0].hash_key: must be a string, got the integer 7"},
      {kHttpListener, "round_robin", "\"header:X-User\"",
       "fleet.toml:11: proxy.pool[0].hash_key: \"header:X-User\" is a Maglev key: needs balance "
       "= \"maglev\" (this pool's is \"round_robin\")"},
      {kListener, "maglev", "\"cookie:session\"",
       "fleet.toml:10: proxy.pool[0].hash_key: \"cookie:session\" needs the HTTP mode, but "
       "listener \"web\" (protocol = \"tcp\") uses this pool"},
  };
  for (const Case& c : cases) {
    ProxySettings s;
    const std::string doc = std::string(c.listener) +
                            "\n[[proxy.pool]]\nname = \"app\"\nupstreams = [\"a:1\"]\n"
                            "balance = \"" +
                            c.balance + "\"\nhash_key = " + c.hash_key + "\n";
    const std::string err = settings_or_error(doc, &s);
    EXPECT_NE(err.find(c.want), std::string::npos) << c.hash_key << "\n -> " << err;
  }
  const char* const maglev = "upstreams = [\"a:1\"]\nbalance = \"maglev\"\n";
  // A TCP listener that reaches the pool through sni_routes, and a UDP one.
  const std::string pools = std::string("\n[[proxy.pool]]\nname = \"app\"\n") + maglev +
                            "\n[[proxy.pool]]\nname = \"keyed\"\n" + maglev +
                            "hash_key = \"header:X-User\"\n";
  ProxySettings s;
  std::string err = settings_or_error(
      std::string(kListener) + "sni_routes = [\"*.example=keyed\"]\n" + pools, &s);
  EXPECT_NE(err.find("fleet.toml:16: proxy.pool[1].hash_key: \"header:X-User\" needs the HTTP "
                     "mode, but listener \"web\" (protocol = \"tcp\")"),
            std::string::npos)
      << err;
  err = settings_or_error(
      "[[proxy.listener]]\nname = \"dns\"\nlisten = \"127.0.0.1:0\"\npool = \"keyed\"\n"
      "protocol = \"udp\"\n" +
          pools,
      &s);
  EXPECT_NE(err.find("fleet.toml:16: proxy.pool[1].hash_key: \"header:X-User\" needs the HTTP "
                     "mode, but listener \"dns\" (protocol = \"udp\")"),
            std::string::npos)
      << err;
}

// ringpoll-proxy itself: a bad hash_key stops it with exit 2 and the file, line and key.
TEST(FleetConfig, TheProxyExitsTwoOnABadHashKey) {
  char tmpl[] = "/tmp/ringpoll-hashkey-XXXXXX.toml";
  const int fd = mkstemps(tmpl, 5);
  ASSERT_GE(fd, 0);
  const std::string doc = std::string(kListener) +
                          "\n[[proxy.pool]]\nname = \"app\"\nbalance = \"maglev\"\n"
                          "upstreams = [\"127.0.0.1:9\"]\nhash_key = \"header:X-User\"\n";
  ASSERT_EQ(::write(fd, doc.data(), doc.size()), static_cast<ssize_t>(doc.size()));
  ::close(fd);
  test::Spawned p = test::spawn_piped(RINGPOLL_PROXY_BIN, {"--config", tmpl});
  int st = 0;
  const bool exited = p.pid > 0 && test::wait_child(p.pid, &st, 20);
  std::string err;
  char buf[4096];
  for (ssize_t n; p.err >= 0 && (n = ::read(p.err, buf, sizeof buf)) > 0;)
    err.append(buf, static_cast<size_t>(n));
  for (int fd : {p.out, p.err})
    if (fd >= 0) ::close(fd);
  ::unlink(tmpl);
  ASSERT_TRUE(exited) << "the proxy did not stop within 20 s (killed)\n" << err;
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2) << "status " << st << "\n" << err;
  EXPECT_NE(err.find(std::string(tmpl) + ":10: proxy.pool[0].hash_key: \"header:X-User\" needs "
                                         "the HTTP mode"),
            std::string::npos)
      << err;
}

}  // namespace
}  // namespace ringpoll::proxy
