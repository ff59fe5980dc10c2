#pragma once
// Admission limits at accept (TcpServer::Options::limits): per listener, the connections
// open at once and the new connections per second; per client address (the peer's IP,
// any port), the same two. A connection over a limit is answered by closing it at accept
// with a reset (SO_LINGER 0: no TIME_WAIT left behind by a flood) and counted by reason;
// it never reaches the handler and costs no task.
//
// Rates are token buckets holding one second's worth (a burst of `rate` is admitted, then
// `rate` per second). A listener's rate is shared out evenly between the shards it listens
// on (SO_REUSEPORT spreads new connections evenly); a client's count and rate are exact
// across shards: one table per listener, striped by address under 64 mutexes, touched
// once at accept and once at close, and only when a per-client limit is set.
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "net.h"

namespace ringpoll {

struct AcceptLimits {
  size_t max_connections = 0;    // open at once on the listener (every shard); 0: no limit
  uint32_t max_rate = 0;         // new connections per second on the listener; 0: no limit
  size_t max_per_client = 0;     // open at once from one client address; 0: no limit
  uint32_t max_client_rate = 0;  // new connections per second from one address; 0: no limit
  bool per_client() const noexcept { return max_per_client > 0 || max_client_rate > 0; }
  bool operator==(const AcceptLimits&) const = default;
};

// AcceptLimits that may be changed while shards read them (a reload): each field is read
// on its own (relaxed), so a change applies to the next accept.
class SharedLimits {
 public:
  void set(const AcceptLimits& l) noexcept {
    max_connections_.store(l.max_connections, std::memory_order_relaxed);
    max_rate_.store(l.max_rate, std::memory_order_relaxed);
    max_per_client_.store(l.max_per_client, std::memory_order_relaxed);
    max_client_rate_.store(l.max_client_rate, std::memory_order_relaxed);
  }
  AcceptLimits get() const noexcept {
    return AcceptLimits{max_connections_.load(std::memory_order_relaxed),
                        max_rate_.load(std::memory_order_relaxed),
                        max_per_client_.load(std::memory_order_relaxed),
                        max_client_rate_.load(std::memory_order_relaxed)};
  }

 private:
  std::atomic<size_t> max_connections_{0};
  std::atomic<uint32_t> max_rate_{0};
  std::atomic<size_t> max_per_client_{0};
  std::atomic<uint32_t> max_client_rate_{0};
};

// Why a connection was refused at accept.
enum class Refusal : uint8_t {
  kConnections,        // the listener had max_connections open
  kRate,               // the listener's max_rate was spent
  kClientConnections,  // the client address had max_per_client open
  kClientRate,         // the client address's max_client_rate was spent
  kGone,               // per-client limits on, and the client had already reset (or closed)
                       // it: no address to count, nothing to serve (a reset flood's shape)
  kCount
};
const char* to_string(Refusal r);

// A token bucket of capacity `rate` refilled at `rate` per second. Not thread-safe.
struct TokenBucket {
  double tokens = -1;  // < 0: never used (starts full)
  int64_t last_ns = 0;
  // Takes one token at `now` if there is one.
  bool take(uint32_t rate, int64_t now) noexcept;
  // True when the bucket would be full at `now` (forgetting it loses nothing).
  bool full(uint32_t rate, int64_t now) const noexcept;
};

// Connections and rate per client address, shared by a listener's shards.
class ClientTable {
 public:
  struct Entry {
    size_t live = 0;
    TokenBucket bucket;
    uint8_t stripe = 0;
  };
  // Admits one connection from `peer`: nullptr and *why when over a limit, else the entry
  // to release() when the connection closes.
  Entry* admit(const SocketAddress& peer, size_t max_live, uint32_t rate, int64_t now,
               Refusal* why);
  void release(Entry* e) noexcept;
  // Addresses tracked now (open connections or a bucket not yet refilled); for tests.
  size_t size();

 private:
  struct Key {
    uint64_t hi = 0, lo = 0;
    uint8_t family = 0;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const noexcept;
  };
  struct Stripe {
    std::mutex mu;
    std::unordered_map<Key, Entry, KeyHash> map;
    size_t sweep_at = 1024;  // forget idle entries when the stripe grows to this
  };
  static Key key_of(const SocketAddress& a) noexcept;
  std::array<Stripe, 64> stripes_;
};

}  // namespace ringpoll
