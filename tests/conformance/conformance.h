#pragma once
// The conformance suite's platform layer. S01-S31 are written once (wait, deadline, close
// and loop_test.cc in this folder) and compiled into two suites:
//   Linux    Conformance/<backend>.Sxx_...  every Linux backend (tests/CMakeLists.txt),
//            on AF_UNIX pairs;
//   Windows  IocpWine/<backend>.Sxx_...     the IOCP backend cross-built with mingw-w64 and
//            run under Wine (tests/windows), on Winsock TCP pairs.
// Both give the tests the same names: FdPair, connected_pair, put, readable_bytes,
// sleep_ms, sleep_until_ns, close_fd, tcp_listener, tcp_connect, block_writes and
// kStuckWrite, alloc_counting, Op and do_read/do_write/do_accept/do_close, parked, and the
// fixture's env(), sched(), open_pair and park_read (support/poll_ops.h). The tests write
// TYPED_TEST(CONFORMANCE_SUITE, Sxx_...), and use #ifdef _WIN32 only where a behaviour's
// Windows adaptation really differs. A behaviour of the core alone (PollDesc, PollCache,
// the timer wheel: S13, S14, S25 and S19's priority) touches no backend and is one plain
// TEST(CONFORMANCE_CORE_SUITE, Sxx_...): ConformanceCore.Sxx_... / IocpWineCore.Sxx_....
#include "poller/internal/test_seams.h"

#ifdef _WIN32

#include "win_alloc_counter.h"
#include "win_env.h"

#define CONFORMANCE_SUITE IocpWine
#define CONFORMANCE_CORE_SUITE IocpWineCore

#else  // Linux

#include <sys/ioctl.h>
#include <unistd.h>

#include "support/alloc_counter.h"
#include "support/test_env.h"

#define CONFORMANCE_SUITE Conformance
#define CONFORMANCE_CORE_SUITE ConformanceCore

namespace ringpoll::test {

// A connected AF_UNIX stream pair, both ends non-blocking.
inline void connected_pair(FdPair& p) {
  unix_pair(p);
}

// After block_writes(fd) (the send buffer filled until the kernel refuses), a write of
// kStuckWrite bytes on fd parks: the peer never reads.
inline constexpr size_t kStuckWrite = size_t{1} << 20;
inline void block_writes(int fd) {
  fill_send_buffer(fd);
}

}  // namespace ringpoll::test

#include "support/poll_ops.h"

namespace ringpoll::test {

template <class P>
class Conformance : public BackendFixture<P> {};
TYPED_TEST_SUITE(Conformance, Backends, BackendName);

inline int readable_bytes(int fd) {
  int n = -1;
  ioctl(fd, FIONREAD, &n);
  return n;
}

inline void sleep_ms(int ms) {
  usleep(static_cast<useconds_t>(ms) * 1000);
}

inline void close_fd(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace ringpoll::test

#endif
