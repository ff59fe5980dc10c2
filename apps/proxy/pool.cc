#include "apps/proxy/pool.h"

#include <algorithm>
#include <climits>

namespace ringpoll::proxy {

Pool::Pool(const PoolSettings& s) : s_(s) {
  for (const SocketAddress& a : s_.upstreams) ups_.push_back(std::make_unique<Upstream>(a));
}

bool Pool::usable(const Upstream* u, int64_t now, const std::vector<const Upstream*>& avoid) const {
  if (!u->healthy(now)) return false;
  return std::find(avoid.begin(), avoid.end(), u) == avoid.end();
}

Upstream* Pool::acquire(int64_t now, const std::vector<const Upstream*>& avoid) {
  const size_t n = ups_.size();
  if (n == 0) return nullptr;
  const uint64_t start = next_.fetch_add(1, std::memory_order_relaxed);
  Upstream* pick = nullptr;
  if (s_.balance == Balance::kRoundRobin) {
    for (size_t k = 0; k < n && !pick; ++k) {
      Upstream* u = ups_[(start + k) % n].get();
      if (usable(u, now, avoid)) pick = u;
    }
  } else {
    int best = INT_MAX;
    for (size_t k = 0; k < n; ++k) {
      Upstream* u = ups_[(start + k) % n].get();
      if (!usable(u, now, avoid)) continue;
      const int a = u->active();
      if (a < best) {
        best = a;
        pick = u;
      }
    }
  }
  if (!pick) {
    // Nothing healthy and untried: the one whose ejection ends first among the untried,
    // else the one whose ejection ends first at all.
    int64_t soonest = INT64_MAX;
    for (int pass = 0; pass < 2 && !pick; ++pass) {
      for (auto& up : ups_) {
        Upstream* u = up.get();
        if (pass == 0 && std::find(avoid.begin(), avoid.end(), u) != avoid.end()) continue;
        const int64_t until = u->ejected_until_.load(std::memory_order_relaxed);
        if (until < soonest) {
          soonest = until;
          pick = u;
        }
      }
    }
  }
  pick->active_.fetch_add(1, std::memory_order_relaxed);
  return pick;
}

void Pool::eject(Upstream* u, int64_t now) noexcept {
  u->ejected_until_.store(now + s_.eject_ns, std::memory_order_relaxed);
  u->ejections_.fetch_add(1, std::memory_order_relaxed);
}

void Pool::connect_succeeded(Upstream* u) noexcept {
  u->ok_.fetch_add(1, std::memory_order_relaxed);
  u->consecutive_failures_.store(0, std::memory_order_relaxed);
}

void Pool::connect_failed(Upstream* u, int64_t now) noexcept {
  u->failed_.fetch_add(1, std::memory_order_relaxed);
  const int f = u->consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (s_.fail_threshold > 0 && f >= s_.fail_threshold) {
    u->consecutive_failures_.store(0, std::memory_order_relaxed);
    eject(u, now);
  }
}

void Pool::probe_result(Upstream* u, bool ok, int64_t now) noexcept {
  if (ok) {
    u->consecutive_failures_.store(0, std::memory_order_relaxed);
    u->ejected_until_.store(0, std::memory_order_relaxed);
  } else if (u->healthy(now)) {
    eject(u, now);
  } else {
    // Still down: keep it out until the next probe says otherwise.
    u->ejected_until_.store(now + s_.eject_ns, std::memory_order_relaxed);
  }
}

size_t Pool::healthy_count(int64_t now) const noexcept {
  size_t n = 0;
  for (auto& u : ups_) n += u->healthy(now) ? 1 : 0;
  return n;
}

}  // namespace ringpoll::proxy
