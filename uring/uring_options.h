#pragma once
// The io_uring backends' options, as plain structs with no kernel header: tuning/ fills
// them from a profile on every platform (the Windows build reads the same TOML and has no
// liburing), and the backends (uring_ring.h, uring_completion.h) take them.
#include <cstddef>

namespace ringpoll {

struct UringOptions {
  unsigned entries = 256;     // SQ entries; the CQ gets twice as many
  bool single_issuer = true;  // try IORING_SETUP_SINGLE_ISSUER
  bool defer_taskrun = true;  // try IORING_SETUP_DEFER_TASKRUN (needs single_issuer)
  bool coop_taskrun = true;   // try IORING_SETUP_COOP_TASKRUN
  bool sqpoll = false;        // IORING_SETUP_SQPOLL
  unsigned sqpoll_idle_ms = 1000;
  bool msg_ring_wake = true;     // wake by IORING_OP_MSG_RING where the kernel has it
  bool register_ring_fd = true;  // io_uring_register_ring_fd: cheaper io_uring_enter
};

struct UringCompletionOptions {
  bool multishot_accept = true;
  bool multishot_recv = true;
  unsigned buf_count = 512;  // provided buffers (a power of two)
  unsigned buf_size = 4096;  // bytes each
  // The most provided buffers one connection may hold received but not yet read; at the
  // bound its multishot recv stops until the application reads (at least 1; above
  // buf_count it is buf_count).
  unsigned buf_per_conn = 16;
  bool send_zc = true;
  size_t zc_threshold = 16384;  // send_zc pays only for large sends (page pinning costs)
};

}  // namespace ringpoll
