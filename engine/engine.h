#pragma once
// Engine<P>: one shard per core. Each shard is a thread pinned to its CPU that owns its
// Scheduler (poller, PollCache bound to the CPU's NUMA node, timer wheels, run queue);
// nothing is shared on the hot path. Cross-shard work goes through a bounded MPSC inbox
// per shard plus one coalesced wake of the target (MSG_RING on io_uring, eventfd on
// epoll, a posted completion packet on IOCP), sent only when the target is about to sleep.
// On Windows the shards are pinned with SetThreadAffinityMask within the process's
// processor group (the first 64 CPUs at most).
//
//   submit_to(shard, fn)  from a task: run fn on `shard`, resume with its result; a
//                         full inbox applies backpressure (the caller yields and retries)
//   post(shard, fn)       from anywhere: fire and forget (false when the inbox is full)
//   call(shard, fn)       from a thread outside the engine: run and wait for the result;
//                         try_call is the same but fails (false / empty) instead of
//                         waiting forever when the shard has stopped (Engine::stop)
//
// Replies travel on an unbounded intrusive stack per shard (the caller's frame is the
// node), so a reply can never be refused and two busy shards cannot deadlock.
#ifdef _WIN32
#include <windows.h>
#else
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "mpsc_queue.h"
#include "scheduler.h"

namespace ringpoll {

struct EngineOptions {
  // 0: one per CPU the process may run on (its inherited affinity mask: taskset, a
  // container's cpuset), not one per online CPU.
  int shards = 0;
  // CPU for shard i. Empty (and pin): the allowed CPUs in order, so two processes started
  // under disjoint masks never share a CPU; more shards than allowed CPUs wrap around.
  std::vector<int> cpus;
  bool pin = true;  // pin each shard's thread to its CPU; a failed pin is logged, not fatal
  size_t inbox_capacity = 4096;  // cross-shard jobs queued per shard before backpressure
  SchedulerOptions sched;
};

// A job in a shard's inbox: a function and its argument (no allocation).
struct ShardJob {
  void (*fn)(void*) = nullptr;
  void* arg = nullptr;
};

// The reply half of a cross-shard call: the caller's frame, linked into the origin's
// reply stack by the target.
struct ShardReply {
  ShardReply* next = nullptr;
  TaskNode* node = nullptr;
};

namespace detail {
#ifdef _WIN32
// Windows (IOCP): the CPUs of the process's affinity mask (GetProcessAffinityMask: the
// process's processor group, at most 64 CPUs), in increasing order; every CPU the system
// reports when the mask cannot be read.
inline std::vector<int> allowed_cpus() {
  std::vector<int> out;
  DWORD_PTR process = 0, system = 0;
  if (GetProcessAffinityMask(GetCurrentProcess(), &process, &system)) {
    for (int c = 0; c < static_cast<int>(sizeof(DWORD_PTR) * 8); ++c)
      if (process & (DWORD_PTR{1} << c)) out.push_back(c);
  }
  if (out.empty()) {
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    const int n = si.dwNumberOfProcessors < 1 ? 1 : static_cast<int>(si.dwNumberOfProcessors);
    for (int c = 0; c < n; ++c) out.push_back(c);
  }
  return out;
}
// Pins the calling thread to `cpu` of the process's processor group; 0 or the Windows
// error (ERROR_INVALID_PARAMETER: a CPU the process may not use).
inline int pin_this_thread(int cpu) {
  if (cpu >= static_cast<int>(sizeof(DWORD_PTR) * 8)) return ERROR_INVALID_PARAMETER;
  return SetThreadAffinityMask(GetCurrentThread(), DWORD_PTR{1} << cpu) != 0
             ? 0
             : static_cast<int>(GetLastError());
}
inline std::string pin_error(int e) {
  return "Windows error " + std::to_string(e);
}
#else
// The CPUs this process may run on (sched_getaffinity), in increasing order; when the mask
// cannot be read, every online CPU.
inline std::vector<int> allowed_cpus() {
  std::vector<int> out;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  if (out.empty()) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long c = 0; c < (n < 1 ? 1 : n); ++c) out.push_back(static_cast<int>(c));
  }
  return out;
}
// Pins the calling thread to `cpu`; 0 or the errno value. EINVAL: the CPU is offline,
// absent, or outside the cpuset (cgroup) the process runs in.
inline int pin_this_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % CPU_SETSIZE, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}
inline std::string pin_error(int e) {
  return std::strerror(e);
}
#endif
}  // namespace detail

// Owns its shards and their threads. Construct, optionally set_backend_setup, start() from
// one thread (usually main); stop() from any thread, then join(). The destructor stops and
// joins. Everything a shard owns (its Scheduler, sockets, tasks) is touched only on that
// shard's thread; other threads reach a shard through post/call/run_task/submit_to.
template <PollerBackend P>
class Engine {
 public:
  // One shard: a thread, its Scheduler and its cross-shard inbox. Owned by the Engine.
  class Shard : public ExternalWork {
   public:
    int id() const noexcept { return id_; }  // 0..size()-1
    // The CPU it is pinned to, -1 when not pinned (pin off, or pinning failed: logged).
    // Final once Engine::start() has returned.
    int cpu() const noexcept { return cpu_; }
    // True while the shard's thread serves its inbox: from start() until its loop returned
    // after Engine::stop(). Jobs posted once it is false never run.
    bool serving() const noexcept { return serving_.load(std::memory_order_acquire); }
    // The shard's scheduler: use it only on this shard's thread (e.g. from its tasks).
    Scheduler<P>& sched() noexcept { return *sched_; }
    Engine& engine() noexcept { return *engine_; }

    // Any thread. False when the inbox is full (the caller decides how to back off).
    bool try_post(ShardJob j) noexcept {
      if (!inbox_.try_push(j)) return false;
      notify();
      return true;
    }
    size_t inbox_capacity() const noexcept { return inbox_.capacity(); }
    // Called by the shard's scheduler loop (ExternalWork): runs queued jobs and resumes the
    // tasks whose cross-shard replies arrived. Not for application code.
    size_t drain() override {
      size_t n = 0;
      // Replies first: they resume tasks waiting on their answers.
      ShardReply* r = replies_.exchange(nullptr);
      // The stack is LIFO; reverse it so replies resume in arrival order.
      ShardReply* rev = nullptr;
      while (r) {
        ShardReply* nx = r->next;
        r->next = rev;
        rev = r;
        r = nx;
      }
      for (; rev; rev = rev->next, ++n) sched_->make_ready(rev->node);
      ShardJob j;
      while (inbox_.try_pop(j)) {
        j.fn(j.arg);
        ++n;
      }
      return n;
    }
    bool pending() const override { return inbox_.has_item() || replies_.load() != nullptr; }
    // Any thread: hands a finished cross-shard call back to this (its origin) shard.
    void push_reply(ShardReply* r) noexcept {
      ShardReply* head = replies_.load();
      do {
        r->next = head;
      } while (!replies_.compare_exchange_weak(head, r));
      notify();
    }

   private:
    friend class Engine;
    explicit Shard(size_t cap) : inbox_(cap) {}
    void notify() noexcept {
      // Pairs with the scheduler's "store sleeping, then check pending" (seq_cst both).
      if (sleeping.load()) sched_->backend().wake();
    }
    Engine* engine_ = nullptr;
    int id_ = 0;
    int cpu_ = -1;
    std::thread thread_;
    std::unique_ptr<Scheduler<P>> sched_;
    MpscQueue<ShardJob> inbox_;
    std::atomic<ShardReply*> replies_{nullptr};
    std::atomic<bool> serving_{false};
    std::atomic<bool> failed_{false};  // its backend's start failed (Engine::start)
  };

  // Creates the shards (no thread runs until start()). shards = 0: one per CPU in the
  // process's affinity mask.
  explicit Engine(EngineOptions o = {}) : opt_(std::move(o)) {
    const std::vector<int> allowed = detail::allowed_cpus();
    int n = opt_.shards > 0 ? opt_.shards : static_cast<int>(allowed.size());
    if (n < 1) n = 1;
    for (int i = 0; i < n; ++i) {
      shards_.push_back(std::unique_ptr<Shard>(new Shard(opt_.inbox_capacity)));
      Shard& s = *shards_.back();
      s.engine_ = this;
      s.id_ = i;
      s.cpu_ = i < static_cast<int>(opt_.cpus.size()) ? opt_.cpus[i]
               : opt_.pin ? allowed[static_cast<size_t>(i) % allowed.size()]
                          : -1;
    }
  }
  ~Engine() {
    stop();
    join();
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Before start(): runs on each shard's thread with its backend before the backend's
  // init (ring sizes, io_uring features, buffer ring geometry).
  void set_backend_setup(std::function<void(P&)> f) { backend_setup_ = std::move(f); }

  // Starts every shard's thread; `on_start(shard)` runs on each shard's thread once its
  // scheduler is up (spawn listeners there). Returns the first shard's setup error.
  Status start(std::function<void(Shard&)> on_start = {}) {
    std::mutex mu;
    std::condition_variable cv;
    int ready = 0;
    Status first_error;
    for (auto& sp : shards_) {
      Shard* s = sp.get();
      // on_start is copied: the thread runs it after start() has returned. mu/cv/ready
      // are touched only until this thread has counted itself ready, under the lock.
      s->thread_ = std::thread([this, s, &mu, &cv, &ready, &first_error, on_start] {
        if (s->cpu_ >= 0 && opt_.pin) {
          // A `cpus` list written for another machine names a CPU this process may not
          // use: the shard still runs, unpinned.
          if (const int e = detail::pin_this_thread(s->cpu_); e != 0) {
            std::fprintf(stderr, "ringpoll: shard %d: cannot pin to CPU %d: %s; running unpinned\n",
                         s->id_, s->cpu_, detail::pin_error(e).c_str());
            s->cpu_ = -1;
          }
        }
        // Built on the shard's thread: the PollCache binds to this CPU's NUMA node and
        // an io_uring with SINGLE_ISSUER belongs to this thread.
        s->sched_ = std::make_unique<Scheduler<P>>(opt_.sched);
        s->sched_->set_shard_id(s->id_);
        if (backend_setup_) backend_setup_(s->sched_->backend());
        const Status st = s->sched_->start();
        s->sched_->set_external_work(s);
        current_ = s;
        if (st.ok()) s->serving_.store(true, std::memory_order_release);
        if (!st.ok()) s->failed_.store(true, std::memory_order_release);
        {
          std::lock_guard<std::mutex> l(mu);
          if (!st.ok() && first_error.ok()) first_error = st;
          ++ready;
          cv.notify_all();  // under the lock: start() may return (destroying cv) right after
        }
        if (!st.ok()) return;
        if (on_start) on_start(*s);
        s->sched_->run(/*until_stopped=*/true);
        current_ = nullptr;
        // Last: from here on this thread touches nothing of the shard, so a thread that
        // sees serving() false may tear down what the shard's tasks hold (TcpServer).
        s->serving_.store(false, std::memory_order_release);
      });
    }
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return ready == static_cast<int>(shards_.size()); });
    started_ = true;
    running_.store(first_error.ok(), std::memory_order_release);
    return first_error;
  }

  // Any thread: every shard's loop returns after its current task.
  void stop() noexcept {
    running_.store(false, std::memory_order_release);
    for (auto& s : shards_) {
      // A shard whose backend failed to start has no loop to stop, nor a wake to send.
      if (s->sched_ && !s->failed_.load(std::memory_order_acquire)) s->sched_->stop();
    }
  }
  // Waits for every shard's thread to return (after stop(), or after a failed start()).
  // Not from a shard's own thread.
  void join() {
    for (auto& s : shards_) {
      if (s->thread_.joinable()) s->thread_.join();
    }
  }

  // True from a successful start() until stop(): the shards take work (call, post,
  // run_task). Servers check it before they tear down through the shards.
  bool running() const noexcept { return running_.load(std::memory_order_acquire); }

  size_t size() const noexcept { return shards_.size(); }  // number of shards
  Shard& shard(size_t i) noexcept { return *shards_[i]; }  // i < size(); any thread
  // The shard the calling thread runs, or nullptr outside the engine.
  static Shard* current() noexcept { return current_; }

  // Fire and forget from any thread; fn runs on `target`. The closure is heap-allocated
  // (use submit_to on the hot path). False when the inbox is full.
  template <class F>
  static bool post(Shard& target, F fn) {
    auto* box = new F(std::move(fn));
    ShardJob j{[](void* p) {
                 std::unique_ptr<F> f(static_cast<F*>(p));
                 (*f)();
               },
               box};
    if (target.try_post(j)) return true;
    delete box;
    return false;
  }

  // From a thread outside the engine: runs fn on `target` and waits for its result. A
  // shard that has stopped (Engine::stop) never runs it: that stops the process with a
  // message naming the shard instead of waiting forever (try_call returns instead).
  template <class F>
  static auto call(Shard& target, F fn) -> std::invoke_result_t<F> {
    using R = std::invoke_result_t<F>;
    if constexpr (std::is_void_v<R>) {
      if (!try_call(target, std::move(fn))) stopped_shard_fatal(target, "Engine::call");
    } else {
      std::optional<R> r = try_call(target, std::move(fn));
      if (!r) stopped_shard_fatal(target, "Engine::call");
      return std::move(*r);
    }
  }
  // call() that fails instead: false (void fn) or an empty optional when `target` is not
  // serving, or stops before it ran fn (then fn never runs). Waits for fn otherwise.
  template <class F>
  static auto try_call(Shard& target, F fn)
      -> std::conditional_t<std::is_void_v<std::invoke_result_t<F>>, bool,
                            std::optional<std::invoke_result_t<F>>> {
    using R = std::invoke_result_t<F>;
    // The job lives in this frame, not on the heap: when the shard stops with it still
    // queued, nothing runs it again and nothing leaks (see Shard::serving).
    struct Job {
      explicit Job(F f) : fn(std::move(f)) {}
      F fn;
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      ResultSlot<R> out{};
      static void run(void* p) {
        auto* j = static_cast<Job*>(p);
        run_into<R>(j->fn, j->out);
        std::lock_guard<std::mutex> l(j->mu);
        j->done = true;
        j->cv.notify_all();
      }
    } job(std::move(fn));
    bool ran = false;
    if (target.serving()) {
      while (target.serving() && !target.try_post(ShardJob{&Job::run, &job}))
        std::this_thread::yield();  // backpressure
      // The shard's thread runs jobs only before it clears serving(); so once serving()
      // is false, `done` is final (a job still queued then is never run).
      std::unique_lock<std::mutex> l(job.mu);
      while (!job.done && target.serving()) job.cv.wait_for(l, std::chrono::milliseconds(10));
      ran = job.done;
    }
    if constexpr (std::is_void_v<R>) {
      return ran;
    } else {
      return ran ? std::move(job.out) : std::optional<R>();
    }
  }

  // From a thread outside the engine: starts the task make() returns on `target` and
  // waits until it has finished. make() runs on `target`'s thread; the task (and what it
  // captures by reference) must not outlive this call, which it cannot: the call waits.
  // A shard that has stopped stops the process saying so (try_run_task returns instead).
  template <class F>
  static void run_task(Shard& target, F make) {
    if (!try_run_task(target, std::move(make))) stopped_shard_fatal(target, "Engine::run_task");
  }
  // run_task() that returns false when `target` is not serving or stops before the task
  // finished; the unfinished task is then destroyed with the shard's scheduler.
  template <class F>
  static bool try_run_task(Shard& target, F make) {
    struct Wait {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
    } w;
    auto wrapper = [](Task<void> t, Wait* w) -> Task<void> {
      co_await std::move(t);
      std::lock_guard<std::mutex> l(w->mu);
      w->done = true;
      w->cv.notify_all();
    };
    if (!try_call(target, [&] { current_->sched().spawn(wrapper(make(), &w)); })) return false;
    std::unique_lock<std::mutex> l(w.mu);
    while (!w.done && target.serving()) w.cv.wait_for(l, std::chrono::milliseconds(10));
    return w.done;
  }

  // From a task on a shard: runs fn on `target` and resumes the caller with its result.
  // Allocates nothing: the call state lives in this coroutine's frame. fn must not block
  // (it runs inside `target`'s loop); calling this outside a shard stops the process.
  template <class F>
  static Task<std::invoke_result_t<F>> submit_to(Shard& target, F fn) {
    using R = std::invoke_result_t<F>;
    Shard* origin = current_;
    if (!origin) fatal("submit_to called outside a shard (use Engine::call)");
    struct CallState {
      F fn;
      ResultSlot<R> result{};
      ShardReply reply;
      TaskNode node;
      Shard* origin;
      static void run(void* p) {
        auto* c = static_cast<CallState*>(p);
        run_into<R>(c->fn, c->result);
        c->origin->push_reply(&c->reply);
      }
    };
    CallState c{std::move(fn), {}, {}, {}, origin};
    c.reply.node = &c.node;
    if (&target == origin) {
      CallState::run(&c);  // same shard: run inline, the reply is a no-op round
    } else {
      while (!target.try_post(ShardJob{&CallState::run, &c})) {
        co_await origin->sched().yield();  // backpressure: let the target drain
      }
    }
    co_await ParkAwaiter{&c.node};
    if constexpr (!std::is_void_v<R>) co_return std::move(*c.result);
  }

 private:
  // Where a cross-shard call keeps fn's result: an optional, or an unused int for void.
  template <class R>
  using ResultSlot = std::conditional_t<std::is_void_v<R>, int, std::optional<R>>;
  template <class R, class F>
  static void run_into(F& fn, ResultSlot<R>& out) {
    if constexpr (std::is_void_v<R>) {
      fn();
    } else {
      out.emplace(fn());
    }
  }

  // Parks the caller; drain() on its shard makes it ready when the reply arrives. The
  // reply cannot be processed before the park: replies are drained by this same thread.
  struct ParkAwaiter {
    TaskNode* node;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { node->handle = h; }
    void await_resume() const noexcept {}
  };

  [[noreturn]] static void stopped_shard_fatal(const Shard& s, const char* what) {
    std::fprintf(stderr,
                 "ringpoll: fatal: %s on shard %d, which has stopped (Engine::stop ran, or "
                 "start failed): it would wait forever; use try_call/try_run_task\n",
                 what, s.id());
    std::abort();
  }

  EngineOptions opt_;
  std::function<void(P&)> backend_setup_;
  std::vector<std::unique_ptr<Shard>> shards_;
  bool started_ = false;
  std::atomic<bool> running_{false};
  static inline thread_local Shard* current_ = nullptr;
};

}  // namespace ringpoll
