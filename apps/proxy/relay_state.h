#pragma once
// The state the two pumps of one relayed connection share (apps/proxy/relay.h for plain
// TCP, apps/proxy/tls_relay.h when either side speaks TLS): the joiner that lets the
// handler wait for the pump it spawned, the end-both-directions switch, a direction's
// pooled copy buffer, and the gauge of open connections.
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

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

// The state both pumps of one connection share.
template <PollerBackend P>
struct Relay {
  TcpStream<P>* client;
  TcpStream<P>* upstream;
  ShardMetrics* m;
  int64_t idle_ns;  // 0: none
  int64_t last_activity;
  bool failed = false;
  bool upstream_reset = false;  // the upstream reset the connection (outlier detection)
  Relay(TcpStream<P>* c, TcpStream<P>* u, ShardMetrics* mm, int64_t idle)
      : client(c), upstream(u), m(mm), idle_ns(idle), last_activity(mono_now_ns()) {}
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
      if (mono_now_ns() < last_activity + idle_ns) return true;
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
  // Ends both directions. Alone (no error counted): one side was closed from outside
  // the relay (the server's shutdown aborts the client), so the other ends as well.
  void end() {
    if (failed) return;
    failed = true;
    client->poll_fd().abort();
    upstream->poll_fd().abort();
  }
};

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
