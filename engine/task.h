#pragma once
// Task<T>: a lazily started C++20 coroutine (the engine's G). Awaiting a Task starts it
// and resumes the awaiter when it finishes (symmetric transfer, so chains of awaits do not
// grow the stack). A Task is owned by whoever holds it; Scheduler::spawn takes ownership
// of a root task and runs it to completion.
#include <coroutine>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

#include "../poller/errors.h"

namespace ringpoll {

template <class T = void>
class Task;

namespace detail {

struct PromiseBase {
  std::coroutine_handle<> continuation;

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      std::coroutine_handle<> c = h.promise().continuation;
      return c ? c : std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }
  // Tasks report errors as values; an escaping exception is a bug.
  void unhandled_exception() noexcept { fatal("an exception escaped a ringpoll task"); }
};

}  // namespace detail

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

template <class T>
class Task {
 public:
  struct promise_type : detail::ValuePromise<T> {
    Task get_return_object() noexcept {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
  };

  Task() = default;
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
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

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
    h_.promise().continuation = awaiter;
    return h_;
  }
  T await_resume() noexcept { return h_.promise().take(); }

  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, nullptr); }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

}  // namespace ringpoll
