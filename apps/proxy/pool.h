#pragma once
// Upstream pools of ringpoll-proxy: which upstream a new connection goes to, and which
// upstreams are out of service.
//
// Membership. A pool's upstreams are fixed addresses and names (apps/proxy/resolver.h
// resolves those off the shards). Each set of upstreams is an immutable Members (sorted by
// address, so every proxy of a fleet orders the same set alike), and every shard has its
// own view of the current one: a new set is published once and installed on each shard
// through its inbox (install(), run on that shard), so picking takes no lock. Threads that
// are not shards (tests, packet-path threads, the admin page) use the pool's own view under
// its mutex. An Upstream object outlives its leaving the set: connections established to
// it keep their pointer and release it when they end; one that comes back is the same
// object (its health and counts go on). Upstream objects live as long as the pool, so a
// pool keeps one per distinct address it has seen (a generation's worth).
//
// Balancing, per shard view (a stale view only makes a choice slightly less even):
//   - round robin: smooth weighted round robin (nginx's): each pick adds every usable
//     upstream's weight to its credit and takes the one with the most, which then pays
//     the total; equal weights rotate in order;
//   - least connections: the usable upstream with the fewest open connections per unit of
//     weight (ties go to the one after the last pick, so equal loads still rotate);
//   - Maglev: a lookup table (a prime size >= 100 x upstreams, from a fixed ladder: 65537
//     up to 655 upstreams, so that a change of the set keeps it) filled from each upstream's
//     permutation of the slots (Maglev, NSDI 2016), weighted by turns; the key (a hash of
//     the client's address, or in the HTTP mode of a header's or cookie's value:
//     apps/proxy/hash_key.h) picks a slot, an unusable upstream's slot passes to the next.
//     Every proxy with the same set builds the same table, so a key goes to the same
//     upstream on each of them with nothing shared; removing one of N moves its keys and
//     few others.
//   Slow start: an upstream that joins a set after the first ramps its weight linearly
//   from 1% to full over slow_start_ns (round robin and least connections).
//
// Outlier detection (passive): `fail_threshold` consecutive failed connects, resets or
// (HTTP mode) 5xx answers eject an upstream; the ejection lasts eject_ns, doubled for each ejection
// that follows the last within max_eject_ns of its end, at most max_eject_ns. No ejection takes the
// share of ejected upstreams in the set above max_ejection_percent (refusals are counted).
// One success resets the count. When every upstream is out the pool still picks (the one
// whose ejection ends first) rather than refusing all traffic: an outage of the health
// signal must not become an outage of the service. Every ejection and every return is
// counted and logged on stderr.
//
// Active health: a checker reports each probe; a failed probe ejects at once (within the
// same cap), a successful probe returns an ejected upstream to service.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "apps/proxy/hash_key.h"
#include "engine/net.h"

namespace ringpoll::tls {
class TlsContext;
}

namespace ringpoll::proxy {

enum class Balance : uint8_t { kRoundRobin, kLeastConn, kMaglev };

// An upstream of a pool by name, resolved by apps/proxy/resolver.h: "host:port" (its A and
// AAAA records), or an SRV name "_service._proto.zone" (port 0: the records give targets,
// ports, priorities and weights).
struct UpstreamName {
  std::string host;
  uint16_t port = 0;
  bool srv() const noexcept { return port == 0; }
  std::string text() const { return srv() ? host : host + ":" + std::to_string(port); }
  bool operator==(const UpstreamName&) const = default;
};

// Parses a pool's upstream entry that is not an address literal: "name:port" or an SRV name
// (its first label starts with '_', e.g. "_http._tcp.example"). False with *why.
bool parse_upstream_name(const std::string& text, UpstreamName* out, std::string* why);

// One upstream of a set, as resolved: its address and weight (1..65535).
struct Member {
  SocketAddress addr;
  uint32_t weight = 1;
};

struct PoolSettings {
  std::string name;
  Balance balance = Balance::kRoundRobin;
  HashKey hash;  // Maglev's key: the client's address, or (HTTP mode) a header or cookie
  std::vector<SocketAddress> upstreams;  // fixed addresses (weight 1)
  std::vector<UpstreamName> names;       // resolved (apps/proxy/resolver.h)
  // Names are resolved again after their records' TTL, bounded to [min, max].
  int64_t resolve_min_ttl_ns = 1'000'000'000;
  int64_t resolve_max_ttl_ns = 300'000'000'000;
  int64_t slow_start_ns = 0;  // 0: a new upstream takes its full weight at once
  int fail_threshold = 3;
  int64_t eject_ns = 10'000'000'000;
  int64_t max_eject_ns = 300'000'000'000;
  int max_ejection_percent = 100;
  int64_t check_interval_ns = 0;  // 0: no active checks
  int64_t check_timeout_ns = 1'000'000'000;
  // TLS to the upstreams (apps/proxy/tls_relay.h): the client context, and the name sent
  // as SNI and verified ("" none). Null: plain TCP.
  std::shared_ptr<const tls::TlsContext> tls;
  std::string tls_server_name;
};

class Upstream {
 public:
  explicit Upstream(SocketAddress a) : addr_(a), label_(a.to_string()) {}
  const SocketAddress& address() const noexcept { return addr_; }
  const std::string& label() const noexcept { return label_; }
  int active() const noexcept { return active_.load(std::memory_order_relaxed); }
  bool healthy(int64_t now) const noexcept {
    return ejected_until_.load(std::memory_order_relaxed) <= now;
  }
  uint64_t connects_ok() const noexcept { return ok_.load(std::memory_order_relaxed); }
  uint64_t connects_failed() const noexcept { return failed_.load(std::memory_order_relaxed); }
  uint64_t ejections() const noexcept { return ejections_.load(std::memory_order_relaxed); }
  uint64_t returns() const noexcept { return returns_.load(std::memory_order_relaxed); }
  // When the current (or last) ejection ends; 0 when none is pending.
  int64_t ejected_until() const noexcept { return ejected_until_.load(std::memory_order_relaxed); }

 private:
  friend class Pool;
  SocketAddress addr_;
  std::string label_;
  std::atomic<int> active_{0};
  std::atomic<int> consecutive_failures_{0};
  std::atomic<int> consecutive_5xx_{0};  // HTTP mode: answers
  std::atomic<int64_t> ejected_until_{0};
  std::atomic<int> eject_streak_{0};     // ejections in a row (the next one's doubling)
  std::atomic<int64_t> last_end_ns_{0};  // when the last ejection ended (or ends)
  std::atomic<int64_t> joined_ns_{0};    // when it joined the set (slow start); 0: at start
  std::atomic<uint64_t> ok_{0}, failed_{0}, ejections_{0}, returns_{0};
};

// One set of upstreams: immutable once published.
struct Members {
  std::vector<Upstream*> ups;     // sorted by address
  std::vector<uint32_t> weights;  // by ups
  std::vector<uint32_t> maglev;   // Balance::kMaglev: the table (indices into ups)
};

// What acquire() may know of the connection: the shard it runs on (-1: not on a shard; the
// pool's own view is used, under its mutex) and, for Maglev, the client's key.
struct PickHint {
  int shard = -1;
  uint64_t key = 0;
};

// The Maglev key of a client address (its IP, not the port): the same on every proxy.
uint64_t client_key(const SocketAddress& a) noexcept;
// The key of a connected socket's peer (0 when it has none).
uint64_t peer_key(int fd) noexcept;
// The Maglev key of a header's or cookie's value: the same on every proxy.
uint64_t text_key(std::string_view value) noexcept;
// The smallest prime >= n (Maglev's table size).
uint32_t next_prime(uint32_t n) noexcept;
// The Maglev table of `m` (its ups and weights set): 65537 slots, or the first prime of
// the ladder 65537, next_prime(2 x that), ... that is >= 100 x ups.
std::vector<uint32_t> maglev_table(const Members& m);

class Pool {
 public:
  // `shards`: the views kept, one per engine shard.
  explicit Pool(const PoolSettings& s, size_t shards = 1);
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  const PoolSettings& settings() const noexcept { return s_; }

  // The current set (the pool's own view): a snapshot.
  std::shared_ptr<const Members> members() const;
  size_t size() const { return members()->ups.size(); }
  // Upstream i of the current set (the object lives as long as the pool).
  Upstream& at(size_t i) const { return *members()->ups.at(i); }

  // The upstream for a new connection at time `now`, skipping `avoid` (the ones a retry
  // already failed on) when anything else is left. Counts it active until release().
  // nullptr when the set is empty.
  Upstream* acquire(int64_t now, const std::vector<const Upstream*>& avoid = {},
                    const PickHint& hint = {});
  void release(Upstream* u) noexcept { u->active_.fetch_sub(1, std::memory_order_relaxed); }
  // A connection to `label` (Upstream::label) that an upgrade's predecessor handed over
  // (apps/proxy/relay_move.h): counted active until release(), as acquire() counts; null
  // when this pool has no such upstream.
  Upstream* hold(std::string_view label) {
    std::lock_guard<std::mutex> l(mu_);  // rare: once per connection handed over
    for (auto& u : all_) {
      if (u->label_ != label) continue;
      u->active_.fetch_add(1, std::memory_order_relaxed);
      return u.get();
    }
    return nullptr;
  }

  // Passive health: the outcome of a connect to `u`; a reset from it (counted as a
  // failure). `shard` as in PickHint (the view whose set the ejection cap counts).
  void connect_succeeded(Upstream* u) noexcept;
  void connect_failed(Upstream* u, int64_t now, int shard = -1) noexcept;
  void stream_reset(Upstream* u, int64_t now, int shard = -1) noexcept;
  // HTTP mode: an answer from `u`. fail_threshold 5xx answers in a row eject it (a run of
  // its own: connects that succeed do not end it); any other answer ends the run.
  void answered(Upstream* u, bool ok, int64_t now, int shard = -1) noexcept;
  // Active health: the outcome of a probe.
  void probe_result(Upstream* u, bool ok, int64_t now) noexcept;

  // Upstreams of the set in service now (`shard`'s view, as in PickHint).
  size_t healthy_count(int64_t now, int shard = -1) const;
  uint64_t ejections_refused() const noexcept { return refused_.load(std::memory_order_relaxed); }
  // True for the first request of the pool's life that had no value for settings().hash
  // (and went by its client's address): the relay says so once on stderr.
  bool first_hash_fallback() noexcept {
    return !fallback_said_.load(std::memory_order_relaxed) &&
           !fallback_said_.exchange(true, std::memory_order_relaxed);
  }

  // Membership changes (apps/proxy/resolver.h). publish() makes `set` the pool's own view
  // (an upstream already known keeps its object; a new one starts its slow start at `now`
  // unless this is the first set) and returns it, for install() on every shard. From any
  // thread but a shard's. install() runs on shard `shard`'s thread (or before the pool is
  // shared). Same addresses listed twice are merged (weights added).
  std::shared_ptr<const Members> publish(const std::vector<Member>& set, int64_t now);
  void install(int shard, std::shared_ptr<const Members> m);
  size_t shards() const noexcept { return views_.size() - 1; }

  // Name resolution outcomes, counted by the resolver for the admin page.
  void count_resolution(bool ok) noexcept {
    (ok ? resolved_ : resolve_failed_).fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t resolutions() const noexcept { return resolved_.load(std::memory_order_relaxed); }
  uint64_t resolve_failures() const noexcept {
    return resolve_failed_.load(std::memory_order_relaxed);
  }

 private:
  // One shard's view (or the pool's own, the last): written by that shard only.
  struct alignas(64) View {
    std::shared_ptr<const Members> m;
    std::vector<int64_t> credit;  // smooth WRR, by m->ups
    uint64_t next = 0;            // least connections: where ties start
  };
  Upstream* pick(View& v, int64_t now, const std::vector<const Upstream*>& avoid,
                 const PickHint& hint);
  bool usable(Upstream* u, int64_t now, const std::vector<const Upstream*>& avoid);
  int64_t weight_now(const Members& m, size_t i, int64_t now) const noexcept;
  void failure(Upstream* u, int64_t now, int shard, const char* what) noexcept;
  void eject(Upstream* u, int64_t now, int shard, const char* why) noexcept;
  std::shared_ptr<const Members> view_of(int shard) const;

  PoolSettings s_;
  mutable std::mutex mu_;                       // views_.back() and all_
  std::vector<std::unique_ptr<Upstream>> all_;  // every upstream seen
  std::vector<View> views_;                     // by shard, then the pool's own
  bool first_set_ = true;
  std::atomic<uint64_t> refused_{0}, resolved_{0}, resolve_failed_{0};
  std::atomic<bool> fallback_said_{false};
};

}  // namespace ringpoll::proxy
