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

TEST_F(UringCompletionTest, LargeTcpSendsUseSendZcAndArriveIntact) {
  Env<CP> e;
  ASSERT_TRUE(e.s.start().ok());
  if (!e.s.backend().ring().supports(IORING_OP_SEND_ZC)) GTEST_SKIP() << "no IORING_OP_SEND_ZC";
  FdPair p;
  tcp_pair(p);
  PollFd<CP> f;
  ASSERT_TRUE(f.open(e.s, p.take_a()).ok());
  const std::string data = pattern(256 * 1024);
  IoResult res;
  bool done = false;
  e.s.spawn(write_all(&f, &data, &res, &done));
  std::string got;
  char buf[65536];
  ASSERT_TRUE(e.run_until([&] {
    for (ssize_t n; (n = ::recv(p.b, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
      got.append(buf, static_cast<size_t>(n));
    return done && got.size() >= data.size();
  }));
  EXPECT_TRUE(res.ok()) << res.err.message();
  EXPECT_EQ(got, data);
  EXPECT_GT(e.s.backend().counters().zc_sends, 0u);
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

}  // namespace
}  // namespace ringpoll::test
