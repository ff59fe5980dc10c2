// ringpoll-packet-bench: the packet paths (packet/) side by side.
//
//   ringpoll-packet-bench loop --path kernel|dpdk [--size N] [--seconds S] [--burst B]
//       One thread, one queue, sending bursts to itself through the path and receiving
//       them back: the kernel path over 127.0.0.1 (a socket sending to its own port), DPDK
//       over net_ring (an in-memory loopback device). Measures what the path costs per
//       datagram on one shard: datagrams/s, and the latency of a burst (first send to
//       last receive) at p50/p99. No device, no wire: an upper bound, not a NIC figure.
//   ringpoll-packet-bench client --to A.B.C.D:PORT [--size N] [--seconds S] [--window W]
//       A kernel UDP client for an echo server (ringpoll-serve --mode udp-echo): W
//       datagrams in flight on one socket, each echo answered by the next send (closed
//       loop); echoes/s and round-trip p50/p99. Used over a veth pair by
//       bench/packet/compare.sh.
//
// Output: one line of JSON per run, for the script that makes the table.
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "packet/kernel_queue.h"
#ifdef RINGPOLL_WITH_DPDK
#include "packet/dpdk_queue.h"
#endif

namespace ringpoll::packet {
namespace {

struct Args {
  std::string cmd;
  std::string path = "kernel";
  std::string to;
  size_t size = 64;
  double seconds = 2;
  size_t burst = 32;
  int window = 16;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "ringpoll-packet-bench: %s\n", why);
  std::fprintf(stderr,
               "usage: ringpoll-packet-bench loop --path kernel|dpdk [--size N] [--seconds S] "
               "[--burst B]\n       ringpoll-packet-bench client --to A.B.C.D:PORT [--size N] "
               "[--seconds S] [--window W]\n");
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  if (argc < 2) usage("missing command");
  a.cmd = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + k).c_str());
    const char* v = argv[++i];
    if (k == "--path")
      a.path = v;
    else if (k == "--to")
      a.to = v;
    else if (k == "--size")
      a.size = std::strtoul(v, nullptr, 10);
    else if (k == "--seconds")
      a.seconds = std::strtod(v, nullptr);
    else if (k == "--burst")
      a.burst = std::strtoul(v, nullptr, 10);
    else if (k == "--window")
      a.window = std::atoi(v);
    else
      usage(("unknown option " + k).c_str());
  }
  if (a.size < 1 || a.size > 1472) usage("--size must be 1..1472");
  if (a.burst < 1 || a.burst > kMaxBurst) usage("--burst must be 1..64");
  if (a.window < 1 || a.window > 1024) usage("--window must be 1..1024");
  if (a.seconds <= 0 || a.seconds > 60) usage("--seconds must be in (0, 60]");
  return a;
}

double percentile(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]) / 1000.0;  // ns -> us
}

void report(const char* kind, const std::string& path, size_t size, uint64_t n, double secs,
            std::vector<int64_t>& lat, const PacketStats& st) {
  const double p50 = percentile(lat, 0.50);
  const double p99 = percentile(lat, 0.99);
  std::printf(
      "{\"kind\":\"%s\",\"path\":\"%s\",\"size\":%zu,\"datagrams\":%llu,\"seconds\":%.3f,"
      "\"per_second\":%.0f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"rx_dropped\":%llu,"
      "\"tx_dropped\":%llu}\n",
      kind, path.c_str(), size, static_cast<unsigned long long>(n), secs,
      static_cast<double>(n) / secs, p50, p99, static_cast<unsigned long long>(st.rx_dropped),
      static_cast<unsigned long long>(st.tx_dropped));
}

// Bursts from the queue to itself: tx `burst` datagrams, then rx until they are all back.
template <PacketQueue Q>
int loop(Q& q, const Args& a, uint32_t ip, uint16_t port) {
  std::vector<std::byte> payload(a.size, std::byte{0x5a});
  std::array<Datagram, kMaxBurst> out{};
  for (size_t i = 0; i < a.burst; ++i)
    out[i] = Datagram{ip, port, port, static_cast<uint32_t>(a.size), payload.data(), 0};
  std::array<Datagram, kMaxBurst> in;
  std::vector<int64_t> lat;
  lat.reserve(1 << 20);
  uint64_t received = 0;
  const int64_t start = mono_now_ns();
  const int64_t end = start + static_cast<int64_t>(a.seconds * 1e9);
  int64_t now = start;
  while (now < end) {
    const int64_t t0 = mono_now_ns();
    const size_t sent = q.tx_burst(std::span<const Datagram>(out.data(), a.burst));
    size_t back = 0;
    // A datagram lost in the loop (a full socket buffer) must not stall the run.
    for (int idle = 0; back < sent && idle < 100000;) {
      const size_t n = q.rx_burst(in);
      if (n == 0) {
        ++idle;
        continue;
      }
      back += n;
      q.release(std::span(in.data(), n));
    }
    now = mono_now_ns();
    received += back;
    if (lat.size() < lat.capacity()) lat.push_back(now - t0);
  }
  report("loop", a.path, a.size, received, static_cast<double>(now - start) / 1e9, lat, q.stats());
  return 0;
}

int run_loop(const Args& a) {
  constexpr uint32_t kLoopback = 0x7f000001;
  if (a.path == "kernel") {
    KernelQueue q;
    QueueSpec spec;
    spec.local_ip = kLoopback;
    spec.max_payload = 2048;
    std::string why;
    if (!q.open(spec, &why).ok()) usage(why.c_str());
    const int big = 8 << 20;  // room for a burst of 1 KiB datagrams
    setsockopt(q.fd(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    return loop(q, a, kLoopback, q.local_port());
  }
  if (a.path == "dpdk") {
#ifdef RINGPOLL_WITH_DPDK
    DpdkPortOptions o;
    o.eal_args =
        "--no-huge --no-pci --no-shconf --no-telemetry -m 64 --vdev=net_ring0 "
        "--log-level=lib.eal:error";
    o.port = "net_ring0";
    std::string why;
    if (!DpdkPort::start(o, &why).ok()) usage(why.c_str());
    int rc = 0;
    {
      DpdkQueue q;
      QueueSpec spec;
      spec.local_ip = 0x0a4d0001;
      spec.local_port = 9000;
      if (!q.open(spec, &why).ok()) usage(why.c_str());
      q.neighbours().learn(spec.local_ip, q.identity().mac);  // the loopback peer is us
      rc = loop(q, a, spec.local_ip, spec.local_port);
    }
    DpdkPort::shutdown();
    return rc;
#else
    usage("this build has no DPDK (-DRINGPOLL_WITH_DPDK=ON)");
#endif
  }
  usage("--path must be kernel or dpdk");
}

int run_client(const Args& a) {
  const size_t colon = a.to.rfind(':');
  uint32_t ip = 0;
  if (colon == std::string::npos || !parse_ipv4(a.to.substr(0, colon), &ip))
    usage("--to must be A.B.C.D:PORT");
  const int port = std::atoi(a.to.c_str() + colon + 1);
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  // veth gives a packet socket the kernel's partial checksum (TX offload); a zero UDP
  // checksum ("none") lets a bypass server that checks checksums see valid datagrams.
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(ip);
  to.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) usage("connect failed");
  // Each datagram carries its send time; the echo brings it back.
  std::vector<char> buf(a.size < sizeof(int64_t) ? sizeof(int64_t) : a.size, 'x');
  auto send_one = [&] {
    const int64_t t = mono_now_ns();
    std::memcpy(buf.data(), &t, sizeof t);
    return ::send(fd, buf.data(), buf.size(), 0) > 0;
  };
  std::vector<int64_t> lat;
  lat.reserve(1 << 22);
  const int64_t start = mono_now_ns();
  const int64_t end = start + static_cast<int64_t>(a.seconds * 1e9);
  uint64_t echoes = 0, lost = 0;
  for (int i = 0; i < a.window; ++i) send_one();
  int64_t now = start;
  char rbuf[2048];
  while (now < end) {
    pollfd pf{fd, POLLIN, 0};
    if (poll(&pf, 1, 100) <= 0) {  // 100 ms with no echo: count the window lost, refill
      lost += static_cast<uint64_t>(a.window);
      for (int i = 0; i < a.window; ++i) send_one();
      now = mono_now_ns();
      continue;
    }
    ssize_t n;
    while ((n = ::recv(fd, rbuf, sizeof rbuf, 0)) > 0) {
      now = mono_now_ns();
      int64_t t;
      std::memcpy(&t, rbuf, sizeof t);
      if (lat.size() < lat.capacity()) lat.push_back(now - t);
      ++echoes;
      send_one();
    }
    now = mono_now_ns();
  }
  PacketStats st;
  st.rx_dropped = lost;
  report("echo", a.path, a.size, echoes, static_cast<double>(now - start) / 1e9, lat, st);
  ::close(fd);
  return 0;
}

}  // namespace
}  // namespace ringpoll::packet

int main(int argc, char** argv) {
  using namespace ringpoll::packet;
  const Args a = parse(argc, argv);
  if (a.cmd == "loop") return run_loop(a);
  if (a.cmd == "client") return run_client(a);
  usage("command must be loop or client");
}
