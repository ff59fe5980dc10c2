#include "engine/deadline.h"

namespace ringpoll {
namespace {

void rearm(PollDesc* pd, TimerWheel& wheel) noexcept {
  int64_t next = 0;
  if (pd->rd > 0) next = pd->rd;
  if (pd->wd > 0 && (next == 0 || pd->wd < next)) next = pd->wd;
  if (next > 0) {
    wheel.arm(&pd->timer, next);  // one store when only pushed later
  } else if (pd->timer.linked()) {
    wheel.cancel(&pd->timer);
  }
}

void wake_expired(PollDesc* pd, TaskList& ready) noexcept {
  if (pd->rd < 0) {
    if (TaskNode* t = pd->unblock(Mode::kRead, false)) ready.push_back(t);
  }
  if (pd->wd < 0) {
    if (TaskNode* t = pd->unblock(Mode::kWrite, false)) ready.push_back(t);
  }
}

bool slot_has_waiter(const std::atomic<uintptr_t>& g) noexcept {
  return g.load() > kPdReady;
}

}  // namespace

void deadline_open(PollDesc* pd, int fd) noexcept {
  if (slot_has_waiter(pd->rg)) fatal("PollDesc opened while a reader still waits on it");
  if (slot_has_waiter(pd->wg)) fatal("PollDesc opened while a writer still waits on it");
  pd->fd = fd;
  pd->closing = false;
  pd->set_event_err(false, 0);
  pd->set_hangup(false, 0);
  ++pd->rseq;
  ++pd->wseq;
  pd->rg.store(kPdNil);
  pd->wg.store(kPdNil);
  pd->rd = 0;
  pd->wd = 0;
  pd->timer = TimerNode{};
  pd->publish_info();
}

void deadline_set_at_slow(PollDesc* pd, int64_t abs, Mode mode, int64_t now, TimerWheel& wheel,
                          TaskList& ready) noexcept {
  if (pd->closing) return;
  if (abs != 0 && abs <= now) abs = -1;
  if (abs < 0) abs = -1;
  const int64_t rd0 = pd->rd;
  const int64_t wd0 = pd->wd;
  if (has_read(mode)) pd->rd = abs;
  if (has_write(mode)) pd->wd = abs;
  if (pd->rd != rd0) ++pd->rseq;
  if (pd->wd != wd0) ++pd->wseq;
  // The info word changes only when a direction enters or leaves "expired"; skipping the
  // CAS otherwise keeps the hot idle-timeout refresh to a few stores.
  if ((pd->rd < 0) != (rd0 < 0) || (pd->wd < 0) != (wd0 < 0)) pd->publish_info();
  rearm(pd, wheel);
  wake_expired(pd, ready);
}

void deadline_set(PollDesc* pd, int64_t d, Mode mode, int64_t now, TimerWheel& wheel,
                  TaskList& ready) noexcept {
  int64_t abs = d;
  if (d > 0) {
    if (__builtin_add_overflow(now, d, &abs)) abs = kDeadlineMax;  // S01: clamp, never wrap
  } else if (d < 0) {
    abs = -1;
  }
  deadline_set_at(pd, abs, mode, now, wheel, ready);
}

void deadline_fired(PollDesc* pd, int64_t now, TimerWheel& wheel, TaskList& ready) noexcept {
  if (pd->closing) return;  // close stopped the timer; nothing may fire after it
  const bool rexp = pd->rd > 0 && pd->rd <= now;
  const bool wexp = pd->wd > 0 && pd->wd <= now;
  if (rexp) {
    pd->rd = -1;
  }
  if (wexp) {
    pd->wd = -1;
  }
  if (rexp || wexp) {
    pd->publish_info();
    if (rexp) {
      if (TaskNode* t = pd->unblock(Mode::kRead, false)) ready.push_back(t);
    }
    if (wexp) {
      if (TaskNode* t = pd->unblock(Mode::kWrite, false)) ready.push_back(t);
    }
  }
  rearm(pd, wheel);
}

void deadline_evict(PollDesc* pd, TimerWheel& wheel, TaskList& ready) noexcept {
  if (pd->closing) fatal("PollDesc evicted twice (close of a closing descriptor)");
  pd->closing = true;
  ++pd->rseq;
  ++pd->wseq;
  pd->publish_info();
  if (pd->timer.linked()) wheel.cancel(&pd->timer);
  if (TaskNode* t = pd->unblock(Mode::kRead, false)) ready.push_back(t);
  if (TaskNode* t = pd->unblock(Mode::kWrite, false)) ready.push_back(t);
}

void deadline_check_close(PollDesc* pd) noexcept {
  if (!pd->closing) fatal("PollDesc closed without being evicted first");
  if (slot_has_waiter(pd->rg)) fatal("PollDesc closed while a reader waits on it");
  if (slot_has_waiter(pd->wg)) fatal("PollDesc closed while a writer waits on it");
}

}  // namespace ringpoll
