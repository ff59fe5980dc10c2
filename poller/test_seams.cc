// The test seams' storage (poller/internal/test_seams.h), and the functions through which
// the installed headers read the ones they need, so that those headers carry no mutable
// test global.
#include "poller/internal/test_seams.h"

#include <sys/socket.h>

namespace ringpoll {

std::atomic<BeforeParkHook> g_before_park_hook{nullptr};
Accept4Fn g_accept4_fn = ::accept4;
std::atomic<EpollEventHook> g_epoll_event_hook{nullptr};
std::atomic<UringInjectHook> g_uring_inject_hook{nullptr};
std::atomic<int> g_uring_setup_fail_errno{0};
std::atomic<UringSetupHook> g_uring_setup_hook{nullptr};
std::atomic<int> g_uring_wait_fail_errno{0};
std::atomic<UringCqeHook> g_uring_cqe_hook{nullptr};
std::atomic<size_t> g_uring_send_clamp{0};
std::atomic<bool> g_uring_zc_on_loopback{false};
std::atomic<UringFaultHook> g_uring_fault_hook{nullptr};

namespace detail {

void before_park(PollDesc* pd, Mode m) noexcept {
  if (const BeforeParkHook h = g_before_park_hook.load(std::memory_order_relaxed)) h(pd, m);
}

int accept_connection(int fd, int flags) noexcept {
  return g_accept4_fn(fd, nullptr, nullptr, flags);
}

bool uring_injected(io_uring_cqe* cqe) noexcept {
  const UringInjectHook h = g_uring_inject_hook.load(std::memory_order_relaxed);
  return h && h(cqe);
}

}  // namespace detail
}  // namespace ringpoll
