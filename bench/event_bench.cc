// Cost per I/O event, from the kernel's notice to a consumed read, on each Linux backend:
//
//   BM_Events_epoll                 EpollPoller (edge-triggered epoll)
//   BM_Events_io_uring              UringPoller (readiness: one multishot poll per fd)
//   BM_Events_io_uring_completion   UringCompletionPoller (multishot recv, buffer ring)
//
// kPairs AF_UNIX stream pairs; one coroutine per pair is parked in PollFd::read on its
// end. Each iteration writes one byte to every peer (not timed: the same plain write(2)
// on every backend), then polls and runs tasks until all kPairs readers have consumed
// their byte and parked again. The timed part is therefore: reaping the kernel's events
// (epoll_wait / CQEs), the PollDesc wake into a TaskList, the run queue, the coroutine
// resume, the read (a read(2) plus the EAGAIN read(2) that re-parks it on readiness
// backends; a copy out of the provided buffer on the completion backend) and the park.
// Items = events, so items_per_second is events/s and time/item is the per-event cost;
// the time is the thread's CPU time, which includes the kernel work done on our behalf
// (io_uring task work runs in our io_uring_enter with DEFER_TASKRUN). Names are fixed:
// a ratio against BM_Events_epoll is computed from the JSON output.
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/clock.h"
#include "engine/poll_fd.h"
#include "engine/scheduler.h"
#include "epoll/epoll_poller.h"
#include "uring/uring_completion.h"
#include "uring/uring_poller.h"

namespace ringpoll {
namespace {

// Parked readers per iteration: enough that a poll reaps a real batch, well under the
// epoll backend's 128 events per call, so every backend can reap all in one poll.
constexpr int kPairs = 64;
// A poll that sees nothing for this long means a lost wake-up: stop with an error
// rather than hang the benchmark run.
constexpr int64_t kLostEventNs = 2'000'000'000;

template <class P>
Task<void> reader(PollFd<P>* f, uint64_t* consumed) {
  std::array<std::byte, 16> buf;
  for (;;) {
    const IoResult r = co_await f->read(buf);
    if (!r.ok()) co_return;  // EOF at teardown
    *consumed += r.n;
  }
}

template <class P>
void run_events(benchmark::State& st) {
  if (!P::available().ok) {
    st.SkipWithError("backend unavailable on this machine");
    return;
  }
  // Declared before the descriptors: they are destroyed first and deregister from it.
  Scheduler<P> s;
  if (!s.start().ok()) {
    st.SkipWithError("backend init failed");
    return;
  }
  std::vector<std::unique_ptr<PollFd<P>>> ends;
  std::vector<int> peers;
  for (int i = 0; i < kPairs; ++i) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
      st.SkipWithError("socketpair failed");
      for (int p : peers) ::close(p);
      return;
    }
    auto f = std::make_unique<PollFd<P>>();
    if (!f->open(s, sv[0]).ok()) {
      st.SkipWithError("PollFd::open failed");
      ::close(sv[1]);
      for (int p : peers) ::close(p);
      return;
    }
    ends.push_back(std::move(f));
    peers.push_back(sv[1]);
  }
  uint64_t consumed = 0;
  for (auto& f : ends) s.spawn(reader(f.get(), &consumed));
  s.run_ready();  // every reader parks (completion mode: its multishot recv is queued)
  s.poll_io(0);   // submit what the readers queued

  const char byte = 'x';
  bool lost = false;
  for (auto _ : st) {
    st.PauseTiming();
    for (int p : peers) {
      if (::write(p, &byte, 1) != 1) std::abort();
    }
    st.ResumeTiming();
    const uint64_t want = consumed + kPairs;
    while (consumed < want) {
      if (s.poll_io(kLostEventNs) == 0 && s.runnable() == 0) {
        lost = true;
        break;
      }
      s.run_ready();
    }
    if (lost) {
      st.SkipWithError("a reader was not woken (lost event)");
      break;
    }
  }
  st.SetItemsProcessed(st.iterations() * kPairs);

  // Teardown: EOF on every pair ends the readers; then the descriptors close.
  for (int p : peers) ::close(p);
  const int64_t end = mono_now_ns() + kLostEventNs;
  while (s.live_tasks() > 0 && mono_now_ns() < end) {
    s.poll_io(10'000'000);
    s.run_ready();
  }
  if (s.live_tasks() > 0) std::abort();  // a reader missed its EOF: its PollFd is busy
}

void BM_Events_epoll(benchmark::State& st) {
  run_events<EpollPoller>(st);
}
void BM_Events_io_uring(benchmark::State& st) {
  run_events<UringPoller>(st);
}
void BM_Events_io_uring_completion(benchmark::State& st) {
  run_events<UringCompletionPoller>(st);
}
BENCHMARK(BM_Events_epoll);
BENCHMARK(BM_Events_io_uring);
BENCHMARK(BM_Events_io_uring_completion);

}  // namespace
}  // namespace ringpoll
