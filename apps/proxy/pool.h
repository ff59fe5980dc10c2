#pragma once
// Upstream pools of ringpoll-proxy: which upstream a new connection goes to, and which
// upstreams are out of service.
//
// Every shard picks from the same pool, so its state is atomics, relaxed where a stale
// read only makes a choice slightly less even:
//   - round robin: one shared counter, skipping ejected upstreams;
//   - least connections: the healthy upstream with the fewest open connections (ties go
//     to the one after the last pick, so equal loads still rotate);
//   - passive health: `fail_threshold` consecutive failed connects eject an upstream for
//     `eject_ns`; one success resets the count. When every upstream is ejected the pool
//     still picks (the least recently ejected first) rather than refusing all traffic:
//     an outage of the health signal must not become an outage of the service;
//   - active health: a checker reports each probe; a failed probe ejects at once, a
//     successful probe returns an ejected upstream to service.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/net.h"

namespace ringpoll::tls {
class TlsContext;
}

namespace ringpoll::proxy {

enum class Balance : uint8_t { kRoundRobin, kLeastConn };

struct PoolSettings {
  std::string name;
  Balance balance = Balance::kRoundRobin;
  std::vector<SocketAddress> upstreams;
  int fail_threshold = 3;
  int64_t eject_ns = 10'000'000'000;
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

 private:
  friend class Pool;
  SocketAddress addr_;
  std::string label_;
  std::atomic<int> active_{0};
  std::atomic<int> consecutive_failures_{0};
  std::atomic<int64_t> ejected_until_{0};
  std::atomic<uint64_t> ok_{0}, failed_{0}, ejections_{0};
};

class Pool {
 public:
  explicit Pool(const PoolSettings& s);
  const PoolSettings& settings() const noexcept { return s_; }
  size_t size() const noexcept { return ups_.size(); }
  Upstream& at(size_t i) noexcept { return *ups_[i]; }
  const Upstream& at(size_t i) const noexcept { return *ups_[i]; }

  // The upstream for a new connection at time `now`, skipping `avoid` (the ones a retry
  // already failed on) when anything else is left. Counts it active until release().
  Upstream* acquire(int64_t now, const std::vector<const Upstream*>& avoid = {});
  void release(Upstream* u) noexcept { u->active_.fetch_sub(1, std::memory_order_relaxed); }
  // A connection to `label` (Upstream::label) that an upgrade's predecessor handed over
  // (apps/proxy/relay_move.h): counted active until release(), as acquire() counts; null
  // when this pool has no such upstream.
  Upstream* hold(std::string_view label) noexcept {
    for (auto& u : ups_) {
      if (u->label_ != label) continue;
      u->active_.fetch_add(1, std::memory_order_relaxed);
      return u.get();
    }
    return nullptr;
  }

  // Passive health: the outcome of a connect to `u`.
  void connect_succeeded(Upstream* u) noexcept;
  void connect_failed(Upstream* u, int64_t now) noexcept;
  // Active health: the outcome of a probe.
  void probe_result(Upstream* u, bool ok, int64_t now) noexcept;

  size_t healthy_count(int64_t now) const noexcept;

 private:
  bool usable(const Upstream* u, int64_t now, const std::vector<const Upstream*>& avoid) const;
  void eject(Upstream* u, int64_t now) noexcept;

  PoolSettings s_;
  std::vector<std::unique_ptr<Upstream>> ups_;
  std::atomic<uint64_t> next_{0};
};

}  // namespace ringpoll::proxy
