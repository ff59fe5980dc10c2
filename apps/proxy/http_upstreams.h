#pragma once
// HttpUpstreams<P>: the keep-alive upstream connections of ringpoll-proxy's HTTP mode, one
// set per shard (touched only by that shard, so no locks) and per configuration
// generation (a reload starts with none; the old generation's close as their requests
// end).
//
//   put(conn)    after a response that left the connection reusable: kept, newest last,
//                unless the upstream already has max_idle_per_upstream idle ones, the
//                connection has carried max_requests_per_connection requests, or the
//                generation is retired — then it is closed
//   take(u)      the most recently used idle connection to upstream u that is still
//                usable: one idle past upstream_idle_ns, or one the upstream closed (a
//                non-blocking MSG_PEEK sees the FIN or reset, or unexpected bytes), is
//                closed instead and the next is tried (in io_uring completion mode the
//                connection's own multishot recv says so without a system call)
//   sweeper      one task per shard, started with the first HTTP client there: every
//                tick closes the idle connections that expired or that the upstream
//                closed, so CLOSE_WAIT sockets do not pile up; when the generation is
//                retired it closes them all and ends
//
// A connection the upstream closes between take()'s check and the request's write is
// the race no check can close; the relay retries such a request on a new connection when
// it is idempotent and its body (if any) is held, up to 64 KiB (apps/proxy/http_relay.h).
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>
#include <vector>

#include "apps/proxy/http_settings.h"
#include "apps/proxy/pool.h"
#include "engine/engine.h"
#include "engine/net.h"

namespace ringpoll::proxy {

template <PollerBackend P>
struct HttpUpstreamConn {
  std::unique_ptr<TcpStream<P>> stream;
  Upstream* upstream = nullptr;
  int64_t idle_since = 0;
  uint32_t requests = 0;  // requests it has carried
};

template <PollerBackend P>
class HttpUpstreams {
 public:
  using Conn = HttpUpstreamConn<P>;

  HttpUpstreams(const HttpSettings* s, const std::atomic<bool>* retired, std::atomic<int>* sweepers)
      : s_(s), retired_(retired), sweepers_(sweepers) {}

  // From the shard that owns this set.
  Task<bool> take(Upstream* u, Conn* out) {
    const int64_t now = mono_now_ns();
    for (;;) {
      auto it = std::find_if(idle_.rbegin(), idle_.rend(),
                             [u](const Conn& c) { return c.upstream == u; });
      if (it == idle_.rend()) co_return false;
      Conn c = std::move(*it);
      idle_.erase(std::next(it).base());
      if (usable(c, now)) {
        *out = std::move(c);
        co_return true;
      }
      ++closed_stale_;
      (void)co_await c.stream->close();
    }
  }

  Task<void> put(Conn c) {
    ++c.requests;
    const size_t same = static_cast<size_t>(std::count_if(
        idle_.begin(), idle_.end(), [&](const Conn& k) { return k.upstream == c.upstream; }));
    if (retired_->load() || same >= s_->max_idle_per_upstream ||
        c.requests >= s_->max_requests_per_connection) {
      (void)co_await c.stream->close();
      co_return;
    }
    c.idle_since = mono_now_ns();
    idle_.push_back(std::move(c));
  }

  // Starts the sweeper on the calling shard once. `hold` keeps this set's generation
  // (and so this object) alive until the sweeper has closed the last connection.
  void start_sweeper(Scheduler<P>& sched, std::shared_ptr<const void> hold) {
    if (sweeping_) return;
    sweeping_ = true;
    sweepers_->fetch_add(1);
    sched.spawn(sweep(sched, std::move(hold)));
  }

  size_t idle() const noexcept { return idle_.size(); }
  uint64_t closed_stale() const noexcept { return closed_stale_; }

 private:
  bool usable(const Conn& c, int64_t now) const {
    if (now - c.idle_since >= s_->upstream_idle_ns) return false;
    // In io_uring completion mode the connection's multishot recv would have queued a FIN,
    // a reset or stray bytes: nothing queued is the healthy answer, without a system call.
    if (c.stream->poll_fd().known_quiet()) return true;
    char b;
    const ssize_t k = ::recv(c.stream->fd(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    // Nothing to read is the only healthy answer: 0 is the upstream's FIN, bytes are an
    // answer to no request, and an error is a reset.
    return k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  // The sweep interval: a quarter of the idle timeout, within [10 ms, 100 ms] so that a
  // retired generation's connections close promptly and the timer costs nothing.
  int64_t tick() const {
    return std::clamp<int64_t>(s_->upstream_idle_ns / 4, 10'000'000, 100'000'000);
  }

  Task<void> sweep(Scheduler<P>& sched, std::shared_ptr<const void> hold) {
    while (!retired_->load()) {
      co_await sched.sleep_for(tick());
      const int64_t now = mono_now_ns();
      for (size_t i = 0; i < idle_.size();) {
        if (usable(idle_[i], now)) {
          ++i;
          continue;
        }
        Conn c = std::move(idle_[i]);
        idle_.erase(idle_.begin() + static_cast<long>(i));
        ++closed_stale_;
        (void)co_await c.stream->close();
      }
    }
    while (!idle_.empty()) {
      Conn c = std::move(idle_.back());
      idle_.pop_back();
      (void)co_await c.stream->close();
    }
    std::atomic<int>* count = sweepers_;
    hold.reset();  // may free this object: nothing of it is touched after
    count->fetch_sub(1);
  }

  const HttpSettings* s_;
  const std::atomic<bool>* retired_;
  std::atomic<int>* sweepers_;
  std::vector<Conn> idle_;
  bool sweeping_ = false;
  uint64_t closed_stale_ = 0;
};

}  // namespace ringpoll::proxy
