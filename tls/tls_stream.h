#pragma once
// TlsStream<P>: TLS over a TcpStream<P>, on any backend — readiness (epoll, io_uring
// readiness) and completion (io_uring with provided buffers) alike — because OpenSSL never
// touches the socket. The session reads and writes ciphertext through a BIO of ringpoll's
// own (tls/cipher_bio.h: two queues of up to TlsOptions::buffer_bytes, each holding a
// buffer only while it holds bytes), and the stream moves it with the engine's own reads
// and writes:
//
//   read:  SSL_read_ex; wants more ciphertext -> wait until the socket is readable, then
//          read straight into the queue's free space (no copy), retry
//   write: SSL_write_ex record by record into the queue; a full queue (or the end of the
//          buffer) -> TcpStream::write straight from the queue
//
// The method shapes are TcpStream's: read, read_exact, write, shutdown_write, close and
// the deadlines, with the same errors (kEof at the peer's close_notify, kTimeout past a
// deadline, kClosed once closing); plus handshake(deadline), alpn(), sni(), resumed().
// A TLS protocol error is EPROTO, with OpenSSL's reason in error_detail().
//
// One reader task and one writer task may run at once, as on a TcpStream. Reading can
// make OpenSSL send something too (an alert, a TLS 1.3 KeyUpdate answer): one direction
// at a time flushes the pair to the socket (`flushing_`); the reader leaves its output to
// a flush under way, and a writer that finds the reader flushing waits for it.
//
// End of stream: a close_notify from the peer is kEof. A peer that closes TCP without
// one is kEof too (most HTTPS clients do that after their last response), and
// truncated() says so, for callers to whom the difference matters.
//
// Memory per connection: this object (small) and OpenSSL's SSL object while it idles;
// SSL_MODE_RELEASE_BUFFERS lets OpenSSL drop its record buffers, and the ciphertext
// queues give theirs back, while the connection idles. No allocation per record beyond OpenSSL's;
// each read, write and handshake call is one coroutine frame (docs/tls.md).
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <utility>

#include "../engine/net.h"
#include "cipher_bio.h"
#include "tls_context.h"

namespace ringpoll::tls {

namespace detail {
// The class of a failed handshake from the session's state and OpenSSL's first error;
// *text: a static description (OpenSSL's reason, or the certificate verify error).
HandshakeError classify_failure(const SSL* s, unsigned long err, const char** text);
}  // namespace detail

template <PollerBackend P>
class TlsStream {
 public:
  TlsStream() = default;
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;
  ~TlsStream() {
    if (ssl_) SSL_free(ssl_);  // frees the BIO too (bio_ outlives it)
  }

  // Wraps a connected TcpStream it does not own (a TcpServer connection: the server
  // closes it) and prepares the session: the server side when ctx is a server context,
  // else the client side, sending and verifying `server_name`. s: the stream's shard.
  Status attach(Scheduler<P>& s, TcpStream<P>& tcp, const TlsContext& ctx,
                std::string_view server_name = {}) {
    if (ssl_) return Errc::kInvalidArgument;
    s_ = &s;
    tcp_ = &tcp;
    ctx_ = &ctx;
    ssl_ = ctx.new_ssl(server_name);
    bio_.in.set_capacity(ctx.options().buffer_bytes);
    bio_.out.set_capacity(ctx.options().buffer_bytes);
    BIO* b = ssl_ ? detail::new_cipher_bio(&bio_) : nullptr;
    if (!b) return Status::from_errno(ENOMEM);
    SSL_set_bio(ssl_, b, b);  // one reference, for both directions
    if (ctx.is_server()) {
      SSL_set_accept_state(ssl_);
    } else {
      SSL_set_connect_state(ssl_);
    }
    return Status();
  }
  // The same, owning the TcpStream (a client's connection): closed with this stream.
  Status attach(Scheduler<P>& s, std::unique_ptr<TcpStream<P>> tcp, const TlsContext& ctx,
                std::string_view server_name = {}) {
    own_ = std::move(tcp);
    return attach(s, *own_, ctx, server_name);
  }

  // Connects TCP to `to` (TcpStream::connect, kConnectTimeout after timeout_ns) and
  // prepares the client side; the handshake is the caller's next step.
  static Task<Status> connect(Scheduler<P>& s, const SocketAddress& to, int64_t timeout_ns,
                              const TlsContext& ctx, std::string server_name,
                              std::unique_ptr<TlsStream>* out) {
    std::unique_ptr<TcpStream<P>> tcp;
    if (Status st = co_await TcpStream<P>::connect(s, to, timeout_ns, &tcp); !st.ok()) co_return st;
    auto t = std::make_unique<TlsStream>();
    if (Status st = t->attach(s, std::move(tcp), ctx, server_name); !st.ok()) co_return st;
    *out = std::move(t);
    co_return Status();
  }

  // Runs the handshake until done or `deadline_abs` (ns on CLOCK_MONOTONIC; 0: none)
  // passes. kNone on success; otherwise the failure's class (handshake_detail() says
  // more), and the connection is of no further use but still needs close(). The
  // deadline is removed afterwards.
  Task<HandshakeError> handshake(int64_t deadline_abs) {
    (void)tcp_->set_deadline(deadline_abs);
    HandshakeError e = co_await handshake_steps();
    (void)tcp_->set_deadline(0);
    hs_error_ = e;
    co_return e;
  }
  HandshakeError handshake_error() const noexcept { return hs_error_; }
  // Static text: why the handshake (or a later read or write) failed.
  const char* error_detail() const noexcept { return detail_ ? detail_ : ""; }

  // Reads at least one byte of plaintext, as TcpStream::read.
  Task<IoResult> read(std::span<std::byte> b) {
    for (;;) {
      ERR_clear_error();
      size_t got = 0;
      const int r = SSL_read_ex(ssl_, b.data(), b.size(), &got);
      const int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      const unsigned long err = ERR_peek_error();
      // OpenSSL may have queued output (an alert, a KeyUpdate answer): send it unless the
      // writer's flush, which will carry it, is under way.
      if (!flushing_ && pending_out() > 0) {
        if (Status f = co_await flush(); !f.ok() && e == SSL_ERROR_NONE) co_return IoResult{got, f};
      }
      switch (e) {
        case SSL_ERROR_NONE:
          co_return IoResult{got, Status()};
        case SSL_ERROR_ZERO_RETURN:
          co_return IoResult{0, Errc::kEof};  // close_notify
        case SSL_ERROR_WANT_READ:
          if (Status f = co_await fill(); !f.ok()) co_return IoResult{0, f};
          continue;
        default:
          if (ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            truncated_ = true;
            co_return IoResult{0, Errc::kEof};
          }
          detail_ = err ? ERR_reason_error_string(err) : "TLS read failed";
          co_return IoResult{0, Status::from_errno(EPROTO)};
      }
    }
  }
  Task<IoResult> read_exact(std::span<std::byte> b) {
    size_t got = 0;
    while (got < b.size()) {
      IoResult r = co_await read(b.subspan(got));
      got += r.n;
      if (!r.ok()) co_return IoResult{got, r.err};
    }
    co_return IoResult{got, Status()};
  }

  // Writes all of b as TcpStream::write; n counts the plaintext bytes that went into
  // records handed to the socket.
  Task<IoResult> write(std::span<const std::byte> b) {
    size_t done = 0;
    while (done < b.size()) {
      ERR_clear_error();
      size_t n = 0;
      const int r = SSL_write_ex(ssl_, b.data() + done, b.size() - done, &n);
      const int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_WRITE) {
        const unsigned long err = ERR_peek_error();
        detail_ = err ? ERR_reason_error_string(err) : "TLS write failed";
        co_return IoResult{done, Status::from_errno(e == SSL_ERROR_ZERO_RETURN ? EPIPE : EPROTO)};
      }
      // The pair is full (WANT_WRITE) or the buffer is in records: out to the socket.
      if (Status f = co_await flush(); !f.ok()) co_return IoResult{done, f};
      if (r == 1) done += n;
    }
    co_return IoResult{done, Status()};
  }
  Task<IoResult> write(std::string_view text) { return write(std::as_bytes(std::span(text))); }

  // Half-close: sends close_notify and shuts the TCP write side. The peer reads end of
  // stream; this side can still read (TLS 1.3 allows it; so does OpenSSL for 1.2).
  Task<Status> shutdown_write() {
    if (Status st = co_await send_close_notify(); !st.ok()) co_return st;
    co_return tcp_->shutdown_write();
  }
  // Sends close_notify after a completed handshake (bounded by the write deadline, if
  // any) when no write is under way, then closes the TCP stream if this stream owns it
  // (a TcpServer closes its own when the handler ends).
  Task<Status> close() {
    if (handshake_done_ && !flushing_ && (SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) == 0) {
      (void)co_await send_close_notify();
    }
    if (own_) co_return co_await own_->close();
    co_return Status();
  }

  Status set_deadline(int64_t abs) { return tcp_->set_deadline(abs); }
  Status set_read_deadline(int64_t abs) { return tcp_->set_read_deadline(abs); }
  Status set_write_deadline(int64_t abs) { return tcp_->set_write_deadline(abs); }
  Status set_nodelay(bool on) { return tcp_->set_nodelay(on); }
  Status set_keepalive(bool on) { return tcp_->set_keepalive(on); }
  int fd() const noexcept { return tcp_->fd(); }
  TcpStream<P>& tcp() noexcept { return *tcp_; }
  SSL* ssl() noexcept { return ssl_; }

  // The protocol ALPN agreed on ("" when none).
  std::string_view alpn() const {
    const unsigned char* p = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl_, &p, &len);
    return p ? std::string_view(reinterpret_cast<const char*>(p), len) : std::string_view();
  }
  // The SNI name the client sent ("" when none).
  std::string_view sni() const {
    const char* n = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
    return n ? std::string_view(n) : std::string_view();
  }
  // The handshake resumed an earlier session (a ticket) instead of a full one.
  bool resumed() const { return SSL_session_reused(ssl_) == 1; }
  // "TLSv1.3", "TLSv1.2".
  const char* version() const { return SSL_get_version(ssl_); }
  // The peer ended TCP without close_notify (see the top of this file).
  bool truncated() const noexcept { return truncated_; }
  // Something a read would get without the socket: plaintext or a record (whole or in
  // part) in the session, or ciphertext in the pair. A caller that waits for the socket to
  // be readable before it reads (to take a buffer only then) asks this first.
  bool buffered() const { return SSL_has_pending(ssl_) == 1 || bio_.in.size() > 0; }
  // Ciphertext buffers this stream holds now (0, 1 or 2; none while it idles).
  int cipher_buffers() const noexcept { return bio_.in.holds_buffer() + bio_.out.holds_buffer(); }

 private:
  size_t pending_out() const { return bio_.out.size(); }

  Task<HandshakeError> handshake_steps() {
    for (;;) {
      ERR_clear_error();
      const int r = SSL_do_handshake(ssl_);
      const int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      const unsigned long err = ERR_peek_error();
      // Send what OpenSSL wrote: the next flight, or the alert that explains a failure.
      Status f;
      if (pending_out() > 0) f = co_await flush();
      if (e == SSL_ERROR_NONE) {
        if (!f.ok()) co_return transport_error(f);
        handshake_done_ = true;
        ctx_->handshake_done(ssl_);
        co_return HandshakeError::kNone;
      }
      if (e != SSL_ERROR_WANT_READ) co_return detail::classify_failure(ssl_, err, &detail_);
      if (!f.ok()) co_return transport_error(f);
      if (Status st = co_await fill(); !st.ok()) co_return transport_error(st);
    }
  }
  HandshakeError transport_error(Status st) {
    detail_ = st.message();
    if (st.timeout()) return HandshakeError::kTimeout;
    if (st.is(Errc::kEof) || st.sys_errno() == ECONNRESET || st.sys_errno() == EPIPE)
      return HandshakeError::kPeerClosed;
    return HandshakeError::kOther;
  }

  // Reads ciphertext from the socket into the queue's free space, taking the queue's
  // buffer only once there is something to read: a connection waiting for its peer holds
  // none. At the peer's end of stream the queue is marked ended, so OpenSSL sees the end
  // (kEof is returned only to the handshake, which has no use for what OpenSSL would make
  // of it).
  Task<Status> fill() {
    detail::CipherQueue& q = bio_.in;
    IoResult r;
    if constexpr (P::kCompletion) {
      // The multishot recv queues what arrives in the ring's buffers; wait for it there.
      r = co_await tcp_->poll_fd().wait_readable();
      if (r.ok()) {
        const std::span<std::byte> room = q.room();
        if (room.empty()) co_return Status::from_errno(ENOBUFS);  // OpenSSL read nothing: a bug
        r = co_await tcp_->read(room);
      }
    } else {
      // The system call takes the buffer, and gives it back on EAGAIN (as the relay does).
      r = co_await tcp_->poll_fd().ready_op(Mode::kRead, [&q](int fd) -> ssize_t {
        const std::span<std::byte> room = q.room();
        if (room.empty()) {
          errno = ENOBUFS;
          return -1;
        }
        const ssize_t n = ::recv(fd, room.data(), room.size(), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          q.release_if_empty();
          errno = EAGAIN;
        }
        return n;
      });
      if (r.ok() && r.n == 0) r.err = Errc::kEof;  // a read system call's 0
    }
    if (r.n > 0) q.commit(r.n);
    q.release_if_empty();
    if (r.err.is(Errc::kEof) && handshake_done_) {
      bio_.in_eof = true;
      co_return Status();
    }
    co_return r.err;
  }

  // Sends everything in the pair's output. If the other direction is flushing, waits for
  // it to finish first, then sends what is left.
  Task<Status> flush() {
    while (flushing_) co_await FlushWait{this, {}};
    flushing_ = true;
    Status st;
    while (bio_.out.size() > 0) {
      const IoResult w = co_await tcp_->write(bio_.out.data());
      bio_.out.consume(w.n);  // the buffer goes back once all is sent
      if (!w.ok()) {
        st = w.err;
        break;
      }
    }
    flushing_ = false;
    if (TaskNode* w = std::exchange(flush_waiter_, nullptr)) s_->make_ready(w);
    co_return st;
  }

  Task<Status> send_close_notify() {
    if ((SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) == 0) {
      ERR_clear_error();
      (void)SSL_shutdown(ssl_);  // 0: sent, the peer's not seen yet (we do not wait for it)
    }
    co_return co_await flush();
  }

  // A writer waiting for the reader's flush. One waiter at most (one writer task).
  struct FlushWait {
    TlsStream* t;
    TaskNode node;
    bool await_ready() const noexcept { return !t->flushing_; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      node.handle = h;
      t->flush_waiter_ = &node;
    }
    void await_resume() const noexcept {}
    ~FlushWait() {  // destroyed while waiting (teardown)
      if (t->flush_waiter_ == &node) t->flush_waiter_ = nullptr;
    }
  };

  Scheduler<P>* s_ = nullptr;
  TcpStream<P>* tcp_ = nullptr;
  const TlsContext* ctx_ = nullptr;
  std::unique_ptr<TcpStream<P>> own_;
  detail::CipherBio bio_;  // the ciphertext queues (before ssl_, whose BIO names them)
  SSL* ssl_ = nullptr;
  TaskNode* flush_waiter_ = nullptr;
  const char* detail_ = nullptr;
  HandshakeError hs_error_ = HandshakeError::kNone;
  bool flushing_ = false;
  bool handshake_done_ = false;
  bool truncated_ = false;
};

}  // namespace ringpoll::tls
