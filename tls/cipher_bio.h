#pragma once
// The ciphertext between OpenSSL and a TlsStream's socket: a BIO of ringpoll's own whose
// two queues (socket -> OpenSSL, OpenSSL -> socket) hold a buffer only while they hold
// bytes. A buffer is taken from the thread's small pool when ciphertext arrives or a
// record is written, and given back once the queue is empty, so an idle TLS connection
// holds no ciphertext buffer (a BIO pair held two of TlsOptions::buffer_bytes for the
// connection's life), and the hot path does not call the allocator: the pool keeps up to
// kPooledBuffers free buffers per thread.
//
// OpenSSL sees an ordinary non-blocking BIO: a read with nothing queued asks to be retried
// (or is the end of stream once the socket's end was seen), a write to a full queue asks
// to be retried; BIO_pending (the bytes queued for OpenSSL) and BIO_wpending (for the
// socket) answer from the queues.
#include <openssl/bio.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace ringpoll::tls::detail {

// Free ciphertext buffers a thread keeps for reuse (of one size: the first one it saw;
// others are allocated and freed each time).
inline constexpr size_t kPooledBuffers = 64;

// Bytes of ciphertext buffers held by queues (all threads), for tests and the admin page.
int64_t cipher_bytes_held() noexcept;

// One direction's queue: bytes [head, tail) of buf.
class CipherQueue {
 public:
  explicit CipherQueue(size_t cap = 0) noexcept : cap_(cap) {}
  CipherQueue(const CipherQueue&) = delete;
  CipherQueue& operator=(const CipherQueue&) = delete;
  ~CipherQueue() { release(); }

  size_t size() const noexcept { return tail_ - head_; }
  size_t capacity() const noexcept { return cap_; }
  void set_capacity(size_t cap) noexcept {  // while it holds no buffer
    if (!buf_) cap_ = cap;
  }
  bool holds_buffer() const noexcept { return buf_ != nullptr; }
  // The free space after the queued bytes, taking a buffer if none is held (queued bytes
  // move to the front first). Empty when the queue is full.
  std::span<std::byte> room();
  void commit(size_t n) noexcept { tail_ += n; }
  std::span<const std::byte> data() const noexcept { return {buf_ + head_, size()}; }
  // Drops n queued bytes; the buffer goes back once none is left.
  void consume(size_t n) noexcept {
    head_ += n;
    if (head_ == tail_) release();
  }
  // Gives the buffer back if nothing is queued (a read that found nothing).
  void release_if_empty() noexcept {
    if (head_ == tail_) release();
  }

 private:
  void release() noexcept;
  std::byte* buf_ = nullptr;
  size_t cap_;
  size_t head_ = 0, tail_ = 0;
};

// The BIO's state: owned by the TlsStream, named by the BIO's data pointer.
struct CipherBio {
  CipherQueue in;       // from the socket, for OpenSSL to read
  CipherQueue out;      // written by OpenSSL, for the socket
  bool in_eof = false;  // the socket's end of stream: once `in` is drained, reads end
};

// A new BIO over *state (not owned; it must outlive the BIO). nullptr when OpenSSL could
// not allocate it.
BIO* new_cipher_bio(CipherBio* state);

}  // namespace ringpoll::tls::detail
