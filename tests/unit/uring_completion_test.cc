// io_uring completion mode: buffer-ring exhaustion (real ENOBUFS), cancellations, short
// sends, send_zc on TCP, setup failing with EAGAIN — each through the public API or a
// test seam that makes the kernel really do it.
#include <gtest/gtest.h>

#include <array>
#include <span>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "support/test_env.h"

namespace ringpoll::test {
namespace {

using CP = UringCompletionPoller;

class UringCompletionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CP::available().ok) GTEST_SKIP() << "io_uring: " << CP::available().why;
  }
};

Task<void> read_all(PollFd<CP>* f, std::string* out, size_t want, Status* err) {
  std::array<char, 256> buf;
  while (out->size() < want) {
    IoResult r = co_await f->read(std::as_writable_bytes(std::span(buf)));
    if (!r.ok()) {
      *err = r.err;
      co_return;
    }
    out->append(buf.data(), r.n);
  }
}

Task<void> write_all(PollFd<CP>* f, const std::string* data, IoResult* res, bool* done) {
  *res = co_await f->write(std::as_bytes(std::span(data->data(), data->size())));
  *done = true;
}

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
  return s;
}

TEST_F(UringCompletionTest, ExhaustedBufferRingLosesNoDataAndReArms) {
  Env<CP> e;
  UringCompletionOptions o;
  o.buf_count = 4;  // 4 x 64 B: 8 KiB of incoming data runs the ring dry many times
  o.buf_size = 64;
  e.s.backend().set_completion_options(o);
  ASSERT_TRUE(e.s.start().ok());
  FdPair p;
  unix_pair(p);
  PollFd<CP> f;
  ASSERT_TRUE(f.open(e.s, p.take_a()).ok());
  const std::string data = pattern(8192);
  // First a small read arms the multishot recv, then the peer sends everything while
  // nobody reads: the ring runs dry (ENOBUFS) with data still in the socket.
  std::string got;
  Status err;
  put(p.b, "x");
  e.s.spawn(read_all(&f, &got, 1, &err));
  ASSERT_TRUE(e.run_until([&] { return got.size() == 1; }));
  ASSERT_EQ(::send(p.b, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  e.settle();
  usleep(20'000);
  e.settle();
  EXPECT_GT(e.s.backend().counters().nobufs, 0u) << "the buffer ring never ran dry";
  got.clear();
  e.s.spawn(read_all(&f, &got, data.size(), &err));
  ASSERT_TRUE(e.run_until([&] { return got.size() == data.size() || !err.ok(); }));
  EXPECT_TRUE(err.ok()) << err.message();
  EXPECT_EQ(got, data);  // every byte, in order
  EXPECT_GT(e.s.backend().counters().recv_rearms, 0u);
  EXPECT_EQ(e.s.backend().counters().buffers_free, 4u);  // all buffers came back
}

// DESIGN.md "Fairness": connection A, whose application reads nothing, stops at its
// bound (buf_per_conn = 3 of 4 buffers); connection B then finds the ring dry (ENOBUFS)
// and its reader receives straight into its own buffer instead of waiting for A. When A
// is read, its recv resumes, B goes back to the ring, and every byte of both arrives.
TEST_F(UringCompletionTest, AConnectionAtItsBoundLeavesOthersReadingDirectly) {
  Env<CP> e;
  UringCompletionOptions o;
  o.buf_count = 4;
  o.buf_size = 64;
  o.buf_per_conn = 3;
  e.s.backend().set_completion_options(o);
  ASSERT_TRUE(e.s.start().ok());
  FdPair pa, pb;
  unix_pair(pa);
  unix_pair(pb);
  PollFd<CP> a, b;
  ASSERT_TRUE(a.open(e.s, pa.take_a()).ok());
  ASSERT_TRUE(b.open(e.s, pb.take_a()).ok());
  // A: one read arms its recv, then 4 KiB arrive that nobody reads.
  std::string got_a, got_b;
  Status err_a, err_b;
  put(pa.b, "x");
  e.s.spawn(read_all(&a, &got_a, 1, &err_a));
  ASSERT_TRUE(e.run_until([&] { return got_a.size() == 1; }));
  const std::string data_a = pattern(4096);
  ASSERT_EQ(::send(pa.b, data_a.data(), data_a.size(), 0), static_cast<ssize_t>(data_a.size()));
  ASSERT_TRUE(e.run_until([&] { return e.s.backend().counters().conns_at_bound == 1; }))
      << "A never reached its bound";
  const auto at_bound = e.s.backend().counters();
  EXPECT_GE(at_bound.buffers_held, 3u);
  EXPECT_EQ(at_bound.bound_pauses, 1u);
  // B: 4 KiB into a ring with at most one buffer left, read while A still holds its own.
  const std::string data_b = pattern(4096).substr(7) + "tail987";
  ASSERT_EQ(::send(pb.b, data_b.data(), data_b.size(), 0), static_cast<ssize_t>(data_b.size()));
  e.s.spawn(read_all(&b, &got_b, data_b.size(), &err_b));
  ASSERT_TRUE(e.run_until([&] { return got_b.size() == data_b.size() || !err_b.ok(); }))
      << "B waited on buffers A holds: got " << got_b.size() << " of " << data_b.size();
  EXPECT_TRUE(err_b.ok()) << err_b.message();
  EXPECT_EQ(got_b, data_b);
  EXPECT_GT(e.s.backend().counters().nobufs, 0u) << "the ring never ran dry for B";
  EXPECT_GT(e.s.backend().counters().starved_reads, 0u) << "B never read directly";
  EXPECT_EQ(e.s.backend().counters().conns_at_bound, 1u) << "A left its bound unread";
  // A reads at last: its recv resumes and every byte comes, in order.
  got_a.clear();
  e.s.spawn(read_all(&a, &got_a, data_a.size(), &err_a));
  ASSERT_TRUE(e.run_until([&] { return got_a.size() == data_a.size() || !err_a.ok(); }));
  EXPECT_TRUE(err_a.ok()) << err_a.message();
  EXPECT_EQ(got_a, data_a);
  const auto end = e.s.backend().counters();
  EXPECT_EQ(end.conns_at_bound, 0u);
  EXPECT_GT(end.recv_rearms, 0u);
  EXPECT_EQ(end.buffers_free, 4u);  // all buffers came back
}

TEST_F(UringCompletionTest, MultishotRecvCancelledBehindOurBackIsReArmedByTheNextRead) {
  Env<CP> e;
  ASSERT_TRUE(e.s.start().ok());
  FdPair p;
  unix_pair(p);
  PollFd<CP> f;
  ASSERT_TRUE(f.open(e.s, p.take_a()).ok());
  std::string got;
  Status err;
  put(p.b, "1");
  e.s.spawn(read_all(&f, &got, 1, &err));
  ASSERT_TRUE(e.run_until([&] { return got.size() == 1; }));
  // The kernel ends the multishot recv with -ECANCELED and no F_MORE.
  io_uring_sqe* s = e.s.backend().ring().sqe();
  io_uring_prep_cancel(s, nullptr, IORING_ASYNC_CANCEL_ANY);
  io_uring_sqe_set_data64(s, kUringIgnoreData);
  e.settle();
  put(p.b, "23");
  e.s.spawn(read_all(&f, &got, 3, &err));
  ASSERT_TRUE(e.run_until([&] { return got.size() == 3 || !err.ok(); }));
  EXPECT_EQ(got, "123");
}

// Rewrites the next operation completion to -ECANCELED (a cancel nobody asked for).
int g_cancel_next = 0;
void cancel_op_cqe(UringCqeKind kind, int32_t* res, uint32_t*) {
  if (kind == UringCqeKind::kOp && g_cancel_next > 0) {
    --g_cancel_next;
    *res = -ECANCELED;
  }
}

TEST_F(UringCompletionTest, UnrequestedEcanceledIsReportedAsThatError) {
  Env<UringCompletionSingleshot> e;
  ASSERT_TRUE(e.s.start().ok());
  FdPair p;
  unix_pair(p);
  PollFd<UringCompletionSingleshot> f;
  ASSERT_TRUE(f.open(e.s, p.take_a()).ok());
  char buf[16];
  IoResult r;
  bool done = false;
  auto reader = [](PollFd<UringCompletionSingleshot>* f, char* b, IoResult* r,
                   bool* done) -> Task<void> {
    *r = co_await f->read(std::span(reinterpret_cast<std::byte*>(b), 16));
    *done = true;
  };
  e.s.spawn(reader(&f, buf, &r, &done));
  e.settle();
  g_cancel_next = 1;
  g_uring_cqe_hook.store(&cancel_op_cqe);
  put(p.b, "zz");
  const bool finished = e.run_until([&] { return done; });
  g_uring_cqe_hook.store(nullptr);
  ASSERT_TRUE(finished);
  EXPECT_EQ(r.err.sys_errno(), ECANCELED) << r.err.message();
  EXPECT_FALSE(r.err.timeout());
  EXPECT_FALSE(r.err.closed());
}

TEST_F(UringCompletionTest, ShortSendsAreContinuedWithoutLossOrDuplication) {
  Env<CP> e;
  ASSERT_TRUE(e.s.start().ok());
  FdPair p;
  unix_pair(p);
  PollFd<CP> f;
  ASSERT_TRUE(f.open(e.s, p.take_a()).ok());
  const std::string data = pattern(10000);
  g_uring_send_clamp.store(777);  // each send moves at most 777 bytes: the kernel sends short
  IoResult res;
  bool done = false;
  e.s.spawn(write_all(&f, &data, &res, &done));
  std::string got;
  char buf[4096];
  const bool finished = e.run_until([&] {
    for (ssize_t n; (n = ::recv(p.b, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
      got.append(buf, static_cast<size_t>(n));
    return done && got.size() >= data.size();
  });
  g_uring_send_clamp.store(0);
  ASSERT_TRUE(finished);
  EXPECT_TRUE(res.ok()) << res.err.message();
  EXPECT_EQ(res.n, data.size());
  EXPECT_EQ(got, data);
}

// 256 KiB written to a loopback TCP peer and read back; the backend's counters after.
UringCompletionPoller::Counters large_tcp_send(bool zc_on_loopback) {
  g_uring_zc_on_loopback.store(zc_on_loopback);
  Env<CP> e;
  EXPECT_TRUE(e.s.start().ok());
  FdPair p;
  tcp_pair(p);
  PollFd<CP> f;
  EXPECT_TRUE(f.open(e.s, p.take_a()).ok());
  const std::string data = pattern(256 * 1024);
  IoResult res;
  bool done = false;
  e.s.spawn(write_all(&f, &data, &res, &done));
  std::string got;
  char buf[65536];
  EXPECT_TRUE(e.run_until([&] {
    for (ssize_t n; (n = ::recv(p.b, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
      got.append(buf, static_cast<size_t>(n));
    return done && got.size() >= data.size();
  }));
  g_uring_zc_on_loopback.store(false);
  EXPECT_TRUE(res.ok()) << res.err.message();
  EXPECT_EQ(got, data);
  return e.s.backend().counters();
}

TEST_F(UringCompletionTest, LargeTcpSendsUseSendZcAndArriveIntact) {
  {
    Env<CP> probe;
    ASSERT_TRUE(probe.s.start().ok());
    if (!probe.s.backend().ring().supports(IORING_OP_SEND_ZC))
      GTEST_SKIP() << "no IORING_OP_SEND_ZC";
  }
  EXPECT_GT(large_tcp_send(true).zc_sends, 0u);
}

TEST_F(UringCompletionTest, SendsToALoopbackPeerAreNeverZeroCopy) {
  // The kernel copies zero-copy pages at loopback delivery, and the notification waits
  // for the receiver: through ringpoll-proxy a 100 MB download ran at half the speed.
  const UringCompletionPoller::Counters c = large_tcp_send(false);
  EXPECT_EQ(c.zc_sends, 0u);
  EXPECT_EQ(c.zc_loopback, 1u);
}

TEST_F(UringCompletionTest, SetupFailingWithEagainFallsBackToEpoll) {
  g_uring_setup_fail_errno.store(EAGAIN);
  Env<CP> e;
  const Status st = e.s.start();
  const BackendSelection sel = select_backend(BackendChoice::kAuto);
  g_uring_setup_fail_errno.store(0);
  EXPECT_EQ(st.sys_errno(), EAGAIN) << st.message();
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel.chosen, BackendChoice::kEpoll);
  EXPECT_NE(sel.why.find("Resource temporarily unavailable"), std::string::npos) << sel.why;
}

// read and write park without allocating: the operation's state is the awaiter in the
// caller's frame (FdOp<RingRead>, CompSend), not a coroutine frame of its own. Counted with
// the frame counter of engine/task.h: the tasks' own frames are allocated when they are
// created, so while both wait (the reader for data, the writer for socket space) the count
// must not have moved; then both finish with the right bytes.
TEST_F(UringCompletionTest, ParkedReadAndWriteAllocateNoFrames) {
  Env<CP> e;
  ASSERT_TRUE(e.s.start().ok());
  FdPair p;
  unix_pair(p);
  PollFd<CP> r, w;
  ASSERT_TRUE(r.open(e.s, p.take_a()).ok());
  ASSERT_TRUE(w.open(e.s, p.take_b()).ok());
  // Fill the writer's direction so its send cannot complete until the reader drains.
  const size_t backlog = fill_send_buffer(w.fd());
  ASSERT_GT(backlog, 0u);
  const std::string data = pattern(4096);
  std::string got;
  Status rerr;
  IoResult wres;
  bool wdone = false;
  Task<void> writer = write_all(&w, &data, &wres, &wdone);
  Task<void> reader = read_all(&r, &got, backlog + data.size(), &rerr);
  const int64_t frames = detail::t_frame_bytes;  // both tasks' frames exist now
  PollFd<CP> idle;                               // a third descriptor: a read that waits
  FdPair q;
  unix_pair(q);
  ASSERT_TRUE(idle.open(e.s, q.take_a()).ok());
  std::string none;
  Status ierr;
  Task<void> waiter = read_all(&idle, &none, 1, &ierr);
  const int64_t frames3 = detail::t_frame_bytes;
  e.s.spawn(std::move(waiter));
  e.s.spawn(std::move(writer));
  e.settle();
  EXPECT_FALSE(wdone) << "the send should wait for socket space";
  EXPECT_EQ(detail::t_frame_bytes, frames3) << "a parked write or read allocated a frame";
  EXPECT_GT(frames3, frames);
  e.s.spawn(std::move(reader));
  ASSERT_TRUE(e.run_until([&] { return wdone && got.size() == backlog + data.size(); }));
  EXPECT_TRUE(wres.ok()) << wres.err.message();
  EXPECT_EQ(wres.n, data.size());
  EXPECT_TRUE(rerr.ok()) << rerr.message();
  EXPECT_EQ(got.substr(backlog), data);
  EXPECT_TRUE(none.empty());
  put(q.b, "z");  // let the idle read finish before its descriptor goes away
  ASSERT_TRUE(e.run_until([&] { return none == "z"; }));
  EXPECT_TRUE(ierr.ok()) << ierr.message();
}

// S24 on the io_uring completion backends (Go's execIO): on timeout or close the operation
// is cancelled and its completion awaited, ignoring further timeouts and closes; an
// operation that finished first is a success. The operations that take this path: the
// send (CompSend) on both variants, and the single-shot recv (read_completion) of the
// singleshot variant; the multishot variant's reads take queued data and cancel nothing.
// DEFER_TASKRUN lets the test decide when the kernel runs an operation: the kernel posts
// the CQE when asked (io_uring_get_events), and the engine reaps it only in poll_io, so a
// completion can sit in the CQ, done in the kernel but not yet seen, while the deadline
// expires or the close comes.
template <class P>
class UringS24 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << "io_uring: " << P::available().why;
  }
};
using CompletionBackends = ::testing::Types<UringCompletionPoller, UringCompletionSingleshot>;
TYPED_TEST_SUITE(UringS24, CompletionBackends, BackendName);

template <class P>
Task<void> s24_close(PollFd<P>* f, Status* st, bool* done) {
  *st = co_await f->close();
  *done = true;
}

// One operation on an AF_UNIX pair, parked with its request in the kernel: a recv waiting
// for data, or a send waiting for socket space (the send buffer is full).
template <class P>
struct ParkedOp {
  explicit ParkedOp(Mode m) : mode(m) {}
  Mode mode;
  FdPair p;
  PollFd<P> f;
  char buf[16] = {};
  const std::string data = pattern(100);
  IoResult r;
  bool done = false;
  Status cst;
  bool closed = false;

  static Task<void> run(ParkedOp* op) {
    if (op->mode == Mode::kRead) {
      op->r = co_await op->f.read(std::as_writable_bytes(std::span(op->buf)));
    } else {
      op->r = co_await op->f.write(std::as_bytes(std::span(op->data)));
    }
    op->done = true;
  }
  // Opens the pair and starts the operation; true when it waits in the kernel.
  bool start(Env<P>& e) {
    unix_pair(p);
    if (!f.open(e.s, p.take_a()).ok()) return false;
    if (mode == Mode::kWrite && fill_send_buffer(f.fd()) == 0) return false;
    e.s.spawn(run(this));
    e.settle();
    return !done;
  }
  // The peer makes the operation possible (data to read, space to write); then the kernel
  // completes it and posts the CQE, which stays unreaped: the engine reaps only in poll_io.
  bool complete_in_kernel(Env<P>& e) {
    if (mode == Mode::kRead) {
      put(p.b, "won");
    } else if (drain(p.b) == 0) {
      return false;
    }
    io_uring* ring = e.s.backend().ring().raw();
    for (int i = 0; i < 1000; ++i) {
      io_uring_get_events(ring);
      if (io_uring_cq_ready(ring) > 0) return true;
      usleep(1000);
    }
    return false;
  }
  // Interrupts it: an expired deadline, or a close (spawned; it runs with the next
  // run_ready).
  bool expire() {
    const int64_t past = mono_now_ns() - 1;
    return (mode == Mode::kRead ? f.set_read_deadline(past) : f.set_write_deadline(past)).ok();
  }
  void close(Env<P>& e) { e.s.spawn(s24_close(&f, &cst, &closed)); }
  // The operation returned the completion's success.
  void expect_success() {
    EXPECT_TRUE(r.ok()) << r.err.message();
    if (mode == Mode::kRead) {
      EXPECT_EQ(std::string(buf, r.n), "won");
    } else {
      EXPECT_EQ(r.n, data.size());
    }
  }
};

// The modes whose operations cancel and wait on this backend: the send on both variants;
// the recv when it is single-shot.
template <class P>
std::vector<Mode> cancelling_modes(Env<P>& e) {
  if (e.s.backend().multishot_recv()) return {Mode::kWrite};
  return {Mode::kRead, Mode::kWrite};
}

TYPED_TEST(UringS24, S24_AnOperationCompletedBeforeTheDeadlineOrCloseIsASuccess) {
  using P = TypeParam;
  Env<P> e;
  ASSERT_TRUE(e.s.start().ok());
  for (const bool by_close : {false, true}) {
    for (const Mode m : cancelling_modes(e)) {
      SCOPED_TRACE(std::string(m == Mode::kRead ? "recv" : "send") +
                   (by_close ? ", close" : ", deadline"));
      ParkedOp<P> op(m);
      ASSERT_TRUE(op.start(e)) << "the operation did not wait in the kernel";
      ASSERT_TRUE(op.complete_in_kernel(e)) << "the operation never completed in the kernel";
      if (by_close) {
        op.close(e);
      } else {
        ASSERT_TRUE(op.expire());
      }
      e.s.run_ready();  // the operation cancels and waits for its completion
      EXPECT_FALSE(op.done) << "the operation returned before its completion was reaped";
      ASSERT_TRUE(e.run_until([&] { return op.done && (!by_close || op.closed); }));
      op.expect_success();
      if (by_close) {
        EXPECT_TRUE(op.cst.ok()) << op.cst.message();
      }
    }
  }
}

TYPED_TEST(UringS24, S24_TimeoutAndCloseWhileWaitingForTheCancelAreIgnored) {
  // The deadline expires: the operation is cancelled, and while the engine waits for that
  // cancel's completion, a new deadline is set and expires, and a close comes. Neither
  // ends the wait; the completion decides. First the operation had completed in the kernel
  // before the cancel reached it: a success. Then the cancel stops the operation: its
  // result is the timeout that interrupted it, not the close that came later.
  using P = TypeParam;
  Env<P> e;
  ASSERT_TRUE(e.s.start().ok());
  for (const bool completes : {true, false}) {
    for (const Mode m : cancelling_modes(e)) {
      SCOPED_TRACE(std::string(m == Mode::kRead ? "recv" : "send") +
                   (completes ? ", completes" : ", cancelled"));
      ParkedOp<P> op(m);
      ASSERT_TRUE(op.start(e)) << "the operation did not wait in the kernel";
      ASSERT_TRUE(op.expire());
      e.s.run_ready();  // the operation cancels; the cancel waits in the SQ
      ASSERT_FALSE(op.done) << "the operation returned before its completion was reaped";
      if (completes) {
        ASSERT_TRUE(op.complete_in_kernel(e)) << "it never completed in the kernel";
      }
      // More interruptions while it waits for the completion.
      ASSERT_TRUE(op.f.set_deadline(mono_now_ns() + kSec).ok());
      ASSERT_TRUE(op.expire());
      e.s.run_ready();
      op.close(e);
      e.s.run_ready();
      EXPECT_FALSE(op.done) << "a timeout or close ended the wait for the completion";
      ASSERT_TRUE(e.run_until([&] { return op.done && op.closed; }));
      EXPECT_TRUE(op.cst.ok()) << op.cst.message();
      if (completes) {
        op.expect_success();
      } else {
        EXPECT_TRUE(op.r.err.timeout()) << op.r.err.message();
        EXPECT_FALSE(op.r.err.closed());
        EXPECT_EQ(op.r.n, 0u);
      }
    }
  }
}

}  // namespace
}  // namespace ringpoll::test
