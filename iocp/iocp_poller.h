#pragma once
// IocpPoller: the Windows backend, an I/O completion port per shard (Go's
// runtime/netpoll_windows.go and internal/poll/fd_windows.go carry the same design).
//
// Why IOCP needs an essay. The backend contract (poller/poller.h) speaks of readiness: a
// descriptor becomes readable, its waiter wakes and retries the syscall. A completion port
// never says "readable"; it says "the receive you started has finished, with this many
// bytes". So this backend is a completion backend (kCompletion = true), driven the way
// engine/poll_fd.h drives io_uring's completion mode:
//
//   the sockets layer       submit_recv/send/accept/connect(op, ...) starts one
//                           overlapped operation (WSARecv, WSASend, AcceptEx, ConnectEx,
//                           WSARecvFrom/WSASendTo) whose OVERLAPPED lives in the Op, in
//                           the awaiting coroutine's frame
//   waiting                 the coroutine parks on the PollDesc slot of op->mode, exactly
//                           as a readiness waiter would
//   poll(delta)             GetQueuedCompletionStatusEx dequeues up to kBatch completions
//                           in one call; each marks its Op done with its result and makes
//                           its slot "ready" (Go's netpollready). The woken tasks of one
//                           call form one TaskList.
//   timeout or close        the deadline/close logic wakes the waiter with an error as on
//                           any backend; the sockets layer (exec_io) then calls cancel(op)
//                           = CancelIoEx and waits for the completion, ignoring further
//                           timeouts (S23). A completion that won the race against the
//                           cancel carries its real result and is reported as a success
//                           (S24); only ERROR_OPERATION_ABORTED becomes -ECANCELED.
//   wake()                  PostQueuedCompletionStatus with a reserved key, CAS-coalesced
//                           (Go's netpollBreak); a non-blocking poll that dequeues it posts
//                           it again, so only a blocking poll drains it (S28)
//
// The completion key of a socket is its tagged PollDesc (pointer | fdseq << 48), fixed when
// the socket is associated with the port (a handle joins one port for life). A completion
// whose tag is no longer the descriptor's generation is dropped without touching its
// OVERLAPPED (S26): the descriptor memory is type-stable, the Op memory might not be.
//
// FILE_SKIP_COMPLETION_PORT_ON_SUCCESS (Go's skipSyncNotif): when the port is told to skip
// them, an operation that completes at once queues no packet; the backend then finishes it
// inline and sets its slot ready, so the waiter takes the result without a poll. Winsock
// honours the flag only when every installed provider is an IFS provider (no layered
// service provider), so it is probed per process. Wine's providers do not claim IFS, yet
// its sockets honour the flag, so the suite runs three forms: as shipped (`IocpPoller`),
// forced on (`IocpPollerForceSkip`, the inline path) and off (`IocpPollerNoSkip`, where
// every result comes through the port).
//
// Results: Wine fills only the low 32 bits of OVERLAPPED_ENTRY::Internal, so the status
// and byte count of a completion are taken with WSAGetOverlappedResult on the Op's own
// OVERLAPPED, and Winsock errors are mapped to errno values (res = -errno), as io_uring
// reports them, so the sockets layer stays one piece of code.
//
// Descriptors are ints carrying SOCKET handles (see iocp/compat/sys/socket.h). Nothing
// here is readiness-based: arm() is empty, and multishot accept/recv do not exist.
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <mswsock.h>
#include <windows.h>
#include <winsock2.h>
#include <ws2tcpip.h>

#include <sys/socket.h>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "poller/completion.h"

namespace ringpoll {

enum class IocpOpKind : uint8_t { kRecv, kSend, kAccept, kConnect, kRecvFrom, kSendTo };

// Test seam: sees (and may rewrite) every operation's result before its waiter does, to
// inject ECONNABORTED on accept (S31) and similar faults. Never set in production.
using IocpResultHook = void (*)(IocpOpKind kind, int32_t* res);
inline std::atomic<IocpResultHook> g_iocp_result_hook{nullptr};

struct IocpOptions {
  enum class Skip : uint8_t {
    kOff,      // every result comes through the port
    kWhenIfs,  // FILE_SKIP_COMPLETION_PORT_ON_SUCCESS when every provider is IFS (default)
    kForce,    // ask for it even when a provider does not say IFS (tests: Wine's
               // providers do not set XP1_IFS_HANDLES, yet its sockets honour the flag)
  };
  Skip skip_on_success = Skip::kWhenIfs;
};

class IocpPoller {
 public:
  static constexpr const char* kName = "iocp";
  static constexpr bool kLevelTriggered = false;
  static constexpr bool kCompletion = true;
  // An Op carries an OVERLAPPED, WSABUFs and AcceptEx's address space (about 500 bytes):
  // held in every caller's frame it would grow each connection's coroutine by that much,
  // so each operation runs in a coroutine frame of its own.
  static constexpr bool kFramelessOps = false;

  // Scatter/gather elements one WSASendTo/WSARecvFrom carries (the sockets layer's writev
  // goes round again for the rest).
  static constexpr size_t kMaxBufs = 8;
  // AcceptEx writes both addresses, each followed by 16 bytes of its own.
  static constexpr size_t kAcceptAddrBytes = sizeof(sockaddr_storage) + 16;

  // An operation in flight. The first members are the ones engine/poll_fd.h reads; the
  // rest are the backend's. It lives in the awaiting coroutine's frame, which does not end
  // before `done` (S23), so the OVERLAPPED stays valid while the kernel owns it.
  struct Op {
    PollDesc* pd = nullptr;
    Mode mode = Mode::kRead;
    bool done = false;
    bool zc = false;  // never set: Windows has no zero-copy send to fall back from
    int32_t res = 0;
    // ---- the backend's ----
    IocpOpKind kind = IocpOpKind::kRecv;
    bool pending = false;  // a completion packet will come for `ov`
    uintptr_t sock = 0;
    uintptr_t accepted = ~uintptr_t{0};  // AcceptEx: the socket that takes the connection
    msghdr* msg = nullptr;               // WSARecvFrom: where the sender's address goes
    int namelen = 0;
    DWORD flags = 0;
    WSABUF bufs[kMaxBufs] = {};
    OVERLAPPED ov = {};
    char addrs[2 * kAcceptAddrBytes] = {};
  };
  // Per-descriptor state the sockets layer keeps for a completion backend. IOCP has no
  // multishot requests, so only the fields the shared code reads are here.
  struct FdState {
    int32_t recv_err = 0;
    bool eof = false;
    int32_t accept_err = 0;
    bool zc_capable = false;
  };

  IocpPoller() = default;
  ~IocpPoller();
  IocpPoller(const IocpPoller&) = delete;
  IocpPoller& operator=(const IocpPoller&) = delete;

  static Availability available();
  void set_options(const IocpOptions& o) noexcept { opt_ = o; }
  Status init();
  int open(int fd, PollDesc* pd);
  int close(int fd, PollDesc* pd);
  void arm(PollDesc*, Mode) {}
  int poll(int64_t delta_ns, TaskList& out);
  void wake() noexcept;
  bool owns(int) const { return false; }  // a port is a HANDLE, never one of our ints
  uint64_t wakes_written() const noexcept { return wakes_written_.load(); }

  // ---- the completion API the sockets layer uses ----
  void attach(PollDesc*, FdState*, int) noexcept {}
  void submit_recv(Op* op, int fd, void* buf, size_t len);
  void submit_send(Op* op, int fd, const void* buf, size_t len, bool allow_zc);
  void submit_accept(Op* op, int fd);
  void submit_connect(Op* op, int fd, const sockaddr* sa, socklen_t len);
  void submit_sendmsg(Op* op, int fd, const msghdr* msg);
  void submit_recvmsg(Op* op, int fd, msghdr* msg);
  void cancel(Op* op);
  // Descriptors are SOCKET handles: closesocket, not close.
  static void close_fd(int fd) noexcept;

  struct Counters {
    uint64_t completions = 0;    // packets for operations
    uint64_t inline_done = 0;    // finished at submit (skip-on-success or an at-once error)
    uint64_t stale_dropped = 0;  // packets whose tag was old (S26)
    uint64_t cancels = 0;        // CancelIoEx calls
  };
  Counters counters() const noexcept { return counters_; }
  bool skipping() const noexcept { return skip_; }
  HANDLE port() const noexcept { return port_; }
  std::string describe() const;

 private:
  static constexpr ULONG_PTR kWakeKey = 1;  // tagged PollDescs are 8-byte aligned, never 1
  static constexpr ULONG kBatch = 128;      // completions dequeued by one call

  // After a WSA* call: queue the op as pending, or finish it now.
  void started(Op* op, bool ok_now, DWORD bytes);
  void finish(Op* op, int32_t res, TaskList* out);
  int32_t result_of(Op* op);

  IocpOptions opt_;
  HANDLE port_ = nullptr;
  bool wsa_started_ = false;
  bool skip_ = false;
  std::atomic<bool> wake_pending_{false};
  std::atomic<uint64_t> wakes_written_{0};
  Counters counters_;
};
// IOCP has no multishot requests: every recv and accept is one operation.
static_assert(CompletionBackend<IocpPoller> && !MultishotCompletionBackend<IocpPoller>);

// The same backend with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS off: every result, even one
// ready at submit, comes through the port.
class IocpPollerNoSkip : public IocpPoller {
 public:
  static constexpr const char* kName = "iocp-noskip";
  IocpPollerNoSkip() { set_options(IocpOptions{IocpOptions::Skip::kOff}); }
};
static_assert(PollerBackend<IocpPollerNoSkip>);

// And with it forced on, so the inline path runs where the providers do not claim IFS
// (under Wine). The suite runs on all three.
class IocpPollerForceSkip : public IocpPoller {
 public:
  static constexpr const char* kName = "iocp-forceskip";
  IocpPollerForceSkip() { set_options(IocpOptions{IocpOptions::Skip::kForce}); }
};
static_assert(PollerBackend<IocpPollerForceSkip>);

// Winsock error (WSAGetLastError / WSAGetOverlappedResult) to the errno value the sockets
// layer understands.
int iocp_errno(int wsa_error) noexcept;

}  // namespace ringpoll
