#pragma once
// The stall detector's report (Scheduler<P>, SchedulerOptions::stall_threshold_ns): a
// shard whose loop did not come back to poll its backend within the threshold counts one
// stall and logs what was running when the threshold passed, as Glommio's stall detector
// does. "What was running" is the code a task resumed into: the coroutine's resume
// function (the first word of a GCC or Clang coroutine frame) or an operation's run
// function (TaskNode::run), named from the binary's symbol table (dladdr(3) for exported
// symbols, the file's .symtab for local ones such as GCC's "[clone .actor]" resume
// functions) and demangled. A stripped binary gets "binary+0xOFFSET" instead, which
// `addr2line -fCe binary 0xOFFSET` names from its debug file.
#include <coroutine>
#include <cstdint>
#include <string>

#include "../poller/task_list.h"

namespace ringpoll {

// The code a ready task runs when resumed (see above); nullptr when unknown.
inline const void* task_code(const TaskNode* t) noexcept {
  if (t->run) return reinterpret_cast<const void*>(t->run);
  if (!t->handle) return nullptr;
  // GCC and Clang both place the resume function pointer first in a coroutine frame.
  return *static_cast<const void* const*>(t->handle.address());
}

// "name" of the function containing `code` (demangled), "binary+0xOFFSET" without a
// symbol, "the shard loop (inbox jobs, timers)" for nullptr.
std::string describe_code(const void* code);

// One stall: what the shard's loop ran when it passed the threshold.
struct StallReport {
  int shard = -1;             // the engine's shard id; -1: a Scheduler outside an Engine
  int64_t since_poll_ns = 0;  // how long since the loop last polled its backend
  size_t tasks_since_poll = 0;
  const void* code = nullptr;  // task_code() of the task that crossed the threshold
};

// Writes one line to stderr: "ringpoll: stall: shard S did not poll for X ms (N tasks);
// running NAME".
void log_stall(const StallReport& r);

}  // namespace ringpoll
