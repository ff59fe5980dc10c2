#include "uring/uring_ring.h"

#include "poller/internal/test_seams.h"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace ringpoll {
namespace {

std::string read_sysctl(const char* path) {
  FILE* f = std::fopen(path, "r");
  if (!f) return "unreadable";
  char buf[32] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string s(buf, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A small ring per waking thread, used only to send IORING_OP_MSG_RING.
// Counts the forks of this process (a pthread_atfork child handler, registered once).
std::atomic<unsigned> g_forks{0};
unsigned fork_generation() {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  return g_forks.load(std::memory_order_relaxed);
}

struct WakerRing {
  io_uring ring{};
  bool ok = false;
  unsigned forks = 0;  // the fork generation the ring belongs to
  WakerRing() { open(); }
  void open() {
    forks = fork_generation();
    // Without COOP/DEFER_TASKRUN the kernel runs this ring's task work by interrupting the
    // waking thread, which makes that thread's own blocking syscalls (recv with a timeout,
    // nanosleep...) fail with EINTR. Defer it to our own io_uring_enter instead.
    const unsigned tries[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                              IORING_SETUP_COOP_TASKRUN, 0};
    for (unsigned f : tries) {
      io_uring_params p{};
      p.flags = f;
      if (io_uring_queue_init_params(4, &ring, &p) == 0) {
        ok = true;
        break;
      }
    }
  }
  ~WakerRing() {
    if (ok) io_uring_queue_exit(&ring);
  }
  // Posts a CQE with user_data `data` into the ring `target_fd`. Returns 0 or -errno.
  int send(int target_fd, uint64_t data) {
    if (forks != fork_generation()) {
      // A forked child: this thread's ring is the parent's (its memory is shared with the
      // parent, and a SINGLE_ISSUER ring refuses any other task with EEXIST). Let go of
      // the child's copies and open a ring of its own.
      if (ok) io_uring_queue_exit(&ring);
      ring = io_uring{};
      ok = false;
      open();
    }
    if (!ok) return -ENOSYS;
    io_uring_sqe* s = io_uring_get_sqe(&ring);
    if (!s) return -EBUSY;
    io_uring_prep_msg_ring(s, target_fd, 0, data, 0);
    s->user_data = 0;
    int r = io_uring_submit_and_wait(&ring, 1);
    if (r < 0) return r;
    io_uring_cqe* cqe = nullptr;
    r = io_uring_peek_cqe(&ring, &cqe);
    if (r < 0) return r;
    const int res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    return res < 0 ? res : 0;
  }
};

constexpr unsigned kTaskrunFlag = IORING_SETUP_TASKRUN_FLAG;

}  // namespace

std::string classify_uring_setup_failure(int err) {
  std::string s = "io_uring_setup failed with ";
  switch (err) {
    case ENOSYS:
      return s + "ENOSYS: a seccomp filter blocks io_uring or the kernel was built without it";
    case EPERM:
      return s + "EPERM: kernel.io_uring_disabled=" +
             read_sysctl("/proc/sys/kernel/io_uring_disabled") +
             " (2: disabled for all; 1: only for members of kernel.io_uring_group=" +
             read_sysctl("/proc/sys/kernel/io_uring_group") +
             "); with 0, an LSM or seccomp policy denies it";
    case ENOMEM: {
      rlimit rl{};
      getrlimit(RLIMIT_MEMLOCK, &rl);
      return s + "ENOMEM: the ring's memory could not be locked (RLIMIT_MEMLOCK=" +
             std::to_string(rl.rlim_cur) + " bytes; raise it with ulimit -l)";
    }
    default:
      return s + std::strerror(err);
  }
}

Availability UringRing::probe() {
  io_uring r{};
  if (const int e = g_uring_setup_fail_errno.load())
    return {false, e, classify_uring_setup_failure(e)};
  const int ret = io_uring_queue_init(2, &r, 0);
  if (ret < 0) return {false, -ret, classify_uring_setup_failure(-ret)};
  io_uring_queue_exit(&r);
  return {true, 0, "io_uring_setup succeeded"};
}

UringRing::~UringRing() {
  teardown();
  if (wake_efd_ >= 0) ::close(wake_efd_);
}

void UringRing::teardown() {
  if (ring_fd() < 0) return;
  ring_fd_.store(-1);
  // A waker that read the old fd before the store is still sending to it: the fd must not
  // close (and be reused) under its MSG_RING. New wakers see -1 (seq_cst both sides).
  while (wakers_.load() != 0) sched_yield();
  io_uring_queue_exit(&ring_);
  ring_ = io_uring{};
  if (probe_) io_uring_free_probe(probe_);
  probe_ = nullptr;
  overflow_.clear();  // SQEs for the old ring; the restart arms what still matters
  wake_seen_ = false;
}

Status UringRing::setup(unsigned entries) {
  unsigned want = IORING_SETUP_CLAMP;
  if (opt_.single_issuer) want |= IORING_SETUP_SINGLE_ISSUER;
  if (opt_.single_issuer && opt_.defer_taskrun && !opt_.sqpoll) want |= IORING_SETUP_DEFER_TASKRUN;
  if (opt_.coop_taskrun && !opt_.sqpoll) want |= IORING_SETUP_COOP_TASKRUN;
  if (want & (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_DEFER_TASKRUN)) want |= kTaskrunFlag;
  if (opt_.sqpoll) want |= IORING_SETUP_SQPOLL;
  // Older kernels answer EINVAL for flags they do not know: drop the newest first.
  const unsigned drops[] = {0, IORING_SETUP_DEFER_TASKRUN,
                            IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER,
                            IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
                                IORING_SETUP_COOP_TASKRUN | kTaskrunFlag};
  int ret = -EINVAL;
  if (const int e = g_uring_setup_fail_errno.load()) return Status::from_errno(e);
  if (const UringSetupHook h = g_uring_setup_hook.load()) {
    if (const int e = h(entries)) return Status::from_errno(e);
  }
  for (unsigned drop : drops) {
    io_uring_params p{};
    p.flags = want & ~drop;
    if (p.flags & IORING_SETUP_SQPOLL) p.sq_thread_idle = opt_.sqpoll_idle_ms;
    ret = io_uring_queue_init_params(entries, &ring_, &p);
    if (ret == 0) {
      flags_ = p.flags;
      break;
    }
    if (ret != -EINVAL) break;
  }
  if (ret < 0) return Status::from_errno(-ret);
  entries_ = entries;
  ring_fd_.store(ring_.ring_fd);
  probe_ = io_uring_get_probe_ring(&ring_);
  // Chosen by the first setup only: wakers on other threads read it unlocked, and a
  // restart's ring runs on the same kernel.
  if (!set_up_) msg_ring_wake_ = opt_.msg_ring_wake && supports(IORING_OP_MSG_RING);
  set_up_ = true;
  if (opt_.register_ring_fd) (void)io_uring_register_ring_fd(&ring_);  // optional speed-up
  if (!msg_ring_wake_) arm_wake_eventfd();
  return Status();
}

bool UringRing::supports(int opcode) const noexcept {
  return probe_ && io_uring_opcode_supported(probe_, opcode);
}

std::string UringRing::describe() const {
  std::string s = "io_uring (";
  const std::pair<unsigned, const char*> names[] = {{IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER"},
                                                    {IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN"},
                                                    {IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"},
                                                    {IORING_SETUP_SQPOLL, "SQPOLL"}};
  bool first = true;
  for (auto& [bit, name] : names) {
    if (flags_ & bit) {
      s += first ? "" : "|";
      s += name;
      first = false;
    }
  }
  s += first ? "no optional flags" : "";
  s += msg_ring_wake_ ? ", wake=msg_ring)" : ", wake=eventfd)";
  return s;
}

void UringRing::arm_wake_eventfd() {
  if (wake_efd_ < 0) {
    wake_efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_efd_ < 0) fatal("io_uring: eventfd for the wake failed", errno);
  }
  io_uring_sqe* s = sqe();
  io_uring_prep_poll_multishot(s, wake_efd_, POLLIN);
  io_uring_sqe_set_data64(s, kUringWakeData);
}

io_uring_sqe* UringRing::sqe() {
  io_uring_sqe* s = overflow_.empty() ? io_uring_get_sqe(&ring_) : nullptr;
  if (!s) {
    flush();
    if (overflow_.empty()) s = io_uring_get_sqe(&ring_);
  }
  if (!s) {
    // Still full (SQPOLL has not caught up): keep the request; flush() moves it later.
    overflow_.emplace_back();
    s = &overflow_.back();
  }
  std::memset(s, 0, sizeof *s);
  return s;
}

int UringRing::flush() {
  size_t moved = 0;
  while (moved < overflow_.size()) {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    if (!s) {
      if (io_uring_submit(&ring_) < 0) break;
      s = io_uring_get_sqe(&ring_);
      if (!s) break;
    }
    *s = overflow_[moved++];
  }
  overflow_.erase(overflow_.begin(), overflow_.begin() + static_cast<ptrdiff_t>(moved));
  const int r = io_uring_submit(&ring_);
  return (r == -EBUSY || r == -EAGAIN) ? 0 : r;
}

int UringRing::wait(int64_t delta_ns) {
  if (g_uring_wait_fail_errno.load(std::memory_order_relaxed) != 0) {
    if (const int e = g_uring_wait_fail_errno.exchange(0)) return -e;  // a test's fault
  }
  if (!overflow_.empty()) flush();
  int r;
  if (delta_ns < 0) {
    r = io_uring_submit_and_wait(&ring_, 1);
  } else if (delta_ns == 0) {
    // With DEFER_TASKRUN completions are produced only when we enter with GETEVENTS; the
    // TASKRUN flag tells us whether anything is pending, so an idle check costs no syscall.
    const bool need_enter = io_uring_sq_ready(&ring_) > 0 || io_uring_cq_has_overflow(&ring_) ||
                            (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) ||
                            !(flags_ & kTaskrunFlag);
    r = need_enter ? io_uring_submit_and_get_events(&ring_) : 0;
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = delta_ns / 1'000'000'000;
    ts.tv_nsec = delta_ns % 1'000'000'000;
    io_uring_cqe* cqe = nullptr;
    r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  if (r == -ETIME || r == -EINTR) return r;
  if (r == -EBUSY || r == -EAGAIN) return 0;  // CQ backlog: reap, then enter again
  if (r == -EBADR) return r;                  // completions dropped: the caller restarts
  if (r < 0) {
    fatal("io_uring: unexpected error from io_uring_enter", -r);
  }
  return 0;
}

bool UringRing::on_wake_cqe(int64_t delta_ns) noexcept {
  if (delta_ns == 0) {
    wake_seen_ = true;  // keep it pending for the next blocking poll (S28)
    return false;
  }
  if (wake_efd_ >= 0) {
    uint64_t v;
    ssize_t n = ::read(wake_efd_, &v, sizeof v);
    (void)n;  // EAGAIN: already drained
  }
  wake_seen_ = false;
  wake_pending_.store(0);
  return true;
}

bool UringRing::take_seen_wake(int64_t delta_ns) noexcept {
  if (delta_ns == 0 || !wake_seen_) return false;
  on_wake_cqe(delta_ns);
  return true;
}

void UringRing::wake() noexcept {
  uint32_t expected = 0;
  if (!wake_pending_.compare_exchange_strong(expected, 1)) return;
  if (msg_ring_wake_) {
    thread_local WakerRing waker;
    wakers_.fetch_add(1);
    const int fd = ring_fd_.load();
    // -1: the ring is being restarted; the restarting poll returns without blocking.
    const int r = fd < 0 ? 0 : waker.send(fd, kUringWakeData);
    wakers_.fetch_sub(1);
    if (r == 0) {
      wakes_written_.fetch_add(fd < 0 ? 0 : 1);
      return;
    }
    fatal("io_uring: the wake could not be delivered (MSG_RING)", -r);
  }
  const uint64_t one = 1;
  for (;;) {
    if (::write(wake_efd_, &one, sizeof one) == sizeof one || errno == EAGAIN) break;
    if (errno != EINTR) fatal("io_uring: write to the wake eventfd failed", errno);
  }
  wakes_written_.fetch_add(1);
}

}  // namespace ringpoll
