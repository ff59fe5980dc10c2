#pragma once
// Test seams: the hooks through which tests make the rare things happen for real — a
// readiness event between "prepare" and "park" (S15), ECONNABORTED from accept (S31), a
// CQE rewritten to ENOBUFS or ECANCELED, a short send, an io_uring setup that fails with
// EAGAIN, an error-only epoll event or poll CQE no real socket produces on demand. This is
// the one header that declares them (DESIGN.md "Who may include whom"); it is not
// installed, and no installed header carries a mutable test global: the library reads
// each seam through a function defined beside it (poller/test_seams.cc) or in the
// backend's own .cc file. None is ever set in production; each costs a relaxed load, and
// the three read from installed headers (the park window, accept4, the io_uring inject)
// an out-of-line call as well (about a nanosecond a park; the park/unpark benchmark and
// the echo rows did not move).
//
// The backends' types are only named here (forward declarations), so poller/ still
// includes nothing of ringpoll's beyond itself.
#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "../poll_desc.h"

struct epoll_event;
struct io_uring_cqe;

namespace ringpoll {

// Runs between "prepare to wait" and the park commit (PollDesc::park, S15).
using BeforeParkHook = void (*)(PollDesc* pd, Mode mode);
extern std::atomic<BeforeParkHook> g_before_park_hook;

// The accept4 the sockets layer calls (tests inject ECONNABORTED, S31). Not atomic: set it
// before the engine starts, restore it after it stopped.
using Accept4Fn = int (*)(int, sockaddr*, socklen_t*, int);
extern Accept4Fn g_accept4_fn;

// epoll: called by poll() with the events epoll_wait returned (n of them, room for cap);
// it may rewrite them or append synthetic ones and returns the new count, and the real
// dispatch then handles them as the kernel's.
using EpollEventHook = int (*)(epoll_event* events, int n, int cap);
extern std::atomic<EpollEventHook> g_epoll_event_hook;

// io_uring, both modes: after the real CQEs of a poll, called until it returns false; each
// CQE it fills is dispatched as the kernel's.
using UringInjectHook = bool (*)(io_uring_cqe* cqe);
extern std::atomic<UringInjectHook> g_uring_inject_hook;
// io_uring: when non-zero, ring setup (and the probe) fails with this errno, as if
// io_uring_setup had returned it (e.g. EAGAIN).
extern std::atomic<int> g_uring_setup_fail_errno;
// io_uring: consulted by every ring setup (not the probe) with the SQ entries it is about
// to ask for; a non-zero errno makes that setup fail as if io_uring_setup had returned it
// (a ring restart meeting ENOMEM, UringPoller::restart_ring).
using UringSetupHook = int (*)(unsigned entries);
extern std::atomic<UringSetupHook> g_uring_setup_hook;
// io_uring: when non-zero, the next wait returns this errno (once; it is cleared) as if
// io_uring_enter had, before submitting anything: EBADR, the kernel dropped completions.
extern std::atomic<int> g_uring_wait_fail_errno;
// io_uring completion mode: sees (and may rewrite) every CQE's result and flags before
// dispatch (ENOBUFS, ECANCELED, short sends, ECONNABORTED).
enum class UringCqeKind : uint8_t { kOp, kRecv, kAccept, kPoll };
using UringCqeHook = void (*)(UringCqeKind kind, int32_t* res, uint32_t* flags);
extern std::atomic<UringCqeHook> g_uring_cqe_hook;
// io_uring completion mode: when non-zero, every send asks the kernel for at most this
// many bytes, so the kernel really sends short and the caller must continue.
extern std::atomic<size_t> g_uring_send_clamp;
// io_uring completion mode: when true, a loopback peer does not turn send_zc off (tests
// that need zero-copy sends have only loopback peers).
extern std::atomic<bool> g_uring_zc_on_loopback;
// io_uring completion mode: consulted before each send is submitted (kOp), each multishot
// recv is armed (kRecv) and each accept, multishot or not, is armed (kAccept); a non-zero errno
// makes the backend submit a NOP in its place whose completion carries -errno, so the
// operation fails as if the kernel had failed it (EAGAIN, EINTR, ENOBUFS, ECANCELED,
// EMFILE, ENFILE), with nothing sent or received.
using UringFaultHook = int (*)(UringCqeKind kind);
extern std::atomic<UringFaultHook> g_uring_fault_hook;
// io_uring completion mode: the user data of pd's multishot recv, for a CQE a test
// injects through g_uring_inject_hook (defined in uring/uring_completion.cc).
uint64_t uring_recv_user_data(PollDesc* pd) noexcept;

}  // namespace ringpoll
