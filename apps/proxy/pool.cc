#include "apps/proxy/pool.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

#include "engine/host_name.h"

namespace ringpoll::proxy {

namespace {

// FNV-1a, 64 bits, then a finaliser (splitmix64's): stable across processes and builds,
// which Maglev needs (every proxy must build the same table).
uint64_t hash_bytes(const void* p, size_t n, uint64_t seed) noexcept {
  uint64_t h = 1469598103934665603ull ^ seed;
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

}  // namespace

bool parse_upstream_name(const std::string& text, UpstreamName* out, std::string* why) {
  UpstreamName u;
  if (!parse_service_name(text, &u.host, &u.port, why)) return false;
  *out = std::move(u);
  return true;
}

uint64_t client_key(const SocketAddress& a) noexcept {
  if (a.family() == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(a.sa());
    return hash_bytes(&in->sin_addr, sizeof in->sin_addr, 0);
  }
  if (a.family() == AF_INET6) {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(a.sa());
    return hash_bytes(&in->sin6_addr, sizeof in->sin6_addr, 0);
  }
  return 0;
}

uint64_t peer_key(int fd) noexcept {
  SocketAddress a;
  a.len = sizeof a.ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&a.ss), &a.len) < 0) return 0;
  return client_key(a);
}

uint64_t text_key(std::string_view value) noexcept {
  // Its own seed: a value that spells an address's bytes is not that client's key.
  return hash_bytes(value.data(), value.size(), 0x68747470);
}

uint32_t next_prime(uint32_t n) noexcept {
  if (n <= 2) return 2;
  for (uint32_t c = n | 1;; c += 2) {
    bool prime = true;
    for (uint32_t d = 3; d * d <= c && prime; d += 2) prime = c % d != 0;
    if (prime) return c;
  }
}

std::vector<uint32_t> maglev_table(const Members& m) {
  const size_t n = m.ups.size();
  if (n == 0) return {};
  // The size must not follow every change of the set (a new size remaps every key): the
  // first prime of a fixed ladder that is >= 100 x upstreams (65537 up to 655 upstreams).
  uint32_t size = 65537;
  while (size < n * 100) size = next_prime(size * 2);
  std::vector<uint64_t> offset(n), skip(n), next(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string& l = m.ups[i]->label();
    offset[i] = hash_bytes(l.data(), l.size(), 0x6d61676c) % size;
    skip[i] = hash_bytes(l.data(), l.size(), 0x65763031) % (size - 1) + 1;
  }
  const uint32_t wmax = *std::max_element(m.weights.begin(), m.weights.end());
  std::vector<uint64_t> credit(n, 0);
  constexpr uint32_t kEmpty = UINT32_MAX;
  std::vector<uint32_t> table(size, kEmpty);
  // Turns in address order: the same table on every proxy whatever order the set came in.
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return m.ups[a]->label() < m.ups[b]->label(); });
  for (uint32_t filled = 0; filled < size;) {
    for (size_t i : order) {
      if (filled >= size) break;
      // Turns by weight: each round an upstream earns its weight, and places one entry per
      // wmax earned (equal weights: one each a round, the paper's algorithm).
      credit[i] += m.weights[i];
      while (credit[i] >= wmax && filled < size) {
        credit[i] -= wmax;
        uint64_t c = (offset[i] + next[i] * skip[i]) % size;
        while (table[c] != kEmpty) {
          ++next[i];
          c = (offset[i] + next[i] * skip[i]) % size;
        }
        table[c] = static_cast<uint32_t>(i);
        ++next[i];
        ++filled;
      }
    }
  }
  return table;
}

Pool::Pool(const PoolSettings& s, size_t shards) : s_(s), views_(std::max<size_t>(shards, 1) + 1) {
  std::vector<Member> set;
  for (const SocketAddress& a : s_.upstreams) set.push_back({a, 1});
  auto m = publish(set, 0);
  for (size_t i = 0; i + 1 < views_.size(); ++i) install(static_cast<int>(i), m);
  // A pool with names: its first resolved set is a first set too (no slow start).
  first_set_ = !s_.names.empty();
}

std::shared_ptr<const Members> Pool::publish(const std::vector<Member>& set, int64_t now) {
  auto m = std::make_shared<Members>();
  std::vector<Member> sorted = set;
  // Duplicates side by side (merged below); otherwise the order given is kept (Maglev
  // orders by address itself).
  std::stable_sort(sorted.begin(), sorted.end(), [](const Member& a, const Member& b) {
    return a.addr.to_string() < b.addr.to_string();
  });
  if (std::adjacent_find(sorted.begin(), sorted.end(), [](const Member& a, const Member& b) {
        return a.addr.to_string() == b.addr.to_string();
      }) == sorted.end())
    sorted = set;
  std::lock_guard<std::mutex> l(mu_);
  for (const Member& e : sorted) {
    const std::string label = e.addr.to_string();
    if (!m->ups.empty() && m->ups.back()->label() == label) {
      m->weights.back() = std::min<uint32_t>(m->weights.back() + e.weight, 65535);
      continue;
    }
    Upstream* u = nullptr;
    for (auto& k : all_)
      if (k->label() == label) u = k.get();
    const bool was_in = u && views_.back().m &&
                        std::find(views_.back().m->ups.begin(), views_.back().m->ups.end(), u) !=
                            views_.back().m->ups.end();
    if (!u) {
      all_.push_back(std::make_unique<Upstream>(e.addr));
      u = all_.back().get();
    }
    if (!was_in) u->joined_ns_.store(first_set_ ? 0 : now, std::memory_order_relaxed);
    m->ups.push_back(u);
    m->weights.push_back(std::clamp<uint32_t>(e.weight, 1, 65535));
  }
  if (s_.balance == Balance::kMaglev) m->maglev = maglev_table(*m);
  first_set_ = false;
  View& own = views_.back();
  own.m = m;
  own.credit.assign(m->ups.size(), 0);
  return m;
}

void Pool::install(int shard, std::shared_ptr<const Members> m) {
  View& v = views_.at(static_cast<size_t>(shard));
  v.credit.assign(m->ups.size(), 0);
  v.m = std::move(m);
}

std::shared_ptr<const Members> Pool::members() const {
  std::lock_guard<std::mutex> l(mu_);
  return views_.back().m;
}

std::shared_ptr<const Members> Pool::view_of(int shard) const {
  if (shard >= 0 && static_cast<size_t>(shard) + 1 < views_.size())
    return views_[static_cast<size_t>(shard)].m;
  return members();
}

bool Pool::usable(Upstream* u, int64_t now, const std::vector<const Upstream*>& avoid) {
  const int64_t until = u->ejected_until_.load(std::memory_order_relaxed);
  if (until > now) return false;
  if (until != 0) {
    // Its ejection is over: the first pick that sees it says so, once.
    int64_t seen = until;
    if (u->ejected_until_.compare_exchange_strong(seen, 0, std::memory_order_relaxed)) {
      u->returns_.fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "ringpoll-proxy: pool '%s': upstream %s returned to service\n",
                   s_.name.c_str(), u->label().c_str());
    }
  }
  return std::find(avoid.begin(), avoid.end(), u) == avoid.end();
}

int64_t Pool::weight_now(const Members& m, size_t i, int64_t now) const noexcept {
  const int64_t w = static_cast<int64_t>(m.weights[i]) * 100;
  const int64_t joined = m.ups[i]->joined_ns_.load(std::memory_order_relaxed);
  if (s_.slow_start_ns <= 0 || joined == 0 || now - joined >= s_.slow_start_ns) return w;
  const int64_t elapsed = std::max<int64_t>(now - joined, 0);
  return std::max<int64_t>(w * elapsed / s_.slow_start_ns, std::max<int64_t>(w / 100, 1));
}

Upstream* Pool::pick(View& v, int64_t now, const std::vector<const Upstream*>& avoid,
                     const PickHint& hint) {
  const Members& m = *v.m;
  const size_t n = m.ups.size();
  if (s_.balance == Balance::kMaglev) {
    const size_t size = m.maglev.size();
    const size_t at = hint.key % size;
    // The key's slot, or the next whose upstream is usable (the same on every proxy that
    // sees the same health).
    for (size_t k = 0; k < size; ++k) {
      Upstream* u = m.ups[m.maglev[(at + k) % size]];
      if (usable(u, now, avoid)) return u;
      if (k >= n * 4 && k % n == 0) {
        // Far past the slot: check whether anything is usable at all before walking on.
        bool any = false;
        for (Upstream* x : m.ups) any = any || usable(x, now, avoid);
        if (!any) return nullptr;
      }
    }
    return nullptr;
  }
  if (s_.balance == Balance::kRoundRobin) {
    if (v.credit.size() != n) v.credit.assign(n, 0);
    int64_t total = 0;
    size_t best = n;
    for (size_t i = 0; i < n; ++i) {
      if (!usable(m.ups[i], now, avoid)) continue;
      const int64_t w = weight_now(m, i, now);
      v.credit[i] += w;
      total += w;
      if (best == n || v.credit[i] > v.credit[best]) best = i;
    }
    if (best == n) return nullptr;
    v.credit[best] -= total;
    return m.ups[best];
  }
  // Least connections per unit of weight: a/wa < b/wb as a*wb < b*wa.
  const uint64_t start = v.next++;
  Upstream* best = nullptr;
  int64_t best_a = 0, best_w = 1;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (start + k) % n;
    Upstream* u = m.ups[i];
    if (!usable(u, now, avoid)) continue;
    const int64_t a = u->active() + 1, w = weight_now(m, i, now);
    if (!best || a * best_w < best_a * w) {
      best = u;
      best_a = a;
      best_w = w;
    }
  }
  return best;
}

Upstream* Pool::acquire(int64_t now, const std::vector<const Upstream*>& avoid,
                        const PickHint& hint) {
  const bool own = hint.shard < 0 || static_cast<size_t>(hint.shard) + 1 >= views_.size();
  std::unique_lock<std::mutex> l(mu_, std::defer_lock);
  if (own) l.lock();
  View& v = own ? views_.back() : views_[static_cast<size_t>(hint.shard)];
  if (!v.m || v.m->ups.empty()) return nullptr;
  Upstream* u = pick(v, now, avoid, hint);
  if (!u) {
    // Nothing healthy and untried: the one whose ejection ends first among the untried,
    // else the one whose ejection ends first at all.
    int64_t soonest = INT64_MAX;
    for (int pass = 0; pass < 2 && !u; ++pass) {
      for (Upstream* c : v.m->ups) {
        if (pass == 0 && std::find(avoid.begin(), avoid.end(), c) != avoid.end()) continue;
        const int64_t until = c->ejected_until_.load(std::memory_order_relaxed);
        if (until < soonest) {
          soonest = until;
          u = c;
        }
      }
    }
  }
  u->active_.fetch_add(1, std::memory_order_relaxed);
  return u;
}

void Pool::eject(Upstream* u, int64_t now, int shard, const char* why) noexcept {
  // One out already (failing where the pool fell back to it) is ejected again, for
  // longer; the share out does not change.
  if (u->healthy(now)) {
    // The cap: the share of the set out of service, this one included.
    const std::shared_ptr<const Members> m = view_of(shard);
    size_t out = 0, n = m ? m->ups.size() : 0;
    if (m)
      for (const Upstream* x : m->ups) out += x->healthy(now) ? 0 : 1;
    if (n > 0 && (out + 1) * 100 > static_cast<size_t>(s_.max_ejection_percent) * n) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  // Ejection time: doubled for each ejection that follows the end of the last within
  // max_eject_ns, at most max_eject_ns.
  const int64_t last_end = u->last_end_ns_.load(std::memory_order_relaxed);
  int streak = u->eject_streak_.load(std::memory_order_relaxed);
  if (last_end == 0 || now - last_end > s_.max_eject_ns) streak = 0;
  const int64_t cap = std::max(s_.max_eject_ns, s_.eject_ns);
  int64_t t = s_.eject_ns;
  for (int k = 0; k < streak && t < cap; ++k) t *= 2;
  t = std::min(t, cap);
  u->eject_streak_.store(std::min(streak + 1, 62), std::memory_order_relaxed);
  u->last_end_ns_.store(now + t, std::memory_order_relaxed);
  u->ejected_until_.store(now + t, std::memory_order_relaxed);
  u->ejections_.fetch_add(1, std::memory_order_relaxed);
  std::fprintf(stderr,
               "ringpoll-proxy: pool '%s': upstream %s ejected for %.3f s (%s; ejection %d in a "
               "row)\n",
               s_.name.c_str(), u->label().c_str(), static_cast<double>(t) / 1e9, why, streak + 1);
}

void Pool::connect_succeeded(Upstream* u) noexcept {
  u->ok_.fetch_add(1, std::memory_order_relaxed);
  u->consecutive_failures_.store(0, std::memory_order_relaxed);
}

void Pool::failure(Upstream* u, int64_t now, int shard, const char* what) noexcept {
  const int f = u->consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (s_.fail_threshold > 0 && f >= s_.fail_threshold) {
    u->consecutive_failures_.store(0, std::memory_order_relaxed);
    eject(u, now, shard, what);
  }
}

void Pool::connect_failed(Upstream* u, int64_t now, int shard) noexcept {
  u->failed_.fetch_add(1, std::memory_order_relaxed);
  failure(u, now, shard, "consecutive connect failures or resets");
}

void Pool::stream_reset(Upstream* u, int64_t now, int shard) noexcept {
  failure(u, now, shard, "consecutive resets or connect failures");
}

void Pool::answered(Upstream* u, bool ok, int64_t now, int shard) noexcept {
  // Counted apart from connects: an upstream that accepts every connect and answers 5xx
  // to each request must still reach the threshold.
  if (ok) {
    u->consecutive_5xx_.store(0, std::memory_order_relaxed);
    return;
  }
  const int f = u->consecutive_5xx_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (s_.fail_threshold > 0 && f >= s_.fail_threshold) {
    u->consecutive_5xx_.store(0, std::memory_order_relaxed);
    eject(u, now, shard, "consecutive 5xx answers");
  }
}

void Pool::probe_result(Upstream* u, bool ok, int64_t now) noexcept {
  if (ok) {
    u->consecutive_failures_.store(0, std::memory_order_relaxed);
    if (!u->healthy(now)) {
      u->ejected_until_.store(0, std::memory_order_relaxed);
      u->returns_.fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr,
                   "ringpoll-proxy: pool '%s': upstream %s returned to service (health check)\n",
                   s_.name.c_str(), u->label().c_str());
    }
  } else if (u->healthy(now)) {
    eject(u, now, -1, "failed health check");
  } else {
    // Still down: keep it out until the next probe says otherwise.
    u->ejected_until_.store(now + s_.eject_ns, std::memory_order_relaxed);
  }
}

size_t Pool::healthy_count(int64_t now, int shard) const {
  size_t n = 0;
  for (const Upstream* u : view_of(shard)->ups) n += u->healthy(now) ? 1 : 0;
  return n;
}

}  // namespace ringpoll::proxy
