#pragma once
// UdpBypassListener<P, Q>: ringpoll-proxy's UDP mode on a packet path (packet.path = dpdk
// or xdp; Q is DpdkQueue or XdpQueue). Every shard opens its own queue pair (queue index
// = shard index) on our IPv4 address with no port filter, attaches it to its loop as a
// PollSource (packet/packet_source.h) and hands each received batch to its UdpRelay
// (apps/proxy/udp_relay.h), which forwards on the same queue. The path answers ARP for
// the address and checks IPv4/UDP checksums (packet/frame.h); what it refuses is counted
// here as UdpDrop::kBadChecksum / kBadFrame.
//
// Flow ports: shard i owns the i-th slice of [udp_port_base, udp_port_base +
// udp_port_count). A device hashes a client's datagrams to one queue, so a client stays on
// one shard; an upstream's reply may hash to another shard's queue, which copies it and
// posts it to the owner's inbox (one allocation per such reply; no device steering rule
// is installed to avoid it).
//
// Idle expiry: a task per shard sleeps on the shard's timer wheel until the oldest flow
// goes idle (at most kReapEveryNs, so shutdown and fresh flows are seen), ends what is
// idle, and copies the queue's drop counters into the metrics.
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "apps/proxy/udp_relay.h"
#include "engine/engine.h"
#include "packet/packet_source.h"

namespace ringpoll::proxy {

struct UdpBypassOptions {
  uint16_t port_base = 40000;
  uint32_t port_count = 8192;
  packet::QueueSpec queue;  // ring_size, max_payload; queue, local_ip, local_port set here
};

template <PollerBackend P, packet::PacketQueue Q>
class UdpBypassListener final : public UdpService {
 public:
  static constexpr int64_t kReapEveryNs = 50'000'000;
  // Opens a shard's queue (on that shard's thread): the path's own options, then open().
  using OpenFn = std::function<Status(Q&, const packet::QueueSpec&, std::string*)>;

  UdpBypassListener(Engine<P>& e, Metrics& m, UdpPickFn pick, OpenFn open, UdpBypassOptions o)
      : e_(e), m_(m), pick_(std::move(pick)), open_(std::move(open)), o_(o) {}
  // shutdown() must have run (while the engine was running) before this.
  ~UdpBypassListener() override = default;
  UdpBypassListener(const UdpBypassListener&) = delete;
  UdpBypassListener& operator=(const UdpBypassListener&) = delete;

  // `at` must be IPv4 with a real address and port (the config checks it). Errors name the
  // shard. From a thread outside the engine.
  Status start(const SocketAddress& at, std::string* why) {
    if (at.family() != AF_INET || at.port() == 0) {
      if (why) *why = at.to_string() + ": a packet path needs an IPv4 address and a port";
      return Errc::kInvalidArgument;
    }
    if (o_.port_count < e_.size()) {
      if (why)
        *why = "packet.udp_port_count (" + std::to_string(o_.port_count) + ") is less than " +
               std::to_string(e_.size()) + " shards: each needs at least one flow port";
      return Errc::kInvalidArgument;
    }
    bound_ = at;
    const uint32_t ip = ntohl(reinterpret_cast<const sockaddr_in*>(at.sa())->sin_addr.s_addr);
    // Every shard's state exists before any queue runs: a shard may hand a reply to any
    // other (stopped until its queue is open).
    for (size_t i = 0; i < e_.size(); ++i) {
      auto st = std::make_shared<ShardState>();
      st->m = &m_.shard(i);
      st->stopped = true;
      shards_.push_back(std::move(st));
    }
    for (size_t i = 0; i < e_.size(); ++i) {
      const std::shared_ptr<ShardState>& st = shards_[i];
      const UdpRelaySpec rs = relay_slice(ip, at.port(), o_.port_base, o_.port_count, i, e_.size());
      std::string w;
      const Status s = Engine<P>::call(e_.shard(i), [&]() -> Status {
        Scheduler<P>& sched = Engine<P>::current()->sched();
        packet::QueueSpec qs = o_.queue;
        qs.queue = static_cast<int>(i);
        qs.local_ip = ip;
        qs.local_port = 0;  // every port of ours: the listen port and the flow ports
        st->q = std::make_unique<Q>();
        const Status o = open_(*st->q, qs, &w);
        if (!o.ok()) return o;
        ask_upstreams(*st->q);
        st->relay = std::make_unique<UdpRelay>(rs, m_, *st->m, pick_);
        st->relay->set_handoff(
            [this](const packet::Datagram& d, size_t owner) { return hand_over(owner, d); });
        st->sched = &sched;
        st->src = std::make_unique<Source>(*st->q, Handler{st.get()});
        sched.attach_source(st->src.get());
        st->stopped = false;
        st->reaping.store(true);
        sched.spawn(reaper(st));
        return Status();
      });
      if (!s.ok()) {
        if (why) *why = "shard " + std::to_string(i) + ": " + (w.empty() ? s.message() : w);
        return s;
      }
    }
    return Status();
  }

  SocketAddress address() const override { return bound_; }

  size_t shutdown(int64_t wait_ns) override {
    size_t open = 0;
    stop_shards(
        e_, shards_,
        [&](ShardState& st) {
          st.sched->detach_source(st.src.get());
          open += st.relay->close_all();
          sync_drops(st);
          st.q->close();
        },
        [](ShardState& st) { return st.reaping.load(); }, wait_ns);
    return open;
  }

 private:
  struct ShardState;

  // The path knows no neighbour when its queue opens, and drops a datagram to a peer
  // whose MAC it has not learned (asking ARP meanwhile): the upstreams are asked for at
  // once, so their first datagrams are not lost.
  void ask_upstreams(Q& q) {
    if constexpr (requires { q.ask_neighbor(uint32_t{}); }) {
      const UdpPick p = pick_();
      const auto set = p.pool ? p.pool->members() : nullptr;
      for (size_t i = 0; set && i < set->ups.size(); ++i) {
        const SocketAddress& a = set->ups[i]->address();
        if (a.family() == AF_INET)
          q.ask_neighbor(ntohl(reinterpret_cast<const sockaddr_in*>(a.sa())->sin_addr.s_addr));
      }
    }
  }

  // A reply copied on its way to the shard that owns its flow port.
  struct Handed {
    std::shared_ptr<ShardState> to;
    packet::Datagram d;
    std::unique_ptr<std::byte[]> data;
    static void run(void* p) {  // on the owner's thread
      std::unique_ptr<Handed> h(static_cast<Handed*>(p));
      ShardState& st = *h->to;
      st.handed_in.fetch_sub(1, std::memory_order_relaxed);
      // Shut down (or never opened): nothing is counted any more, the metrics may be gone.
      if (st.stopped) return;
      st.relay->on_batch(std::span<const packet::Datagram>(&h->d, 1), *st.q, mono_now_ns());
    }
  };
  // From shard threads: one allocation and a post to the owner's inbox (false: dropped).
  // Replies in flight to one shard may take at most half its inbox (DESIGN.md
  // "Fairness"): a flood of them never leaves the owner's control jobs (reloads, admin
  // reads, shutdown) without room.
  bool hand_over(size_t owner, const packet::Datagram& d) {
    ShardState& to = *shards_[owner];
    const size_t cap = e_.shard(owner).inbox_capacity() / 2;
    if (to.handed_in.fetch_add(1, std::memory_order_relaxed) >= cap) {
      to.handed_in.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    auto h = std::make_unique<Handed>();
    h->to = shards_[owner];
    h->data.reset(new std::byte[d.len > 0 ? d.len : 1]);
    if (d.len > 0) std::memcpy(h->data.get(), d.data, d.len);
    h->d = d;
    h->d.data = h->data.get();
    h->d.handle = 0;
    if (!e_.shard(owner).try_post(ShardJob{&Handed::run, h.get()})) {
      to.handed_in.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    (void)h.release();
    return true;
  }

  struct Handler {
    ShardState* st;
    void operator()(std::span<packet::Datagram> batch, Q& q, TaskList&) {
      st->relay->on_batch(batch, q, mono_now_ns());
      sync_drops(*st);
    }
  };
  using Source = packet::PacketSource<Q, Handler>;
  struct ShardState {
    ShardMetrics* m = nullptr;
    Scheduler<P>* sched = nullptr;
    std::unique_ptr<Q> q;
    std::unique_ptr<UdpRelay> relay;
    std::unique_ptr<Source> src;
    packet::PacketStats seen;  // the queue's counters already added to the metrics
    std::atomic<bool> reaping{false};
    std::atomic<size_t> handed_in{0};  // replies other shards posted here, not yet run
    bool stopped = false;
  };

  // The frames the path refused since the last call, into the UDP drop counters.
  static void sync_drops(ShardState& st) {
    const packet::PacketStats now = st.q->stats();
    const uint64_t bad = now.rx_bad_checksum - st.seen.rx_bad_checksum;
    const uint64_t other =
        (now.rx_dropped - st.seen.rx_dropped) + (now.other_frames - st.seen.other_frames);
    if (bad) st.m->add(st.m->udp_drops[static_cast<size_t>(UdpDrop::kBadChecksum)], bad);
    if (other) st.m->add(st.m->udp_drops[static_cast<size_t>(UdpDrop::kBadFrame)], other);
    st.seen = now;
  }

  // Holds the shard's state until it ends (after shutdown, at its next wake).
  static Task<void> reaper(std::shared_ptr<ShardState> st) {
    Scheduler<P>& sched = *st->sched;
    while (!st->stopped) {
      int64_t until = mono_now_ns() + kReapEveryNs;
      const int64_t next = st->relay->next_expiry();
      if (next >= 0 && next < until) until = next;
      co_await sched.sleep_until(until);
      if (st->stopped) break;
      st->relay->expire(mono_now_ns());
      sync_drops(*st);
    }
    st->reaping.store(false);
  }

  Engine<P>& e_;
  Metrics& m_;
  UdpPickFn pick_;
  OpenFn open_;
  UdpBypassOptions o_;
  SocketAddress bound_;
  std::vector<std::shared_ptr<ShardState>> shards_;
};

}  // namespace ringpoll::proxy
