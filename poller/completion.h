#pragma once
// The completion contract: what a backend that performs the I/O itself (kCompletion:
// io_uring completion mode, IOCP) provides beyond poller/poller.h, as Go's IOCP poller
// does for internal/poll's execIO. The CompletionBackend concept makes the compiler
// check it (uring/uring_completion.h and iocp/iocp_poller.h static_assert it); a backend
// that also has multishot requests satisfies MultishotCompletionBackend, and one that
// does not says so by not declaring them (no member stubbed to fail at run time).
//
//   struct Op                               one operation in flight; it lives in the
//                                           awaiting frame, which does not end before
//                                           `done` (S23). The core reads and writes:
//     PollDesc* pd; Mode mode               whose slot the completion wakes
//     bool done                             the kernel is finished with it (and its buffer)
//     bool zc                               it was a zero-copy send
//     int32_t res                           the result: a count, or -errno
//   struct FdState                          per-descriptor state the sockets layer keeps
//                                           for the backend (in PollFd):
//     int32_t recv_err, accept_err; bool eof; bool zc_capable
//   static constexpr bool kFramelessOps     true: Op is small enough for the caller's
//                                           frame, so the hot operations are frame-less
//                                           awaiters (engine/completion_ops.h); false:
//                                           each operation runs in a coroutine frame of
//                                           its own
//   void attach(PollDesc*, FdState*, int fd)  a descriptor opened on the shard
//   void submit_recv / submit_send / submit_accept / submit_connect /
//        submit_sendmsg / submit_recvmsg (Op*, int fd, ...)
//                                           start an operation; never fails: a full
//                                           submission queue is flushed, an immediate
//                                           error completes the Op
//   void cancel(Op*)                        ask the kernel to end it early; its completion
//                                           (-ECANCELED, or its real result when it won
//                                           the race) still comes (S24)
//   static void close_fd(int fd)            (optional, every backend) closes a descriptor
//                                           the platform's way; close(2) when absent
//
// Multishot refinement (io_uring): one request yields many results, queued per descriptor
// in FdState until the application takes them.
//   bool multishot_recv() / multishot_accept()    on for this ring (probed, configured)
//   void arm_recv(FdState*); size_t take_recv(FdState*, span)
//   ssize_t recv_starved(FdState*, span)          a read while the buffer ring is dry
//   void detach_recv(FdState*)                    off the ring for good (a bulk stream):
//   static bool recv_detached(const FdState&)     ...and drained: reads are single-shot
//   void attach_recv(FdState*)                    back on the ring (the stream went quiet;
//                                                 no single-shot read is in flight)
//   static bool recv_quiet(const FdState&)        recv armed, nothing queued: nothing has
//                                                 arrived (PollFd::known_quiet)
//   void arm_accept(FdState*); int take_accept(FdState*)
//   void stop_accept(FdState*)                    cancel the multishot accept, never re-arm;
//                                                 what it took stays queued for take_accept
//   static bool accept_stopped(const FdState&)    ...and its last completion has arrived
//
// Threads: as in poller/poller.h, everything runs on the owning shard's thread.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include <sys/socket.h>
#include <sys/types.h>

#include "poller.h"

namespace ringpoll {

template <class P>
concept CompletionBackend = PollerBackend<P> && P::kCompletion &&
    requires(P& b, typename P::Op* op, typename P::FdState* st, PollDesc* pd, int fd, void* buf,
             const void* cbuf, size_t n, bool flag, const sockaddr* sa, socklen_t sl, msghdr* m,
             const msghdr* cm) {
  { P::kFramelessOps } -> std::convertible_to<bool>;
  requires std::same_as<decltype(op->pd), PollDesc*>;
  requires std::same_as<decltype(op->mode), Mode>;
  requires std::same_as<decltype(op->done), bool>;
  requires std::same_as<decltype(op->zc), bool>;
  requires std::same_as<decltype(op->res), int32_t>;
  requires std::same_as<decltype(st->recv_err), int32_t>;
  requires std::same_as<decltype(st->accept_err), int32_t>;
  requires std::same_as<decltype(st->eof), bool>;
  requires std::same_as<decltype(st->zc_capable), bool>;
  { b.attach(pd, st, fd) } -> std::same_as<void>;
  { b.submit_recv(op, fd, buf, n) } -> std::same_as<void>;
  { b.submit_send(op, fd, cbuf, n, flag) } -> std::same_as<void>;
  { b.submit_accept(op, fd) } -> std::same_as<void>;
  { b.submit_connect(op, fd, sa, sl) } -> std::same_as<void>;
  { b.submit_sendmsg(op, fd, cm) } -> std::same_as<void>;
  { b.submit_recvmsg(op, fd, m) } -> std::same_as<void>;
  { b.cancel(op) } -> std::same_as<void>;
};

template <class P>
concept MultishotCompletionBackend = CompletionBackend<P> &&
    requires(P& b, const P& cb, typename P::FdState* st, std::span<std::byte> out) {
  { cb.multishot_recv() } -> std::same_as<bool>;
  { cb.multishot_accept() } -> std::same_as<bool>;
  { b.arm_recv(st) } -> std::same_as<void>;
  { b.take_recv(st, out) } -> std::same_as<size_t>;
  { b.recv_starved(st, out) } -> std::same_as<ssize_t>;
  { b.arm_accept(st) } -> std::same_as<void>;
  { b.take_accept(st) } -> std::same_as<int>;
  { b.stop_accept(st) } -> std::same_as<void>;
  { P::accept_stopped(*st) } -> std::same_as<bool>;
  { b.detach_recv(st) } -> std::same_as<void>;
  { P::recv_detached(*st) } -> std::same_as<bool>;
  { P::recv_quiet(*st) } -> std::same_as<bool>;
  { b.attach_recv(st) } -> std::same_as<void>;
  requires std::same_as<decltype(st->recv_waiting), bool>;
  requires std::same_as<decltype(st->recv_detached), bool>;
};

}  // namespace ringpoll
