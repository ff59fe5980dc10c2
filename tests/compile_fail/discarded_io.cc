// A forgotten co_await must not compile quietly (issue 27, 2). Built by the ctest tests
// `compile_fail_discarded_io` (expects the nodiscard diagnostics; -Werror makes them
// errors) and `compile_fail_discarded_io_control` (-DAWAITED: the same code with every
// co_await in place compiles cleanly, so the failure is the discards and nothing else).
#include "engine/net.h"
#include "epoll/epoll_poller.h"
#include "uring/uring_completion.h"

using namespace ringpoll;

Task<Status> helper() {
  co_return Status();
}

Task<void> relay_line(TcpStream<EpollPoller>& c, std::span<std::byte> buf) {
#ifdef AWAITED
  const IoResult r = co_await c.read(buf);
  const IoResult w = co_await c.write(std::span<const std::byte>(buf.data(), r.n));
  const IoResult t = co_await c.write("bye\n");
  const Status h = co_await helper();
  const Status s = co_await c.close();
  (void)w;
  (void)t;
  (void)h;
  (void)s;
#else
  c.read(buf);                                         // EXPECT-NODISCARD: an FdOp, never started
  c.write(std::span<const std::byte>(buf.data(), 4));  // EXPECT-NODISCARD: the issue
  c.write("bye\n");                                    // EXPECT-NODISCARD
  helper();                                            // EXPECT-NODISCARD: a Task, never started
  c.close();                                           // EXPECT-NODISCARD
#endif
  co_return;
}

// io_uring completion mode's read is a FastOrTask: the same diagnostic.
Task<void> completion_read(TcpStream<UringCompletionPoller>& c, std::span<std::byte> buf) {
#ifdef AWAITED
  const IoResult r = co_await c.read(buf);
  (void)r;
#else
  c.read(buf);                                         // EXPECT-NODISCARD
#endif
  co_return;
}
