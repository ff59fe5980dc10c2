#include "apps/proxy/resolver.h"

#include <ares.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "engine/clock.h"

namespace ringpoll::proxy {

struct Resolver::PoolState {
  Pool* pool = nullptr;
  std::vector<Member> published;  // sorted, as last given to the pool
  bool ever = false;
};

struct Resolver::Entry {
  Resolver* self = nullptr;
  PoolState* pool = nullptr;
  UpstreamName name;
  std::vector<Member> last;  // the last good answer
  bool answered = false;     // resolved (or failed) at least once
  bool failing = false;      // the last attempt failed (logged once)
  bool busy = false;
  int64_t due = 0;
  // The attempt in flight.
  int pending = 0;  // lookups outstanding
  bool failed = false;
  const char* reason = "";
  uint32_t ttl = UINT32_MAX;
  std::vector<Member> got;
};

struct Resolver::Target {
  Entry* e;
  uint16_t port;  // 0: the name's own (an A/AAAA name)
  uint32_t weight;
};

namespace {

ares_channel chan(void* c) {
  return static_cast<ares_channel>(c);
}

// NXDOMAIN and no data are answers; the rest (timeouts, refusals, no server) are failures.
bool is_answer(int status) {
  return status == ARES_SUCCESS || status == ARES_ENOTFOUND || status == ARES_ENODATA;
}

bool same_set(const std::vector<Member>& a, const std::vector<Member>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].weight != b[i].weight || a[i].addr.to_string() != b[i].addr.to_string()) return false;
  return true;
}

void sort_set(std::vector<Member>* v) {
  std::sort(v->begin(), v->end(), [](const Member& a, const Member& b) {
    const std::string x = a.addr.to_string(), y = b.addr.to_string();
    return x != y ? x < y : a.weight < b.weight;
  });
}

}  // namespace

bool dns_answer_min_ttl(const unsigned char* msg, int len, uint32_t* ttl) {
  if (len < 12) return false;
  const int qd = (msg[4] << 8) | msg[5];
  const int an = (msg[6] << 8) | msg[7];
  const unsigned char* p = msg + 12;
  const unsigned char* end = msg + len;
  auto skip_name = [&]() -> bool {
    char* name = nullptr;
    long used = 0;
    if (ares_expand_name(p, msg, len, &name, &used) != ARES_SUCCESS) return false;
    ares_free_string(name);
    p += used;
    return p <= end;
  };
  for (int i = 0; i < qd; ++i) {
    if (!skip_name() || end - p < 4) return false;
    p += 4;
  }
  uint32_t low = UINT32_MAX;
  for (int i = 0; i < an; ++i) {
    if (!skip_name() || end - p < 10) return false;
    const uint32_t t = (static_cast<uint32_t>(p[4]) << 24) | (static_cast<uint32_t>(p[5]) << 16) |
                       (static_cast<uint32_t>(p[6]) << 8) | p[7];
    const int rdlen = (p[8] << 8) | p[9];
    p += 10;
    if (end - p < rdlen) return false;
    p += rdlen;
    low = std::min(low, t);
  }
  if (an > 0) *ttl = low;
  return true;
}

// The c-ares callbacks (C functions with a void* argument).
struct ResolverCallbacks {
  static void addrinfo_done(void* arg, int status, int, struct ares_addrinfo* res) {
    std::unique_ptr<Resolver::Target> t(static_cast<Resolver::Target*>(arg));
    Resolver::Entry& e = *t->e;
    if (status == ARES_EDESTRUCTION) return;
    if (status == ARES_SUCCESS && res) {
      for (ares_addrinfo_node* n = res->nodes; n; n = n->ai_next) {
        if (n->ai_family != AF_INET && n->ai_family != AF_INET6) continue;
        Member m;
        std::memcpy(&m.addr.ss, n->ai_addr, n->ai_addrlen);
        m.addr.len = n->ai_addrlen;
        const uint16_t port = htons(t->port);
        if (n->ai_family == AF_INET)
          reinterpret_cast<sockaddr_in*>(&m.addr.ss)->sin_port = port;
        else
          reinterpret_cast<sockaddr_in6*>(&m.addr.ss)->sin6_port = port;
        m.weight = t->weight;
        const std::string l = m.addr.to_string();
        const bool dup = std::any_of(e.got.begin(), e.got.end(),
                                     [&](const Member& x) { return x.addr.to_string() == l; });
        if (!dup) e.got.push_back(m);
        if (n->ai_ttl >= 0) e.ttl = std::min(e.ttl, static_cast<uint32_t>(n->ai_ttl));
      }
    } else if (!is_answer(status)) {
      e.failed = true;
      e.reason = ares_strerror(status);
    }
    if (res) ares_freeaddrinfo(res);
    if (--e.pending == 0) e.self->finish(e, !e.failed, e.reason);
  }

  static void srv_done(void* arg, int status, int, unsigned char* abuf, int alen) {
    auto& e = *static_cast<Resolver::Entry*>(arg);
    if (status == ARES_EDESTRUCTION) return;
    if (!is_answer(status)) {
      e.self->finish(e, false, ares_strerror(status));
      return;
    }
    ares_srv_reply* srv = nullptr;
    if (status == ARES_SUCCESS) {
      const int ps = ares_parse_srv_reply(abuf, alen, &srv);
      if (ps != ARES_SUCCESS && ps != ARES_ENODATA) {
        e.self->finish(e, false, ares_strerror(ps));
        return;
      }
      uint32_t ttl = UINT32_MAX;
      if (dns_answer_min_ttl(abuf, alen, &ttl)) e.ttl = std::min(e.ttl, ttl);
    }
    // The lowest priority present wins.
    int low = INT_MAX;
    for (ares_srv_reply* r = srv; r; r = r->next)
      low = std::min(low, static_cast<int>(r->priority));
    std::vector<Resolver::Target*> targets;
    std::vector<std::string> hosts;
    for (ares_srv_reply* r = srv; r; r = r->next) {
      if (r->priority != low || r->port == 0) continue;
      targets.push_back(new Resolver::Target{&e, r->port, std::max<uint32_t>(r->weight, 1)});
      hosts.emplace_back(r->host);
    }
    if (srv) ares_free_data(srv);
    if (targets.empty()) {
      e.self->finish(e, true, "");
      return;
    }
    e.pending = static_cast<int>(targets.size());
    for (size_t i = 0; i < targets.size(); ++i) lookup(e.self, hosts[i], targets[i]);
  }

  static void lookup(Resolver* r, const std::string& host, Resolver::Target* t) {
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = ARES_AI_NOSORT;
    ares_getaddrinfo(chan(r->channel_), host.c_str(), nullptr, &hints, addrinfo_done, t);
  }
};

Resolver::Resolver(const std::vector<Pool*>& pools, std::vector<std::string> servers)
    : servers_(std::move(servers)) {
  for (Pool* p : pools) {
    if (p->settings().names.empty()) continue;
    pools_.push_back(std::make_unique<PoolState>());
    pools_.back()->pool = p;
    for (const UpstreamName& n : p->settings().names) {
      auto e = std::make_unique<Entry>();
      e->self = this;
      e->pool = pools_.back().get();
      e->name = n;
      entries_.push_back(std::move(e));
    }
  }
}

Resolver::~Resolver() {
  stop();
  if (channel_) ares_destroy(chan(channel_));
}

bool Resolver::init(std::string* why) {
  static std::once_flag once;
  std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
  ares_options o{};
  o.timeout = 500;  // ms a try
  o.tries = 2;
  // Names are taken as written (no search list): an NXDOMAIN is the name's own answer, not
  // the last of its search-list variants'.
  o.flags = ARES_FLAG_NOSEARCH;
  ares_channel ch = nullptr;
  const int st = ares_init_options(&ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
  if (st != ARES_SUCCESS) {
    *why = std::string("resolver: ") + ares_strerror(st);
    return false;
  }
  channel_ = ch;
  if (!servers_.empty()) {
    std::string csv;
    for (const std::string& s : servers_) csv += (csv.empty() ? "" : ",") + s;
    const int ss = ares_set_servers_ports_csv(ch, csv.c_str());
    if (ss != ARES_SUCCESS) {
      *why = "resolvers \"" + csv + "\": " + ares_strerror(ss);
      return false;
    }
  }
  return true;
}

void Resolver::begin(Entry& e) {
  e.busy = true;
  e.failed = false;
  e.reason = "";
  e.ttl = UINT32_MAX;
  e.got.clear();
  if (e.name.srv()) {
    constexpr int kClassIn = 1, kTypeSrv = 33;  // RFC 1035, RFC 2782
    ares_query(chan(channel_), e.name.host.c_str(), kClassIn, kTypeSrv, ResolverCallbacks::srv_done,
               &e);
  } else {
    e.pending = 1;
    ResolverCallbacks::lookup(this, e.name.host, new Target{&e, e.name.port, 1});
  }
}

void Resolver::finish(Entry& e, bool ok, const char* reason) {
  e.busy = false;
  e.answered = true;
  const PoolSettings& ps = e.pool->pool->settings();
  const int64_t now = mono_now_ns();
  constexpr int64_t kSec = 1'000'000'000;
  e.pool->pool->count_resolution(ok);
  if (ok) {
    if (e.failing)
      std::fprintf(stderr, "ringpoll-proxy: pool '%s': %s resolves again (%zu upstreams)\n",
                   ps.name.c_str(), e.name.text().c_str(), e.got.size());
    e.failing = false;
    e.last = std::move(e.got);
    e.got.clear();
    const int64_t ttl = e.ttl == UINT32_MAX ? ps.resolve_min_ttl_ns : e.ttl * kSec;
    e.due = now + std::clamp(ttl, ps.resolve_min_ttl_ns, ps.resolve_max_ttl_ns);
  } else {
    if (!e.failing)
      std::fprintf(stderr,
                   "ringpoll-proxy: pool '%s': resolving %s failed (%s); keeping its last %zu "
                   "upstreams\n",
                   ps.name.c_str(), e.name.text().c_str(), reason, e.last.size());
    e.failing = true;
    e.due = now + ps.resolve_min_ttl_ns;
  }
  republish(*e.pool);
}

void Resolver::republish(PoolState& p) {
  std::vector<Member> set;
  for (const SocketAddress& a : p.pool->settings().upstreams) set.push_back({a, 1});
  for (auto& e : entries_)
    if (e->pool == &p) set.insert(set.end(), e->last.begin(), e->last.end());
  sort_set(&set);
  if (p.ever && same_set(set, p.published)) return;
  p.ever = true;
  p.published = set;
  auto m = p.pool->publish(set, mono_now_ns());
  std::fprintf(stderr, "ringpoll-proxy: pool '%s': %zu upstreams from DNS\n",
               p.pool->settings().name.c_str(), m->ups.size());
  if (threaded_) {
    post_(p.pool, std::move(m));
  } else {
    for (size_t i = 0; i < p.pool->shards(); ++i) p.pool->install(static_cast<int>(i), m);
  }
}

void Resolver::step(int max_wait_ms) {
  const int64_t now = mono_now_ns();
  int64_t next_due = INT64_MAX;
  for (auto& e : entries_) {
    if (!e->busy && e->due <= now) begin(*e);
    if (!e->busy) next_due = std::min(next_due, e->due);
  }
  ares_socket_t socks[ARES_GETSOCK_MAXNUM];
  const int bits = ares_getsock(chan(channel_), socks, ARES_GETSOCK_MAXNUM);
  pollfd pfd[ARES_GETSOCK_MAXNUM];
  nfds_t n = 0;
  for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
    const bool r = ARES_GETSOCK_READABLE(bits, i), w = ARES_GETSOCK_WRITABLE(bits, i);
    if (!r && !w) continue;
    pfd[n++] = pollfd{socks[i], static_cast<short>((r ? POLLIN : 0) | (w ? POLLOUT : 0)), 0};
  }
  int wait = max_wait_ms;
  timeval cap{max_wait_ms / 1000, (max_wait_ms % 1000) * 1000}, tv{};
  if (ares_timeout(chan(channel_), &cap, &tv))
    wait = std::min<int>(wait, static_cast<int>(tv.tv_sec * 1000 + tv.tv_usec / 1000) + 1);
  if (next_due != INT64_MAX)
    wait = std::clamp<int>(static_cast<int>((next_due - now) / 1'000'000) + 1, 0, wait);
  const int ready = ::poll(pfd, n, wait);
  bool any = false;
  for (nfds_t i = 0; ready > 0 && i < n; ++i) {
    if (pfd[i].revents == 0) continue;
    any = true;
    const bool r = pfd[i].revents & (POLLIN | POLLERR | POLLHUP);
    const bool w = pfd[i].revents & (POLLOUT | POLLERR | POLLHUP);
    ares_process_fd(chan(channel_), r ? pfd[i].fd : ARES_SOCKET_BAD,
                    w ? pfd[i].fd : ARES_SOCKET_BAD);
  }
  if (!any) ares_process_fd(chan(channel_), ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts
}

void Resolver::resolve_initial(int64_t wait_ns) {
  if (!channel_ || entries_.empty()) return;
  const int64_t end = mono_now_ns() + wait_ns;
  const auto all_answered = [&] {
    return std::all_of(entries_.begin(), entries_.end(),
                       [](const std::unique_ptr<Entry>& e) { return e->answered; });
  };
  while (!all_answered() && mono_now_ns() < end) step(20);
  // Pools none of whose names answered yet are empty until they do.
  for (auto& p : pools_)
    if (!p->ever) republish(*p);
}

void Resolver::start(Post post) {
  if (!channel_ || entries_.empty() || thread_.joinable()) return;
  post_ = std::move(post);
  threaded_ = true;
  thread_ = std::thread([this] {
    while (!stop_.load(std::memory_order_relaxed)) step(100);
  });
}

void Resolver::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace ringpoll::proxy
