#pragma once
// HealthChecks<P>: ringpoll-proxy's active health checks. For every pool with a check
// interval, one coroutine on shard 0 connects to each upstream in turn (within the
// check timeout) and reports the result to the pool (Pool::probe_result, apps/proxy/pool.h),
// which ejects an upstream after fail_threshold failures and restores it on a success;
// the relay (apps/proxy/relay.h) then skips an ejected upstream. ProxyServer
// (apps/proxy/proxy.h) starts the checks of each configuration generation: a check ends
// when its generation is retired (a reload) or at stop().
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "apps/proxy/pool.h"
#include "engine/engine.h"
#include "engine/net.h"

namespace ringpoll::proxy {

template <PollerBackend P>
class HealthChecks {
 public:
  explicit HealthChecks(Engine<P>& e) : e_(e) {}
  HealthChecks(const HealthChecks&) = delete;
  HealthChecks& operator=(const HealthChecks&) = delete;

  // Starts the checks of `pool` on shard 0 when its settings ask for them, until
  // *retired becomes true or stop(). `retired` keeps the pool's generation alive (an
  // aliasing shared_ptr into it). From any thread; a full shard-0 inbox is reported on
  // stderr and the pool goes unchecked.
  void start(Pool* pool, std::shared_ptr<const std::atomic<bool>> retired) {
    if (pool->settings().check_interval_ns <= 0) return;
    auto* start = new Start{this, std::move(retired), pool};
    running_.fetch_add(1);
    const int64_t to = pool->settings().check_timeout_ns;  // how long wait() may wait
    int64_t seen = max_timeout_ns_.load();
    while (seen < to && !max_timeout_ns_.compare_exchange_weak(seen, to)) {
    }
    const bool posted = e_.shard(0).try_post(ShardJob{[](void* arg) {
                                                        auto* c = static_cast<Start*>(arg);
                                                        Engine<P>::current()->sched().spawn(
                                                            c->self->check(c->retired, c->pool));
                                                        delete c;
                                                      },
                                                      start});
    if (!posted) {
      std::fprintf(stderr,
                   "ringpoll-proxy: pool '%s': shard 0's inbox is full; active "
                   "health checks not started\n",
                   pool->settings().name.c_str());
      delete start;
      running_.fetch_sub(1);
    }
  }

  // Every check ends at its next probe or within a sleep slice.
  void stop() noexcept { stopping_.store(true); }

  // After stop(): waits for the checks to end, at most the longest probe timeout and a
  // second (a probe ends by its own timeout). Says on stderr when some did not.
  void wait() {
    const int64_t end = mono_now_ns() + max_timeout_ns_.load() + kSec;
    while (running_.load() > 0 && mono_now_ns() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (running_.load() > 0)
      std::fprintf(stderr, "ringpoll-proxy: shutdown: %d health checks still probing\n",
                   running_.load());
  }

 private:
  struct Start {
    HealthChecks* self;
    std::shared_ptr<const std::atomic<bool>> retired;
    Pool* pool;
  };

  Task<void> check(std::shared_ptr<const std::atomic<bool>> retired, Pool* pool) {
    Scheduler<P>& sched = Engine<P>::current()->sched();
    const PoolSettings& ps = pool->settings();
    while (!retired->load() && !stopping_.load()) {
      // This round's set (names may change it between rounds).
      const std::shared_ptr<const Members> set = pool->members();
      for (size_t i = 0; i < set->ups.size() && !retired->load(); ++i) {
        Upstream& u = *set->ups[i];
        std::unique_ptr<TcpStream<P>> c;
        const Status st =
            co_await TcpStream<P>::connect(sched, u.address(), ps.check_timeout_ns, &c);
        if (st.ok()) (void)co_await c->close();
        pool->probe_result(&u, st.ok(), mono_now_ns());
      }
      // The interval in slices, so that a reload or shutdown ends this within one.
      const int64_t next = mono_now_ns() + ps.check_interval_ns;
      for (int64_t now = mono_now_ns(); now < next && !retired->load() && !stopping_.load();
           now = mono_now_ns())
        co_await sched.sleep_for(std::min(next - now, kSliceNs));
    }
    running_.fetch_sub(1);  // not in a destructor: a frame destroyed unfinished must not touch this
  }

  Engine<P>& e_;
  std::atomic<bool> stopping_{false};
  // Checks still running; wait() waits for them at most the longest probe timeout (and a
  // sleep slice).
  std::atomic<int> running_{0};
  std::atomic<int64_t> max_timeout_ns_{0};
  static constexpr int64_t kSliceNs = 100'000'000;  // how soon a sleeping check sees a stop
  static constexpr int64_t kSec = 1'000'000'000;
};

}  // namespace ringpoll::proxy
