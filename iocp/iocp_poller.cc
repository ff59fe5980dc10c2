#include "iocp/iocp_poller.h"

#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <vector>

namespace ringpoll {
namespace {

// PollDesc::backend_flags: this socket's port skips packets for at-once completions.
constexpr uint8_t kFlagSkip = 1;

// AcceptEx and ConnectEx are Winsock extensions reached through a socket ioctl. One
// provider serves every TCP socket here, so the pointers are fetched once per process.
struct Extensions {
  LPFN_ACCEPTEX accept_ex = nullptr;
  LPFN_CONNECTEX connect_ex = nullptr;
  int err = 0;  // the WSA error that stopped the lookup
};

template <class Fn>
int load_extension(SOCKET s, GUID guid, Fn* out) {
  DWORD got = 0;
  if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid, out, sizeof *out, &got,
               nullptr, nullptr) != 0) {
    return WSAGetLastError();
  }
  return 0;
}

const Extensions& extensions() {
  static const Extensions ext = [] {
    Extensions e;
    const SOCKET s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    if (s == INVALID_SOCKET) {
      e.err = WSAGetLastError();
      return e;
    }
    e.err = load_extension(s, WSAID_ACCEPTEX, &e.accept_ex);
    if (e.err == 0) e.err = load_extension(s, WSAID_CONNECTEX, &e.connect_ex);
    closesocket(s);
    return e;
  }();
  return ext;
}

// Winsock honours FILE_SKIP_COMPLETION_PORT_ON_SUCCESS only for IFS handles: a layered
// provider (an LSP) may complete an operation at once and still queue a packet. So the
// flag is used only when every installed provider is an IFS one (as Go decides it).
bool all_providers_ifs() {
  static const bool ok = [] {
    DWORD len = 0;
    WSAEnumProtocolsW(nullptr, nullptr, &len);
    if (len == 0) return false;
    std::vector<char> buf(len);
    auto* info = reinterpret_cast<WSAPROTOCOL_INFOW*>(buf.data());
    const int n = WSAEnumProtocolsW(nullptr, info, &len);
    if (n == SOCKET_ERROR) return false;
    for (int i = 0; i < n; ++i) {
      if (!(info[i].dwServiceFlags1 & XP1_IFS_HANDLES)) return false;
    }
    return true;
  }();
  return ok;
}

SOCKET as_socket(int fd) noexcept {
  return static_cast<SOCKET>(static_cast<unsigned>(fd));
}

IocpPoller::Op* op_of(OVERLAPPED* ov) noexcept {
  return reinterpret_cast<IocpPoller::Op*>(reinterpret_cast<char*>(ov) -
                                           offsetof(IocpPoller::Op, ov));
}

ULONG clamp_len(size_t len) noexcept {
  return len > ULONG_MAX ? ULONG_MAX : static_cast<ULONG>(len);
}

int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// GetQueuedCompletionStatusEx takes milliseconds. Round up, never down: a 300 µs wait
// truncated to 0 ms would make the shard spin instead of sleep (STYLE.md habit 7).
DWORD wait_ms(int64_t delta_ns) noexcept {
  if (delta_ns < 0) return INFINITE;
  const int64_t ms = (delta_ns + 999'999) / 1'000'000;
  return ms >= static_cast<int64_t>(INFINITE) ? INFINITE - 1 : static_cast<DWORD>(ms);
}

}  // namespace

void IocpPoller::close_fd(int fd) noexcept {
  closesocket(static_cast<SOCKET>(static_cast<unsigned>(fd)));
}

int iocp_errno(int e) noexcept {
  switch (e) {
    case 0:
      return 0;
    case WSA_OPERATION_ABORTED:  // ERROR_OPERATION_ABORTED: CancelIoEx or closesocket
      return ECANCELED;
    case WSAECONNRESET:
    case ERROR_NETNAME_DELETED:  // the peer reset the connection under an overlapped op
      return ECONNRESET;
    case WSAECONNABORTED:
    case ERROR_CONNECTION_ABORTED:
      return ECONNABORTED;
    case WSAECONNREFUSED:
    case ERROR_CONNECTION_REFUSED:
    case ERROR_PORT_UNREACHABLE:
      return ECONNREFUSED;
    case WSAENETUNREACH:
    case ERROR_NETWORK_UNREACHABLE:
      return ENETUNREACH;
    case WSAEHOSTUNREACH:
    case ERROR_HOST_UNREACHABLE:
      return EHOSTUNREACH;
    case WSAETIMEDOUT:
    case ERROR_SEM_TIMEOUT:
      return ETIMEDOUT;
    case WSAENOTCONN:
      return ENOTCONN;
    case WSAESHUTDOWN:
      return EPIPE;
    case WSAEMSGSIZE:
    case ERROR_MORE_DATA:
      return EMSGSIZE;
    case WSAENOTSOCK:
      return ENOTSOCK;
    case WSAEINVAL:
    case ERROR_INVALID_PARAMETER:
      return EINVAL;
    case WSAEADDRINUSE:
      return EADDRINUSE;
    case WSAEADDRNOTAVAIL:
      return EADDRNOTAVAIL;
    case WSAEAFNOSUPPORT:
      return EAFNOSUPPORT;
    case WSAEWOULDBLOCK:
      return EAGAIN;
    case WSAENOBUFS:
      return ENOBUFS;
    case WSAEMFILE:
      return EMFILE;
    case WSAEISCONN:
      return EISCONN;
    case WSAEOPNOTSUPP:
      return EOPNOTSUPP;
    default:
      return EIO;
  }
}

Availability IocpPoller::available() {
  Availability a;
  WSADATA wsa;
  if (const int e = WSAStartup(MAKEWORD(2, 2), &wsa); e != 0) {
    a.err = iocp_errno(e);
    a.why = "WSAStartup failed with Winsock error " + std::to_string(e);
    return a;
  }
  HANDLE p = CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 1);
  if (!p) {
    a.err = EIO;
    a.why = "CreateIoCompletionPort failed with error " + std::to_string(GetLastError());
  } else {
    CloseHandle(p);
    const Extensions& x = extensions();
    if (x.err != 0) {
      a.err = iocp_errno(x.err);
      a.why = "AcceptEx/ConnectEx lookup failed with Winsock error " + std::to_string(x.err);
    } else {
      a.ok = true;
    }
  }
  WSACleanup();
  return a;
}

Status IocpPoller::init() {
  WSADATA wsa;
  if (const int e = WSAStartup(MAKEWORD(2, 2), &wsa); e != 0)
    return Status::from_errno(iocp_errno(e));
  wsa_started_ = true;
  if (extensions().err != 0) return Status::from_errno(iocp_errno(extensions().err));
  // One thread (the shard's) dequeues, so concurrency 1.
  port_ = CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 1);
  if (!port_) return Status::from_errno(EIO);
  skip_ = opt_.skip_on_success == IocpOptions::Skip::kForce ||
          (opt_.skip_on_success == IocpOptions::Skip::kWhenIfs && all_providers_ifs());
  return Status();
}

IocpPoller::~IocpPoller() {
  if (port_) CloseHandle(port_);
  if (wsa_started_) WSACleanup();
}

std::string IocpPoller::describe() const {
  return std::string("iocp: one completion port, skip-on-success ") + (skip_ ? "on" : "off");
}

int IocpPoller::open(int fd, PollDesc* pd) {
  const SOCKET s = as_socket(fd);
  int type = 0;
  int len = sizeof type;
  // Only sockets: the sockets layer's operations are Winsock calls.
  if (getsockopt(s, SOL_SOCKET, SO_TYPE, reinterpret_cast<char*>(&type), &len) != 0) return EPERM;
  const ULONG_PTR key = tag_pointer(pd, pd->fdseq.load());
  // A handle joins one port for life; a socket already on another port cannot be polled
  // by this shard.
  if (!CreateIoCompletionPort(reinterpret_cast<HANDLE>(s), port_, key, 0)) return EPERM;
  pd->backend_flags = 0;
  if (skip_ && SetFileCompletionNotificationModes(
                   reinterpret_cast<HANDLE>(s),
                   FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE)) {
    pd->backend_flags = kFlagSkip;
  }
  return 0;
}

int IocpPoller::close(int, PollDesc* pd) {
  // Nothing to undo: the association ends with the socket. Packets still queued for it
  // carry the old tag and are dropped (S26).
  pd->backend_flags = 0;
  return 0;
}

void IocpPoller::wake() noexcept {
  bool expected = false;
  if (!wake_pending_.compare_exchange_strong(expected, true)) return;  // one outstanding
  wakes_written_.fetch_add(1);
  if (!PostQueuedCompletionStatus(port_, 0, kWakeKey, nullptr)) wake_pending_.store(false);
}

int IocpPoller::poll(int64_t delta_ns, TaskList& out) {
  OVERLAPPED_ENTRY entries[kBatch];
  ULONG n = 0;
  const int64_t until = delta_ns > 0 ? steady_ns() + delta_ns : 0;
  for (;;) {
    DWORD ms = wait_ms(delta_ns);
    if (delta_ns > 0) {
      const int64_t left = until - steady_ns();  // never negative into wait_ms (INFINITE)
      ms = left > 0 ? wait_ms(left) : 0;
    }
    // Alertable: an APC queued to the shard's thread interrupts the wait, which then
    // returns no events (the Windows form of an interrupted wait, S29).
    if (GetQueuedCompletionStatusEx(port_, entries, kBatch, &n, ms, TRUE)) break;
    const DWORD err = GetLastError();
    if (err == WAIT_IO_COMPLETION) return 0;
    if (err != WAIT_TIMEOUT) fatal("iocp: GetQueuedCompletionStatusEx failed");
    // The kernel's timer may end a wait a little before the steady clock says it should;
    // wait out the rest rather than return early.
    if (delta_ns <= 0 || steady_ns() >= until) return 0;
  }
  int events = 0;
  bool woke = false;
  for (ULONG i = 0; i < n; ++i) {
    const OVERLAPPED_ENTRY& e = entries[i];
    if (e.lpCompletionKey == kWakeKey && e.lpOverlapped == nullptr) {
      woke = true;
      continue;
    }
    PollDesc* pd = tagged_pd(e.lpCompletionKey);
    if (e.lpOverlapped == nullptr || pd == nullptr ||
        !tag_current(pd, tagged_seq(e.lpCompletionKey))) {
      ++counters_.stale_dropped;  // the Op may be gone: never touch its OVERLAPPED
      continue;
    }
    Op* op = op_of(e.lpOverlapped);
    ++counters_.completions;
    finish(op, result_of(op), &out);
    ++events;
  }
  if (woke) {
    if (delta_ns == 0) {
      // A non-blocking poll must leave the wake for the next blocking one (S28): put it
      // back; it is still the one outstanding wake.
      if (!PostQueuedCompletionStatus(port_, 0, kWakeKey, nullptr)) wake_pending_.store(false);
    } else {
      wake_pending_.store(false);
    }
  }
  return events;
}

// The status of a dequeued completion, from the Op's own OVERLAPPED (see the header on
// why OVERLAPPED_ENTRY::Internal is not used).
int32_t IocpPoller::result_of(Op* op) {
  DWORD bytes = 0;
  DWORD flags = 0;
  const bool ok = WSAGetOverlappedResult(op->sock, &op->ov, &bytes, FALSE, &flags);
  const int err = ok ? 0 : WSAGetLastError();
  // A send cancelled after part of it went out reports that part, as Go's execIO returns
  // the byte count beside the error: the caller sees a timeout with the bytes written
  // (S07), never a silent loss of bytes the peer will read.
  if (ok || (err == WSA_OPERATION_ABORTED && bytes > 0 &&
             (op->kind == IocpOpKind::kSend || op->kind == IocpOpKind::kSendTo))) {
    return bytes > INT32_MAX ? INT32_MAX : static_cast<int32_t>(bytes);
  }
  return -iocp_errno(err);
}

void IocpPoller::started(Op* op, bool ok_now, DWORD bytes) {
  if (ok_now) {
    if (op->pd->backend_flags & kFlagSkip) {
      ++counters_.inline_done;
      finish(op, bytes > INT32_MAX ? INT32_MAX : static_cast<int32_t>(bytes), nullptr);
    } else {
      op->pending = true;  // the packet comes anyway
    }
    return;
  }
  const int err = WSAGetLastError();
  if (err == WSA_IO_PENDING) {
    op->pending = true;
    return;
  }
  // Failed at once: no packet is queued for it.
  ++counters_.inline_done;
  finish(op, -iocp_errno(err), nullptr);
}

// Completes op with res (bytes, or -errno). out: the poll's list; nullptr when the op
// finished at submit, before its waiter could park.
void IocpPoller::finish(Op* op, int32_t res, TaskList* out) {
  op->pending = false;
  if (op->kind == IocpOpKind::kAccept) {
    const auto acc = static_cast<SOCKET>(op->accepted);
    const auto lsock = static_cast<SOCKET>(op->sock);
    if (res >= 0 && setsockopt(acc, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                               reinterpret_cast<const char*>(&lsock), sizeof lsock) != 0) {
      res = -iocp_errno(WSAGetLastError());
    }
    if (res >= 0) {
      res = static_cast<int32_t>(acc);
    } else {
      closesocket(acc);
      // A connection reset before it was taken: the accept is retried, as on POSIX (S31).
      if (res == -ECONNRESET) res = -ECONNABORTED;
    }
    op->accepted = ~uintptr_t{0};
  } else if (op->kind == IocpOpKind::kConnect && res >= 0) {
    // Makes getpeername, shutdown and friends work on a ConnectEx socket.
    setsockopt(static_cast<SOCKET>(op->sock), SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0);
    res = 0;
  } else if (op->kind == IocpOpKind::kRecvFrom && op->msg) {
    op->msg->msg_namelen = op->namelen;
  }
  if (IocpResultHook h = g_iocp_result_hook.load(std::memory_order_relaxed)) h(op->kind, &res);
  op->res = res;
  op->done = true;
  if (out) {
    op->pd->ready(op->mode, *out);
  } else if (op->pd->unblock(op->mode, true) != nullptr) {
    fatal("iocp: an operation finished at submit while a task was parked in its direction");
  }
}

void IocpPoller::submit_recv(Op* op, int fd, void* buf, size_t len) {
  op->kind = IocpOpKind::kRecv;
  op->sock = as_socket(fd);
  op->bufs[0].buf = static_cast<CHAR*>(buf);
  op->bufs[0].len = clamp_len(len);
  op->flags = 0;
  DWORD bytes = 0;
  const int rc = WSARecv(op->sock, op->bufs, 1, &bytes, &op->flags, &op->ov, nullptr);
  started(op, rc == 0, bytes);
}

void IocpPoller::submit_send(Op* op, int fd, const void* buf, size_t len, bool) {
  op->kind = IocpOpKind::kSend;
  op->sock = as_socket(fd);
  op->bufs[0].buf = static_cast<CHAR*>(const_cast<void*>(buf));
  op->bufs[0].len = clamp_len(len);
  DWORD bytes = 0;
  const int rc = WSASend(op->sock, op->bufs, 1, &bytes, 0, &op->ov, nullptr);
  started(op, rc == 0, bytes);
}

void IocpPoller::submit_accept(Op* op, int fd) {
  op->kind = IocpOpKind::kAccept;
  op->sock = as_socket(fd);
  sockaddr_storage local{};
  int llen = sizeof local;
  int family = AF_INET;
  if (getsockname(op->sock, reinterpret_cast<sockaddr*>(&local), &llen) == 0) {
    family = local.ss_family;
  }
  const SOCKET acc = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                                WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (acc == INVALID_SOCKET) {
    op->kind = IocpOpKind::kRecv;  // nothing to clean up in finish
    ++counters_.inline_done;
    finish(op, -iocp_errno(WSAGetLastError()), nullptr);
    return;
  }
  op->accepted = acc;
  DWORD bytes = 0;
  const BOOL ok = extensions().accept_ex(op->sock, acc, op->addrs, 0, kAcceptAddrBytes,
                                         kAcceptAddrBytes, &bytes, &op->ov);
  started(op, ok == TRUE, 0);
}

void IocpPoller::submit_connect(Op* op, int fd, const sockaddr* sa, socklen_t len) {
  op->kind = IocpOpKind::kConnect;
  op->sock = as_socket(fd);
  // ConnectEx wants a bound socket: bind to the wildcard address of the peer's family.
  sockaddr_storage local{};
  int llen = sizeof local;
  if (getsockname(op->sock, reinterpret_cast<sockaddr*>(&local), &llen) != 0) {
    sockaddr_storage any{};
    any.ss_family = sa->sa_family;
    const int alen = sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (bind(op->sock, reinterpret_cast<sockaddr*>(&any), alen) != 0) {
      op->kind = IocpOpKind::kSend;  // a plain failure: no connect context to update
      ++counters_.inline_done;
      finish(op, -iocp_errno(WSAGetLastError()), nullptr);
      return;
    }
  }
  const BOOL ok = extensions().connect_ex(op->sock, sa, len, nullptr, 0, nullptr, &op->ov);
  started(op, ok == TRUE, 0);
}

void IocpPoller::submit_sendmsg(Op* op, int fd, const msghdr* msg) {
  op->kind = IocpOpKind::kSendTo;
  op->sock = as_socket(fd);
  const size_t nb = msg->msg_iovlen < kMaxBufs ? msg->msg_iovlen : kMaxBufs;
  for (size_t i = 0; i < nb; ++i) {
    op->bufs[i].buf = static_cast<CHAR*>(msg->msg_iov[i].iov_base);
    op->bufs[i].len = clamp_len(msg->msg_iov[i].iov_len);
  }
  DWORD bytes = 0;
  const int rc =
      WSASendTo(op->sock, op->bufs, static_cast<DWORD>(nb), &bytes, 0,
                static_cast<const sockaddr*>(msg->msg_name),
                msg->msg_name ? static_cast<int>(msg->msg_namelen) : 0, &op->ov, nullptr);
  started(op, rc == 0, bytes);
}

void IocpPoller::submit_recvmsg(Op* op, int fd, msghdr* msg) {
  op->kind = IocpOpKind::kRecvFrom;
  op->sock = as_socket(fd);
  op->msg = msg->msg_name ? msg : nullptr;
  op->namelen = msg->msg_name ? static_cast<int>(msg->msg_namelen) : 0;
  const size_t nb = msg->msg_iovlen < kMaxBufs ? msg->msg_iovlen : kMaxBufs;
  for (size_t i = 0; i < nb; ++i) {
    op->bufs[i].buf = static_cast<CHAR*>(msg->msg_iov[i].iov_base);
    op->bufs[i].len = clamp_len(msg->msg_iov[i].iov_len);
  }
  op->flags = 0;
  DWORD bytes = 0;
  const int rc = WSARecvFrom(op->sock, op->bufs, static_cast<DWORD>(nb), &bytes, &op->flags,
                             static_cast<sockaddr*>(msg->msg_name),
                             op->msg ? &op->namelen : nullptr, &op->ov, nullptr);
  started(op, rc == 0, bytes);
}

void IocpPoller::cancel(Op* op) {
  if (!op->pending || op->done) return;
  ++counters_.cancels;
  // ERROR_NOT_FOUND: it already completed and its packet is queued; the waiter takes that
  // result (S24). Either way exactly one packet comes.
  CancelIoEx(reinterpret_cast<HANDLE>(op->sock), &op->ov);
}

}  // namespace ringpoll
