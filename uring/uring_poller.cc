#include "uring/uring_poller.h"

#include <sys/stat.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <string>

namespace ringpoll {
namespace {
// pd->backend_flags bits: a multishot poll is armed for the descriptor; it is in watched_.
constexpr uint8_t kPollArmed = 1;
constexpr uint8_t kWatched = 2;
// A restart whose ring setup meets ENOMEM asks for half the entries each time, down to
// this (a shard with a small ring is slower, not broken: a full SQ is flushed and waits),
constexpr unsigned kRestartMinEntries = 8;
// then tries this many more times at that size, pausing 1, 2, 4, 8, 16 ms (31 ms in all)
// for memory that other rings or reclaim give back; bounded, since the shard serves
// nothing meanwhile.
constexpr int kRestartRetriesAtMin = 5;
constexpr int64_t kRestartFirstPauseNs = 1'000'000;

void pause_ns(int64_t ns) {
  timespec t{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}
// user_data (the table in uring_ring.h): bit 0 marks the completion of a poll removal.
// The other constants (wake, ignore, liburing's timeout) are checked before it.
constexpr uint64_t kRemoveBit = kUringRemoveBit;
}  // namespace

void UringPoller::remove_poll(uint64_t poll_data) {
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_poll_remove(s, poll_data);
  io_uring_sqe_set_data64(s, poll_data | kRemoveBit);
}

Availability UringPoller::available() {
  static const Availability a = UringRing::probe();
  return a;
}

void UringPoller::arm_poll(int fd, PollDesc* pd) {
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_poll_multishot(s, fd, kPollMask);
  io_uring_sqe_set_data64(s, tag_pointer(pd, pd->fdseq.load()));
  pd->backend_flags |= kPollArmed;
}

int UringPoller::open(int fd, PollDesc* pd) {
  // Match epoll: regular files and directories cannot be polled (they are always
  // "ready"), so they get EPERM and run without deadlines (S12).
  struct stat st;
  if (fstat(fd, &st) < 0) return errno;
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return EPERM;
  arm_poll(fd, pd);
  pd->backend_flags |= kWatched;
  pd->backend_data = watched_.size();
  watched_.push_back(pd);
  return 0;
}

void UringPoller::unwatch(PollDesc* pd) {
  if (!(pd->backend_flags & kWatched)) return;
  pd->backend_flags &= static_cast<uint8_t>(~kWatched);
  const size_t i = pd->backend_data;
  PollDesc* last = watched_.back();
  watched_[i] = last;
  last->backend_data = i;
  watched_.pop_back();
}

int UringPoller::close(int, PollDesc* pd) {
  unwatch(pd);
  if (!(pd->backend_flags & kPollArmed)) return 0;
  pd->backend_flags &= static_cast<uint8_t>(~kPollArmed);
  remove_poll(tag_pointer(pd, pd->fdseq.load()));
  // Submit now: the poll holds a reference to the file, which the caller is about to
  // close, and the peer should see the close promptly.
  const int r = ring_.flush();
  return r < 0 ? -r : 0;
}

int UringPoller::poll(int64_t delta_ns, TaskList& out) {
  int64_t d = delta_ns;
  if (ring_.take_seen_wake(d)) d = 0;  // a wake already arrived: do not block
  for (;;) {
    const int r = ring_.wait(d);
    if (r == -EINTR) {
      if (d < 0) continue;  // a blocking wait resumes; a timed one returns (S29)
      return 0;
    }
    if (r == -EBADR) {
      // Readiness was lost in the kernel: re-arm everything on a new ring (Restart). The
      // fresh polls report on the next poll; return now so the loop looks at its inbox.
      restart_ring("the kernel dropped completions (EBADR)");
      return 0;
    }
    break;
  }
  int events = 0;
  ring_.for_each([&](io_uring_cqe* cqe) {
    const uint64_t ud = cqe->user_data;
    const bool more = cqe->flags & IORING_CQE_F_MORE;
    if (ud == kUringWakeData) {
      ring_.on_wake_cqe(d);
      if (!ring_.wake_uses_msg_ring() && !more) ring_.rearm_wake();
      return;
    }
    if (ud == kUringIgnoreData || ud == LIBURING_UDATA_TIMEOUT) return;
    if (ud & kRemoveBit) {
      // -EALREADY: the poll had a completion in flight (deferred task work) and the
      // removal lost the race; the multishot poll stays armed and keeps the file open, so
      // the peer would never see the close. Ask again now that the work has run.
      if (cqe->res == -EALREADY) {
        ++remove_retries_;
        remove_poll(ud & ~kRemoveBit);
      }
      return;
    }
    ++events;
    PollDesc* pd = tagged_pd(ud);
    const uint32_t tag = tagged_seq(ud);
    if (!tag_current(pd, tag)) return;  // the descriptor was freed since: stale
    const int res = cqe->res;
    if (res >= 0) {
      uint8_t mode = 0;
      if (res & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) mode |= 1;
      if (res & (POLLOUT | POLLHUP | POLLERR)) mode |= 2;
      pd->set_event_err(res == POLLERR, tag);  // only when error is the sole event (S20)
      // The end of the read side, as on epoll (kInfoHangup: the short-read rule stops).
      if (res & (POLLRDHUP | POLLHUP | POLLERR)) pd->set_hangup(true, tag);
      if (mode) pd->ready(static_cast<Mode>(mode), out);
    } else if (res != -ECANCELED) {
      // The poll itself failed (e.g. EBADF): report it like an error event.
      pd->set_event_err(true, tag);
      pd->set_hangup(true, tag);
      pd->ready(Mode::kReadWrite, out);
      pd->backend_flags &= static_cast<uint8_t>(~kPollArmed);
      return;
    }
    if (!more && !pd->closing && (pd->backend_flags & kPollArmed)) {
      ++rearms_;
      arm_poll(pd->fd, pd);  // the multishot poll ended: arm it again (S30)
    }
  });
  return events;
}

void UringPoller::restart_ring(const char* why) {
  ring_.teardown();
  unsigned entries = ring_.options().entries;
  int64_t pause = kRestartFirstPauseNs;
  int at_min = 0;
  uint64_t retries = 0;
  for (;;) {
    const Status s = ring_.setup(entries);
    if (s.ok()) break;
    const int e = s.sys_errno();
    if (e != ENOMEM || at_min == kRestartRetriesAtMin) {
      std::fprintf(stderr,
                   "ringpoll: io_uring: ring restart (%s) failed after %" PRIu64 " retries: %s\n",
                   why, retries, classify_uring_setup_failure(e).c_str());
      // The backend is chosen once per process (Shard<P>): no epoll to fall back to here.
      fatal("io_uring: a shard's ring could not be set up again after a restart", e);
    }
    ++retries;
    setup_retries_.fetch_add(1, std::memory_order_relaxed);
    if (entries / 2 >= kRestartMinEntries) {
      entries /= 2;
    } else {
      ++at_min;
      pause_ns(pause);
      pause *= 2;
    }
  }
  // Wakes sent to the old ring are gone with it: clear the pending one (the caller returns
  // to its loop, which looks at its inbox before it blocks again).
  (void)ring_.on_wake_cqe(-1);
  for (PollDesc* pd : watched_) {
    if (pd->closing) {
      pd->backend_flags &= static_cast<uint8_t>(~kPollArmed);  // close has nothing to remove
    } else if (pd->backend_flags & kPollArmed) {
      arm_poll(pd->fd, pd);
    }
  }
  (void)ring_.flush();
  restarts_.fetch_add(1, std::memory_order_relaxed);
  std::fprintf(stderr,
               "ringpoll: io_uring: ring restarted (%s): %zu descriptors re-armed, %u "
               "entries, %" PRIu64 " ENOMEM retries\n",
               why, watched_.size(), entries, retries);
}

}  // namespace ringpoll
