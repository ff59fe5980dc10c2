#pragma once
// TaskList: an intrusive FIFO of ready tasks (Go's gList). A backend's poll() appends every
// task it wakes to one list, which the shard splices into its run queue in one step.
#include <coroutine>
#include <cstddef>

namespace ringpoll {

// The "G" of the poller: one per waiting coroutine, stored in the awaiter (so in the
// coroutine frame): parking allocates nothing. Running a node resumes `handle`, unless
// `run` is set: then the shard calls run(node) instead, which lets an operation with no
// coroutine frame of its own (engine/poll_fd.h's FdOp) retry its system call and resume
// its caller only when it has a result.
struct TaskNode {
  TaskNode* next = nullptr;
  std::coroutine_handle<> handle;
  void (*run)(TaskNode*) = nullptr;
  void resume() {
    if (run) {
      run(this);
    } else {
      handle.resume();
    }
  }
};

class TaskList {
 public:
  TaskList() = default;
  TaskList(const TaskList&) = delete;
  TaskList& operator=(const TaskList&) = delete;
  TaskList(TaskList&& o) noexcept : head_(o.head_), tail_(o.tail_), size_(o.size_) { o.reset(); }

  bool empty() const noexcept { return head_ == nullptr; }
  size_t size() const noexcept { return size_; }
  TaskNode* front() const noexcept { return head_; }

  void push_back(TaskNode* t) noexcept {
    t->next = nullptr;
    if (tail_) {
      tail_->next = t;
    } else {
      head_ = t;
    }
    tail_ = t;
    ++size_;
  }
  void push_front(TaskNode* t) noexcept {
    t->next = head_;
    head_ = t;
    if (!tail_) tail_ = t;
    ++size_;
  }
  TaskNode* pop_front() noexcept {
    TaskNode* t = head_;
    if (!t) return nullptr;
    head_ = t->next;
    if (!head_) tail_ = nullptr;
    t->next = nullptr;
    --size_;
    return t;
  }
  // Moves all of `o` to the back of this list in O(1); `o` is left empty.
  void splice_back(TaskList& o) noexcept {
    if (o.empty()) return;
    if (tail_) {
      tail_->next = o.head_;
    } else {
      head_ = o.head_;
    }
    tail_ = o.tail_;
    size_ += o.size_;
    o.reset();
  }

 private:
  void reset() noexcept {
    head_ = tail_ = nullptr;
    size_ = 0;
  }
  TaskNode* head_ = nullptr;
  TaskNode* tail_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ringpoll
