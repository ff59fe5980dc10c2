#pragma once
// ProxyServer<P>: ringpoll-proxy's engine-side half — its listeners, its configuration
// generations and reload, and the wiring of the parts that do the work:
//
//   listeners      one TcpServer per TCP listener (a listener per shard by SO_REUSEPORT),
//                  each client handed to relay_client (apps/proxy/relay.h) on the shard
//                  that accepted it; UDP listeners on kernel sockets (apps/proxy/udp.h) or
//                  a packet path (apps/proxy/udp_bypass.h)
//   health checks  HealthChecks (apps/proxy/health.h), started for each generation
//   names          Resolver (apps/proxy/resolver.h), one per generation whose pools name
//                  upstreams: resolved once before the generation serves, then on its
//                  thread; each new set is installed on every shard through its inbox
//   admin page     AdminEndpoint (apps/proxy/admin.h), on shard 0, when asked for
//   metrics        Metrics (apps/proxy/metrics.h), which every part counts into
//   access log     AccessLog (apps/proxy/access_log.h) for the HTTP listeners, when
//                  configured: opened by start(), kept across reloads
//
// Configuration generations: reload() builds new pools for new connections; established
// ones keep the generation they started with (a shared_ptr held by their Route) and drain
// on it; the old generation's health checks end.
#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "apps/proxy/access_log.h"
#include "apps/proxy/admin.h"
#include "apps/proxy/health.h"
#include "apps/proxy/http_metrics.h"
#include "apps/proxy/http_move.h"
#include "apps/proxy/http_relay.h"
#include "apps/proxy/http_upstreams.h"
#include "apps/proxy/metrics.h"
#include "apps/proxy/pool.h"
#include "apps/proxy/relay.h"
#include "apps/proxy/relay_move.h"
#include "apps/proxy/relay_record.h"
#include "apps/proxy/settings.h"
// Windows seam: pool names are resolved with c-ares, which the mingw-w64 build has not;
// tuning/config.cc refuses names (and proxy.resolvers) there, naming the key, so no
// generation has a resolver. RINGPOLL_PROXY_NAMES marks the places.
#ifdef _WIN32
#define RINGPOLL_PROXY_NAMES 0
#else
#define RINGPOLL_PROXY_NAMES 1
#include "apps/proxy/resolver.h"
#endif
#include "apps/proxy/udp.h"
#include "engine/engine.h"
#include "engine/handover.h"
#include "engine/net.h"
#include "engine/server.h"

namespace ringpoll::proxy {

template <PollerBackend P>
class ProxyServer {
 public:
  ProxyServer(Engine<P>& e, ProxySettings s)
      : e_(e), metrics_(e.size()), http_metrics_(e.size()), checks_(e) {
    current_ = make_generation(std::move(s));
  }
  // A started proxy that was not shut down is shut down here with no drain (listeners
  // close, connections are aborted, health checks and admin requests end) before its
  // memory goes. That needs the engine running; destroyed after Engine::stop() without
  // shutdown(), the proxy's tasks would be left parked on the shards pointing at freed
  // memory, so that stops the process with a message saying so instead.
  ~ProxyServer() {
    finish_adopting(0);
    if (!started_ || shut_down_) return;
    detail::require_running_for_teardown(e_, "ProxyServer");
    (void)shutdown(0);
  }
  ProxyServer(const ProxyServer&) = delete;
  ProxyServer& operator=(const ProxyServer&) = delete;

  // UDP listeners on a packet path (DPDK, AF_XDP: apps/proxy/udp_bypass.h) instead of
  // kernel sockets: starts one in *out, or returns the error (with *why) after stopping
  // what it started. Set before start(); unset, UDP listeners use the kernel path.
  using UdpPathStart =
      std::function<Status(Engine<P>&, Metrics&, UdpPickFn, const ListenerSettings&,
                           const ProxySettings&, std::unique_ptr<UdpService>*, std::string*)>;
  void set_udp_path(UdpPathStart f) { udp_path_ = std::move(f); }

  // Listening sockets handed over by the process this one upgrades (engine/handover.h).
  // Set before start(): a TCP listener of the same name on the same address (a configured
  // port 0 takes the handed one's port) adopts them instead of binding, and so does the
  // admin endpoint (the entry with an empty name, which no listener can have). Once both
  // started, close_unused_inherited() closes the rest (their listener was removed or moved).
  void inherit(std::vector<HandedListener> ls) { inherited_ = std::move(ls); }
  void close_unused_inherited() {
    for (HandedListener& h : inherited_)
      for (int fd : h.fds) detail::close_socket(fd);
    inherited_.clear();
  }
  size_t inherited_listeners() const noexcept { return adopted_; }
  // This process's TCP listeners, to hand to a new one (the sockets stay this proxy's).
  std::vector<HandedListener> handover() const {
    std::vector<HandedListener> v;
    auto gen = generation();
    for (size_t i = 0; i < servers_.size(); ++i)
      if (servers_[i]) v.push_back({gen->s.listeners[i].name, servers_[i]->listening_fds()});
    if (admin_) v.push_back({"", admin_->listening_fds()});
    return v;
  }

  // ---- established connections across an upgrade (apps/proxy/relay_move.h, http_move.h) ----

  // The listeners whose plain relays this process takes from its predecessor: the plain
  // TCP ones (not TLS, not HTTP) it took the sockets of (so both run one backend family,
  // whose file flags the moved sockets carry, as the listeners' do). And those whose HTTP
  // keep-alive clients it takes: its plain HTTP listeners it took the sockets of.
  std::vector<std::string> movable_listeners() const { return took_over_; }
  std::vector<std::string> http_movable_listeners() const { return took_over_http_; }

  // What an upgrade moved and left to drain, by kind; error: the channel failed (what was
  // not sent by then drains).
  struct UpgradeMoves {
    MoveCounts l4, http;
    std::string error;
    uint64_t moved() const { return l4.moved + http.moved; }
    uint64_t draining() const { return l4.draining + http.draining; }
  };
  // In the old process, once the successor serves: moves this process's plain relays of
  // `l4` and its plain HTTP clients of `http` to it over `sock` (each shard in turn). The
  // others, and those that could not move, drain. Counts them (the admin page too).
  UpgradeMoves move_connections_to(int sock, const std::vector<std::string>& l4,
                                   const std::vector<std::string>& http) {
    const uint64_t before = live_connections();
    UpgradeMoves total;
    for (size_t i = 0; i < e_.size(); ++i) {
      MoveCounts c, h;
      c.error = total.error;  // a broken channel moves nothing more
      (void)Engine<P>::try_run_task(e_.shard(i), [&] { return move_relays<P>(sock, l4, &c); });
      h.error = c.error;
      (void)Engine<P>::try_run_task(e_.shard(i),
                                    [&] { return move_http_clients<P>(sock, http, &h); });
      total.error = h.error;
      for (auto [t, k] : {std::pair{&total.l4, &c}, std::pair{&total.http, &h}}) {
        t->moved += k->moved;
        t->stayed += k->stayed;
        t->present += k->present;
        t->slow_to_park += k->slow_to_park;
        t->ending += k->ending;
        t->reads_not_stopped += k->reads_not_stopped;
        t->late_moves += k->late_moves;
      }
    }
    // Every HTTP client is one of the listeners' connections; the rest are L4 relays.
    const auto left = [](uint64_t all, uint64_t gone) { return all > gone ? all - gone : 0; };
    total.http.draining = left(total.http.present, total.http.moved);
    total.l4.draining = left(left(before, total.http.present), total.l4.moved);
    metrics_.set_handover(
        {total.l4.moved, total.l4.draining, total.http.moved, total.http.draining});
    return total;
  }
  // The end message to the successor, with the counts (adopt_loop reads them back).
  static std::string moves_note(const UpgradeMoves& m) {
    return "moved " + std::to_string(m.moved()) + " drained " + std::to_string(m.draining()) +
           " (l4 moved " + std::to_string(m.l4.moved) + " drained " +
           std::to_string(m.l4.draining) + ", http moved " + std::to_string(m.http.moved) +
           " drained " + std::to_string(m.http.draining) + ")";
  }

  // In the new process, once it serves: takes the relays its predecessor moves over
  // `sock` (the upgrade channel, which this closes at the end), in a thread of its own,
  // until the predecessor's end message (or its exit). `say` gets the line to log then,
  // and one for each connection that could not be taken.
  void adopt_from(int sock, std::function<void(const std::string&)> say) {
    adopt_stop_.store(false);
    adopt_thread_ = std::thread([this, sock, say = std::move(say)] { adopt_loop(sock, say); });
  }
  // Waits at most wait_ns for the predecessor's moves to end, then stops taking them (a
  // record not yet begun then stays with the predecessor, which drains it).
  void finish_adopting(int64_t wait_ns) {
    if (!adopt_thread_.joinable()) return;
    const int64_t end = mono_now_ns() + wait_ns;
    while (!adopt_done_.load() && mono_now_ns() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    adopt_stop_.store(true);
    adopt_thread_.join();
  }
  uint64_t adopted() const noexcept { return adopted_conns_.load(); }

  // Starts the listeners and the active health checks. From a thread outside the engine,
  // after the engine started. Errors name the listener and the failed step.
  Status start(std::string* why) {
    started_ = true;  // a failed start may have started some listeners: shutdown() ends them
    auto gen = generation();
    const bool any_http = std::any_of(gen->s.listeners.begin(), gen->s.listeners.end(),
                                      [](const ListenerSettings& l) { return l.http; });
    if (any_http && gen->s.access_log.enabled() && !access_log_) {
      std::string w;
      access_log_ = AccessLog::open(gen->s.access_log, e_.size(), &w);
      if (!access_log_) {
        if (why) *why = w;
        return Status(Errc::kInvalidArgument);
      }
    }
    for (size_t i = 0; i < gen->s.listeners.size(); ++i) {
      const ListenerSettings& l = gen->s.listeners[i];
      if (l.udp) {
        UdpPickFn pick = [this, i, name = l.name] { return udp_pick(i, name); };
        std::unique_ptr<UdpService> u;
        std::string w;
        Status st;
        if (udp_path_) {
          st = udp_path_(e_, metrics_, std::move(pick), l, gen->s, &u, &w);
        } else {
          auto k = std::make_unique<UdpListener<P>>(e_, metrics_, std::move(pick));
          st = k->start(l.listen, gen->s.reuseport, &w);
          if (!st.ok()) k->shutdown(1'000'000'000);
          u = std::move(k);
        }
        if (!st.ok()) {
          if (why) *why = "listener '" + l.name + "' (udp): " + (w.empty() ? st.message() : w);
          return st;
        }
        udp_.push_back(std::move(u));
        servers_.push_back(nullptr);
        continue;
      }
      std::vector<int> inherit = take_inherited(l.name, l.listen);
      adopted_ += inherit.empty() ? 0 : 1;
      if (!inherit.empty() && !l.tls) (l.http ? took_over_http_ : took_over_).push_back(l.name);
      std::unique_ptr<TcpServer<P>> srv;
      if (Status st = start_tcp(gen, i, std::move(inherit), &srv, why); !st.ok()) return st;
      servers_.push_back(std::move(srv));
      udp_.push_back(nullptr);
    }
    start_checkers(gen);
    start_resolver(gen);
    return Status();
  }

  // The bound address of listener i (the real port when 0 was asked for).
  SocketAddress address(size_t i) const {
    return servers_.at(i) ? servers_[i]->address() : udp_.at(i)->address();
  }
  size_t listeners() const { return servers_.size(); }

  // Serves Prometheus text at GET /metrics (and "ok" at GET /healthz): AdminEndpoint
  // (apps/proxy/admin.h), on shard 0 only, so shutdown() ends its requests.
  // Its requests are parsed with the limits of the generation current now.
  Status start_admin(const SocketAddress& at, std::string* why) {
    started_ = true;
    admin_ = std::make_unique<AdminEndpoint<P>>(
        e_, metrics_, [this] { return pools(); }, generation()->s.http_limits);
    admin_->set_extra([this] {
      return http_metrics_.render(http_slot_names()) +
             (access_log_ ? access_log_->render() : std::string());
    });
    const Status st = admin_->start(at, why, take_inherited("", at));
    if (st.ok()) admin_address_ = admin_->address();
    return st;
  }
  SocketAddress admin_address() const { return admin_address_; }

  // New settings for new connections; established ones finish on the generation they
  // started with. TCP listeners may be added, removed and moved (the same name on a new
  // address): the new ones bind first, and a bind that fails fails the whole reload,
  // changing nothing (*why names the listener). Then the removed and moved-away ones stop
  // listening: what their queues hold is accepted and served, then they close
  // (TcpServer::stop_listening); their connections drain as the others do. UDP listeners
  // change on restart only. Kept listeners take the new admission limits. *changes (if
  // given) says what happened to the listeners, e.g. "added 'b'; moved 'a'".
  bool reload(ProxySettings s, std::string* why, std::string* changes = nullptr) {
    std::lock_guard<std::mutex> adopting(servers_mu_);  // servers_ changes below
    // Listeners earlier reloads removed, now without connections, are done with.
    std::erase_if(retired_, [](const std::unique_ptr<TcpServer<P>>& r) {
      if (r->live() > 0) return false;
      (void)r->shutdown(0);
      return true;
    });
    auto old = generation();
    const ProxySettings& o = old->s;
    // Listener i of the old generation is kept by new listener j when it has the same name,
    // kind and address (as configured, or as bound: a configured port 0 got a real one).
    const auto same_place = [&](size_t i, const ListenerSettings& b) {
      const std::string to = b.listen.to_string();
      return o.listeners[i].name == b.name && o.listeners[i].udp == b.udp &&
             (o.listeners[i].listen.to_string() == to || address(i).to_string() == to);
    };
    std::vector<int> keep(s.listeners.size(), -1);  // by new listener: the old one it keeps
    std::vector<bool> kept(o.listeners.size(), false);
    for (size_t j = 0; j < s.listeners.size(); ++j) {
      for (size_t i = 0; i < o.listeners.size() && keep[j] < 0; ++i) {
        if (kept[i] || !same_place(i, s.listeners[j])) continue;
        keep[j] = static_cast<int>(i);
        kept[i] = true;
      }
      if (keep[j] < 0 && s.listeners[j].udp) {
        *why = "UDP listener '" + s.listeners[j].name + "' (" + s.listeners[j].listen.to_string() +
               ") is new or changed; UDP listeners change on restart only";
        return false;
      }
    }
    for (size_t i = 0; i < o.listeners.size(); ++i) {
      if (kept[i]) continue;
      if (o.listeners[i].udp) {
        *why = "UDP listener '" + o.listeners[i].name + "' (" + o.listeners[i].listen.to_string() +
               ") is removed or changed; UDP listeners change on restart only";
        return false;
      }
      // A new listener cannot bind where a leaving one still listens.
      for (size_t j = 0; j < s.listeners.size(); ++j) {
        if (keep[j] >= 0 || s.listeners[j].listen.port() == 0) continue;
        if (s.listeners[j].listen.to_string() != address(i).to_string()) continue;
        *why = "listener '" + s.listeners[j].name + "' would listen on " + address(i).to_string() +
               ", where listener '" + o.listeners[i].name +
               "' listens until this reload removes it; do it in two reloads";
        return false;
      }
    }
    if (!(s.access_log == o.access_log)) {
      *why =
          "http.access_log, http.access_log_format and http.access_log_buffer_kib change on "
          "restart only";
      return false;
    }
    const bool has_udp =
        std::any_of(udp_.begin(), udp_.end(), [](const auto& u) { return u != nullptr; });
    if (has_udp && (s.udp_path != o.udp_path || s.udp_port_base != o.udp_port_base ||
                    s.udp_port_count != o.udp_port_count)) {
      *why = std::string(
                 "packet.path, packet.udp_port_base and packet.udp_port_count change on "
                 "restart only (UDP listeners run on ") +
             packet::to_string(o.udp_path) + ")";
      return false;
    }
    auto gen = make_generation(std::move(s));
    const auto& ls = gen->s.listeners;
    // New listeners bind before anything stops. One that fails undoes the others: their
    // listeners stop (a client that got in is served) and nothing else changes.
    std::vector<std::unique_ptr<TcpServer<P>>> fresh(ls.size());
    for (size_t j = 0; j < ls.size(); ++j) {
      if (keep[j] >= 0) continue;
      std::string w;
      if (start_tcp(gen, j, {}, &fresh[j], &w).ok()) continue;
      for (auto& f : fresh) retire(std::move(f));
      gen->retired.store(true);
      *why = w + "; nothing changed";
      return false;
    }
    std::vector<std::unique_ptr<TcpServer<P>>> servers(ls.size());
    std::vector<std::unique_ptr<UdpService>> udp(ls.size());
    std::string added, moved, removed;
    const auto note = [](std::string& list, const std::string& name) {
      list += (list.empty() ? "'" : ", '") + name + "'";
    };
    for (size_t j = 0; j < ls.size(); ++j) {
      if (keep[j] < 0) {
        servers[j] = std::move(fresh[j]);
        bool had = false;
        for (const ListenerSettings& l : o.listeners) had = had || l.name == ls[j].name;
        note(had ? moved : added, ls[j].name);
        continue;
      }
      const auto i = static_cast<size_t>(keep[j]);
      servers[j] = std::move(servers_[i]);
      udp[j] = std::move(udp_[i]);
      if (servers[j]) servers[j]->set_limits(ls[j].limits);
    }
    for (size_t i = 0; i < o.listeners.size(); ++i) {
      if (kept[i]) continue;
      bool stays = false;  // moved: the same name is still there
      for (const ListenerSettings& l : ls) stays = stays || l.name == o.listeners[i].name;
      if (!stays) note(removed, o.listeners[i].name);
    }
    std::vector<std::unique_ptr<TcpServer<P>>> leaving = std::move(servers_);
    {
      std::lock_guard<std::mutex> l(mu_);
      current_ = gen;
    }
    servers_ = std::move(servers);
    udp_ = std::move(udp);
    old->retired.store(true);
    stop_resolver(*old);
    start_checkers(gen);
    start_resolver(gen);
    // Only now do the removed and moved-away listeners stop: what they queued is served.
    for (auto& l : leaving) retire(std::move(l));
    if (changes) {
      changes->clear();
      const std::pair<const char*, const std::string*> lists[] = {
          {"added", &added}, {"moved", &moved}, {"removed", &removed}};
      for (const auto& [what, list] : lists) {
        if (list->empty()) continue;
        *changes += (changes->empty() ? "" : "; ") + std::string(what) + " " + *list;
      }
    }
    reloads_.fetch_add(1);
    return true;
  }

  // Stops accepting, lets connections finish within drain_ns, then aborts what remains.
  // Returns the number aborted.
  // Returns once the proxy's own tasks (health checks, admin requests) have ended too, so
  // the proxy may be destroyed after it while the engine runs on.
  size_t shutdown(int64_t drain_ns) {
    finish_adopting(0);
    shut_down_ = true;
    draining_.store(true, std::memory_order_relaxed);  // HTTP: Connection: close from now
    close_unused_inherited();
    checks_.stop();
    generation()->retired.store(true);
    stop_resolver(*generation());
    if (admin_) admin_->shutdown();  // open admin requests are aborted
    const int64_t end = mono_now_ns() + drain_ns;
    size_t aborted = 0;
    for (auto* list : {&servers_, &retired_}) {
      for (auto& s : *list) {
        if (!s) continue;
        const int64_t left = end - mono_now_ns();
        aborted += s->shutdown(left > 0 ? left : 0);
      }
    }
    // UDP flows have no stream to finish: they end at once.
    for (auto& u : udp_) {
      if (u) (void)u->shutdown(1'000'000'000);
    }
    checks_.wait();
    // The HTTP mode's idle upstream connections close within one sweep tick (100 ms).
    const int64_t sweep_end = mono_now_ns() + 2'000'000'000;
    while (http_sweepers_.load() > 0 && mono_now_ns() < sweep_end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return aborted;
  }

  Metrics& metrics() noexcept { return metrics_; }
  HttpMetrics& http_metrics() noexcept { return http_metrics_; }
  // The access log, when one is open (after start()).
  const AccessLog* access_log() const noexcept { return access_log_.get(); }
  // "listener/route" for each HttpMetrics slot of the current generation.
  std::vector<std::string> http_slot_names() const {
    auto gen = generation();
    std::vector<std::string> v;
    for (const ListenerSettings& l : gen->s.listeners) {
      if (!l.http) continue;
      for (const HttpRoute& r : l.http_settings.routes) v.push_back(l.name + "/" + r.name);
      v.push_back(l.name + "/(none)");
    }
    return v;
  }
  uint64_t reloads() const noexcept { return reloads_.load(); }
  // The pools of the current generation (for the admin page and tests).
  std::vector<const Pool*> pools() const {
    auto gen = generation();
    std::vector<const Pool*> v;
    for (auto& p : gen->pools) v.push_back(p.get());
    return v;
  }

 private:
  struct Generation {
    ProxySettings s;
    std::vector<std::unique_ptr<Pool>> pools;
    std::vector<Pool*> by_listener;
    std::vector<std::vector<SniTarget>> sni_by_listener;
    std::atomic<bool> retired{false};
    // HTTP listeners: the pool of each route, the first HttpMetrics slot, and per shard
    // the idle upstream connections (each listener's own, as their limits are its).
    std::vector<std::vector<Pool*>> route_pools;                          // by listener
    std::vector<size_t> route_slot;                                       // by listener
    std::vector<std::vector<std::unique_ptr<HttpUpstreams<P>>>> http_up;  // [listener][shard]
#if RINGPOLL_PROXY_NAMES
    // The pools' names (null when none has any). Declared last: destroyed first, while
    // the pools it points at are there.
    std::unique_ptr<Resolver> resolver;
#endif
  };

  std::shared_ptr<Generation> make_generation(ProxySettings s) {
    auto g = std::make_shared<Generation>();
    g->s = std::move(s);
    for (const PoolSettings& p : g->s.pools)
      g->pools.push_back(std::make_unique<Pool>(p, e_.size()));
#if RINGPOLL_PROXY_NAMES
    if (std::any_of(g->s.pools.begin(), g->s.pools.end(),
                    [](const PoolSettings& p) { return !p.names.empty(); })) {
      std::vector<Pool*> ps;
      for (auto& p : g->pools) ps.push_back(p.get());
      g->resolver = std::make_unique<Resolver>(ps, g->s.resolvers);
      std::string w;
      if (g->resolver->init(&w)) {
        // Before anything serves on this generation: its first clients find the names
        // resolved when the DNS answers within this.
        g->resolver->resolve_initial(kInitialResolveNs);
      } else {
        std::fprintf(stderr, "ringpoll-proxy: %s; pools with names stay empty\n", w.c_str());
        g->resolver.reset();
      }
    }
#endif
    size_t slot = 0;
    for (const ListenerSettings& l : g->s.listeners) {
      const int k = pool_index(g->s, l.pool);
      g->by_listener.push_back(k >= 0 ? g->pools[static_cast<size_t>(k)].get() : nullptr);
      std::vector<Pool*> rp;
      std::vector<std::unique_ptr<HttpUpstreams<P>>> ups;
      g->route_slot.push_back(slot);
      if (l.http) {
        for (const HttpRoute& r : l.http_settings.routes) {
          const int i = pool_index(g->s, r.pool);
          rp.push_back(i >= 0 ? g->pools[static_cast<size_t>(i)].get() : nullptr);
        }
        slot += l.http_settings.routes.size() + 1;
        for (size_t sh = 0; sh < e_.size(); ++sh)
          ups.push_back(
              std::make_unique<HttpUpstreams<P>>(&l.http_settings, &g->retired, &http_sweepers_));
      }
      g->route_pools.push_back(std::move(rp));
      g->http_up.push_back(std::move(ups));
      std::vector<SniTarget> sni;
      for (const ListenerSettings::SniRoute& r : l.sni) {
        const int j = pool_index(g->s, r.pool);
        if (j >= 0) sni.push_back({r.pattern, g->pools[static_cast<size_t>(j)].get()});
      }
      g->sni_by_listener.push_back(std::move(sni));
    }
    if (slot > kMaxHttpRouteSlots)
      fatal("ringpoll-proxy: more HTTP routes than kMaxHttpRouteSlots");
    return g;
  }
  std::shared_ptr<Generation> generation() const {
    std::lock_guard<std::mutex> l(mu_);
    return current_;
  }

  // Where listener `name` is in generation g (hint: where it was): true with *li.
  static bool find_listener(const Generation& g, size_t hint, const std::string& name, size_t* li) {
    const auto& ls = g.s.listeners;
    if (hint < ls.size() && ls[hint].name == name) {
      *li = hint;
      return true;
    }
    for (size_t k = 0; k < ls.size(); ++k) {
      if (ls[k].name != name) continue;
      *li = k;
      return true;
    }
    return false;
  }

  // What a new UDP flow of listener `name` uses: the current generation's pool (UDP
  // listeners stay across reloads; their place among the listeners may not).
  UdpPick udp_pick(size_t hint, const std::string& name) const {
    auto gen = generation();
    size_t li = hint;
    (void)find_listener(*gen, hint, name, &li);
    UdpPick p;
    p.pool = gen->by_listener[li];
    p.idle_ns = gen->s.udp_idle_ns;
    p.max_flows = gen->s.udp_max_flows;
    p.hold = std::move(gen);
    return p;
  }

  // The handed-over sockets of the listener `name` ("": the admin endpoint) when they
  // listen where it is configured to (`listen`).
  std::vector<int> take_inherited(const std::string& name, const SocketAddress& listen) {
    for (auto it = inherited_.begin(); it != inherited_.end(); ++it) {
      if (it->name != name || it->fds.empty()) continue;
      SocketAddress at;
      at.len = sizeof at.ss;
      getsockname(it->fds[0], reinterpret_cast<sockaddr*>(&at.ss), &at.len);
      // The same address, or the same host when the configured port is 0.
      const std::string got = at.to_string(), want = listen.to_string();
      const auto host = [](const std::string& a) { return a.substr(0, a.rfind(':')); };
      const bool same = listen.port() == 0 ? host(got) == host(want) : got == want;
      if (!same) return {};  // moved: bind anew (start() closes these)
      std::vector<int> fds = std::move(it->fds);
      inherited_.erase(it);
      return fds;
    }
    return {};
  }

  // One client of TCP listener `name` (listener `hint` of generation `born`), on the
  // generation current now; a listener a reload removed (its queue still being served)
  // is no longer in it, and its clients get the generation it was born in.
  Task<void> handle(TcpStream<P>& client, size_t hint, const std::string& name,
                    const std::shared_ptr<Generation>& born) {
    std::shared_ptr<Generation> gen = generation();
    size_t li = hint;
    if (!find_listener(*gen, hint, name, &li)) gen = born;
    const ListenerSettings& l = gen->s.listeners[li];
    if (l.http) {
#if RINGPOLL_PROXY_TLS  // Windows seam: TLS keys are refused there
      if (l.tls)
        return https_client<P>(client, http_route(std::move(gen), li), *l.tls, metrics_,
                               http_metrics_);
#endif
      return http_client<P>(client, http_route(std::move(gen), li), metrics_, http_metrics_);
    }
    Route r;
    r.s = &gen->s;
    r.pool = gen->by_listener[li];
    r.proxy_protocol = gen->s.listeners[li].proxy_protocol;
    r.sni = &gen->sni_by_listener[li];
    r.tls = l.tls.get();
    r.listener = &l.name;
    r.hold = std::move(gen);
    return relay_client(client, std::move(r), metrics_);
  }

  // What a client of HTTP listener li of gen is served with, on the calling shard.
  HttpClientRoute<P> http_route(std::shared_ptr<Generation> gen, size_t li) {
    HttpClientRoute<P> h;
    h.s = &gen->s;
    h.l = &gen->s.listeners[li];
    h.pools = gen->route_pools[li];
    h.upstreams = gen->http_up[li][static_cast<size_t>(Engine<P>::current()->id())].get();
    h.route_slot = gen->route_slot[li];
    h.draining = &draining_;
    h.log = access_log_.get();
    h.hold = std::move(gen);
    return h;
  }

  // Open connections of every TCP listener (those a reload retired too).
  uint64_t live_connections() const {
    uint64_t n = 0;
    for (auto* list : {&servers_, &retired_})
      for (auto& s : *list) n += s ? s->live() : 0;
    return n;
  }

  // The adoption thread (adopt_from): each record with its descriptors becomes a connection
  // of its listener's server: a relay's two carried on by relay_adopted, an HTTP client's
  // one by http_client.
  void adopt_loop(int sock, const std::function<void(const std::string&)>& say) {
    uint64_t taken = 0, taken_http = 0, lost = 0;
    std::string end_note;
    bool closing = false;
    for (;;) {
      // Told to stop: the predecessor's next send fails (EPIPE: that relay stays there and
      // drains), and what it sent already is still taken — each record it sent is a relay
      // it let go of.
      if (!closing && adopt_stop_.load()) {
        closing = true;
        (void)::shutdown(sock, SHUT_RD);
      }
      std::string text, why;
      std::vector<int> fds;
      const Status st = recv_connection(sock, closing ? 0 : 100, &text, &fds, &why);
      if (st.is(Errc::kTimeout)) {
        if (closing) break;
        continue;
      }
      if (st.is(Errc::kEof)) {
        end_note = text;
        break;
      }
      const bool http = st.ok() && is_http_record(text);
      const size_t want = http ? 1 : 2;
      RelayRecord rec;
      HttpClientRecord hrec;
      bool ok =
          st.ok() && fds.size() == want &&
          (http ? decode_http_record(text, &hrec, &why) : decode_relay_record(text, &rec, &why));
      if (st.ok() && fds.size() != want)
        why = "a connection record with " + std::to_string(fds.size()) + " descriptors, not " +
              std::to_string(want);
      if (!ok) {
        for (int fd : fds) ::close(fd);
      } else if (http) {
        ok = adopt_http_one(std::move(hrec), fds[0], &why);  // closes it when it fails
      } else {
        ok = adopt_one(std::move(rec), fds, &why);  // closes both when it fails
      }
      if (!ok) {
        ++lost;
        say("upgrade: a moved connection could not be taken: " + why);
        if (!st.ok()) break;  // the channel is broken
        continue;
      }
      ++(http ? taken_http : taken);
      adopted_conns_.fetch_add(1);
    }
    ::close(sock);
    // "moved M drained D (l4 moved a drained b, http moved c drained d)"; a predecessor
    // without HTTP moves sent the first two only: all of those are L4.
    uint64_t moved = 0, drained = 0;
    Metrics::Handover h;
    const int got =
        std::sscanf(end_note.c_str(),
                    "moved %" SCNu64 " drained %" SCNu64 " (l4 moved %" SCNu64 " drained %" SCNu64
                    ", http moved %" SCNu64 " drained %" SCNu64,
                    &moved, &drained, &h.l4_moved, &h.l4_drained, &h.http_moved, &h.http_drained);
    if (got == 2) h = {moved, drained, 0, 0};
    if (got == 2 || got == 6) metrics_.set_predecessor(h);
    say("upgrade: took over " + std::to_string(taken + taken_http) + " established connections" +
        (lost ? " (" + std::to_string(lost) + " could not be taken)" : std::string()) +
        (end_note.empty() ? std::string("; the predecessor ended without its counts")
                          : "; the predecessor: " + end_note) +
        "; taken here: l4 " + std::to_string(taken) + ", http " + std::to_string(taken_http));
    adopt_done_.store(true);
  }

  // One moved relay: a connection of its listener's server (fds: client, upstream). Takes
  // both descriptors: false (*why) when they were closed instead.
  bool adopt_one(RelayRecord rec, const std::vector<int>& fds, std::string* why) {
    std::lock_guard<std::mutex> lock(servers_mu_);
    auto gen = generation();
    size_t li = 0;
    if (!find_listener(*gen, 0, rec.listener, &li) || !servers_[li] || gen->s.listeners[li].http ||
        gen->s.listeners[li].tls) {
      *why = "no plain TCP listener '" + rec.listener + "' here";
      for (int fd : fds) ::close(fd);
      return false;
    }
    const int k = pool_index(gen->s, rec.pool);
    Pool* pool = k >= 0 ? gen->pools[static_cast<size_t>(k)].get() : nullptr;
    const int up = fds[1];
    auto h = [this, li, pool, gen, rec = std::move(rec), up](TcpStream<P>& c,
                                                             ConnContext<P>) mutable {
      Route r;
      r.s = &gen->s;
      r.pool = pool;
      r.listener = &gen->s.listeners[li].name;
      r.hold = gen;
      return relay_adopted(c, up, std::move(r), std::move(rec), metrics_);
    };
    if (!servers_[li]->adopt_connection(fds[0], std::move(h))) {
      ::close(up);
      *why = "listener '" + gen->s.listeners[li].name + "' is shutting down";
      return false;
    }
    return true;
  }

  // One moved HTTP client: a connection of its listener's server, served by http_client
  // from the record's bytes and deadline. Takes the descriptor: false (*why) when it was
  // closed instead.
  bool adopt_http_one(HttpClientRecord rec, int fd, std::string* why) {
    std::lock_guard<std::mutex> lock(servers_mu_);
    auto gen = generation();
    size_t li = 0;
    if (!find_listener(*gen, 0, rec.listener, &li) || !servers_[li] || !gen->s.listeners[li].http ||
        gen->s.listeners[li].tls) {
      *why = "no plain HTTP listener '" + rec.listener + "' here";
      ::close(fd);
      return false;
    }
    auto h = [this, li, gen, rec = std::move(rec)](TcpStream<P>& c, ConnContext<P>) mutable {
      HttpResume from;
      from.adopted = true;
      from.bytes = std::move(rec.bytes);
      from.deadline_left_ns = rec.deadline_left_ns;
      return http_client<P>(c, http_route(gen, li), metrics_, http_metrics_, std::move(from));
    };
    if (!servers_[li]->adopt_connection(fd, std::move(h))) {
      *why = "listener '" + gen->s.listeners[li].name + "' is shutting down";
      return false;
    }
    return true;
  }

  // TCP listener i of generation gen, started in *out (on handed-over sockets, or bound).
  Status start_tcp(const std::shared_ptr<Generation>& gen, size_t i, std::vector<int> inherit,
                   std::unique_ptr<TcpServer<P>>* out, std::string* why) {
    const ListenerSettings& l = gen->s.listeners[i];
    if (const std::string mix = backend_mix(inherit); !mix.empty()) {
      for (int fd : inherit) detail::close_socket(fd);  // our copies; the old process keeps its own
      if (why) *why = "listener '" + l.name + "': " + mix;
      return Errc::kInvalidArgument;
    }
    typename TcpServer<P>::Options o;
    o.inherit_fds = std::move(inherit);
    o.listen.reuseport = gen->s.reuseport;
    o.listen.allow_shared_port = gen->s.allow_shared_port;
    o.listen.backlog = gen->s.backlog;
    o.nodelay = gen->s.nodelay;
    o.limits = l.limits;
    static_assert(static_cast<size_t>(ProxyError::kRefusedGone) -
                      static_cast<size_t>(ProxyError::kRefusedConnections) ==
                  static_cast<size_t>(Refusal::kGone));
    o.on_refuse = [this](Refusal r) {
      ShardMetrics& m = metrics_.shard(static_cast<size_t>(Engine<P>::current()->id()));
      m.error(static_cast<ProxyError>(static_cast<size_t>(ProxyError::kRefusedConnections) +
                                      static_cast<size_t>(r)));
    };
    auto srv = std::make_unique<TcpServer<P>>(e_, o);
    std::string w;
    // The listener is found by name in the generation current when a client arrives;
    // one a reload removed serves what was queued on the generation it was born in.
    const Status st = srv->start(
        l.listen,
        [this, i, name = l.name, born = gen](TcpStream<P>& c) { return handle(c, i, name, born); },
        &w);
    if (!st.ok()) {
      if (why) *why = "listener '" + l.name + "': " + (w.empty() ? st.message() : w);
      return st;
    }
    *out = std::move(srv);
    return Status();
  }

  // Sockets handed over by the process this one upgrades share their file flags with it:
  // a readiness backend needs O_NONBLOCK on the listener, io_uring completion mode needs it
  // off. The old process set them for its backend; a successor of the other family would
  // turn them over under it (its accepts would then block its shard, or fail with EAGAIN).
  // What is wrong, or "" when the families match.
  static std::string backend_mix(const std::vector<int>& handed) {
    for (int fd : handed) {
      const int fl = fcntl(fd, F_GETFL);
      if (fl < 0 || ((fl & O_NONBLOCK) != 0) != !P::kCompletion) {
        return std::string("the old process runs ") +
               (P::kCompletion ? "a readiness backend" : "io_uring completion mode") +
               " and this one " +
               (P::kCompletion ? "io_uring completion mode" : "a readiness backend") +
               "; the two share the listening sockets' flags, so an upgrade cannot change the "
               "backend family (restart instead)";
      }
    }
    return "";
  }

  // A TCP listener a reload removed or moved away (or a new one a failed reload undoes):
  // it stops listening (serving what it queued); its connections drain, and shutdown()
  // ends it with the others.
  void retire(std::unique_ptr<TcpServer<P>> srv) {
    if (!srv) return;
    srv->stop_listening();
    retired_.push_back(std::move(srv));
  }

  // The generation's resolver thread: each set it publishes is installed on every shard
  // by a job in the shard's inbox (a full inbox is retried for a second, then reported:
  // that shard keeps its previous set until the next change).
  void start_resolver([[maybe_unused]] const std::shared_ptr<Generation>& gen) {
#if RINGPOLL_PROXY_NAMES
    if (!gen->resolver) return;
    std::weak_ptr<Generation> weak = gen;
    gen->resolver->start([this, weak](Pool* p, std::shared_ptr<const Members> m) {
      std::shared_ptr<Generation> hold = weak.lock();
      if (!hold) return;
      for (size_t i = 0; i < e_.size(); ++i) {
        const auto job = [p, m, hold, i] { p->install(static_cast<int>(i), m); };
        int tries = 0;
        while (!Engine<P>::post(e_.shard(i), job)) {
          if (++tries > 1000 || !e_.shard(i).serving()) {
            std::fprintf(stderr,
                         "ringpoll-proxy: pool '%s': shard %zu's inbox stayed full; it keeps "
                         "its previous upstreams\n",
                         p->settings().name.c_str(), i);
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
    });
#endif
  }
  static void stop_resolver([[maybe_unused]] Generation& g) {
#if RINGPOLL_PROXY_NAMES
    if (g.resolver) g.resolver->stop();
#endif
  }

  void start_checkers(const std::shared_ptr<Generation>& gen) {
    for (auto& p : gen->pools)
      checks_.start(p.get(), std::shared_ptr<const std::atomic<bool>>(gen, &gen->retired));
  }

  static constexpr int64_t kInitialResolveNs = 2'000'000'000;
  Engine<P>& e_;
  Metrics metrics_;
  HttpMetrics http_metrics_;
  // Declared before the listeners: destroyed after them, so no client still writes to it.
  std::unique_ptr<AccessLog> access_log_;
  std::atomic<int> http_sweepers_{0};  // HttpUpstreams sweepers running (all generations)
  HealthChecks<P> checks_;
  mutable std::mutex mu_;
  std::shared_ptr<Generation> current_;
  std::vector<std::unique_ptr<TcpServer<P>>> servers_;  // by listener; null: a UDP one
  std::vector<std::unique_ptr<UdpService>> udp_;        // by listener; null: a TCP one
  std::vector<std::unique_ptr<TcpServer<P>>> retired_;  // removed by a reload, draining
  UdpPathStart udp_path_;
  std::vector<HandedListener> inherited_;    // until close_unused_inherited()
  size_t adopted_ = 0;                       // listeners started on handed-over sockets
  std::unique_ptr<AdminEndpoint<P>> admin_;  // shard 0 only
  SocketAddress admin_address_;
  std::atomic<uint64_t> reloads_{0};
  std::atomic<bool> draining_{false};        // shutdown() began (read by HTTP connections)
  std::vector<std::string> took_over_;       // plain TCP listeners started on handed sockets
  std::vector<std::string> took_over_http_;  // plain HTTP listeners started on handed sockets
  std::mutex servers_mu_;                    // servers_ against the adoption thread
  std::thread adopt_thread_;
  std::atomic<bool> adopt_stop_{false}, adopt_done_{false};
  std::atomic<uint64_t> adopted_conns_{0};
  bool started_ = false;    // start() or start_admin() ran (controlling thread)
  bool shut_down_ = false;  // shutdown() ran
};

}  // namespace ringpoll::proxy
