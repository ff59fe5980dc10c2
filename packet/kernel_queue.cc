#include "packet/kernel_queue.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringpoll::packet {
namespace {

Status fail(int fd, const char* step, const QueueSpec& spec, std::string* why) {
  const int e = errno;
  if (fd >= 0) ::close(fd);
  if (why) {
    *why = std::string(step) + " " + ipv4_to_string(spec.local_ip) + ":" +
           std::to_string(spec.local_port) + " (queue " + std::to_string(spec.queue) +
           "): " + std::strerror(e);
  }
  return Status::from_errno(e);
}

}  // namespace

Status KernelQueue::open(const QueueSpec& spec, std::string* why) {
  close();
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(-1, "socket", spec, why);
  const int one = 1;
  if (spec.reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
    return fail(fd, "SO_REUSEPORT", spec, why);
  if (setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) < 0)
    return fail(fd, "SO_RXQ_OVFL", spec, why);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(spec.local_ip);
  at.sin_port = htons(spec.local_port);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) < 0)
    return fail(fd, "bind", spec, why);
  socklen_t len = sizeof at;
  getsockname(fd, reinterpret_cast<sockaddr*>(&at), &len);
  fd_ = fd;
  port_ = ntohs(at.sin_port);
  max_payload_ = spec.max_payload;
  rx_buf_.assign(size_t{kMaxBurst} * max_payload_, std::byte{0});
  for (size_t i = 0; i < kMaxBurst; ++i) {
    RxSlot& s = rx_[i];
    s.iov = {rx_buf_.data() + i * max_payload_, max_payload_};
    tx_msgs_[i] = {};
    tx_msgs_[i].msg_hdr.msg_name = &tx_[i].to;
    tx_msgs_[i].msg_hdr.msg_namelen = sizeof(sockaddr_in);
    tx_msgs_[i].msg_hdr.msg_iov = &tx_[i].iov;
    tx_msgs_[i].msg_hdr.msg_iovlen = 1;
  }
  stats_ = {};
  kernel_drops_ = 0;
  return Status();
}

size_t KernelQueue::rx_burst(std::span<Datagram> out) {
  if (fd_ < 0) return 0;
  const size_t want = out.size() < kMaxBurst ? out.size() : kMaxBurst;
  for (size_t i = 0; i < want; ++i) {
    RxSlot& s = rx_[i];
    msghdr& h = rx_msgs_[i].msg_hdr;
    h = {};
    h.msg_name = &s.from;
    h.msg_namelen = sizeof s.from;
    h.msg_iov = &s.iov;
    h.msg_iovlen = 1;
    h.msg_control = s.cmsg.data();
    h.msg_controllen = s.cmsg.size();
  }
  const int n = recvmmsg(fd_, rx_msgs_.data(), static_cast<unsigned>(want), MSG_DONTWAIT, nullptr);
  if (n <= 0) return 0;  // EAGAIN: empty; other errors (none expected unconnected): retry later
  size_t got = 0;
  for (int i = 0; i < n; ++i) {
    const msghdr& h = rx_msgs_[i].msg_hdr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
        uint32_t drops;
        std::memcpy(&drops, CMSG_DATA(c), sizeof drops);
        stats_.rx_dropped += drops - kernel_drops_;  // the kernel's count only grows
        kernel_drops_ = drops;
      }
    }
    if (h.msg_flags & MSG_TRUNC) {  // larger than max_payload: dropped, counted
      ++stats_.rx_dropped;
      continue;
    }
    Datagram& d = out[got++];
    d.peer_ip = ntohl(rx_[i].from.sin_addr.s_addr);
    d.peer_port = ntohs(rx_[i].from.sin_port);
    d.local_port = port_;
    d.len = rx_msgs_[i].msg_len;
    d.data = static_cast<std::byte*>(rx_[i].iov.iov_base);
    d.handle = static_cast<uintptr_t>(i);
  }
  stats_.rx_packets += got;
  return got;
}

void KernelQueue::release(std::span<Datagram>) noexcept {}  // slots are reused by rx_burst

size_t KernelQueue::tx_burst(std::span<const Datagram> in) {
  if (fd_ < 0) {
    stats_.tx_dropped += in.size();
    return 0;
  }
  size_t taken = 0;
  while (!in.empty()) {
    size_t n = 0;
    for (; n < in.size() && n < kMaxBurst; ++n) {
      const Datagram& d = in[n];
      tx_[n].to.sin_family = AF_INET;
      tx_[n].to.sin_addr.s_addr = htonl(d.peer_ip);
      tx_[n].to.sin_port = htons(d.peer_port);
      tx_[n].iov = {d.data, d.len};
      tx_msgs_[n].msg_len = 0;
    }
    size_t done = 0;
    while (done < n) {
      const int r = sendmmsg(fd_, tx_msgs_.data() + done, static_cast<unsigned>(n - done), 0);
      if (r > 0) {
        done += static_cast<size_t>(r);
        taken += static_cast<size_t>(r);
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      // EAGAIN (socket buffer full) or a per-datagram error (EMSGSIZE, no route): that
      // datagram is dropped and counted; the rest of the burst is still tried.
      ++stats_.tx_dropped;
      ++done;
    }
    in = in.subspan(n);
  }
  stats_.tx_packets += taken;
  return taken;
}

void KernelQueue::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace ringpoll::packet
