// Conformance S19 and S20 through each backend's real dispatch code. No real socket
// produces an error-only event on demand (a refused connect reports error together with
// hang-up and output, and a failed send learns ECONNREFUSED before it ever parks), so
// each backend's test seam feeds a synthetic event (or CQE) into a poll, exactly where
// the kernel's would be, and the backend's own code must turn it into the error bit and
// the wakes:
//   epoll                 g_epoll_event_hook          (epoll/epoll_poller.h)
//   io_uring (both modes) g_uring_inject_hook         (uring/uring_ring.h)
//   kqueue emulation      kqemu::g_kevent_hook        (kqueue/emulation/kqueue_emulation.h)
//   ports emulation       portemu::g_port_getn_hook   (ports/emulation/ports_emulation.h)
//   pollset emulation     psemu::g_pollset_poll_hook  (aix/emulation/pollset_emulation.h)
// Linux only (the IOCP backend reports errors in each operation's own result; its suite
// checks that the bit stays clear, wait_test.cc S20). io_uring completion mode's
// single-shot variant is left out: its reads are operations whose CQE carries the
// operation's address, and the multishot variant's recv CQE covers the same dispatch.
#include <sys/epoll.h>

#include <cerrno>

#include "conformance/conformance.h"

namespace ringpoll::test {
namespace {

enum class Inject {
  kErrorOnly,           // error is the sole event: the bit is set, the reader fails (S19)
  kErrorWithReadiness,  // error with hang-up and output (a refused connect): bit clear
};

// What the next poll must add: one event for (fd, data), of `kind`; `taken` counts the
// polls that added it (the hooks run on the test's thread, inside poll_io).
struct Pending {
  bool armed = false;
  int fd = -1;
  uint64_t data = 0;
  Inject kind = Inject::kErrorOnly;
  int taken = 0;
};
Pending g_pending;

// Takes the pending injection, or returns false when there is none (or no room).
bool take(bool room) {
  if (!g_pending.armed || !room) return false;
  g_pending.armed = false;
  ++g_pending.taken;
  return true;
}

int epoll_hook(epoll_event* ev, int n, int cap) {
  if (!take(n < cap)) return n;
  ev[n].events = g_pending.kind == Inject::kErrorOnly ? EPOLLERR : EPOLLERR | EPOLLHUP | EPOLLOUT;
  ev[n].data.u64 = g_pending.data;
  return n + 1;
}

bool uring_hook(io_uring_cqe* cqe) {
  if (!take(true)) return false;
  cqe->user_data = g_pending.data;
  cqe->flags = IORING_CQE_F_MORE;  // the multishot poll (or recv) stays armed
  cqe->res = g_pending.kind == Inject::kErrorOnly ? POLLERR : POLLERR | POLLHUP | POLLOUT;
  return true;
}

// Completion mode: the multishot recv's CQE with an error result (no buffer).
bool uring_recv_error_hook(io_uring_cqe* cqe) {
  if (!take(true)) return false;
  cqe->user_data = g_pending.data;
  cqe->flags = IORING_CQE_F_MORE;
  cqe->res = -ECONNRESET;
  return true;
}

// kqueue reports per filter: an error-only event arrives on both filters, each with
// EV_ERROR alone (EV_CLEAR is echoed from the registration and must not count); error with
// readiness is EVFILT_READ with EV_ERROR and EV_EOF.
int kevent_hook(kqemu::Sys::Kevent* ev, int n, int cap) {
  const bool only = g_pending.kind == Inject::kErrorOnly;
  if (!take(n + (only ? 2 : 1) <= cap)) return n;
  auto add = [&](int16_t filter, uint16_t flags) {
    ev[n] = kqemu::Sys::Kevent{};
    ev[n].ident = static_cast<uintptr_t>(g_pending.fd);
    ev[n].filter = filter;
    ev[n].flags = flags;
    kqemu::Sys::set_udata(ev[n], g_pending.data);
    ++n;
  };
  if (only) {
    add(kqemu::EVFILT_READ, kqemu::EV_ERROR | kqemu::EV_CLEAR);
    add(kqemu::EVFILT_WRITE, kqemu::EV_ERROR | kqemu::EV_CLEAR);
  } else {
    add(kqemu::EVFILT_READ, kqemu::EV_ERROR | kqemu::EV_EOF | kqemu::EV_CLEAR);
  }
  return n;
}

unsigned port_getn_hook(portemu::port_event_t* list, unsigned n, unsigned max) {
  if (!take(n < max)) return n;
  list[n] = portemu::port_event_t{};
  list[n].portev_events = g_pending.kind == Inject::kErrorOnly
                              ? portemu::kPollErr
                              : portemu::kPollErr | portemu::kPollHup | portemu::kPollOut;
  list[n].portev_source = static_cast<uint16_t>(portemu::PORT_SOURCE_FD);
  list[n].portev_object = static_cast<uintptr_t>(g_pending.fd);
  list[n].portev_user = reinterpret_cast<void*>(static_cast<uintptr_t>(g_pending.data));
  return n + 1;
}

int pollset_hook(psemu::pollfd* out, int n, int cap) {
  if (!take(n < cap)) return n;
  out[n].fd = g_pending.fd;
  out[n].events = 0;
  out[n].revents = g_pending.kind == Inject::kErrorOnly
                       ? psemu::kPollErr
                       : static_cast<short>(psemu::kPollErr | psemu::kPollHup | psemu::kPollOut);
  return n + 1;
}

// Installs the backend's seam for one injection into the next poll; removes it on scope
// exit.
template <class P>
class Injection {
 public:
  Injection(PollDesc* pd, Inject kind) {
    g_pending = Pending{true, pd->fd, tag_pointer(pd, pd->fdseq.load()), kind, 0};
    if constexpr (std::is_same_v<P, EpollPoller>) {
      g_epoll_event_hook.store(&epoll_hook);
    } else if constexpr (std::is_same_v<P, UringPoller>) {
      g_uring_inject_hook.store(&uring_hook);
    } else if constexpr (std::is_same_v<P, UringCompletionPoller>) {
      g_pending.data = uring_recv_user_data(pd);
      g_uring_inject_hook.store(&uring_recv_error_hook);
    } else if constexpr (std::is_same_v<P, EmulatedKqueuePoller>) {
      kqemu::g_kevent_hook.store(&kevent_hook);
    } else if constexpr (std::is_same_v<P, EmulatedPortsPoller>) {
      portemu::g_port_getn_hook.store(&port_getn_hook);
    } else {
      static_assert(std::is_same_v<P, EmulatedPollsetPoller>, "a backend without a seam");
      psemu::g_pollset_poll_hook.store(&pollset_hook);
    }
  }
  ~Injection() {
    g_epoll_event_hook.store(nullptr);
    g_uring_inject_hook.store(nullptr);
    kqemu::g_kevent_hook.store(nullptr);
    portemu::g_port_getn_hook.store(nullptr);
    psemu::g_pollset_poll_hook.store(nullptr);
    g_pending = Pending{};
  }
  Injection(const Injection&) = delete;
  Injection& operator=(const Injection&) = delete;
  int taken() const { return g_pending.taken; }
};

using InjectBackends =
    ::testing::Types<EpollPoller, UringPoller, UringCompletionPoller, EmulatedKqueuePoller,
                     EmulatedPortsPoller, EmulatedPollsetPoller>;

template <class P>
class InjectedEvents : public BackendFixture<P> {
 protected:
  FdPair p;
  PollFd<P> f;
  Op r, w;  // a reader and a writer parked on f

  ::testing::AssertionResult park_both() { return this->park_reader_and_writer(p, f, r, w); }
  // A failed assertion can leave the reader or the writer parked on f: close f so both
  // end before f and the scheduler go (a PollFd destroyed mid-operation stops the process).
  void TearDown() override {
    if (this->IsSkipped() || !f.is_open()) return;
    Status cst;
    bool closed = false;
    this->sched().spawn(do_close(&f, &cst, &closed));
    EXPECT_TRUE(this->env().run_until([&] { return closed && r.done && w.done; }));
  }
  // One non-blocking poll with the injection armed; how many tasks it woke.
  size_t poll_once_with(Inject kind) {
    Injection<P> inj(f.pd(), kind);
    const size_t before = this->sched().runnable();
    this->sched().poll_io(0);
    EXPECT_EQ(inj.taken(), 1) << "no poll took the injected event";
    return this->sched().runnable() - before;
  }
  // Closes f; the writer (still parked) ends with "closed".
  void close_f() {
    Status cst;
    bool closed = false;
    this->sched().spawn(do_close(&f, &cst, &closed));
    ASSERT_TRUE(this->env().run_until([&] { return w.done && closed; }));
    EXPECT_TRUE(w.r.err.closed()) << w.r.err.message();
  }
};
TYPED_TEST_SUITE(InjectedEvents, InjectBackends, BackendName);

// S20 (the error bit only when error is the sole event) and S19 (the event error goes to
// readers only), for an error-only event.
TYPED_TEST(InjectedEvents, S19_S20_AnErrorOnlyEventFailsTheReaderOnly) {
  using P = TypeParam;
  ASSERT_TRUE(this->park_both());
  auto& f = this->f;
  Op& r = this->r;
  PollDesc* pd = f.pd();
  const size_t woken = this->poll_once_with(Inject::kErrorOnly);
  if constexpr (P::kCompletion) {
    // A completion backend reports the error in the recv's own result: the reader is
    // woken with it, the writer's send is not touched, the bit stays clear.
    EXPECT_EQ(woken, 1u);
    EXPECT_EQ(pd->info.load() & kInfoEventErr, 0u);
    this->sched().run_ready();
    ASSERT_TRUE(r.done) << "the reader was not woken by its recv's error";
    EXPECT_EQ(r.r.err.sys_errno(), ECONNRESET) << r.r.err.message();
  } else {
    // Error wakes both directions, as one list from one poll (S20), and sets the bit.
    EXPECT_EQ(woken, 2u);
    EXPECT_NE(pd->info.load() & kInfoEventErr, 0u) << "an error-only event left the bit clear";
    this->sched().run_ready();
    ASSERT_TRUE(r.done) << "the reader did not fail on the event error";
    EXPECT_TRUE(r.r.err.is(Errc::kNotPollable)) << r.r.err.message();
    EXPECT_EQ(r.r.n, 0u);
    // S19: priority closing > timeout > event error, seen by the next reads.
    Op r2;
    this->sched().spawn(do_read(&f, &r2));
    this->sched().run_ready();
    ASSERT_TRUE(r2.done);
    EXPECT_TRUE(r2.r.err.is(Errc::kNotPollable)) << r2.r.err.message();
    ASSERT_TRUE(f.set_read_deadline(mono_now_ns() - 1).ok());
    Op r3;
    this->sched().spawn(do_read(&f, &r3));
    this->sched().run_ready();
    ASSERT_TRUE(r3.done);
    EXPECT_TRUE(r3.r.err.timeout()) << r3.r.err.message();
  }
  // Readers only: the writer retried its send, met a full buffer and parked again.
  EXPECT_FALSE(this->w.done) << "the event error reached the writer: " << this->w.r.err.message();
  EXPECT_TRUE(parked(pd, Mode::kWrite));
  this->close_f();
}

// Completion mode has no readiness events (a CQE is one operation's result), so there is
// no "error with readiness" to inject there: this suite runs on the readiness backends.
using ReadinessInjectBackends = ::testing::Types<EpollPoller, UringPoller, EmulatedKqueuePoller,
                                                 EmulatedPortsPoller, EmulatedPollsetPoller>;
template <class P>
class InjectedReadinessEvents : public InjectedEvents<P> {};
TYPED_TEST_SUITE(InjectedReadinessEvents, ReadinessInjectBackends, BackendName);

// S20: error together with readiness (hang-up and output, what a refused connect reports)
// wakes both directions but leaves the bit clear: each retries its system call.
TYPED_TEST(InjectedReadinessEvents, S20_AnErrorWithReadinessLeavesTheBitClear) {
  ASSERT_TRUE(this->park_both());
  const Op& r = this->r;
  const Op& w = this->w;
  PollDesc* pd = this->f.pd();
  EXPECT_EQ(this->poll_once_with(Inject::kErrorWithReadiness), 2u);
  EXPECT_EQ(pd->info.load() & kInfoEventErr, 0u) << "error with other events set the bit";
  this->sched().run_ready();
  EXPECT_FALSE(r.done) << "the reader failed: " << r.r.err.message();
  EXPECT_FALSE(w.done) << "the writer failed: " << w.r.err.message();
  EXPECT_TRUE(parked(pd, Mode::kRead));
  EXPECT_TRUE(parked(pd, Mode::kWrite));
  // The bit, once set by an error-only event, is cleared by a later event with readiness.
  EXPECT_EQ(this->poll_once_with(Inject::kErrorOnly), 2u);
  EXPECT_NE(pd->info.load() & kInfoEventErr, 0u);
  this->sched().run_ready();  // the reader fails on the bit; the writer parks again
  ASSERT_TRUE(r.done);
  EXPECT_TRUE(parked(pd, Mode::kWrite));
  EXPECT_EQ(this->poll_once_with(Inject::kErrorWithReadiness), 1u);  // the writer
  EXPECT_EQ(pd->info.load() & kInfoEventErr, 0u) << "readiness did not clear the bit";
  this->close_f();
}

}  // namespace
}  // namespace ringpoll::test
