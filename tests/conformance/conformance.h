#pragma once
// The conformance suite's fixture: every test runs once per backend in test::Backends,
// with the backend's name in the test name (Conformance/epoll.S05_...). A backend that is
// not available here makes each test report SKIPPED, never passed.
#include <sys/ioctl.h>

#include <cstring>
#include <span>

#include "support/test_env.h"

namespace ringpoll::test {

template <class P>
class Conformance : public ::testing::Test {
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

 private:
  std::unique_ptr<Env<P>> env_;
};
TYPED_TEST_SUITE(Conformance, Backends, BackendName);

// One operation's outcome, filled in by the test coroutines below.
struct Op {
  bool done = false;
  IoResult r;
  AcceptResult a;
  int64_t end_ns = 0;
  char buf[4096] = {};
};

template <class P>
Task<void> do_read(PollFd<P>* f, Op* op, size_t len = 64) {
  op->r = co_await f->read(std::span(reinterpret_cast<std::byte*>(op->buf), len));
  op->end_ns = mono_now_ns();
  op->done = true;
}

inline std::span<const std::byte> big_buffer(size_t n) {
  static std::vector<std::byte> b(size_t{16} << 20, std::byte{'x'});
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
Task<void> do_close(PollFd<P>* f, Status* st, bool* done) {
  *st = co_await f->close();
  *done = true;
}

inline int readable_bytes(int fd) {
  int n = -1;
  ioctl(fd, FIONREAD, &n);
  return n;
}

// Is a task parked in this direction (the slot holds a task pointer)?
inline bool parked(PollDesc* pd, Mode m) {
  return pd->slot(m).load() > kPdWait;
}

}  // namespace ringpoll::test
