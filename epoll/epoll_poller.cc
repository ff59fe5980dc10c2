#include "epoll/epoll_poller.h"

#include "poller/internal/test_seams.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace ringpoll {
namespace {

// The wake eventfd's user data: no PollDesc lives at address 0, so 0 cannot collide.
constexpr uint64_t kWakeData = 0;
constexpr int64_t kNsPerMs = 1'000'000;

int sys_epoll_pwait2(int epfd, epoll_event* ev, int n, const timespec* ts) {
#ifdef SYS_epoll_pwait2
  return static_cast<int>(syscall(SYS_epoll_pwait2, epfd, ev, n, ts, nullptr, 0));
#else
  (void)epfd, (void)ev, (void)n, (void)ts;
  errno = ENOSYS;
  return -1;
#endif
}

}  // namespace

Availability EpollPoller::available() {
  const int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return {false, e, std::string("epoll_create1 failed: ") + std::strerror(e)};
  }
  ::close(fd);
  return {true, 0, "epoll_create1 succeeded"};
}

EpollPoller::~EpollPoller() {
  if (epfd_ >= 0) ::close(epfd_);
  if (wakefd_ >= 0) ::close(wakefd_);
}

Status EpollPoller::init() {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return Status::from_errno(errno);
  wakefd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakefd_ < 0) return Status::from_errno(errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeData;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) < 0) return Status::from_errno(errno);
  // Probe epoll_pwait2 once with a zero timeout: ENOSYS means an older kernel (< 5.11).
  epoll_event probe[1];
  timespec zero{0, 0};
  pwait2_ = sys_epoll_pwait2(epfd_, probe, 1, &zero) >= 0 || errno != ENOSYS;
  return Status();
}

int EpollPoller::open(int fd, PollDesc* pd) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = tag_pointer(pd, pd->fdseq.load());
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0 ? errno : 0;
}

int EpollPoller::close(int fd, PollDesc*) {
  epoll_event ev{};  // non-null for kernels before 2.6.9
  return epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &ev) < 0 ? errno : 0;
}

void EpollPoller::wake() noexcept {
  // Coalesce: only the caller that flips 0 -> 1 writes; the blocking poll that drains the
  // eventfd flips it back (S28).
  uint32_t expected = 0;
  if (!wake_pending_.compare_exchange_strong(expected, 1)) return;
  const uint64_t one = 1;
  for (;;) {
    if (::write(wakefd_, &one, sizeof one) == sizeof one) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) break;  // counter saturated: a wake is already pending
    fatal("epoll: write to the wake eventfd failed", errno);
  }
  wakes_written_.fetch_add(1);
}

int EpollPoller::poll(int64_t delta_ns, TaskList& out) {
  epoll_event events[kMaxEvents];
  int n;
  for (;;) {
    if (pwait2_) {
      timespec ts{};
      const timespec* tsp = nullptr;
      if (delta_ns >= 0) {
        ts.tv_sec = delta_ns / 1'000'000'000;
        ts.tv_nsec = delta_ns % 1'000'000'000;
        tsp = &ts;
      }
      n = sys_epoll_pwait2(epfd_, events, kMaxEvents, tsp);
    } else {
      int ms;
      if (delta_ns < 0) {
        ms = -1;
      } else if (delta_ns == 0) {
        ms = 0;
      } else if (delta_ns < kNsPerMs) {
        ms = 1;  // round up: a truncated 0 would make the caller spin
      } else if (delta_ns < int64_t{1'000'000} * kNsPerMs) {
        ms = static_cast<int>((delta_ns + kNsPerMs - 1) / kNsPerMs);
      } else {
        ms = 1'000'000;  // about 16 minutes; the caller simply waits again
      }
      n = epoll_wait(epfd_, events, kMaxEvents, ms);
    }
    if (n >= 0) break;
    if (errno != EINTR) fatal("epoll_wait failed with an unexpected error", errno);
    // A timed wait that was interrupted returns so the caller recomputes its timeout.
    if (delta_ns > 0) return 0;
    if (delta_ns == 0) return 0;
  }
  if (const EpollEventHook hook = g_epoll_event_hook.load(std::memory_order_relaxed)) {
    n = hook(events, n, kMaxEvents);
  }
  for (int i = 0; i < n; ++i) {
    const epoll_event& ev = events[i];
    if (ev.data.u64 == kWakeData) {
      if (delta_ns != 0) {
        // Only a blocking poll drains the wake, so a non-blocking poll (the fairness poll)
        // does not eat the wake that a later blocking poll must see.
        uint64_t buf;
        ssize_t r = ::read(wakefd_, &buf, sizeof buf);
        (void)r;  // EAGAIN: already drained by a racing read; nothing to do
        wake_pending_.store(0);
      }
      continue;
    }
    uint8_t mode = 0;
    if (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) mode |= 1;
    if (ev.events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) mode |= 2;
    if (mode == 0) continue;
    PollDesc* pd = tagged_pd(ev.data.u64);
    const uint32_t tag = tagged_seq(ev.data.u64);
    if (!tag_current(pd, tag)) continue;  // stale: the descriptor was freed since
    // The error bit is set only when error is the sole event (S20).
    pd->set_event_err(ev.events == EPOLLERR, tag);
    // Remembered before the wake: a read woken by an edge that also brought the FIN goes on
    // reading after a short read, since no later edge will say the stream ended.
    if (ev.events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) pd->set_hangup(true, tag);
    pd->ready(static_cast<Mode>(mode), out);
  }
  return n;
}

}  // namespace ringpoll
