#pragma once
// Scheduler<P>: one shard's loop (Go's schedule/findRunnable, for one P): a run queue of
// coroutine tasks, the shard's PollCache, its timer wheels and its backend P.
//
//   loop:
//     run ready tasks; after every `fairness_batch` tasks, poll the backend without
//       blocking and fire due timers, so I/O and timers are not starved by busy tasks
//     fire due timers (deadlines and sleeps)
//     poll the attached PollSources (packet queues), without blocking
//     if nothing is runnable: block in P::poll until the next timer or a wake; while a
//       source is attached, block at most the source back-off (see PollSource); with
//       busy polling, spin on non-blocking polls first: busy_poll_ns, or as long as the
//       adaptive controller says (kBusyPollAuto, engine/adaptive_poll.h)
//
// Stall detector (stall_threshold_ns > 0): after each task, and after the inbox's jobs,
// the loop checks how long ago it last polled the backend; past the threshold it counts
// one stall (stalls(), once per stretch without a poll) and logs what it was running
// (engine/stall.h). Off (0), it costs one predictable branch per task.
//
// Everything except stop() and the backend's wake() runs on the shard's thread.
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "../poller/poll_cache.h"
#include "../poller/poller.h"
#include "adaptive_poll.h"
#include "clock.h"
#include "deadline.h"
#include "stall.h"
#include "task.h"
#include "timer_wheel.h"

namespace ringpoll {

struct SchedulerOptions {
  int64_t tick_ns = 1'000'000;  // level-0 wheel tick; deadlines are late by at most this
  // Tasks run between two non-blocking polls; Go checks its global queue every 61 ticks.
  int fairness_batch = 61;
  int numa_node = -2;  // -2: the node of the CPU that constructs the scheduler; -1: unbound
  // Before blocking, keep polling without blocking for this long (0: block at once). Trades
  // a core's idle time for the wake-up latency of a sleeping thread. kBusyPollAuto: the
  // adaptive controller decides each time, within adaptive_poll (engine/adaptive_poll.h).
  int64_t busy_poll_ns = 0;
  AdaptivePollLimits adaptive_poll;
  // PollSource back-off: after this many idle rounds in a row (no source had work), the
  // loop stops spinning and blocks in P::poll for 1 us, doubling each idle round up to
  // source_idle_max_ns. Work from any source resets it to spinning.
  int source_idle_spins = 64;
  int64_t source_idle_max_ns = 1'000'000;
  // Stall detector: a loop that has not polled its backend for longer than this counts a
  // stall and logs the task that was running (see above). 0: off.
  int64_t stall_threshold_ns = 0;
};

// Something the shard loop polls every iteration without blocking: a kernel-bypass RX
// queue (packet/), which has no descriptor to wake a blocked poll. poll_source() handles
// what is ready, appends any task it wakes to `woken`, and returns how many items it
// handled (0: idle). Sources are linked intrusively: attaching allocates nothing.
class PollSource {
 public:
  virtual ~PollSource() = default;
  virtual size_t poll_source(TaskList& woken) = 0;

 private:
  template <PollerBackend>
  friend class Scheduler;
  PollSource* next_source_ = nullptr;
};

// Work that arrives from other threads (a shard's cross-shard inbox). The scheduler
// drains it every loop iteration and before blocking publishes `sleeping` so producers
// know to wake it: producer "push, then load sleeping"; shard "store sleeping, then check
// pending" — both seq_cst, so one of them always sees the other (no lost wake-up).
class ExternalWork {
 public:
  virtual ~ExternalWork() = default;
  virtual size_t drain() = 0;
  virtual bool pending() const = 0;
  std::atomic<bool> sleeping{false};
};

// What the shard's descriptor operations cost in system calls that moved nothing, for
// tests and the admin metrics. Shard thread only (plain counters).
struct IoCounters {
  // Read-direction attempts (read, recv, accept, peek; in io_uring completion mode a
  // multishot read that found no queued data) that would have blocked, so the operation
  // parked: each is a system call that moved nothing, except in completion mode.
  uint64_t read_wouldblock = 0;
  // Reads parked at once, with no system call, because the previous read came back short
  // (engine/readiness_op.h, the short-read rule): each is an EAGAIN saved.
  uint64_t read_parked_drained = 0;
};

template <PollerBackend P>
class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions opt = {})
      : opt_(opt),
        cache_(opt.numa_node == -2 ? PollCache::current_numa_node() : opt.numa_node),
        deadlines_(opt.tick_ns, mono_now_ns()),
        sleeps_(opt.tick_ns, mono_now_ns()),
        last_poll_ns_(mono_now_ns()) {}
  ~Scheduler() {
    // Tasks still parked when the scheduler goes away are destroyed with their frames.
    // Two passes: every frame first (their awaiters withdraw from descriptors and release
    // what they hold), then the roots' owners, which may free what the frames pointed at.
    Root* list = std::exchange(roots_, nullptr);
    for (Root* r = list; r; r = r->next) r->node.handle.destroy();
    while (list) {
      Root* r = std::exchange(list, list->next);
      r->done(r, {});
    }
  }
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  Status start() { return backend_.init(); }

  // The bookkeeping of a root task (spawned, awaited by nobody): its first run, the
  // shard's list of live roots, and what happens when it ends. When the task finishes,
  // done(root, frame) runs and must call finish_root(root, frame); when the scheduler is
  // destroyed with the task unfinished, done(root, {}) runs after the frame was destroyed.
  struct Root : detail::DoneHook {
    TaskNode node;  // node.handle: the task's frame
    Root* prev = nullptr;
    Root* next = nullptr;
  };

  // Takes ownership of a root task; it starts on the next run.
  void spawn(Task<void> t) {
    auto* r = new HeapRoot;
    r->s = this;
    r->done = &HeapRoot::ended;
    spawn(std::move(t), r);
  }
  // The same with the bookkeeping in storage the caller owns and keeps until done() runs
  // (r->done set by the caller): a server's connection task then costs no allocation
  // besides its own frame (TcpServer keeps the Root in its connection record).
  void spawn(Task<void> t, Root* r) {
    r->node.handle = t.release_to(r);
    r->prev = nullptr;
    r->next = roots_;
    if (roots_) roots_->prev = r;
    roots_ = r;
    ++live_;
    make_ready(&r->node);
  }
  // Calls f(root) for every live root task; f must not spawn or finish roots. Shard thread.
  template <class F>
  void for_each_root(F&& f) {
    for (Root* r = roots_; r; r = r->next) f(r);
  }
  // From a Root's done(): the task has finished; unlinks it and destroys its frame.
  void finish_root(Root* r, std::coroutine_handle<> frame) noexcept {
    unlink_root(r);
    --live_;
    frame.destroy();
  }

  // Runs until every spawned task has finished (or, with until_stopped, until stop()),
  // or stop() is called.
  // A stop() that arrives before run() is entered is not lost: run() then returns at once
  // (Engine: a shard's thread may reach run() after the engine was told to stop). run()
  // consumes the stop when it returns.
  void run(bool until_stopped = false) {
    struct ConsumeStop {
      std::atomic<bool>& stop;
      ~ConsumeStop() { stop.store(false); }
    } consume{stop_};
    if (opt_.stall_threshold_ns > 0) polled();
    while ((until_stopped || live_ > 0) && !stop_.load(std::memory_order_relaxed)) {
      if (ext_ && ext_->drain() > 0 && opt_.stall_threshold_ns > 0) check_stall(nullptr, 0);
      ran_since_idle_ += run_ready();
      if (sources_) poll_sources();
      fire_timers();
      if (!runq_.empty()) continue;
      if ((!until_stopped && live_ == 0) || stop_.load(std::memory_order_relaxed)) break;
      if (ext_) {
        ext_->sleeping.store(true);
        if (ext_->pending()) {
          ext_->sleeping.store(false);
          continue;
        }
      }
      if (sources_) {
        poll_io(source_wait_ns(next_wait_ns()));  // the sources do the spinning
      } else if (opt_.busy_poll_ns == kBusyPollAuto) {
        adaptive_wait();
      } else if (opt_.busy_poll_ns <= 0 || !busy_poll(opt_.busy_poll_ns)) {
        poll_io(next_wait_ns());
      }
      if (ext_) ext_->sleeping.store(false);
      fire_timers();
    }
  }
  // Attaches the shard's cross-thread inbox (Engine does); before run(), shard thread.
  void set_external_work(ExternalWork* w) noexcept { ext_ = w; }
  // Any thread: make run() return after the current task.
  void stop() noexcept {
    stop_.store(true);
    backend_.wake();
  }

  // ---- steps of the loop, public so tests can drive them deterministically ----
  // Resumes up to `max` ready tasks in FIFO order; returns how many ran.
  size_t run_ready(size_t max = SIZE_MAX) {
    size_t n = 0;
    while (n < max) {
      TaskNode* t = runq_.pop_front();
      if (!t) break;
      if (opt_.stall_threshold_ns > 0) {
        const void* code = task_code(t);
        t->resume();
        check_stall(code, 1);
      } else {
        t->resume();
      }
      ++n;
      // A task that yielded asked for the others to run first, and those include the ones
      // whose I/O is ready now: poll before resuming anything else. Without it, a bulk
      // stream yielding alone on its shard would poll only every fairness_batch yields.
      if (poll_due_ ||
          (opt_.fairness_batch > 0 && n % static_cast<size_t>(opt_.fairness_batch) == 0)) {
        poll_due_ = false;
        poll_io(0);
        if (sources_) poll_sources();
        fire_timers();
        if (ext_) ext_->drain();
      }
      if (stop_.load(std::memory_order_relaxed)) break;
    }
    return n;
  }
  // Fires the deadlines and sleeps due at `now`, queueing the tasks they wake.
  size_t fire_timers(int64_t now = mono_now_ns()) {
    TaskList woken;
    size_t n = deadlines_.advance(
        now, [&](TimerNode* node) { deadline_fired(poll_desc_of(node), now, deadlines_, woken); });
    n += sleeps_.advance(now, [&](TimerNode* node) {
      woken.push_back(&reinterpret_cast<SleepAwaiter*>(node)->task);
    });
    runq_.splice_back(woken);
    return n;
  }
  // One backend poll (delta_ns: 0 non-blocking, -1 until a wake, else at most that long);
  // the tasks it wakes join the run queue as one batch. Returns the backend's event count.
  int poll_io(int64_t delta_ns) {
    TaskList woken;
    const int n = backend_.poll(delta_ns, woken);
    runq_.splice_back(woken);
    if (opt_.stall_threshold_ns > 0) polled();
    return n;
  }
  // Spins on non-blocking polls for up to spin_ns (never past the next timer). True when
  // something became ready; false when the loop should block as usual.
  bool busy_poll(int64_t spin_ns) {
    const int64_t start = mono_now_ns();
    int64_t end = start + spin_ns;
    const int64_t wait = next_wait_ns();
    if (wait >= 0 && start + wait < end) end = start + wait;
    for (int64_t now = start; now < end; now = mono_now_ns()) {
      ++busy_polls_;
      if (poll_io(0) > 0 || !runq_.empty()) return true;
      if (ext_ && ext_->pending()) return true;
      if (stop_.load(std::memory_order_relaxed)) return true;
    }
    return false;
  }
  // The idle point under kBusyPollAuto: spin as long as the controller says, block if that
  // found nothing, then tell the controller how the idle period went.
  void adaptive_wait() {
    const int64_t idle_at = mono_now_ns();
    const int64_t spin = ctl_.spin_ns;
    bool hit = false;
    int64_t spun = 0;
    if (spin > 0) {
      hit = busy_poll(spin);
      spun = mono_now_ns() - idle_at;
    }
    if (!hit) poll_io(next_wait_ns());
    const int64_t now = mono_now_ns();
    ctl_ = adaptive_poll_step(
        ctl_,
        IdleObservation{now, now - idle_at, spun, hit, static_cast<int64_t>(ran_since_idle_),
                        busy_since_ > 0 ? idle_at - busy_since_ : 0},
        opt_.adaptive_poll);
    ran_since_idle_ = 0;
    busy_since_ = now;
    // Published for other threads (the admin endpoint); relaxed: each figure on its own.
    auto& p = ctl_pub_;
    constexpr auto r = std::memory_order_relaxed;
    p.mode.store(static_cast<uint8_t>(ctl_.mode), r);
    p.spin_ns.store(ctl_.spin_ns, r);
    p.gap_ewma_ns.store(ctl_.gap_ewma_ns, r);
    p.tasks_per_wake_x16.store(ctl_.tasks_ewma_x16, r);
    p.wasted_in_window_ns.store(ctl_.wasted_ns, r);
    if (spin > 0) {
      p.spins.store(p.spins.load(r) + 1, r);
      if (hit) p.spin_hits.store(p.spin_hits.load(r) + 1, r);
      p.spun_ns.store(p.spun_ns.load(r) + spun, r);
      if (!hit) p.wasted_ns.store(p.wasted_ns.load(r) + spun, r);
    }
  }
  // The adaptive controller's state and totals (all zero unless busy_poll_ns is
  // kBusyPollAuto). Any thread.
  AdaptivePollStats adaptive_poll() const noexcept {
    constexpr auto r = std::memory_order_relaxed;
    const auto& p = ctl_pub_;
    AdaptivePollStats st;
    st.mode = static_cast<AdaptivePollMode>(p.mode.load(r));
    st.spin_ns = p.spin_ns.load(r);
    st.gap_ewma_ns = p.gap_ewma_ns.load(r);
    st.tasks_per_wake_x16 = p.tasks_per_wake_x16.load(r);
    const int64_t window_ms = opt_.adaptive_poll.window_ns / 1'000'000;
    st.budget_used_ppm = window_ms > 0 ? p.wasted_in_window_ns.load(r) / window_ms : 0;
    st.spins = p.spins.load(r);
    st.spin_hits = p.spin_hits.load(r);
    st.spun_ns = p.spun_ns.load(r);
    st.wasted_ns = p.wasted_ns.load(r);
    return st;
  }
  bool adaptive_polling() const noexcept { return opt_.busy_poll_ns == kBusyPollAuto; }

  // How long the loop may block: until the earliest timer, or forever (-1).
  int64_t next_wait_ns() const {
    int64_t a = deadlines_.next_deadline();
    const int64_t b = sleeps_.next_deadline();
    if (a < 0 || (b >= 0 && b < a)) a = b;
    if (a < 0) return -1;
    const int64_t d = a - mono_now_ns();
    return d > 0 ? d : 0;
  }
  // Polls every attached source once; counts idle rounds for the back-off.
  size_t poll_sources() {
    TaskList woken;
    size_t n = 0;
    for (PollSource* s = sources_; s; s = s->next_source_) n += s->poll_source(woken);
    runq_.splice_back(woken);
    source_idle_rounds_ = n > 0 ? 0 : source_idle_rounds_ + 1;
    return n;
  }
  // The longest the loop may block while sources are attached: 0 while spinning, then
  // 1 us doubling up to source_idle_max_ns, never past `timer_wait` (-1: no timer).
  int64_t source_wait_ns(int64_t timer_wait) const noexcept {
    const int64_t over = static_cast<int64_t>(source_idle_rounds_) - opt_.source_idle_spins;
    if (over < 0) return 0;
    int64_t w = opt_.source_idle_max_ns;
    if (over < 30 && (int64_t{1000} << over) < w) w = int64_t{1000} << over;
    return timer_wait >= 0 && timer_wait < w ? timer_wait : w;
  }
  // Shard thread. The source must stay alive until detached.
  void attach_source(PollSource* s) noexcept {
    s->next_source_ = sources_;
    sources_ = s;
    source_idle_rounds_ = 0;
  }
  void detach_source(PollSource* s) noexcept {
    for (PollSource** p = &sources_; *p; p = &(*p)->next_source_) {
      if (*p == s) {
        *p = s->next_source_;
        s->next_source_ = nullptr;
        return;
      }
    }
  }
  uint64_t source_idle_rounds() const noexcept { return source_idle_rounds_; }

  // Queues a parked task (or a whole batch) to run on this shard. Shard thread only.
  void make_ready(TaskNode* t) noexcept { runq_.push_back(t); }
  void make_ready(TaskList& l) noexcept { runq_.splice_back(l); }

  // ---- descriptors ----
  // Allocates a PollDesc for fd and starts watching it. On failure returns nullptr and
  // sets *err to the backend's errno (EPERM: fd cannot be polled).
  PollDesc* open(int fd, int* err) {
    PollDesc* pd = cache_.alloc();
    deadline_open(pd, fd);
    const int e = backend_.open(fd, pd);
    if (e != 0) {
      pd->closing = true;
      cache_.free(pd);
      if (err) *err = e;
      return nullptr;
    }
    if (err) *err = 0;
    return pd;
  }
  // Marks pd closing and wakes its waiters with kClosing (Go's pollUnblock).
  void evict(PollDesc* pd) {
    TaskList woken;
    deadline_evict(pd, deadlines_, woken);
    runq_.splice_back(woken);
  }
  // Stops watching and returns pd to the cache (Go's pollClose). pd must be evicted and
  // have no waiter.
  void close(PollDesc* pd) {
    deadline_check_close(pd);
    backend_.close(pd->fd, pd);
    cache_.free(pd);
  }
  // d: 0 none, < 0 expired, > 0 relative ns (Go's encoding).
  void set_deadline(PollDesc* pd, int64_t d, Mode mode) {
    TaskList woken;
    deadline_set(pd, d, mode, mono_now_ns(), deadlines_, woken);
    runq_.splice_back(woken);
  }
  // abs: 0 none, otherwise absolute ns on CLOCK_MONOTONIC (at or before now: expired).
  void set_deadline_at(PollDesc* pd, int64_t abs, Mode mode) {
    TaskList woken;
    deadline_set_at(pd, abs, mode, mono_now_ns(), deadlines_, woken);
    runq_.splice_back(woken);
  }

  // ---- awaitables ----
  // Waits for readiness in one direction (Go's pollWait, one round). Returns kNone when
  // the caller should retry its syscall: readiness arrived, or a timer fired but the
  // deadline was reset before we ran (S09) — the retried syscall then waits again.
  struct WaitAwaiter {
    Scheduler* s;
    PollDesc* pd;
    Mode mode;
    bool waitio = false;
    PollError result = PollError::kNone;
    bool parked = false;
    TaskNode node;

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) noexcept {
      node.handle = h;
      if constexpr (P::kLevelTriggered) {
        if (!waitio) s->backend_.arm(pd, mode);
      }
      const PollDesc::Parking r = pd->park(mode, &node, waitio);
      result = r.err;
      parked = r.state == PollDesc::Parking::kParked;
      return parked;
    }
    PollError await_resume() noexcept {
      if (parked) {
        parked = false;
        result = pd->woken(mode, waitio);
      }
      return result;
    }
    // A frame destroyed while parked (its scheduler is going away) withdraws its node, so
    // a later close of the descriptor cannot wake freed memory.
    ~WaitAwaiter() {
      if (parked) pd->withdraw(mode, &node);
    }
  };
  WaitAwaiter wait(PollDesc* pd, Mode mode) noexcept {
    return WaitAwaiter{this, pd, mode, false, PollError::kNone, false, {}};
  }

  // Go's netpollblock with waitio = true: waits for the completion of an operation that
  // was cancelled, ignoring timeout and close (completion backends, S24).
  WaitAwaiter wait_io(PollDesc* pd, Mode mode) noexcept {
    return WaitAwaiter{this, pd, mode, true, PollError::kNone, false, {}};
  }

  struct SleepAwaiter {
    TimerNode timer;  // first: the sleep wheel's callback casts the node back
    TaskNode task;
    Scheduler* s;
    int64_t until;
    bool await_ready() const noexcept { return until <= mono_now_ns(); }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      task.handle = h;
      s->sleeps_.arm(&timer, until);
    }
    void await_resume() const noexcept {}
  };
  SleepAwaiter sleep_until(int64_t abs_ns) noexcept { return SleepAwaiter{{}, {}, this, abs_ns}; }
  SleepAwaiter sleep_for(int64_t ns) noexcept { return sleep_until(mono_now_ns() + ns); }

  // Requeues the caller behind every task that is ready now, and has the loop poll the
  // backend (without blocking) before it resumes the next task.
  struct YieldAwaiter {
    Scheduler* s;
    TaskNode node;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      node.handle = h;
      s->make_ready(&node);
      s->poll_due_ = true;
    }
    void await_resume() const noexcept {}
  };
  YieldAwaiter yield() noexcept { return YieldAwaiter{this, {}}; }

  // Rebuilds the backend's kernel object where the backend can (io_uring readiness mode:
  // a new ring, every descriptor re-armed; UringPoller::restart_ring) and returns true;
  // false for backends without a restart. Shard thread, from a task or an inbox job.
  bool restart_backend() {
    if constexpr (requires(P & b) { b.restart_ring(""); }) {
      backend_.restart_ring("asked by the application");
      return true;
    } else {
      return false;
    }
  }

  // The shard's own parts, for backends, tests and benchmarks (shard thread only).
  P& backend() noexcept { return backend_; }
  // Non-blocking polls made while busy-polling (SchedulerOptions::busy_poll_ns).
  uint64_t busy_polls() const noexcept { return busy_polls_; }
  IoCounters& io_counters() noexcept { return io_; }
  PollCache& cache() noexcept { return cache_; }
  TimerWheel& deadline_wheel() noexcept { return deadlines_; }
  // Stalls counted by the stall detector (SchedulerOptions::stall_threshold_ns). Any thread.
  uint64_t stalls() const noexcept { return stalls_.load(std::memory_order_relaxed); }
  // The shard id the stall detector's log names (Engine sets it; -1 outside an Engine).
  void set_shard_id(int id) noexcept { shard_id_ = id; }
  // Root tasks not yet finished; tasks queued to run now.
  size_t live_tasks() const noexcept { return live_; }
  size_t runnable() const noexcept { return runq_.size(); }

 private:
  struct HeapRoot : Root {
    Scheduler* s = nullptr;
    static void ended(detail::DoneHook* h, std::coroutine_handle<> frame) noexcept {
      auto* r = static_cast<HeapRoot*>(h);
      if (frame) r->s->finish_root(r, frame);
      delete r;
    }
  };
  // The stall detector's bookkeeping: the loop polled its backend just now.
  void polled() noexcept {
    last_poll_ns_ = mono_now_ns();
    tasks_since_poll_ = 0;
    stall_counted_ = false;
  }
  // After running `tasks` tasks (or the inbox's jobs: code nullptr, tasks 0): counts and
  // logs a stall the first time this stretch without a poll passes the threshold.
  void check_stall(const void* code, size_t tasks) {
    tasks_since_poll_ += tasks;
    if (stall_counted_) return;
    const int64_t since = mono_now_ns() - last_poll_ns_;
    if (since <= opt_.stall_threshold_ns) return;
    stall_counted_ = true;
    stalls_.fetch_add(1, std::memory_order_relaxed);
    log_stall(StallReport{shard_id_, since, tasks_since_poll_, code});
  }
  void unlink_root(Root* r) noexcept {
    if (r->prev) r->prev->next = r->next;
    if (r->next) r->next->prev = r->prev;
    if (roots_ == r) roots_ = r->next;
    r->prev = r->next = nullptr;
  }

  SchedulerOptions opt_;
  P backend_;
  uint64_t busy_polls_ = 0;
  size_t ran_since_idle_ = 0;  // tasks run since the last idle point (adaptive_wait)
  int64_t busy_since_ = 0;     // when the last idle point ended (adaptive_wait)
  bool poll_due_ = false;      // a task yielded: poll before the next one runs (run_ready)
  AdaptivePollState ctl_;      // shard thread only
  // ctl_ and its totals as other threads read them (written by the shard thread only).
  struct {
    std::atomic<uint8_t> mode{0};
    std::atomic<int64_t> spin_ns{0};
    std::atomic<int64_t> gap_ewma_ns{0};
    std::atomic<int64_t> tasks_per_wake_x16{0};
    std::atomic<int64_t> wasted_in_window_ns{0};
    std::atomic<uint64_t> spins{0};
    std::atomic<uint64_t> spin_hits{0};
    std::atomic<int64_t> spun_ns{0};
    std::atomic<int64_t> wasted_ns{0};
  } ctl_pub_;
  IoCounters io_;
  PollCache cache_;
  TimerWheel deadlines_;
  TimerWheel sleeps_;
  TaskList runq_;
  size_t live_ = 0;
  Root* roots_ = nullptr;
  ExternalWork* ext_ = nullptr;
  PollSource* sources_ = nullptr;
  uint64_t source_idle_rounds_ = 0;
  int64_t last_poll_ns_;
  size_t tasks_since_poll_ = 0;
  bool stall_counted_ = false;
  int shard_id_ = -1;
  std::atomic<uint64_t> stalls_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace ringpoll
