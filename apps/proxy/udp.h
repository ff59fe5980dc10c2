#pragma once
// UdpListener<P>: ringpoll-proxy's UDP mode on the kernel path. Every shard binds the
// listener's address (SO_REUSEPORT: the kernel hashes a client's 4-tuple to one shard, so
// a client's datagrams always reach the same shard) and keeps its own flow table (on
// Windows, which has no SO_REUSEPORT, shard 0 alone binds it and holds every flow):
//
//   - a flow is one client (address, port). Its first datagram picks an upstream from the
//     listener's pool (round robin, or least connections = least flows: a flow counts
//     active on its upstream while it lives) and opens a UDP socket connected to that
//     upstream, so the kernel demultiplexes the replies by the socket's own local port;
//   - later datagrams of the client go to the same upstream (affinity); the upstream's
//     replies go back to the client from the listener's socket;
//   - a flow with no datagram either way for udp_idle_ns ends (a read deadline on the
//     shard's timing wheel, re-armed from the last datagram of either direction): its
//     socket closes and it leaves the table;
//   - at most udp_max_flows flows exist at once (all shards): a new client over the bound
//     has its datagram dropped and counted (UdpDrop::kFlowLimit).
//
// Sends never wait: a datagram the kernel will not take at once (full socket buffer,
// an ICMP error pending) is dropped and counted, as a router would. Per datagram nothing
// is allocated; per flow: the flow (with its receive buffer of kMaxDatagram bytes).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "apps/proxy/metrics.h"
#include "apps/proxy/pool.h"
#include "apps/proxy/udp_flow.h"
#include "engine/engine.h"
#include "engine/net.h"

namespace ringpoll::proxy {

template <PollerBackend P>
class UdpListener final : public UdpService {
 public:
  static constexpr size_t kMaxDatagram = 65536;
  // A socket per shard, the kernel spreading clients over them by SO_REUSEPORT. Windows
  // has none (kHasReusePort; its SO_REUSEADDR would let the last socket bound take every
  // datagram): one socket, on shard 0, receives for the listener, and its flows run there.
  static constexpr bool kSocketPerShard = kHasReusePort;

  using Pick = UdpPick;
  using PickFn = UdpPickFn;

  UdpListener(Engine<P>& e, Metrics& m, PickFn pick) : e_(e), m_(m), pick_(std::move(pick)) {}
  // shutdown() must have run (while the engine was running) before this.
  ~UdpListener() override = default;
  UdpListener(const UdpListener&) = delete;
  UdpListener& operator=(const UdpListener&) = delete;

  // Binds `at` on every shard (shard 0 first: a port 0 becomes the real port the others
  // then share). From a thread outside the engine.
  Status start(const SocketAddress& at, [[maybe_unused]] bool reuseport, std::string* why) {
    SocketAddress where = at;
    const size_t sockets = kSocketPerShard ? e_.size() : 1;
    for (size_t i = 0; i < sockets; ++i) {
      auto st = std::make_unique<ShardState>();
      st->self = this;
      st->m = &m_.shard(i);
      const Status s = Engine<P>::call(e_.shard(i), [&]() -> Status {
        Scheduler<P>& sched = Engine<P>::current()->sched();
        const int fd = detail::open_socket(where.family(), SOCK_DGRAM);
        if (fd < 0) return Status::from_errno(errno);
#ifndef _WIN32
        const int one = 1;
        if (reuseport || e_.size() > 1)
          (void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
#endif
        if (::bind(fd, where.sa(), where.len) < 0) {
          const int err = errno;
          detail::close_socket(fd);
          if (why) *why = "bind " + where.to_string() + ": " + std::strerror(err);
          return Status::from_errno(err);
        }
        Status o = st->fd.open(sched, fd);
        if (!o.ok()) return o;
        if (i == 0) {
          where.len = sizeof where.ss;
          getsockname(fd, reinterpret_cast<sockaddr*>(&where.ss), &where.len);
          bound_ = where;
        }
        st->sched = &sched;
        st->tasks.fetch_add(1);
        sched.spawn(receive(st.get()));
        return Status();
      });
      if (!s.ok()) return s;
      shards_.push_back(std::move(st));
    }
    return Status();
  }

  SocketAddress address() const override {
    return bound_;
  }

  // Closes the listener sockets and every flow, then waits (up to wait_ns) for their
  // tasks to end. Returns the number of flows that were open.
  size_t shutdown(int64_t wait_ns) override {
    size_t open = 0;
    stop_shards(
        e_, shards_,
        [&](ShardState& st) {
          st.fd.abort();
          for (auto& [k, f] : st.flows) {
            (void)k;
            f->up.abort();
            ++open;
          }
        },
        [](ShardState& st) { return st.tasks.load() > 0; }, wait_ns);
    return open;
  }

 private:
  struct ShardState;
  struct Flow {
    FlowKey key;
    SocketAddress client;
    PollFd<P> up;
    std::shared_ptr<const void> hold;
    Pool* pool = nullptr;
    Upstream* upstream = nullptr;
    int64_t idle_ns = 0;
    int64_t last = 0;
    ShardState* st = nullptr;
    std::unique_ptr<std::byte[]> buf;
  };
  struct ShardState {
    UdpListener* self = nullptr;
    Scheduler<P>* sched = nullptr;
    ShardMetrics* m = nullptr;
    PollFd<P> fd;
    std::unordered_map<FlowKey, Flow*, FlowKeyHash> flows;
    std::unique_ptr<std::byte[]> buf{new std::byte[kMaxDatagram]};
    std::atomic<int> tasks{0};
    bool stopped = false;
  };

  // Client → upstream, for every client of this shard.
  static Task<void> receive(ShardState* st) {
    ShardMetrics& m = *st->m;
    const std::span<std::byte> buf(st->buf.get(), kMaxDatagram);
    for (;;) {
      SocketAddress from;
      from.len = sizeof from.ss;
      const IoResult r = co_await st->fd.recv_from(buf, &from.ss, &from.len);
      if (!r.ok()) {
        if (r.err.closed() || st->stopped) break;
        m.drop(UdpDrop::kRecvError);
        continue;
      }
      const FlowKey key = FlowKey::of(from.ss);
      Flow* f;
      if (auto it = st->flows.find(key); it != st->flows.end()) {
        f = it->second;
      } else {
        f = st->self->open_flow(st, key, from);
        if (!f) continue;
      }
      f->last = mono_now_ns();
      const ssize_t n = ::send(f->up.fd(), buf.data(), r.n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        m.drop(UdpDrop::kSendUpstream);
        continue;
      }
      m.add(m.udp_datagrams_up);
      m.add(m.udp_bytes_up, r.n);
    }
    st->tasks.fetch_sub(1);
  }

  // A new flow for `key`, or nullptr (the datagram was dropped and counted).
  Flow* open_flow(ShardState* st, const FlowKey& key, const SocketAddress& from) {
    ShardMetrics& m = *st->m;
    Pick p = pick_();
    Upstream* u = admit_flow(m_, m, p, mono_now_ns());
    if (!u) return nullptr;
    const SocketAddress& ua = u->address();
    const int fd = detail::open_socket(ua.family(), SOCK_DGRAM);
    if (fd < 0 || ::connect(fd, ua.sa(), ua.len) < 0) {
      if (fd >= 0) detail::close_socket(fd);
      p.pool->release(u);
      m.drop(UdpDrop::kUpstreamOpen);
      return nullptr;
    }
    auto f = std::make_unique<Flow>();
    if (!f->up.open(*st->sched, fd).ok()) {
      detail::close_socket(fd);
      p.pool->release(u);
      m.drop(UdpDrop::kUpstreamOpen);
      return nullptr;
    }
    f->key = key;
    f->client = from;
    f->hold = std::move(p.hold);
    f->pool = p.pool;
    f->upstream = u;
    f->idle_ns = p.idle_ns;
    f->last = mono_now_ns();
    f->st = st;
    f->buf.reset(new std::byte[kMaxDatagram]);
    Flow* raw = f.release();
    st->flows.emplace(key, raw);
    flow_opened(m);
    st->tasks.fetch_add(1);
    st->sched->spawn(replies(raw));
    return raw;
  }

  // Upstream → client for one flow, until it has been idle for idle_ns (or shutdown);
  // then it removes the flow and frees it.
  static Task<void> replies(Flow* f) {
    std::unique_ptr<Flow> own(f);
    ShardState* st = f->st;
    ShardMetrics& m = *st->m;
    const std::span<std::byte> buf(f->buf.get(), kMaxDatagram);
    for (;;) {
      if (f->idle_ns > 0) (void)f->up.set_read_deadline(f->last + f->idle_ns);
      SocketAddress from;
      from.len = sizeof from.ss;
      const IoResult r = co_await f->up.recv_from(buf, &from.ss, &from.len);
      if (!r.ok()) {
        if (r.err.timeout()) {
          // The client may have sent since the deadline was armed.
          if (mono_now_ns() < f->last + f->idle_ns) continue;
          m.add(m.udp_flows_expired);
          break;
        }
        if (r.err.closed() || st->stopped) break;
        m.drop(UdpDrop::kRecvError);  // e.g. ECONNREFUSED: the upstream port is closed
        continue;
      }
      f->last = mono_now_ns();
      const ssize_t n = ::sendto(st->fd.fd(), buf.data(), r.n, MSG_DONTWAIT | MSG_NOSIGNAL,
                                 f->client.sa(), f->client.len);
      if (n < 0) {
        m.drop(UdpDrop::kSendClient);
        continue;
      }
      m.add(m.udp_datagrams_down);
      m.add(m.udp_bytes_down, r.n);
    }
    st->flows.erase(f->key);
    flow_closed(m, f->pool, f->upstream);
    (void)co_await f->up.close();
    own.reset();
    st->tasks.fetch_sub(1);
  }

  Engine<P>& e_;
  Metrics& m_;
  PickFn pick_;
  SocketAddress bound_;
  std::vector<std::unique_ptr<ShardState>> shards_;
};

}  // namespace ringpoll::proxy
