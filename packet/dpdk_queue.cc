#include "dpdk_queue.h"

#include <numa.h>
#include <pthread.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <sstream>

namespace ringpoll::packet {
namespace {

// DPDK's customary per-pool cache is for EAL lcores; shards are not lcores, so their
// allocations bypass it and a cache would only hold mbufs nobody can take.
constexpr unsigned kPoolCache = 0;

// The process's one device. Guarded by mu for start/stop (made from the main thread);
// the queues read it only between the two.
struct PortState {
  std::mutex mu;
  bool eal_up = false;
  bool eal_done = false;  // rte_eal_cleanup ran: the EAL cannot start again
  std::string eal_args;
  bool running = false;
  bool have_port = false;  // port names a device this process configured
  uint16_t port = 0;
  int queues = 0;
  MacAddr mac{};
  std::vector<rte_mempool*> pools;
};
PortState& state() {
  static PortState s;
  return s;
}

std::string dpdk_error(const char* step, int err) {
  return std::string(step) + ": " + rte_strerror(err < 0 ? -err : err);
}

// rte_eal_init pins the calling thread to the main lcore's CPU; the threads the program
// starts later would inherit that. The caller's affinity is put back afterwards.
Status start_eal(const std::string& args, std::string* why) {
  std::vector<std::string> words{"ringpoll"};
  std::istringstream in(args);
  for (std::string w; in >> w;) words.push_back(w);
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  cpu_set_t saved;
  const bool have_saved = pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0;
  const int r = rte_eal_init(static_cast<int>(words.size()), argv.data());
  if (have_saved) pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
  if (r < 0) {
    *why = dpdk_error(("EAL start with \"" + args + "\"").c_str(), rte_errno);
    return Errc::kUnavailable;
  }
  return Status();
}

int pool_socket(const DpdkPortOptions& o, int q, uint16_t port) {
  const int cpu = q < static_cast<int>(o.queue_cpus.size()) ? o.queue_cpus[q] : -1;
  if (cpu >= 0 && numa_available() >= 0) return numa_node_of_cpu(cpu);
  return rte_eth_dev_socket_id(port);
}

void free_pools(PortState& s) {
  for (rte_mempool* p : s.pools) rte_mempool_free(p);
  s.pools.clear();
}

}  // namespace

Status DpdkPort::start(const DpdkPortOptions& o, std::string* why) {
  PortState& s = state();
  std::lock_guard<std::mutex> l(s.mu);
  if (s.running) {
    *why = "DPDK port already running";
    return Errc::kInvalidArgument;
  }
  if (s.eal_done) {
    *why = "the DPDK EAL was shut down and cannot start again in this process";
    return Errc::kUnavailable;
  }
  if (!s.eal_up) {
    if (Status st = start_eal(o.eal_args, why); !st.ok()) return st;
    s.eal_up = true;
    s.eal_args = o.eal_args;
  } else if (o.eal_args != s.eal_args) {
    *why = "the EAL is already up with other arguments (\"" + s.eal_args + "\")";
    return Errc::kInvalidArgument;
  }
  uint16_t port = 0;
  if (rte_eth_dev_get_port_by_name(o.port.c_str(), &port) != 0) {
    *why = "no DPDK device \"" + o.port + "\" (is it in the EAL arguments, e.g. --vdev=" + o.port +
           "?)";
    return Errc::kInvalidArgument;
  }
  rte_eth_dev_info info;
  if (int r = rte_eth_dev_info_get(port, &info); r != 0) {
    *why = dpdk_error("rte_eth_dev_info_get", r);
    return Status::from_errno(-r);
  }
  if (o.queues < 1 || o.queues > info.max_rx_queues || o.queues > info.max_tx_queues) {
    *why = "device \"" + o.port + "\" has " + std::to_string(info.max_rx_queues) + " RX / " +
           std::to_string(info.max_tx_queues) + " TX queues; " + std::to_string(o.queues) +
           " shards need one each (set engine.shards)";
    return Errc::kInvalidArgument;
  }
  s.port = port;
  s.have_port = true;
  rte_eth_conf conf;
  std::memset(&conf, 0, sizeof conf);
  const auto nq = static_cast<uint16_t>(o.queues);
  if (int r = rte_eth_dev_configure(port, nq, nq, &conf); r != 0) {
    *why = dpdk_error("rte_eth_dev_configure", r);
    return Status::from_errno(-r);
  }
  uint16_t nrx = static_cast<uint16_t>(o.ring_size), ntx = nrx;
  rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
  for (int q = 0; q < o.queues; ++q) {
    const int socket = pool_socket(o, q, port);
    const std::string name = "ringpoll_q" + std::to_string(q);
    rte_mempool* pool = rte_pktmbuf_pool_create(name.c_str(), o.mbufs, kPoolCache, 0,
                                                RTE_MBUF_DEFAULT_BUF_SIZE, socket);
    // Without hugepages (--no-huge) all memory is on one socket; take it from there.
    if (!pool) {
      pool = rte_pktmbuf_pool_create(name.c_str(), o.mbufs, kPoolCache, 0,
                                     RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    }
    if (!pool) {
      *why = dpdk_error(("mbuf pool for queue " + std::to_string(q)).c_str(), rte_errno);
      free_pools(s);
      return Errc::kUnavailable;
    }
    s.pools.push_back(pool);
    const auto qid = static_cast<uint16_t>(q);
    int r = rte_eth_rx_queue_setup(port, qid, nrx, rte_eth_dev_socket_id(port), nullptr, pool);
    if (r == 0) r = rte_eth_tx_queue_setup(port, qid, ntx, rte_eth_dev_socket_id(port), nullptr);
    if (r != 0) {
      *why = dpdk_error(("queue " + std::to_string(q) + " setup").c_str(), r);
      free_pools(s);
      return Status::from_errno(-r);
    }
  }
  if (int r = rte_eth_dev_start(port); r != 0) {
    *why = dpdk_error("rte_eth_dev_start", r);
    free_pools(s);
    return Status::from_errno(-r);
  }
  rte_ether_addr mac;
  rte_eth_macaddr_get(port, &mac);
  std::memcpy(s.mac.data(), mac.addr_bytes, s.mac.size());
  s.queues = o.queues;
  s.running = true;
  return Status();
}

void DpdkPort::stop() noexcept {
  PortState& s = state();
  std::lock_guard<std::mutex> l(s.mu);
  if (!s.running) return;
  rte_eth_dev_stop(s.port);  // every queue's shard has closed its DpdkQueue by now
  free_pools(s);
  s.running = false;
}

void DpdkPort::shutdown() noexcept {
  stop();
  PortState& s = state();
  std::lock_guard<std::mutex> l(s.mu);
  if (!s.eal_up || s.eal_done) return;
  if (s.have_port) rte_eth_dev_close(s.port);
  rte_eal_cleanup();
  s.eal_done = true;
}

bool DpdkPort::running() noexcept {
  return state().running;
}
MacAddr DpdkPort::mac() noexcept {
  return state().mac;
}
uint16_t DpdkPort::port_id() noexcept {
  return state().port;
}
int DpdkPort::queues() noexcept {
  return state().queues;
}

uint64_t DpdkPort::device_rx_missed() noexcept {
  rte_eth_stats st;
  if (!running() || rte_eth_stats_get(state().port, &st) != 0) return 0;
  return st.imissed + st.rx_nombuf;
}

Status DpdkQueue::open(const QueueSpec& spec, std::string* why) {
  close();
  PortState& s = state();
  if (!s.running || spec.queue < 0 || spec.queue >= s.queues) {
    if (why) {
      *why = s.running ? "queue " + std::to_string(spec.queue) + " out of range (device has " +
                             std::to_string(s.queues) + ")"
                       : std::string("DPDK port not started");
    }
    return Errc::kInvalidArgument;
  }
  if (spec.local_ip == 0) {
    if (why) *why = "the DPDK path needs our IPv4 address (0.0.0.0 given)";
    return Errc::kInvalidArgument;
  }
  port_ = s.port;
  queue_ = static_cast<uint16_t>(spec.queue);
  pool_ = s.pools[static_cast<size_t>(spec.queue)];
  max_payload_ = spec.max_payload;
  me_ = Identity{s.mac, spec.local_ip, spec.local_port};
  arp_ = ArpTable{};
  stats_ = {};
  n_control_ = 0;
  open_ = true;
  return Status();
}

rte_mbuf* DpdkQueue::frame_mbuf(size_t len, std::byte** data) noexcept {
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (!m) return nullptr;
  char* p = rte_pktmbuf_append(m, static_cast<uint16_t>(len));
  if (!p) {
    rte_pktmbuf_free(m);
    return nullptr;
  }
  *data = reinterpret_cast<std::byte*>(p);
  return m;
}

size_t DpdkQueue::rx_burst(std::span<Datagram> out) {
  if (!open_) return 0;
  std::array<rte_mbuf*, kMaxBurst> in;
  const auto want = static_cast<uint16_t>(out.size() < kMaxBurst ? out.size() : kMaxBurst);
  const uint16_t n = rte_eth_rx_burst(port_, queue_, in.data(), want);
  size_t got = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = in[i];
    auto* data = rte_pktmbuf_mtod(m, std::byte*);
    // One segment: our pools' buffers hold a full frame; a chained mbuf is not ours.
    const std::span<const std::byte> frame(data, m->nb_segs == 1 ? m->data_len : 0);
    UdpInfo u;
    ArpInfo a;
    const FrameKind k = receive_frame(frame, me_, arp_, stats_, &u, &a);
    if (k == FrameKind::kUdp) {
      out[got++] = datagram_of(u, data, reinterpret_cast<uintptr_t>(m));
      continue;  // freed by release()
    }
    if (k == FrameKind::kArpRequest) {
      std::byte* p = nullptr;
      rte_mbuf* r = n_control_ < control_.size() ? frame_mbuf(kMinFrame, &p) : nullptr;
      if (r && build_arp({p, kMinFrame}, ArpOp::kReply, me_, a.sender_mac, a.sender_ip)) {
        control_[n_control_++] = r;
        ++stats_.arp_replies;
      } else {
        if (r) rte_pktmbuf_free(r);
        ++stats_.tx_dropped;
      }
    }
    rte_pktmbuf_free(m);
  }
  flush_control();
  stats_.rx_packets += got;
  return got;
}

void DpdkQueue::release(std::span<Datagram> batch) noexcept {
  for (Datagram& d : batch) rte_pktmbuf_free(reinterpret_cast<rte_mbuf*>(d.handle));
}

void DpdkQueue::flush_control() noexcept {
  if (n_control_ == 0) return;
  const uint16_t sent =
      rte_eth_tx_burst(port_, queue_, control_.data(), static_cast<uint16_t>(n_control_));
  for (size_t i = sent; i < n_control_; ++i) rte_pktmbuf_free(control_[i]);
  stats_.tx_dropped += n_control_ - sent;
  n_control_ = 0;
}

size_t DpdkQueue::tx_burst(std::span<const Datagram> in) {
  if (!open_) {
    stats_.tx_dropped += in.size();
    return 0;
  }
  size_t taken = 0;
  while (!in.empty()) {
    std::array<rte_mbuf*, kMaxBurst> out;
    uint16_t n = 0;
    const size_t chunk = in.size() < kMaxBurst ? in.size() : kMaxBurst;
    for (size_t i = 0; i < chunk; ++i) {
      const Datagram& d = in[i];
      MacAddr mac;
      if (!arp_.lookup(d.peer_ip, &mac)) {
        // Ask, drop this one: the sender retries, as it would after any loss (the kernel
        // queues a few packets per neighbour instead; a bounded queue is future work).
        ++stats_.tx_no_neighbor;
        queue_arp_request(d.peer_ip);
        continue;
      }
      const size_t frame_len = std::max(kUdpFrameOverhead + d.len, kMinFrame);
      std::byte* p = nullptr;
      rte_mbuf* m = d.len <= max_payload_ ? frame_mbuf(frame_len, &p) : nullptr;
      if (!m) {  // too large, or the pool is empty
        ++stats_.tx_dropped;
        continue;
      }
      Identity from = me_;
      from.port = d.local_port != 0 ? d.local_port : me_.port;
      build_udp({p, frame_len}, from, mac, d.peer_ip, d.peer_port, {d.data, d.len});
      out[n++] = m;
    }
    flush_control();
    const uint16_t sent = n ? rte_eth_tx_burst(port_, queue_, out.data(), n) : 0;
    for (uint16_t i = sent; i < n; ++i) rte_pktmbuf_free(out[i]);  // TX ring full
    stats_.tx_dropped += n - sent;
    taken += sent;
    in = in.subspan(chunk);
  }
  stats_.tx_packets += taken;
  return taken;
}

void DpdkQueue::queue_arp_request(uint32_t ip) noexcept {
  std::byte* p = nullptr;
  if (rte_mbuf* r = n_control_ < control_.size() ? frame_mbuf(kMinFrame, &p) : nullptr) {
    build_arp({p, kMinFrame}, ArpOp::kRequest, me_, MacAddr{}, ip);
    control_[n_control_++] = r;
  }
}

void DpdkQueue::ask_neighbor(uint32_t ip) noexcept {
  MacAddr mac;
  if (!open_ || arp_.lookup(ip, &mac)) return;
  queue_arp_request(ip);
  flush_control();
}

bool DpdkQueue::tx_frame(std::span<const std::byte> frame) {
  if (!open_) return false;
  std::byte* p = nullptr;
  rte_mbuf* m = frame_mbuf(frame.size(), &p);
  if (!m) return false;
  std::memcpy(p, frame.data(), frame.size());
  if (rte_eth_tx_burst(port_, queue_, &m, 1) == 1) return true;
  rte_pktmbuf_free(m);
  return false;
}

void DpdkQueue::close() noexcept {
  if (!open_) return;
  for (size_t i = 0; i < n_control_; ++i) rte_pktmbuf_free(control_[i]);
  n_control_ = 0;
  open_ = false;
}

}  // namespace ringpoll::packet
