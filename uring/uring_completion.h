#pragma once
// UringCompletionPoller: io_uring in completion mode, the fast path (DESIGN.md "io_uring").
//
// The kernel performs the I/O; a descriptor's waiter parks on the same PollDesc slot as
// in readiness mode and the completion wakes it (Go's IOCP design). Each feature is
// probed and can be switched off (UringCompletionOptions):
//   multishot accept   one SQE per listener; accepted fds queue on the listener
//   multishot recv     one SQE per connection, into a provided buffer ring; data queues
//                      on the connection until read. The ring is the shard's, so no
//                      connection may hold more than buf_per_conn of its buffers: at that
//                      bound its recv is cancelled (the data waits in the socket, under
//                      TCP's flow control) and re-armed once the application has read
//                      the connection's queue down to half the bound (DESIGN.md
//                      "Fairness"). ENOBUFS (the ring ran dry anyway: many connections,
//                      each under its bound) ends the recv with the data still in the
//                      socket; the connection waits on a FIFO list and is re-armed when
//                      buffers come back, and meanwhile its reader receives straight into
//                      its own buffer (recv_starved), woken by a one-shot poll. A reader
//                      therefore never waits on a buffer another connection holds.
//   send / send_zc     a send per write; at or above zc_threshold bytes, send_zc, whose
//                      buffer is the caller's again only after the notification CQE.
//   single-shot recv   when multishot recv is off, or for a connection whose application
//                      detached it from the ring (detach_recv: a bulk stream, which
//                      would only copy through 4 KiB buffers it then holds up to its
//                      bound): the kernel writes into the caller's buffer, so timeout and
//                      close must cancel and wait (S23/S24).
// Timeout and close of an operation in flight follow Go's execIO (S23/S24): cancel, wait
// for the completion ignoring further timeout/close, and report a completed result as a
// success. Direct descriptors are not used yet (they pay only with fixed-file accept and
// no syscalls on the fd outside the ring; the sockets layer still needs plain fds).
//
// user_data (the table in uring_ring.h): an operation is (Op* | 1); a multishot recv, a
// multishot accept or a starved reader's one-shot poll is the tagged pointer (PollDesc*,
// fdseq) with kind 2, 4 or 6 in the low bits, so a completion for a closed descriptor is
// recognised as stale (its buffer is still returned to the ring).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>

#include <sys/socket.h>
#include <vector>

#include "../poller/completion.h"
#include "uring_ring.h"

namespace ringpoll {

// Application code names this type only as the P of Engine<P> (or gets it from
// with_backend); the Scheduler calls the contract methods, whose meaning is stated once in
// poller/poller.h, on the shard's thread — except wake(), which any thread may call.
// Options: set_options (UringOptions) and set_completion_options, before init(), e.g.
// from Engine::set_backend_setup.
class UringCompletionPoller {
 public:
  static constexpr const char* kName = "io_uring-completion";
  static constexpr bool kLevelTriggered = false;
  static constexpr bool kCompletion = true;
  // An Op is 24 bytes: reads and writes are frame-less awaiters in the caller's frame.
  static constexpr bool kFramelessOps = true;

  // An operation in flight; it lives in the awaiting coroutine's frame, which does not
  // end before `done` (S23).
  struct Op {
    PollDesc* pd = nullptr;
    Mode mode = Mode::kRead;
    bool done = false;
    bool zc = false;
    int8_t fault = 0;  // test seam (g_uring_fault_hook): the errno this op's NOP fails with
    int32_t res = 0;
  };
  // A received buffer queued on a connection, by buffer id: the queue is a list through
  // the shard's table of buffers (links_), so a connection holds no container of its own.
  static constexpr uint16_t kNoBuf = 0xFFFF;  // buf_count is at most 32768
  struct BufLink {
    uint32_t len = 0;
    uint32_t off = 0;  // bytes of it already taken
    uint16_t next = kNoBuf;
  };
  // Connections taken by a multishot accept, not yet handed out: a listener's only.
  struct AcceptQueue {
    std::vector<int> fds;
    size_t head = 0;
  };
  // Per-descriptor state of the multishot requests; owned by the sockets layer's object
  // and reached through pd->backend_data while the descriptor is open. Every connection
  // of a shard has one (in its PollFd), so it is kept small: 40 bytes (the descriptor is
  // pd->fd; the received data is a list through links_; a listener's queue of accepted
  // connections is allocated when it first takes one).
  struct FdState {
    PollDesc* pd = nullptr;
    std::unique_ptr<AcceptQueue> accepted;
    int32_t recv_err = 0;
    int32_t accept_err = 0;
    uint16_t q_head = kNoBuf;  // the received buffers not yet read, oldest first
    uint16_t q_tail = kNoBuf;
    uint16_t q_count = 0;
    bool recv_armed : 1 = false;
    bool recv_waiting : 1 = false;   // on the list of connections waiting for buffers
    bool recv_paused : 1 = false;    // at buf_per_conn: the recv stays off until the app reads
    bool poll_armed : 1 = false;     // a one-shot POLLIN for a starved reader (recv_starved)
    bool recv_detached : 1 = false;  // detach_recv: no more multishot recv on this connection
    bool eof : 1 = false;
    bool accept_armed : 1 = false;
    bool accept_stopping : 1 = false;  // stop_accept: cancelled, never re-armed
    // A TCP socket: send_zc works (AF_UNIX answers EOPNOTSUPP) — unless its peer is on
    // loopback, checked at the first send that would be zero-copy (zc_peer_checked): there
    // the kernel copies zero-copy pages at delivery anyway, and the notification waits
    // until the receiver has read them (a relay through ringpoll-proxy ran at half speed).
    bool zc_capable : 1 = false;
    bool zc_peer_checked : 1 = false;
    int8_t recv_fault = 0;  // test seam (g_uring_fault_hook): errnos the NOPs fail with
    int8_t accept_fault = 0;

    bool has_queued() const noexcept { return q_head != kNoBuf; }
  };
  // Every connection pays for it: with it at 40 bytes, TcpServer's connection record fits
  // mimalloc's 128-byte class (BM_MemoryPerIdleConnection/io_uring-completion).
  static_assert(sizeof(FdState) <= 40, "FdState is in every connection: keep it small");

  UringCompletionPoller() = default;
  ~UringCompletionPoller();
  UringCompletionPoller(const UringCompletionPoller&) = delete;
  UringCompletionPoller& operator=(const UringCompletionPoller&) = delete;

  static Availability available();
  void set_options(const UringOptions& o) { ring_.set_options(o); }
  void set_completion_options(const UringCompletionOptions& o) { copt_ = o; }
  const UringCompletionOptions& completion_options() const { return copt_; }
  Status init();
  int open(int fd, PollDesc* pd);
  int close(int fd, PollDesc* pd);
  void arm(PollDesc*, Mode) {}
  int poll(int64_t delta_ns, TaskList& out);
  void wake() noexcept { ring_.wake(); }
  bool owns(int fd) const {
    return fd >= 0 && (fd == ring_.ring_fd() || fd == ring_.wake_eventfd());
  }
  uint64_t wakes_written() const noexcept { return ring_.wakes_written(); }

  // ---- the completion API the sockets layer uses ----
  void attach(PollDesc* pd, FdState* st, int fd) noexcept;
  void submit_recv(Op* op, int fd, void* buf, size_t len);
  // Uses send_zc when enabled, supported, allowed for this socket and len is at or above
  // the threshold.
  // A send, zero-copy when allow_zc (the socket's FdState::zc_capable) and len reaches
  // zc_threshold, unless the peer is on loopback (checked at the first such send).
  void submit_send(Op* op, int fd, const void* buf, size_t len, bool allow_zc);
  void submit_accept(Op* op, int fd);
  void submit_connect(Op* op, int fd, const sockaddr* sa, socklen_t len);
  void submit_sendmsg(Op* op, int fd, const msghdr* msg);
  void submit_recvmsg(Op* op, int fd, msghdr* msg);
  void cancel(Op* op);
  bool multishot_recv() const noexcept { return buf_ring_ != nullptr; }
  bool multishot_accept() const noexcept { return copt_.multishot_accept; }
  void arm_recv(FdState* st);
  size_t take_recv(FdState* st, std::span<std::byte> out);
  // A read that found no queued data while the connection waits for buffers (its
  // multishot recv ended with ENOBUFS): receive straight into `out` (MSG_DONTWAIT).
  // Returns the bytes read (> 0), 0 at end of stream, or -errno; -EAGAIN means nothing
  // is there yet and a one-shot poll will wake the reader.
  ssize_t recv_starved(FdState* st, std::span<std::byte> out);
  void arm_accept(FdState* st);
  int take_accept(FdState* st);  // an fd, or -1 when none is queued
  // Stops the listener's multishot accept without losing a connection: the request is
  // cancelled (IORING_OP_ASYNC_CANCEL) and never armed again; every connection it took
  // before its last CQE (the one without IORING_CQE_F_MORE) stays queued for take_accept.
  // accept_stopped() says when that last CQE has arrived: nothing more will be queued.
  void stop_accept(FdState* st);
  static bool accept_stopped(const FdState& st) noexcept {
    return st.accept_stopping && !st.accept_armed;
  }
  // Takes a connection off the provided-buffer ring for good: its multishot recv is
  // cancelled and never re-armed. Reads first drain what is queued (and what the cancelled
  // recv still delivers), then receive straight into the caller's buffer; recv_detached()
  // says when that point is reached.
  void detach_recv(FdState* st);
  void attach_recv(FdState* st);
  // Detached and drained: nothing queued, no multishot recv in flight, no pending end of
  // stream or error; a read is now a single-shot recv into the caller's buffer.
  static bool recv_detached(const FdState& st) noexcept {
    return st.recv_detached && !st.recv_armed && !st.has_queued() && !st.eof && st.recv_err == 0;
  }

  // Armed and nothing queued: whatever arrives now lands in the ring first (known_quiet).
  static bool recv_quiet(const FdState& st) noexcept {
    return st.recv_armed && !st.recv_detached && !st.recv_paused && !st.recv_waiting &&
           !st.has_queued() && !st.eof && st.recv_err == 0;
  }

  struct Counters {
    uint64_t zc_sends = 0;
    uint64_t zc_loopback = 0;  // sockets that send plainly: their peer is on loopback
    uint64_t nobufs = 0;       // multishot recvs ended by ENOBUFS
    uint64_t recv_rearms = 0;  // re-armed after ENOBUFS or an ended multishot
    uint64_t buffers_free = 0;
    uint64_t buffers_held = 0;    // received, queued on connections, not yet read
    uint64_t conns_at_bound = 0;  // connections whose recv is off at buf_per_conn now
    uint64_t bound_pauses = 0;    // times a connection reached buf_per_conn
    uint64_t starved_reads = 0;   // reads served straight into the caller's buffer
    uint64_t detached_recvs = 0;  // connections taken off the ring (bulk streams)
    uint64_t attached_recvs = 0;  // ...and put back on it (the stream went quiet)
  };
  Counters counters() const noexcept;
  UringRing& ring() noexcept { return ring_; }
  std::string describe() const;

 private:
  void recycle(uint16_t bid);
  void rearm_waiting();
  void pause_recv(FdState* st);
  void unlink_waiting(FdState* st);
  void dispatch(io_uring_cqe* cqe, int64_t delta, TaskList& out, int* events);
  UringRing ring_;
  UringCompletionOptions copt_;
  bool zc_ok_ = false;
  io_uring_buf_ring* buf_ring_ = nullptr;
  char* bufs_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  size_t bufs_bytes_ = 0;
  unsigned buf_mask_ = 0;
  std::vector<BufLink> links_;    // per buffer id: its place in a connection's queue
  std::deque<FdState*> waiting_;  // FIFO of connections whose recv ended with ENOBUFS
  Counters counters_;
};
static_assert(MultishotCompletionBackend<UringCompletionPoller>);

}  // namespace ringpoll
