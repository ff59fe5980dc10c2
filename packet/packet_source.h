#pragma once
// PacketSource<Q, H>: a shard's packet queue attached to its loop. The scheduler calls
// poll_source() every iteration (engine/scheduler.h, PollSource); each call receives one
// burst into a batch on the stack, hands it to the handler — which may transmit on the
// same queue — and releases it. The handler runs on the shard's thread between tasks, so
// it must not block; it may post work to tasks (wake them through `woken`).
//
//   H: void(std::span<Datagram> batch, Q& queue, TaskList& woken)
#include <array>
#include <span>
#include <utility>

#include "../engine/scheduler.h"
#include "packet_io.h"

namespace ringpoll::packet {

template <PacketQueue Q, class H>
class PacketSource final : public PollSource {
 public:
  PacketSource(Q& q, H h) : q_(q), h_(std::move(h)) {}
  size_t poll_source(TaskList& woken) override {
    std::array<Datagram, kMaxBurst> batch;
    const size_t n = q_.rx_burst(batch);
    if (n == 0) return 0;
    std::span<Datagram> got(batch.data(), n);
    h_(got, q_, woken);
    q_.release(got);
    return n;
  }
  Q& queue() noexcept { return q_; }
  H& handler() noexcept { return h_; }

 private:
  Q& q_;
  H h_;
};

// The echo handler: every datagram goes back to its sender, in one TX burst per batch.
struct EchoHandler {
  uint64_t echoed = 0;
  template <PacketQueue Q>
  void operator()(std::span<Datagram> batch, Q& q, TaskList&) {
    echoed += q.tx_burst(batch);  // RX peer = the sender = TX peer
  }
};

}  // namespace ringpoll::packet
