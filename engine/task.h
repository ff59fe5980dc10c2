#pragma once
// Task<T>: a lazily started C++20 coroutine (the engine's G). Awaiting a Task starts it
// and resumes the awaiter when it finishes (symmetric transfer, so chains of awaits do not
// grow the stack). A Task is owned by whoever holds it; Scheduler::spawn takes ownership
// of a root task and runs it to completion.
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <new>
#include <optional>
#include <utility>

#include "../poller/errors.h"

namespace ringpoll {

template <class T = void>
class Task;

namespace detail {

// What runs when a task that nobody awaits (a root task, Scheduler::spawn) finishes: it
// may destroy the finished frame. Lives outside the frame (in the scheduler's Root).
struct DoneHook {
  void (*done)(DoneHook*, std::coroutine_handle<>) = nullptr;
};

// Bytes of coroutine frames allocated and not yet freed by the calling thread (frames
// freed on another thread count there). Benchmarks read it to tell the frames' share of
// a connection's memory; the cost is one thread-local add per frame.
inline thread_local int64_t t_frame_bytes = 0;

// Frames of tasks that come and go by the thousand while their callers stay (a relay's
// pumps, which end when the relay hibernates) are allocated from a heap of their own while
// a ShortLivedFrames scope is open on the thread. In the same allocator pages as frames
// that stay, they would leave each page partly used when they end, and the memory of a
// burst could never go back; in pages of their own, the pages empty (engine/allocator.h).
inline thread_local bool t_short_lived_frames = false;
// engine/allocator.cc: mi_heap_malloc on the thread's short-lived heap with mimalloc,
// ::operator new without. The frame's ordinary operator delete frees either.
void* short_lived_frame_alloc(std::size_t n);

inline void* frame_alloc(std::size_t n) {
  if (t_short_lived_frames) return short_lived_frame_alloc(n);
  return ::operator new(n);
}

struct PromiseBase {
  static void* operator new(std::size_t n) {
    t_frame_bytes += static_cast<int64_t>(n);
    return frame_alloc(n);
  }
  static void operator delete(void* p, std::size_t n) noexcept {
    t_frame_bytes -= static_cast<int64_t>(n);
    ::operator delete(p);  // unsized: clang does not declare the sized form by default
  }

  // The awaiting coroutine's address; or a DoneHook's address with bit 0 set (a root
  // task); 0: nothing to resume. One word, so a root task needs no wrapper frame.
  uintptr_t continuation = 0;

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      const uintptr_t c = h.promise().continuation;
      if (c & 1) {  // a root: the hook may destroy this frame, so touch nothing after it
        auto* hook = reinterpret_cast<DoneHook*>(c & ~uintptr_t{1});
        hook->done(hook, h);
        return std::noop_coroutine();
      }
      return c ? std::coroutine_handle<>::from_address(reinterpret_cast<void*>(c))
               : std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }
  // Tasks report errors as values; an escaping exception is a bug.
  void unhandled_exception() noexcept { fatal("an exception escaped a ringpoll task"); }
};

}  // namespace detail

// While one is open on a thread, the coroutine frames the thread allocates come from the
// short-lived heap (detail::t_short_lived_frames). Open it around the call that creates
// the task, not around the co_await (a lazily started task's frame is made by the call),
// and close it before the coroutine that opened it suspends: a scope open across a
// suspension would send the frames of whatever task runs next there too.
class ShortLivedFrames {
 public:
  ShortLivedFrames() noexcept : was_(std::exchange(detail::t_short_lived_frames, true)) {}
  ~ShortLivedFrames() { detail::t_short_lived_frames = was_; }
  ShortLivedFrames(const ShortLivedFrames&) = delete;
  ShortLivedFrames& operator=(const ShortLivedFrames&) = delete;

 private:
  bool was_;
};

namespace detail {
// What a Task<T> hands back: the value (T) or nothing (void).
template <class T>
struct ValuePromise : PromiseBase {
  std::optional<T> value;
  template <class U>
  void return_value(U&& v) noexcept {
    value.emplace(std::forward<U>(v));
  }
  T take() noexcept { return std::move(*value); }
};
template <>
struct ValuePromise<void> : PromiseBase {
  void return_void() noexcept {}
  void take() noexcept {}
};
}  // namespace detail

// Task<T>: a lazily started coroutine; `co_await` it (or hand it to Scheduler::spawn).
// Discarding one — or an I/O awaitable such as `conn.write(buf)` without co_await — is a
// compiler warning (nodiscard): the operation would silently never run.
//
// Compiler pitfall (GCC 12): a co_await that is the entire condition of an `if`,
// `if (co_await f())`, is miscompiled — the awaited coroutine's body never runs. Await
// into a local first (`const bool ok = co_await f(); if (ok) ...`); the init-statement
// form `if (auto r = co_await f(); r.ok())` is fine.
template <class T>
class [[nodiscard("co_await it (or spawn it): a task that is neither never runs")]] Task {
 public:
  struct promise_type : detail::ValuePromise<T> {
    Task get_return_object() noexcept {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
  };

  Task() = default;
  Task(Task && o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  ~Task() {
    if (h_) h_.destroy();
  }

  bool await_ready() const noexcept {
    return false;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
    h_.promise().continuation = reinterpret_cast<uintptr_t>(awaiter.address());
    return h_;
  }
  T await_resume() noexcept {
    return h_.promise().take();
  }

  std::coroutine_handle<promise_type> release() noexcept {
    return std::exchange(h_, nullptr);
  }
  // Gives up ownership of a task nobody will await: when it finishes, hook->done runs
  // with its frame (and owns it from then on).
  std::coroutine_handle<promise_type> release_to(detail::DoneHook * hook) noexcept {
    h_.promise().continuation = reinterpret_cast<uintptr_t>(hook) | 1;
    return release();
  }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

}  // namespace ringpoll
