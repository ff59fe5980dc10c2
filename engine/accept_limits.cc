#include "engine/accept_limits.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace ringpoll {

const char* to_string(Refusal r) {
  switch (r) {
    case Refusal::kConnections:
      return "connections";
    case Refusal::kRate:
      return "rate";
    case Refusal::kClientConnections:
      return "client_connections";
    case Refusal::kClientRate:
      return "client_rate";
    case Refusal::kGone:
      return "gone";
    case Refusal::kCount:
      break;
  }
  return "?";
}

bool TokenBucket::take(uint32_t rate, int64_t now) noexcept {
  const double cap = static_cast<double>(rate);
  if (tokens < 0) {
    tokens = cap;
  } else if (now > last_ns) {
    tokens = std::min(cap, tokens + static_cast<double>(now - last_ns) * cap / 1e9);
  }
  last_ns = now;
  if (tokens < 1) return false;
  tokens -= 1;
  return true;
}

bool TokenBucket::full(uint32_t rate, int64_t now) const noexcept {
  if (tokens < 0 || rate == 0) return true;
  const double cap = static_cast<double>(rate);
  return tokens + static_cast<double>(now - last_ns) * cap / 1e9 >= cap;
}

ClientTable::Key ClientTable::key_of(const SocketAddress& a) noexcept {
  Key k;
  k.family = static_cast<uint8_t>(a.ss.ss_family);
  if (a.ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a.ss);
    k.lo = in->sin_addr.s_addr;
  } else if (a.ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.ss);
    std::memcpy(&k.hi, in6->sin6_addr.s6_addr, 8);
    std::memcpy(&k.lo, in6->sin6_addr.s6_addr + 8, 8);
  }
  return k;
}

size_t ClientTable::KeyHash::operator()(const Key& k) const noexcept {
  uint64_t h = (k.hi * 0x9E3779B97F4A7C15ull) ^ (k.lo + 0x632BE59BD9B4E019ull + k.family);
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return static_cast<size_t>(h);
}

ClientTable::Entry* ClientTable::admit(const SocketAddress& peer, size_t max_live, uint32_t rate,
                                       int64_t now, Refusal* why) {
  const Key k = key_of(peer);
  const size_t si = (KeyHash{}(k) >> 7) % stripes_.size();
  Stripe& s = stripes_[si];
  std::lock_guard<std::mutex> l(s.mu);
  if (s.map.size() >= s.sweep_at) {
    // Forget the addresses with nothing open and a full bucket: they hold no state.
    for (auto it = s.map.begin(); it != s.map.end();) {
      if (it->second.live == 0 && it->second.bucket.full(rate, now)) {
        it = s.map.erase(it);
      } else {
        ++it;
      }
    }
    s.sweep_at = std::max<size_t>(1024, 2 * s.map.size());
  }
  Entry& e = s.map[k];
  e.stripe = static_cast<uint8_t>(si);
  if (max_live > 0 && e.live >= max_live) {
    *why = Refusal::kClientConnections;
    return nullptr;
  }
  if (rate > 0 && !e.bucket.take(rate, now)) {
    *why = Refusal::kClientRate;
    return nullptr;
  }
  ++e.live;
  return &e;
}

void ClientTable::release(Entry* e) noexcept {
  Stripe& s = stripes_[e->stripe];
  std::lock_guard<std::mutex> l(s.mu);
  --e->live;  // the entry stays until a sweep finds it idle: its bucket may still matter
}

size_t ClientTable::size() {
  size_t n = 0;
  for (Stripe& s : stripes_) {
    std::lock_guard<std::mutex> l(s.mu);
    n += s.map.size();
  }
  return n;
}

}  // namespace ringpoll
