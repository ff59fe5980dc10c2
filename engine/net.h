#pragma once
// The sockets API, in the spirit of Go's net.Conn: TcpListener, TcpStream, UdpSocket on a
// shard's scheduler, with deadlines, and errors as values (Status), never exceptions.
//
// Addresses: "1.2.3.4:80", "[::1]:80" (literals, parsed on the shard), "name:80" (names
// resolved with getaddrinfo on a resolver thread, so no shard ever blocks on DNS).
//
// Windows (IOCP, mingw-w64): the same code; the seams are detail::open_socket /
// close_socket below and the POSIX names of iocp/compat. Windows has no SO_REUSEPORT
// (kHasReusePort): a listener asking for it is refused, and TcpServer listens once and
// hands connections to the shards in turn; adopting a handed-over listener (SCM_RIGHTS)
// is Linux only.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "handover.h"
#include "poll_fd.h"

namespace ringpoll {

#ifdef _WIN32
inline constexpr bool kHasReusePort = false;         // no SO_REUSEPORT in Winsock
inline constexpr bool kHasListenerHandover = false;  // no SCM_RIGHTS (engine/handover.h)
#else
inline constexpr bool kHasReusePort = true;
inline constexpr bool kHasListenerHandover = true;
#endif

namespace detail {
#ifdef _WIN32
// Windows' SO_REUSEADDR would let another socket bind the same port and take part of its
// connections; exclusive use is what SO_REUSEADDR without SO_REUSEPORT means on Linux (a
// port in TIME_WAIT can still be bound on Windows without it).
inline constexpr int kListenAddressOption = SO_EXCLUSIVEADDRUSE;
inline constexpr int kReusePortOption = 0;  // never set: reuseport is refused first
#else
inline constexpr int kListenAddressOption = SO_REUSEADDR;
inline constexpr int kReusePortOption = SO_REUSEPORT;
#endif
// A new socket of `family` and `type` (SOCK_STREAM, SOCK_DGRAM) as this build's backends
// take it: non-blocking and close-on-exec on Linux; overlapped and not inherited by child
// processes on Windows. -1 with errno on failure.
int open_socket(int family, int type) noexcept;
// close(2), or closesocket on Windows (a SOCKET is not a C runtime descriptor).
void close_socket(int fd) noexcept;
}  // namespace detail

// An IPv4 or IPv6 socket address: a sockaddr_storage and its length. A plain value.
struct SocketAddress {
  sockaddr_storage ss{};
  socklen_t len = 0;
  const sockaddr* sa() const noexcept { return reinterpret_cast<const sockaddr*>(&ss); }
  int family() const noexcept { return ss.ss_family; }
  uint16_t port() const noexcept;
  std::string to_string() const;  // "1.2.3.4:80" / "[::1]:80"
};

// Parses an IPv4 or IPv6 literal with a port. On failure returns kInvalidArgument and
// says what was wrong in *why ("missing ':port' in \"1.2.3.4\"", ...).
Status parse_address(std::string_view text, SocketAddress* out, std::string* why = nullptr);

// Resolves "host:port" (a literal or a name) on a resolver thread; the calling task
// resumes on its own shard's loop. Errors name the host and getaddrinfo's reason.
template <PollerBackend P>
Task<Status> resolve(Scheduler<P>& s, std::string text, SocketAddress* out, std::string* why);

struct ListenOptions {
  bool reuseport = true;  // one listener per shard on the same port (kernel balancing)
  int backlog = 1024;
  // With reuseport, TcpServer::start first checks that no other socket (another process,
  // a stale instance) listens on the port — SO_REUSEPORT would let it keep taking part of
  // the new connections unnoticed — and refuses to start, saying so. True: share the port
  // on purpose (e.g. a new instance taking over from an old one).
  bool allow_shared_port = false;
};

namespace detail {
// Binds a probe socket to `at` without SO_REUSEPORT and closes it: EADDRINUSE (with *why
// naming the address and the likely cause) when some socket already listens there. Port
// 0 always passes. What TcpServer::start runs unless allow_shared_port.
Status check_port_unshared(const SocketAddress& at, std::string* why);
}  // namespace detail

// A connected TCP socket on one shard: owns its descriptor from adopt()/connect() until
// close(). Every call — and the tasks awaiting its operations — must be on that shard.
// At most one read and one write may be pending at a time (one task each way).
template <PollerBackend P>
class TcpStream {
 public:
  TcpStream() = default;
  // Takes ownership of a connected stream socket.
  Status adopt(Scheduler<P>& s, int fd) {
    const Status st = fd_.open(s, fd);
    if (st.ok()) fd_.mark_stream_socket();
    return st;
  }

  // Reads at most b.size() bytes, waiting while none are available. Ends with n > 0 and
  // ok; kEof at end of stream; kTimeout when the read deadline passes; kClosed once the
  // stream is closing; other failures as errno values. One read at a time per stream.
  auto read(std::span<std::byte> b) { return fd_.read(b); }
  // Reads exactly b.size() bytes; an early end of stream is kEof with n = bytes read.
  Task<IoResult> read_exact(std::span<std::byte> b) {
    size_t got = 0;
    while (got < b.size()) {
      IoResult r = co_await fd_.read(b.subspan(got));
      got += r.n;
      if (!r.ok()) co_return IoResult{got, r.err};
    }
    co_return IoResult{got, Status()};
  }
  // Writes all of b, waiting for socket buffer space as needed; n counts the bytes the
  // kernel took, also when it fails (kTimeout at the write deadline, kClosed, EPIPE...).
  auto write(std::span<const std::byte> b) { return fd_.write(b); }
  // write() of text: `co_await conn.write("hello\n")`. The characters must stay alive
  // until the write has completed (a temporary inside the co_await expression does).
  auto write(std::string_view text) { return fd_.write(std::as_bytes(std::span(text))); }
  // write() for several buffers, in order, as one stream of bytes.
  Task<IoResult> writev(std::span<const iovec> v) { return fd_.writev(v); }
  // Half-close with shutdown(2): the peer reads end of stream (write) / our reads end.
  Status shutdown_write() { return fd_.shutdown(SHUT_WR); }
  Status shutdown_read() { return fd_.shutdown(SHUT_RD); }
  // Wakes every waiting operation with kClosed, waits until they have left, closes the
  // descriptor. Once, from a task on the stream's shard (TcpServer closes its own
  // connections). Destroying an open stream with nothing in flight also closes it.
  Task<Status> close() { return fd_.close(); }
  // Deadlines, on the stream's shard: abs is ns on CLOCK_MONOTONIC (mono_now_ns() + d);
  // 0 removes it; a time at or before now expires it. Past the deadline, pending and
  // later operations in that direction fail with kTimeout until it is moved; moving it
  // later (e.g. an idle timeout refreshed per read) is cheap.
  Status set_deadline(int64_t abs) { return fd_.set_deadline(abs); }
  Status set_read_deadline(int64_t abs) { return fd_.set_read_deadline(abs); }
  Status set_write_deadline(int64_t abs) { return fd_.set_write_deadline(abs); }
  // TCP_NODELAY / SO_KEEPALIVE; errno values on failure.
  Status set_nodelay(bool on) { return setopt(IPPROTO_TCP, TCP_NODELAY, on); }
  Status set_keepalive(bool on) { return setopt(SOL_SOCKET, SO_KEEPALIVE, on); }
  // The descriptor, for other socket options; the stream still owns it.
  int fd() const noexcept { return fd_.fd(); }
  PollFd<P>& poll_fd() noexcept { return fd_; }

  // Connects to `to`, failing with kConnectTimeout (timeout() is true) after timeout_ns
  // (0: no limit).
  static Task<Status> connect(Scheduler<P>& s, const SocketAddress& to, int64_t timeout_ns,
                              std::unique_ptr<TcpStream>* out) {
    const int fd = detail::open_socket(to.family(), SOCK_STREAM);
    if (fd < 0) co_return Status::from_errno(errno);
    auto st = std::make_unique<TcpStream>();
    if (Status e = st->adopt(s, fd); !e.ok()) {
      detail::close_socket(fd);
      co_return e;
    }
    if (timeout_ns > 0) (void)st->fd_.set_write_deadline(mono_now_ns() + timeout_ns);
    Status c = co_await st->fd_.connect(to.sa(), to.len);
    if (c.is(Errc::kTimeout)) c = Errc::kConnectTimeout;  // its own message, not a read's
    (void)st->fd_.set_write_deadline(0);
    if (!c.ok()) {
      (void)co_await st->close();
      co_return c;
    }
    *out = std::move(st);
    co_return Status();
  }

 private:
  Status setopt(int level, int opt, bool on) {
    const int v = on ? 1 : 0;
    return setsockopt(fd_.fd(), level, opt, &v, sizeof v) < 0 ? Status::from_errno(errno)
                                                              : Status();
  }
  PollFd<P> fd_;
};

// A listening TCP socket on one shard (with reuseport, one per shard on the same port).
template <PollerBackend P>
class TcpListener {
 public:
  // Binds and listens. Errors say which step failed in *why (e.g. "bind 127.0.0.1:80:
  // Address already in use").
  Status listen(Scheduler<P>& s, const SocketAddress& at, ListenOptions o = {},
                std::string* why = nullptr) {
    if (o.reuseport && !kHasReusePort)
      return fail(EOPNOTSUPP, "setsockopt(SO_REUSEPORT)", at, why,
                  " (Windows has no SO_REUSEPORT: listen once, with reuseport off)");
    const int fd = detail::open_socket(at.family(), SOCK_STREAM);
    if (fd < 0) return fail(errno, "socket", at, why);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, detail::kListenAddressOption, &one, sizeof one);
    if (o.reuseport && setsockopt(fd, SOL_SOCKET, detail::kReusePortOption, &one, sizeof one) < 0) {
      const int e = errno;
      detail::close_socket(fd);
      return fail(e, "setsockopt(SO_REUSEPORT)", at, why);
    }
    if (::bind(fd, at.sa(), at.len) < 0) {
      const int e = errno;
      detail::close_socket(fd);
      return fail(e, "bind", at, why);
    }
    if (::listen(fd, o.backlog) < 0) {
      const int e = errno;
      detail::close_socket(fd);
      return fail(e, "listen", at, why);
    }
    return fd_.open(s, fd);
  }
  // Takes a socket that already listens (handed over by another process, see
  // engine/handover.h) and makes it non-blocking. Refused when fd is not a listening TCP
  // socket; fd is then still the caller's. Linux only (the hand-over is SCM_RIGHTS):
  // refused on Windows, saying so.
  Status adopt(Scheduler<P>& s, int fd, std::string* why = nullptr) {
    if constexpr (!kHasListenerHandover) {
      if (why) *why = "adopting a handed-over listener: Linux only (SCM_RIGHTS)";
      return Status::from_errno(EOPNOTSUPP);
    } else {
      if (Status st = check_listening_tcp(fd, why); !st.ok()) return st;
      const int fl = fcntl(fd, F_GETFL);
      if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return Status::from_errno(errno);
      return fd_.open(s, fd);
    }
  }
  // The listening descriptor (still the listener's), e.g. to hand it over.
  int fd() const noexcept { return fd_.fd(); }
  // The bound address (with the kernel's port when 0 was asked for).
  SocketAddress local_address() const {
    SocketAddress a;
    a.len = sizeof a.ss;
    getsockname(fd_.fd(), reinterpret_cast<sockaddr*>(&a.ss), &a.len);
    return a;
  }
  // Waits for a connection. The fd (non-blocking, close-on-exec) belongs to the caller:
  // adopt it into a TcpStream or close it. kClosed once the listener is closing,
  // kTimeout past the deadline, errno values (EMFILE...) from accept4.
  auto accept() { return fd_.accept(); }
  // A deadline for accept, as TcpStream's; close() from a task on the listener's shard.
  Status set_deadline(int64_t abs) { return fd_.set_read_deadline(abs); }
  Task<Status> close() { return fd_.close(); }
  PollFd<P>& poll_fd() noexcept { return fd_; }

 private:
  static Status fail(int e, const char* step, const SocketAddress& at, std::string* why,
                     const char* hint = "") {
    if (why)
      *why =
          std::string(step) + " " + at.to_string() + ": " + Status::from_errno(e).message() + hint;
    return Status::from_errno(e);
  }
  PollFd<P> fd_;
};

// A UDP socket on one shard, with read and write deadlines.
template <PollerBackend P>
class UdpSocket {
 public:
  // Binds a datagram socket to `at` and registers it with s's shard; *why says what
  // failed. Every other call: on that shard.
  Status bind(Scheduler<P>& s, const SocketAddress& at, std::string* why = nullptr) {
    const int fd = detail::open_socket(at.family(), SOCK_DGRAM);
    if (fd < 0) return Status::from_errno(errno);
    if (::bind(fd, at.sa(), at.len) < 0) {
      const int e = errno;
      detail::close_socket(fd);
      if (why) *why = "bind " + at.to_string() + ": " + Status::from_errno(e).message();
      return Status::from_errno(e);
    }
    return fd_.open(s, fd);
  }
  SocketAddress local_address() const {
    SocketAddress a;
    a.len = sizeof a.ss;
    getsockname(fd_.fd(), reinterpret_cast<sockaddr*>(&a.ss), &a.len);
    return a;
  }
  // One datagram each; deadlines as TcpStream's (kTimeout). recv_from fills *from.
  auto send_to(std::span<const std::byte> b, const SocketAddress& to) {
    return fd_.send_to(b, to.sa(), to.len);
  }
  auto recv_from(std::span<std::byte> b, SocketAddress* from) {
    from->len = sizeof from->ss;
    return fd_.recv_from(b, &from->ss, &from->len);
  }
  Status set_read_deadline(int64_t abs) { return fd_.set_read_deadline(abs); }
  Status set_write_deadline(int64_t abs) { return fd_.set_write_deadline(abs); }
  Task<Status> close() { return fd_.close(); }

 private:
  PollFd<P> fd_;
};

// ---- resolve ----
namespace detail {
// Runs getaddrinfo on the process's resolver thread and calls done(status) there; the
// caller hops back to its shard through `wake`.
void resolve_async(std::string host, std::string port, SocketAddress* out, std::string* why,
                   std::function<void(Status)> done);
bool split_host_port(std::string_view text, std::string* host, std::string* port, std::string* why);
}  // namespace detail

template <PollerBackend P>
Task<Status> resolve(Scheduler<P>& s, std::string text, SocketAddress* out, std::string* why) {
  if (parse_address(text, out, nullptr).ok()) co_return Status();  // a literal: no DNS
  std::string host, port;
  if (!detail::split_host_port(text, &host, &port, why)) co_return Errc::kInvalidArgument;
  // The resolver thread only sets `done` (it never touches the scheduler, which may be
  // gone by the time getaddrinfo returns if the caller gave up); the task polls for it
  // every millisecond, which is nothing next to a DNS round trip.
  struct State {
    std::atomic<bool> done{false};
    Status st;
  };
  auto state = std::make_shared<State>();
  detail::resolve_async(host, port, out, why, [state](Status st) {
    state->st = st;
    state->done.store(true);
  });
  while (!state->done.load()) co_await s.sleep_for(1'000'000);  // 1 ms polls; DNS is slow
  co_return state->st;
}

}  // namespace ringpoll
