#pragma once
// The state the two pumps of one relayed connection share (apps/proxy/relay.h for plain
// TCP, apps/proxy/tls_relay.h when either side speaks TLS): the joiner that lets the
// handler wait for the pump it spawned, the end-both-directions switch, a direction's
// pooled copy buffer, and the gauge of open connections.
#include <algorithm>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "apps/proxy/buffer_pool.h"
#include "apps/proxy/metrics.h"
#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/net.h"

namespace ringpoll::proxy::relay_detail {

// Lets the handler wait for the pump it spawned.
template <PollerBackend P>
struct Joiner {
  Scheduler<P>* sched = nullptr;
  TaskNode node{};
  bool done = false;
  bool waiting = false;
  void finish() noexcept {
    done = true;
    if (waiting) sched->make_ready(&node);
  }
  struct Awaiter {
    Joiner* j;
    bool await_ready() const noexcept { return j->done; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      j->node.handle = h;
      j->waiting = true;
    }
    void await_resume() const noexcept {}
  };
  Awaiter wait() noexcept { return Awaiter{this}; }
};

// What a direction carries besides its bytes in flight: bytes read but not yet written
// (a relay adopted from the previous process, or one whose move was called off after its
// received-ahead data was taken out), and its end of stream.
struct Carry {
  std::vector<std::byte> pending;  // written to the sink before the next read
  bool eof_pending = false;        // the source's end of stream came: after `pending`, FIN
  bool ended = false;              // the source reached its end of stream (FIN sent on)
};

// Where a plain L4 relay came from, for the record that moves it to an upgrade's successor
// (apps/proxy/relay_record.h): listener, pool and upstream by name (null: it stays here).
// Views: into the configuration generation and the pool's upstream the relay holds (an
// accepted client), or into the record it was adopted with (relay_adopted).
struct RelayOrigin {
  std::string_view listener;
  std::string_view pool;
  std::string_view upstream;
};

// The state both pumps of one connection share.
//
// Parking, for a move (apps/proxy/relay_move.h): `parking` asks each pump to stop at the
// top of its loop, between two reads, with no operation in flight; a pump that waits in a
// read is woken by an expired read deadline (the read takes nothing then). Parked pumps
// wait at the gate until the mover decides: resume() (the relay goes on here) or
// moved_away() (both descriptors and the carried state went to the successor: the pumps end
// without touching the sockets). Transitions, on the shard's thread only:
//
//   running ──ask_park──▶ parking ──(parked == running)──▶ settled ──resume──▶ running
//                                                               └──moved_away──▶ ended
//
// Hibernating (apps/proxy/relay.h, proxy.hibernate_after_ms) parks the same way, asked by
// the relay itself: a pump whose read found nothing moving either way for hibernate_ns
// asks (ask_hibernate); once every pump still running has parked, the gates open with
// `hibernated` set and the pumps end without touching the sockets (relay() then returns
// RelayEnd::kHibernated and the caller waits with no pump task at all). No relay starts
// to hibernate while an upgrade moves relays on its shard (moves_running()).
template <PollerBackend P>
struct Relay {
  TcpStream<P>* client;
  TcpStream<P>* upstream;
  ShardMetrics* m;
  int64_t idle_ns;  // 0: none
  int64_t last_activity;
  bool failed = false;
  const RelayOrigin* origin = nullptr;   // set while the relay may move
  Carry* carry[2] = {nullptr, nullptr};  // client → upstream, upstream → client
  Scheduler<P>* sched = nullptr;
  int running = 0;  // pumps not ended
  int parked = 0;
  bool parking = false;
  bool was_moved = false;
  uint32_t pokes = 0;  // read deadlines expired by ask_park (a pump then puts its own back)
  TaskNode* gate[2] = {nullptr, nullptr};
  bool upstream_reset = false;  // the upstream reset the connection (outlier detection)
  // Hibernation: after hibernate_ns (0: never) with nothing moving, counted from the later
  // of the last activity and quiet_from (the relay's start: a relay that just woke does not
  // fall asleep at once). pinned: directions whose state a hibernation cannot keep (a bulk
  // direction in completion mode reads into its own buffer, off the ring).
  int64_t hibernate_ns = 0;
  int64_t quiet_from = 0;
  int pinned = 0;
  bool hibernating = false;  // the parking under way was asked by ask_hibernate
  bool hibernated = false;   // the gates opened for a hibernation: the pumps end
  Relay(TcpStream<P>* c, TcpStream<P>* u, ShardMetrics* mm, int64_t idle)
      : client(c), upstream(u), m(mm), idle_ns(idle), last_activity(mono_now_ns()) {
    quiet_from = last_activity;
  }

  // The read deadline a pump arms before it reads: the idle timeout's, or the hibernation's
  // if earlier; 0 when neither applies.
  int64_t read_deadline() const noexcept {
    int64_t d = idle_ns > 0 ? last_activity + idle_ns : 0;
    if (hibernate_ns > 0 && pinned == 0 && !moves_running()) {
      const int64_t h = std::max(last_activity, quiet_from) + hibernate_ns;
      if (d == 0 || h < d) d = h;
    }
    return d;
  }
  // Quiet long enough, nothing carried, nothing pinned, no move under way.
  bool hibernation_due(int64_t now) const noexcept {
    if (hibernate_ns <= 0 || pinned > 0 || parking || failed || moves_running()) return false;
    for (const Carry* c : carry)
      if (c && (!c->pending.empty() || c->eof_pending)) return false;
    return now >= std::max(last_activity, quiet_from) + hibernate_ns;
  }
  // A read timed out before the idle deadline: hibernate if due; if the hibernation's time
  // has come but it may not start (the other pump asked already, or a carried byte), the
  // next deadline counts from now, so that no pump re-arms a deadline already past.
  void hibernate_or_wait(int64_t now) {
    if (hibernation_due(now)) {
      ask_hibernate();
    } else if (hibernate_ns > 0 && now >= std::max(last_activity, quiet_from) + hibernate_ns) {
      quiet_from = now;
    }
  }
  // Asks both pumps to park for a hibernation (as ask_park does for a move).
  void ask_hibernate() {
    if (parking || failed) return;
    hibernating = true;
    ask_park();
  }
  // Called off (a move begins): the pumps parked so far go on, the others do not park.
  void cancel_hibernation() {
    if (!hibernating) return;
    hibernating = false;
    resume();
  }
  // Every pump still running has parked for a hibernation (or a pump ended meanwhile and
  // the rest are parked): the gates open and the parked pumps end.
  void settle_hibernation() {
    if (hibernating && parking && parked > 0 && parked == running) {
      hibernating = false;
      hibernated = true;
      wake_gates(false);
    }
  }

  // An upgrade is moving relays on this shard (apps/proxy/relay_move.h): none may start to
  // hibernate meanwhile. The shard's thread only.
  static bool& moves_flag() noexcept {
    static thread_local bool on = false;
    return on;
  }
  static bool moves_running() noexcept { return moves_flag(); }

  // Asks both pumps to park; a read that waits is woken (its deadline expires at once).
  void ask_park() {
    if (parking || failed) return;
    parking = true;
    ++pokes;
    (void)client->set_read_deadline(1);
    (void)upstream->set_read_deadline(1);
  }
  // Every pump still running is parked (or the relay is ending anyway).
  bool settled() const noexcept { return failed || parked == running; }
  // Movable now: parked for a move, not failing, something still running.
  bool movable() const noexcept {
    return !failed && !hibernating && running > 0 && parked == running;
  }
  void resume() { wake_gates(false); }
  void moved_away() { wake_gates(true); }
  // A pump at the top of its loop: parks while asked to; true when the relay moved.
  struct ParkAwaiter {
    Relay* r;
    TaskNode node{};
    bool await_ready() const noexcept { return !r->parking; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      node.handle = h;
      r->gate[r->parked++] = &node;
      r->settle_hibernation();  // the last pump of a hibernation opens the gates
    }
    // True: the pump ends here (moved away, or hibernating).
    bool await_resume() const noexcept { return r->was_moved || r->hibernated; }
  };
  ParkAwaiter park() noexcept { return ParkAwaiter{this}; }
  // A pump whose read deadline ask_park expired (seen != pokes) puts back its own.
  void restore_read_deadline(TcpStream<P>* src, uint32_t* seen) {
    if (*seen == pokes) return;
    *seen = pokes;
    if (read_deadline() == 0) (void)src->set_read_deadline(0);  // else the pump sets it
  }
  void fail(ProxyError e) {
    if (failed) return;
    m->error(e);
    end();
  }
  // A direction's read failed (not at end of stream, which the caller carries through as a
  // half-close): true when it should read again — the idle deadline counts from this
  // direction's last arming and the other direction moved since; otherwise both end.
  bool read_failed(const Status& err) {
    if (err.timeout()) {
      const int64_t now = mono_now_ns();
      // Before the idle deadline (or with none, but a hibernation's): the deadline was the
      // hibernation's, or a poke.
      if ((idle_ns > 0 && now < last_activity + idle_ns) || (idle_ns == 0 && hibernate_ns > 0)) {
        hibernate_or_wait(now);
        return true;
      }
      fail(ProxyError::kIdleTimeout);
    } else if (err.closed()) {
      end();
    } else {
      fail(ProxyError::kReset);
    }
    return false;
  }
  // A direction's write failed: both end (a timeout: the receiver took nothing for idle_ns).
  void write_failed(const Status& err) {
    if (err.timeout()) {
      fail(ProxyError::kIdleTimeout);
    } else if (err.closed()) {
      end();
    } else {
      fail(ProxyError::kReset);
    }
  }
  // A chunk of n bytes went across: read done at t0, written at t1.
  void moved(size_t n, bool upward, int64_t t0, int64_t t1) {
    last_activity = t1;
    m->relay_latency(t1 - t0);
    m->add(upward ? m->bytes_up : m->bytes_down, n);
  }
  void wake_gates(bool away) {
    if (!parking) return;
    parking = false;
    was_moved = away;
    for (int i = 0; i < parked; ++i) sched->make_ready(std::exchange(gate[i], nullptr));
    parked = 0;
  }
  // Ends both directions. Alone (no error counted): one side was closed from outside
  // the relay (the server's shutdown aborts the client), so the other ends as well.
  void end() {
    if (failed) return;
    failed = true;
    client->poll_fd().abort();
    upstream->poll_fd().abort();
  }
};

// The connections of this shard an upgrade may move, each listed while it lives (a null
// one is not), for the movers; the shard's thread only.
template <class T>
struct ShardList {
  static std::vector<T*>& local() {
    static thread_local std::vector<T*> v;
    return v;
  }
  explicit ShardList(T* t) : t_(t) {
    if (t_) local().push_back(t_);
  }
  ~ShardList() {
    if (t_) std::erase(local(), t_);
  }
  ShardList(const ShardList&) = delete;
  ShardList& operator=(const ShardList&) = delete;

 private:
  T* t_;
};
// The plain relays that may move (Relay::origin set), for apps/proxy/relay_move.h.
template <PollerBackend P>
using MovableRelays = ShardList<Relay<P>>;

// A direction's copy buffer, from its shard's RelayBuffers (apps/proxy/buffer_pool.h), held
// only while a chunk is in flight: taken when the source has data, given back once the
// chunk was written, so an idle direction holds none (ringpoll_proxy_relay_buffers).
struct PooledBuffer {
  size_t cap;
  ShardMetrics* m;
  std::byte* buf = nullptr;
  size_t pool_cap;     // the shard pool's size (limits.buffer_bytes); cap may grow past it
  bool owned = false;  // buf is a larger buffer of its own (a bulk stream's), not the pool's
  PooledBuffer(size_t c, ShardMetrics* mm) : cap(c), m(mm), pool_cap(c) {}
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  ~PooledBuffer() { done(); }
  std::span<std::byte> span() const { return {buf, cap}; }
  // A grown buffer is its own (one allocation for the stream's life): the shard's pool
  // keeps buffers of one size only.
  void take() {
    if (buf) return;
    owned = cap != pool_cap;
    buf = owned ? static_cast<std::byte*>(::operator new(cap)) : RelayBuffers::local().take(cap);
    m->gauge(m->relay_buffers, 1);
  }
  void done() noexcept {
    if (!buf) return;
    if (owned) {
      ::operator delete(std::exchange(buf, nullptr));
    } else {
      RelayBuffers::local().give(std::exchange(buf, nullptr), cap);
    }
    m->gauge(m->relay_buffers, -1);
  }
};

// Keeps a connection counted active for as long as its handler runs.
struct ActiveCount {
  ShardMetrics* m;
  explicit ActiveCount(ShardMetrics* mm) : m(mm) { m->gauge(m->active, 1); }
  ~ActiveCount() { m->gauge(m->active, -1); }
  ActiveCount(const ActiveCount&) = delete;
  ActiveCount& operator=(const ActiveCount&) = delete;
};

}  // namespace ringpoll::proxy::relay_detail
