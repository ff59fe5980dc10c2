#pragma once
// Engine<P>: one shard per core. Each shard is a thread pinned to its CPU that owns its
// Scheduler (poller, PollCache bound to the CPU's NUMA node, timer wheels, run queue);
// nothing is shared on the hot path. Cross-shard work goes through a bounded MPSC inbox
// per shard plus one coalesced wake of the target (MSG_RING on io_uring, eventfd on
// epoll), sent only when the target is about to sleep.
//
//   submit_to(shard, fn)  from a task: run fn on `shard`, resume with its result; a
//                         full inbox applies backpressure (the caller yields and retries)
//   post(shard, fn)       from anywhere: fire and forget (false when the inbox is full)
//   call(shard, fn)       from a thread outside the engine: run and wait for the result
//
// Replies travel on an unbounded intrusive stack per shard (the caller's frame is the
// node), so a reply can never be refused and two busy shards cannot deadlock.
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include "mpsc_queue.h"
#include "scheduler.h"

namespace ringpoll {

struct EngineOptions {
  int shards = 0;                // 0: one per online CPU
  std::vector<int> cpus;         // CPU for shard i (default: i); empty and pin: 0..n-1
  bool pin = true;               // pin each shard's thread to its CPU
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
    int id() const noexcept { return id_; }    // 0..size()-1
    int cpu() const noexcept { return cpu_; }  // the CPU it is pinned to, -1 when not pinned
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
  };

  // Creates the shards (no thread runs until start()). shards = 0: one per online CPU.
  explicit Engine(EngineOptions o = {}) : opt_(std::move(o)) {
    int n = opt_.shards > 0 ? opt_.shards : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
    if (n < 1) n = 1;
    for (int i = 0; i < n; ++i) {
      shards_.push_back(std::unique_ptr<Shard>(new Shard(opt_.inbox_capacity)));
      Shard& s = *shards_.back();
      s.engine_ = this;
      s.id_ = i;
      s.cpu_ = i < static_cast<int>(opt_.cpus.size()) ? opt_.cpus[i] : (opt_.pin ? i : -1);
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
          cpu_set_t set;
          CPU_ZERO(&set);
          CPU_SET(s->cpu_ % CPU_SETSIZE, &set);
          pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        }
        // Built on the shard's thread: the PollCache binds to this CPU's NUMA node and
        // an io_uring with SINGLE_ISSUER belongs to this thread.
        s->sched_ = std::make_unique<Scheduler<P>>(opt_.sched);
        if (backend_setup_) backend_setup_(s->sched_->backend());
        const Status st = s->sched_->start();
        s->sched_->set_external_work(s);
        current_ = s;
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
      if (s->sched_) s->sched_->stop();
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

  // From a thread outside the engine: runs fn on `target` and waits for its result.
  template <class F>
  static auto call(Shard& target, F fn) -> std::invoke_result_t<F> {
    using R = std::invoke_result_t<F>;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::conditional_t<std::is_void_v<R>, int, std::optional<R>> out{};
    auto job = [&] {
      if constexpr (std::is_void_v<R>) {
        fn();
      } else {
        out.emplace(fn());
      }
      std::lock_guard<std::mutex> l(mu);
      done = true;
      cv.notify_all();
    };
    while (!post(target, job)) std::this_thread::yield();  // backpressure
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done; });
    if constexpr (!std::is_void_v<R>) return std::move(*out);
  }

  // From a thread outside the engine: starts the task make() returns on `target` and
  // waits until it has finished. make() runs on `target`'s thread; the task (and what it
  // captures by reference) must not outlive this call, which it cannot: the call waits.
  template <class F>
  static void run_task(Shard& target, F make) {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    auto wrapper = [](Task<void> t, std::mutex* mu, std::condition_variable* cv,
                      bool* done) -> Task<void> {
      co_await std::move(t);
      std::lock_guard<std::mutex> l(*mu);
      *done = true;
      cv->notify_all();
    };
    call(target, [&] { current_->sched().spawn(wrapper(make(), &mu, &cv, &done)); });
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done; });
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
      std::conditional_t<std::is_void_v<R>, int, std::optional<R>> result{};
      ShardReply reply;
      TaskNode node;
      Shard* origin;
      static void run(void* p) {
        auto* c = static_cast<CallState*>(p);
        if constexpr (std::is_void_v<R>) {
          c->fn();
        } else {
          c->result.emplace(c->fn());
        }
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
  // Parks the caller; drain() on its shard makes it ready when the reply arrives. The
  // reply cannot be processed before the park: replies are drained by this same thread.
  struct ParkAwaiter {
    TaskNode* node;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { node->handle = h; }
    void await_resume() const noexcept {}
  };

  EngineOptions opt_;
  std::function<void(P&)> backend_setup_;
  std::vector<std::unique_ptr<Shard>> shards_;
  bool started_ = false;
  std::atomic<bool> running_{false};
  static inline thread_local Shard* current_ = nullptr;
};

}  // namespace ringpoll
