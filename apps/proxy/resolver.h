#pragma once
// Resolver: the names of a configuration generation's pools (PoolSettings::names),
// resolved off the shards with c-ares on one thread of its own, and each pool's set of
// upstreams (its fixed addresses plus what its names resolve to) published to the pool
// when it changes (Pool::publish; the caller installs it on every shard through their
// inboxes, apps/proxy/proxy.h).
//
//   "host:port"       A and AAAA records; every address, weight 1
//   "_svc._tcp.zone"  SRV records: of those with the lowest priority present, each target's
//                     addresses with the record's port and weight (0 counts as 1)
//
// A name is resolved again after the lowest TTL of its answer (an SRV name: of the SRV and
// its targets' records), bounded to [resolve_min_ttl, resolve_max_ttl]. NXDOMAIN and an
// empty answer are answers (the name has no upstreams now). Anything else (a timeout, a
// refusal, a server that is down) is a failure: the name keeps its last good upstreams, the
// failure is counted on the pool (Pool::resolve_failures) and logged once until the name
// resolves again, and the name is tried again after resolve_min_ttl. A name that never
// resolved contributes nothing: a pool of such names is empty, and its clients take the
// no-upstream path.
//
// Nameservers: `servers` ("ADDR:PORT" each) when given, else /etc/resolv.conf. Names are
// looked up as written (no search list; /etc/hosts is read first, as getaddrinfo does).
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "apps/proxy/pool.h"

namespace ringpoll::proxy {

// The lowest TTL of the answer records of a DNS message (`msg`, `len` bytes); false when
// the message cannot be walked (then *ttl is untouched). No answers: true, *ttl untouched.
bool dns_answer_min_ttl(const unsigned char* msg, int len, uint32_t* ttl);

class Resolver {
 public:
  // Installs a published set on every shard (from the resolver's thread).
  using Post = std::function<void(Pool*, std::shared_ptr<const Members>)>;
  // The pools with names (others are ignored); `servers` as above.
  Resolver(const std::vector<Pool*>& pools, std::vector<std::string> servers);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Sets up the channel; false with *why (the nameserver list was refused).
  bool init(std::string* why);
  // Before the pools are shared: resolves every name once, waiting at most wait_ns, and
  // installs each pool's set on all its views directly. Names not answered by then go on
  // in the thread.
  void resolve_initial(int64_t wait_ns);
  // Runs the thread: re-resolution at the TTLs, sets posted through `post`.
  void start(Post post);
  // Ends the thread (within ~100 ms); idempotent. Published sets stay.
  void stop();
  bool has_names() const noexcept { return !entries_.empty(); }

  struct Entry;
  struct Target;
  struct PoolState;

 private:
  void step(int max_wait_ms);
  void begin(Entry& e);
  void finish(Entry& e, bool ok, const char* reason);
  void republish(PoolState& p);
  friend struct ResolverCallbacks;

  std::vector<std::unique_ptr<PoolState>> pools_;
  std::vector<std::unique_ptr<Entry>> entries_;
  std::vector<std::string> servers_;
  void* channel_ = nullptr;  // ares_channel
  Post post_;
  bool threaded_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace ringpoll::proxy
