#pragma once
// The operations the conformance tests drive, and their fixture, shared by the Linux suite
// (tests/conformance/conformance.h over support/test_env.h) and the Windows one
// (tests/windows/win_env.h). Included after a platform header that provides Env<P>,
// FdPair, connected_pair(FdPair&), block_writes(int), kStuckWrite and sockaddr_in.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/clock.h"
#include "engine/poll_fd.h"
#include "engine/scheduler.h"

namespace ringpoll::test {

// One operation's outcome, filled in by the coroutines below.
struct Op {
  bool done = false;
  IoResult r;
  AcceptResult a;
  Status st;
  int64_t end_ns = 0;
  char buf[4096] = {};
};

template <class P>
Task<void> do_read(PollFd<P>* f, Op* op, size_t len = 64) {
  op->r = co_await f->read(std::span(reinterpret_cast<std::byte*>(op->buf), len));
  op->end_ns = mono_now_ns();
  op->done = true;
}

// Bytes for writes; Windows needs room for kStuckWrite (win_env.h).
#ifdef _WIN32
inline constexpr size_t kBigBufferBytes = size_t{64} << 20;
#else
inline constexpr size_t kBigBufferBytes = size_t{16} << 20;
#endif

inline std::span<const std::byte> big_buffer(size_t n) {
  static std::vector<std::byte> b(kBigBufferBytes, std::byte{'x'});
  return std::span<const std::byte>(b.data(), n);
}

template <class P>
Task<void> do_write(PollFd<P>* f, Op* op, size_t len) {
  op->r = co_await f->write(big_buffer(len));
  op->end_ns = mono_now_ns();
  op->done = true;
}

template <class P>
Task<void> do_accept(PollFd<P>* f, Op* op) {
  op->a = co_await f->accept();
  op->end_ns = mono_now_ns();
  op->done = true;
}

template <class P>
Task<void> do_connect(PollFd<P>* f, Op* op, sockaddr_in to) {
  op->st = co_await f->connect(reinterpret_cast<const sockaddr*>(&to), sizeof to);
  op->end_ns = mono_now_ns();
  op->done = true;
}

template <class P>
Task<void> do_close(PollFd<P>* f, Status* st, bool* done) {
  *st = co_await f->close();
  *done = true;
}

// Is a task parked in this direction (the slot holds a task pointer)?
inline bool parked(PollDesc* pd, Mode m) {
  return pd->slot(m).load() > kPdWait;
}

// The fixture of both suites (each names it: Conformance on Linux, IocpWine on Windows):
// every test runs once per backend, with the backend's name in the test name. A backend
// that is not available here makes each test report SKIPPED, never passed.
template <class P>
class BackendFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const Availability a = P::available();
    if (!a.ok) GTEST_SKIP() << P::kName << " is not available here: " << a.why;
    env_ = std::make_unique<Env<P>>();
    const Status st = env_->s.start();
    ASSERT_TRUE(st.ok()) << P::kName << " init failed: " << st.message();
  }
  Env<P>& env() { return *env_; }
  Scheduler<P>& sched() { return env_->s; }

  // A connected pair (connected_pair: AF_UNIX on Linux, TCP on Windows) whose end `a` f
  // owns, registered with this shard.
  bool open_pair(FdPair& p, PollFd<P>& f) {
    connected_pair(p);
    return !HasFatalFailure() && f.open(sched(), p.take_a()).ok();
  }
  // A pair whose end `a` f owns, with a reader (r) and a writer (w, kStuckWrite bytes on a
  // full send buffer) parked on it.
  ::testing::AssertionResult park_reader_and_writer(FdPair& p, PollFd<P>& f, Op& r, Op& w) {
    if (!open_pair(p, f)) return ::testing::AssertionFailure() << "open_pair failed";
    block_writes(f.fd());
    sched().spawn(do_read(&f, &r));
    sched().spawn(do_write(&f, &w, kStuckWrite));
    env().settle();
    if (!parked(f.pd(), Mode::kRead) || !parked(f.pd(), Mode::kWrite))
      return ::testing::AssertionFailure() << "the reader and the writer did not both park";
    return ::testing::AssertionSuccess();
  }
  // Starts a read on f and settles the loop: true when it is parked on its wait.
  bool park_read(PollFd<P>& f, Op& r, size_t len = 64) {
    sched().spawn(do_read(&f, &r, len));
    env().settle();
    return !r.done && parked(f.pd(), Mode::kRead);
  }

 private:
  std::unique_ptr<Env<P>> env_;
};

}  // namespace ringpoll::test
