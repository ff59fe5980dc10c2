#pragma once
// The kernel path of the packet contract (packet/packet_io.h): one non-blocking UDP
// socket per shard (SO_REUSEPORT spreads flows over the shards' sockets), a burst received
// with one recvmmsg and sent with one sendmmsg. It exists so the bypass paths have
// something honest to be compared with: same contract, same polling loop, the kernel's
// stack underneath. The RX "ring" is the socket's receive buffer; the kernel counts what
// overflows it and hands the count back with each message (SO_RXQ_OVFL), which becomes
// PacketStats::rx_dropped.
//
// Buffers: kMaxBurst receive slots of spec.max_payload bytes, allocated at open(); a
// batch is valid until release(), and the next rx_burst reuses the slots, so a caller
// releases a batch before it asks for the next one.
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "packet_io.h"

namespace ringpoll::packet {

class KernelQueue {
 public:
  static constexpr Path kPath = Path::kKernel;

  KernelQueue() = default;
  ~KernelQueue() { close(); }
  KernelQueue(const KernelQueue&) = delete;
  KernelQueue& operator=(const KernelQueue&) = delete;

  // Binds spec.local_ip:spec.local_port (port 0: the kernel picks; see local_port()).
  // Errors: the errno of socket/setsockopt/bind; *why says which step and address.
  Status open(const QueueSpec& spec, std::string* why = nullptr);
  size_t rx_burst(std::span<Datagram> out);
  void release(std::span<Datagram> batch) noexcept;
  size_t tx_burst(std::span<const Datagram> in);
  PacketStats stats() const noexcept { return stats_; }
  void close() noexcept;

  uint16_t local_port() const noexcept { return port_; }
  int fd() const noexcept { return fd_; }

 private:
  // Room for the SO_RXQ_OVFL control message of one datagram.
  static constexpr size_t kCmsgRoom = 32;
  struct RxSlot {
    sockaddr_in from{};
    iovec iov{};
    alignas(cmsghdr) std::array<std::byte, kCmsgRoom> cmsg{};
  };
  struct TxSlot {
    sockaddr_in to{};
    iovec iov{};
  };

  int fd_ = -1;
  uint16_t port_ = 0;
  uint32_t max_payload_ = 0;
  std::vector<std::byte> rx_buf_;
  std::array<RxSlot, kMaxBurst> rx_{};
  std::array<mmsghdr, kMaxBurst> rx_msgs_{};
  std::array<TxSlot, kMaxBurst> tx_{};
  std::array<mmsghdr, kMaxBurst> tx_msgs_{};
  uint32_t kernel_drops_ = 0;  // last SO_RXQ_OVFL value (the kernel's running count)
  PacketStats stats_;
};
static_assert(PacketQueue<KernelQueue>);

}  // namespace ringpoll::packet
