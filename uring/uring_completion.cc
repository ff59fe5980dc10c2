#include "uring/uring_completion.h"

#include "poller/internal/test_seams.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace ringpoll {
namespace {

constexpr uint16_t kBufGroup = 1;
// user_data: the table in uring_ring.h.
constexpr uint64_t kOpBit = kUringOpBit;
constexpr uint64_t kKindRecv = kUringKindRecv;
constexpr uint64_t kKindAccept = kUringKindAccept;
constexpr uint64_t kKindPoll = kUringKindPoll;
constexpr uint64_t kKindMask = kUringKindMask;
constexpr uint64_t kPtrMask = (uint64_t{1} << kTagShift) - 1;

uint64_t op_data(UringCompletionPoller::Op* op) {
  return reinterpret_cast<uint64_t>(op) | kOpBit;
}
uint64_t pd_data(PollDesc* pd, uint64_t kind) {
  return tag_pointer(pd, pd->fdseq.load()) | kind;
}
PollDesc* data_pd(uint64_t ud) {
  return reinterpret_cast<PollDesc*>(ud & kPtrMask & ~kKindMask);
}

using FdState = UringCompletionPoller::FdState;
FdState* state_of(PollDesc* pd) {
  return reinterpret_cast<FdState*>(pd->backend_data);
}

}  // namespace

uint64_t uring_recv_user_data(PollDesc* pd) noexcept {
  return pd_data(pd, kKindRecv);
}

Availability UringCompletionPoller::available() {
  static const Availability a = UringRing::probe();
  return a;
}

UringCompletionPoller::~UringCompletionPoller() {
  if (bufs_) munmap(bufs_, bufs_bytes_);
  // The buffer ring's memory is unregistered with the ring itself (ring_ is destroyed
  // after this body); unmapping it first is safe because the ring is no longer entered.
  if (buf_ring_) munmap(buf_ring_, buf_ring_bytes_);
}

Status UringCompletionPoller::init() {
  if (Status s = ring_.setup(); !s.ok()) return s;
  zc_ok_ = copt_.send_zc && ring_.supports(IORING_OP_SEND_ZC);
  if (copt_.multishot_recv) {
    if (copt_.buf_count == 0 || (copt_.buf_count & (copt_.buf_count - 1)) ||
        copt_.buf_count > 32768 || copt_.buf_size == 0 || copt_.buf_per_conn == 0) {
      return Errc::kInvalidArgument;
    }
    copt_.buf_per_conn = std::min(copt_.buf_per_conn, copt_.buf_count);
    buf_ring_bytes_ = copt_.buf_count * sizeof(io_uring_buf);
    void* r =
        mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r == MAP_FAILED) return Status::from_errno(errno);
    buf_ring_ = static_cast<io_uring_buf_ring*>(r);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
    reg.ring_entries = copt_.buf_count;
    reg.bgid = kBufGroup;
    const int ret = io_uring_register_buf_ring(ring_.raw(), &reg, 0);
    if (ret < 0) {
      // Provided buffer rings need Linux 5.19: without them, recv is single-shot.
      munmap(buf_ring_, buf_ring_bytes_);
      buf_ring_ = nullptr;
    } else {
      bufs_bytes_ = size_t{copt_.buf_count} * copt_.buf_size;
      void* b =
          mmap(nullptr, bufs_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
      if (b == MAP_FAILED) return Status::from_errno(errno);
      bufs_ = static_cast<char*>(b);
      links_.assign(copt_.buf_count, BufLink{});
      io_uring_buf_ring_init(buf_ring_);
      buf_mask_ = static_cast<unsigned>(io_uring_buf_ring_mask(copt_.buf_count));
      for (unsigned i = 0; i < copt_.buf_count; ++i) {
        io_uring_buf_ring_add(buf_ring_, bufs_ + size_t{i} * copt_.buf_size, copt_.buf_size,
                              static_cast<unsigned short>(i), static_cast<int>(buf_mask_),
                              static_cast<int>(i));
      }
      io_uring_buf_ring_advance(buf_ring_, static_cast<int>(copt_.buf_count));
      counters_.buffers_free = copt_.buf_count;
    }
  }
  return Status();
}

std::string UringCompletionPoller::describe() const {
  std::string s = ring_.describe() + " completion:";
  s += copt_.multishot_accept ? " multishot-accept" : " accept";
  s += buf_ring_ ? " multishot-recv(buffer ring " + std::to_string(copt_.buf_count) + "x" +
                       std::to_string(copt_.buf_size) + ", at most " +
                       std::to_string(copt_.buf_per_conn) + " a connection)"
                 : " recv";
  s += zc_ok_ ? " send_zc>=" + std::to_string(copt_.zc_threshold) : " send";
  return s;
}

UringCompletionPoller::Counters UringCompletionPoller::counters() const noexcept {
  Counters c = counters_;
  c.buffers_held = buf_ring_ ? copt_.buf_count - c.buffers_free : 0;
  return c;
}

int UringCompletionPoller::open(int fd, PollDesc* pd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return errno;
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return EPERM;  // as epoll: not pollable
  pd->backend_data = 0;
  return 0;
}

void UringCompletionPoller::attach(PollDesc* pd, FdState* st, int fd) noexcept {
  st->pd = pd;
  st->recv_detached = false;
  st->zc_peer_checked = false;
  st->accept_stopping = false;
  int domain = 0;
  socklen_t len = sizeof domain;
  st->zc_capable = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
                   (domain == AF_INET || domain == AF_INET6);
  pd->backend_data = reinterpret_cast<uint64_t>(st);
}

int UringCompletionPoller::close(int, PollDesc* pd) {
  FdState* st = state_of(pd);
  if (!st) return 0;
  // Cancel the multishot requests; their last CQEs arrive after the descriptor is freed
  // and are recognised as stale (a buffer they carry is returned to the ring).
  if (st->recv_armed) {
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_cancel64(s, pd_data(pd, kKindRecv), 0);
    io_uring_sqe_set_data64(s, kUringIgnoreData);
  }
  if (st->accept_armed) {
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_cancel64(s, pd_data(pd, kKindAccept), 0);
    io_uring_sqe_set_data64(s, kUringIgnoreData);
  }
  if (st->poll_armed) {
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_cancel64(s, pd_data(pd, kKindPoll), 0);
    io_uring_sqe_set_data64(s, kUringIgnoreData);
  }
  if (st->recv_paused) {
    st->recv_paused = false;
    --counters_.conns_at_bound;
  }
  while (st->has_queued()) {
    const uint16_t bid = st->q_head;
    st->q_head = links_[bid].next;
    recycle(bid);
  }
  st->q_tail = kNoBuf;
  st->q_count = 0;
  if (AcceptQueue* q = st->accepted.get()) {
    for (size_t i = q->head; i < q->fds.size(); ++i) ::close(q->fds[i]);
    st->accepted.reset();
  }
  if (st->recv_waiting) unlink_waiting(st);
  st->recv_armed = st->accept_armed = st->poll_armed = false;
  pd->backend_data = 0;
  const int r = ring_.flush();
  return r < 0 ? -r : 0;
}

void UringCompletionPoller::submit_recv(Op* op, int fd, void* buf, size_t len) {
  op->done = false;
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_recv(s, fd, buf, len, 0);
  io_uring_sqe_set_data64(s, op_data(op));
}

namespace {
// True when fd's peer is a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104).
bool peer_is_loopback(int fd) noexcept {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}
// A failure that says "try again" (EAGAIN, EINTR): nothing was lost, the operation is
// simply submitted again.
bool transient(int32_t res) noexcept {
  return res == -EAGAIN || res == -EINTR;
}
// The test seam's verdict on an operation about to be submitted: 0, or the errno to fake.
int injected_fault(UringCqeKind kind) noexcept {
  const UringFaultHook h = g_uring_fault_hook.load(std::memory_order_relaxed);
  return h ? h(kind) : 0;
}
}  // namespace

void UringCompletionPoller::submit_send(Op* op, int fd, const void* buf, size_t len,
                                        bool allow_zc) {
  op->done = false;
  if (const size_t clamp = g_uring_send_clamp.load(std::memory_order_relaxed)) {
    len = std::min(len, clamp);
  }
  io_uring_sqe* s = ring_.sqe();
  if (const int e = injected_fault(UringCqeKind::kOp)) {
    op->zc = false;
    op->fault = static_cast<int8_t>(e);
    io_uring_prep_nop(s);
    io_uring_sqe_set_data64(s, op_data(op));
    return;
  }
  op->zc = zc_ok_ && allow_zc && len >= copt_.zc_threshold;
  if (FdState* st = op->zc ? state_of(op->pd) : nullptr; st && !st->zc_peer_checked) {
    st->zc_peer_checked = true;
    if (peer_is_loopback(fd) && !g_uring_zc_on_loopback.load(std::memory_order_relaxed)) {
      st->zc_capable = false;
      op->zc = false;
      ++counters_.zc_loopback;
    }
  }
  if (op->zc) {
    io_uring_prep_send_zc(s, fd, buf, len, MSG_NOSIGNAL, 0);
    ++counters_.zc_sends;
  } else {
    io_uring_prep_send(s, fd, buf, len, MSG_NOSIGNAL);
  }
  io_uring_sqe_set_data64(s, op_data(op));
}

void UringCompletionPoller::submit_accept(Op* op, int fd) {
  op->done = false;
  io_uring_sqe* s = ring_.sqe();
  if (const int e = injected_fault(UringCqeKind::kAccept)) {
    op->fault = static_cast<int8_t>(e);
    io_uring_prep_nop(s);
  } else {
    io_uring_prep_accept(s, fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  }
  io_uring_sqe_set_data64(s, op_data(op));
}

void UringCompletionPoller::submit_connect(Op* op, int fd, const sockaddr* sa, socklen_t len) {
  op->done = false;
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_connect(s, fd, sa, len);
  io_uring_sqe_set_data64(s, op_data(op));
}

void UringCompletionPoller::submit_sendmsg(Op* op, int fd, const msghdr* msg) {
  op->done = false;
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_sendmsg(s, fd, msg, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, op_data(op));
}

void UringCompletionPoller::submit_recvmsg(Op* op, int fd, msghdr* msg) {
  op->done = false;
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_recvmsg(s, fd, msg, 0);
  io_uring_sqe_set_data64(s, op_data(op));
}

void UringCompletionPoller::cancel(Op* op) {
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_cancel64(s, op_data(op), 0);
  io_uring_sqe_set_data64(s, kUringIgnoreData);
}

void UringCompletionPoller::arm_recv(FdState* st) {
  if (!buf_ring_ || st->recv_armed || st->recv_waiting || st->recv_paused || st->eof ||
      st->recv_detached) {
    return;
  }
  io_uring_sqe* s = ring_.sqe();
  if (const int e = injected_fault(UringCqeKind::kRecv)) {
    st->recv_fault = static_cast<int8_t>(e);
    io_uring_prep_nop(s);
  } else {
    io_uring_prep_recv_multishot(s, st->pd->fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = kBufGroup;
  }
  io_uring_sqe_set_data64(s, pd_data(st->pd, kKindRecv));
  st->recv_armed = true;
}

void UringCompletionPoller::arm_accept(FdState* st) {
  if (st->accept_armed || st->accept_stopping) return;
  io_uring_sqe* s = ring_.sqe();
  if (const int e = injected_fault(UringCqeKind::kAccept)) {
    st->accept_fault = static_cast<int8_t>(e);
    io_uring_prep_nop(s);
  } else {
    io_uring_prep_multishot_accept(s, st->pd->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  }
  io_uring_sqe_set_data64(s, pd_data(st->pd, kKindAccept));
  st->accept_armed = true;
}

void UringCompletionPoller::stop_accept(FdState* st) {
  if (st->accept_stopping) return;
  st->accept_stopping = true;
  if (!st->accept_armed) return;  // nothing in the kernel: accept_stopped() already
  // The kernel ends the request with a CQE without F_MORE (-ECANCELED, or the last
  // connection it took); connections it accepted before that arrive first, in order.
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_cancel64(s, pd_data(st->pd, kKindAccept), 0);
  io_uring_sqe_set_data64(s, kUringIgnoreData);
}

void UringCompletionPoller::recycle(uint16_t bid) {
  io_uring_buf_ring_add(buf_ring_, bufs_ + size_t{bid} * copt_.buf_size, copt_.buf_size, bid,
                        static_cast<int>(buf_mask_), 0);
  io_uring_buf_ring_advance(buf_ring_, 1);
  ++counters_.buffers_free;
}

void UringCompletionPoller::rearm_waiting() {
  // Buffers came back: connections whose recv ended with ENOBUFS still have their data
  // in the kernel; arm them again, oldest first, no more of them than there are free
  // buffers (each armed recv takes at least one), so a returned buffer does not send the
  // whole list back to the kernel only to meet ENOBUFS again.
  for (uint64_t budget = counters_.buffers_free; !waiting_.empty() && budget > 0; --budget) {
    FdState* st = waiting_.front();
    waiting_.pop_front();
    st->recv_waiting = false;
    ++counters_.recv_rearms;
    arm_recv(st);
  }
}

void UringCompletionPoller::unlink_waiting(FdState* st) {
  // A close or a detach while waiting (rare): the search is paid only then.
  if (const auto it = std::find(waiting_.begin(), waiting_.end(), st); it != waiting_.end()) {
    waiting_.erase(it);
  }
  st->recv_waiting = false;
}

void UringCompletionPoller::pause_recv(FdState* st) {
  // The connection holds buf_per_conn buffers its application has not read: cancel its
  // recv. CQEs already on their way may still add a buffer or two; the cancel's own CQE
  // (no F_MORE) clears recv_armed, and take_recv re-arms below half the bound.
  st->recv_paused = true;
  ++counters_.conns_at_bound;
  ++counters_.bound_pauses;
  if (!st->recv_armed) return;
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_cancel64(s, pd_data(st->pd, kKindRecv), 0);
  io_uring_sqe_set_data64(s, kUringIgnoreData);
}

void UringCompletionPoller::detach_recv(FdState* st) {
  if (st->recv_detached) return;
  st->recv_detached = true;
  ++counters_.detached_recvs;
  if (st->recv_waiting) unlink_waiting(st);
  if (st->recv_paused) {
    st->recv_paused = false;
    --counters_.conns_at_bound;
  }
  // The cancel's CQE (no F_MORE) clears recv_armed and wakes the reader; CQEs already on
  // their way still queue their data, which the reader drains first.
  if (!st->recv_armed) return;
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_cancel64(s, pd_data(st->pd, kKindRecv), 0);
  io_uring_sqe_set_data64(s, kUringIgnoreData);
}

void UringCompletionPoller::attach_recv(FdState* st) {
  if (!st->recv_detached) return;
  st->recv_detached = false;
  ++counters_.attached_recvs;
  // If detach_recv's cancel has not completed yet, recv_armed is still set and its final
  // CQE re-arms (the connection is no longer detached then).
  arm_recv(st);
}

ssize_t UringCompletionPoller::recv_starved(FdState* st, std::span<std::byte> out) {
  const ssize_t n = ::recv(st->pd->fd, out.data(), out.size(), MSG_DONTWAIT);
  if (n > 0) {
    ++counters_.starved_reads;
    return n;
  }
  if (n == 0) {
    st->eof = true;
    return 0;
  }
  if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
  if (!st->poll_armed) {
    io_uring_sqe* s = ring_.sqe();
    io_uring_prep_poll_add(s, st->pd->fd, POLLIN | POLLRDHUP);
    io_uring_sqe_set_data64(s, pd_data(st->pd, kKindPoll));
    st->poll_armed = true;
  }
  return -EAGAIN;
}

size_t UringCompletionPoller::take_recv(FdState* st, std::span<std::byte> out) {
  size_t n = 0;
  while (n < out.size() && st->has_queued()) {
    const uint16_t bid = st->q_head;
    BufLink& c = links_[bid];
    const size_t k = std::min<size_t>(out.size() - n, c.len - c.off);
    std::memcpy(out.data() + n, bufs_ + size_t{bid} * copt_.buf_size + c.off, k);
    n += k;
    c.off += static_cast<uint32_t>(k);
    if (c.off == c.len) {
      st->q_head = c.next;
      if (st->q_head == kNoBuf) st->q_tail = kNoBuf;
      --st->q_count;
      recycle(bid);
    }
  }
  if (st->recv_paused && st->q_count <= copt_.buf_per_conn / 2) {
    st->recv_paused = false;
    --counters_.conns_at_bound;
    if (!st->recv_armed) {  // else the cancelled recv's last CQE is still to come
      arm_recv(st);
      if (st->recv_armed) ++counters_.recv_rearms;
    }
  }
  if (!waiting_.empty()) rearm_waiting();
  return n;
}

int UringCompletionPoller::take_accept(FdState* st) {
  AcceptQueue* q = st->accepted.get();
  if (!q || q->head == q->fds.size()) return -1;
  const int fd = q->fds[q->head++];
  if (q->head == q->fds.size()) {
    q->fds.clear();
    q->head = 0;
  }
  return fd;
}

void UringCompletionPoller::dispatch(io_uring_cqe* cqe, int64_t delta, TaskList& out, int* events) {
  const uint64_t ud = cqe->user_data;
  int32_t res = cqe->res;
  uint32_t flags = cqe->flags;
  if (ud == kUringWakeData) {
    ring_.on_wake_cqe(delta);
    if (!ring_.wake_uses_msg_ring() && !(flags & IORING_CQE_F_MORE)) ring_.rearm_wake();
    return;
  }
  if (ud == kUringIgnoreData || ud == LIBURING_UDATA_TIMEOUT) return;
  ++*events;
  const UringCqeHook hook = g_uring_cqe_hook.load(std::memory_order_relaxed);
  if (ud & kOpBit) {
    auto* op = reinterpret_cast<Op*>(ud & ~kKindMask);
    if (op->fault != 0) res = -std::exchange(op->fault, int8_t{0});  // an injected failure
    if (hook) hook(UringCqeKind::kOp, &res, &flags);
    if (flags & IORING_CQE_F_NOTIF) {
      op->done = true;  // send_zc: the buffer is the caller's again
    } else {
      op->res = res;
      // send_zc posts a notification after the result when F_MORE is set.
      if (!(op->zc && (flags & IORING_CQE_F_MORE))) op->done = true;
    }
    if (op->done) op->pd->ready(op->mode, out);
    return;
  }
  const uint64_t kind = ud & kKindMask;
  const bool recv = kind == kKindRecv;
  PollDesc* pd = data_pd(ud);
  FdState* st = tag_current(pd, tagged_seq(ud)) ? state_of(pd) : nullptr;
  if (st && kind != kKindPoll) {  // the NOP of an injected failure (g_uring_fault_hook)
    int8_t& f = recv ? st->recv_fault : st->accept_fault;
    if (f != 0) res = -std::exchange(f, int8_t{0});
  }
  if (hook) {
    hook(recv                  ? UringCqeKind::kRecv
         : kind == kKindAccept ? UringCqeKind::kAccept
                               : UringCqeKind::kPoll,
         &res, &flags);
  }
  const bool more = flags & IORING_CQE_F_MORE;
  if (kind == kKindPoll) {  // a starved reader's poll: wake it to receive directly
    if (st) {
      st->poll_armed = false;
      pd->ready(Mode::kRead, out);
    }
    return;
  }
  if (recv) {
    const bool has_buf = flags & IORING_CQE_F_BUFFER;
    const auto bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
    if (has_buf) --counters_.buffers_free;
    if (!st) {  // stale: the descriptor was closed; give the buffer back
      if (has_buf) recycle(bid);
      return;
    }
    if (res > 0 && has_buf) {
      links_[bid] = BufLink{static_cast<uint32_t>(res), 0, kNoBuf};
      if (st->has_queued()) {
        links_[st->q_tail].next = bid;
      } else {
        st->q_head = bid;
      }
      st->q_tail = bid;
      ++st->q_count;
      if (!st->recv_paused && st->q_count >= copt_.buf_per_conn) pause_recv(st);
    } else {
      if (has_buf) recycle(bid);
      if (res == 0) {
        st->eof = true;
      } else if (res == -ENOBUFS) {
        // The ring ran dry; the data stays in the socket until buffers come back.
        ++counters_.nobufs;
        st->recv_armed = false;
        if (!st->recv_waiting && !st->recv_paused && !st->recv_detached) {
          st->recv_waiting = true;
          waiting_.push_back(st);
        }
        if (counters_.buffers_free > 0) rearm_waiting();
        pd->ready(Mode::kRead, out);  // a parked reader now receives directly
        return;
      } else if (res < 0 && res != -ECANCELED && !transient(res)) {
        st->recv_err = res;
      }
    }
    if (!more) {
      st->recv_armed = false;
      // The multishot ended with data still flowing, or the cancel at the bound landed
      // after the application had already read below it, or it failed for a moment
      // (EAGAIN, EINTR): keep receiving (arm_recv does nothing while the connection is
      // still at its bound).
      if ((res > 0 || res == -ECANCELED || transient(res)) && !pd->closing && !st->recv_paused) {
        ++counters_.recv_rearms;
        arm_recv(st);
      }
    }
    pd->ready(Mode::kRead, out);
    return;
  }
  // multishot accept
  if (!st) {
    if (res >= 0) ::close(res);  // a connection for a closed listener
    return;
  }
  if (res >= 0) {
    if (!st->accepted) st->accepted = std::make_unique<AcceptQueue>();
    st->accepted->fds.push_back(res);
  } else if (res != -ECONNABORTED && res != -ECANCELED && !transient(res)) {
    st->accept_err = res;  // ECONNABORTED is skipped, as accept(2) callers do (S31)
  }
  if (!more) {
    st->accept_armed = false;
    if (!pd->closing && res != -ECANCELED && st->accept_err == 0) arm_accept(st);
  }
  // A stopped accept's last CQE wakes the acceptor too: what is queued is all there is.
  if (res >= 0 || st->accept_err != 0 || accept_stopped(*st)) pd->ready(Mode::kRead, out);
}

int UringCompletionPoller::poll(int64_t delta_ns, TaskList& out) {
  int64_t d = delta_ns;
  if (ring_.take_seen_wake(d)) d = 0;
  for (;;) {
    const int r = ring_.wait(d);
    if (r == -EINTR) {
      if (d < 0) continue;
      return 0;
    }
    // Completions were dropped: an operation's waiter may never wake, and this mode
    // cannot rebuild its ring (uring_poller.h, Restart).
    if (r == -EBADR) fatal("io_uring: the kernel dropped completions (completion mode)", EBADR);
    break;
  }
  int events = 0;
  ring_.for_each([&](io_uring_cqe* cqe) { dispatch(cqe, d, out, &events); });
  return events;
}

}  // namespace ringpoll
