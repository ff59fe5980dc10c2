#include "cipher_bio.h"

#include <atomic>
#include <cstring>
#include <new>
#include <vector>

namespace ringpoll::tls::detail {
namespace {

std::atomic<int64_t> g_held{0};

// The thread's free buffers, all of size_ bytes.
class Pool {
 public:
  ~Pool() {
    for (std::byte* b : free_) ::operator delete(b);
  }
  std::byte* take(size_t size) {
    if (size_ == 0) size_ = size;
    if (size == size_ && !free_.empty()) {
      std::byte* b = free_.back();
      free_.pop_back();
      return b;
    }
    return static_cast<std::byte*>(::operator new(size));
  }
  void give(std::byte* b, size_t size) noexcept {
    if (size == size_ && free_.size() < kPooledBuffers) {
      free_.push_back(b);  // capacity reserved below: no allocation here
      return;
    }
    ::operator delete(b);
  }
  Pool() { free_.reserve(kPooledBuffers); }

 private:
  size_t size_ = 0;
  std::vector<std::byte*> free_;
};

Pool& pool() {
  static thread_local Pool p;
  return p;
}

CipherBio* state(BIO* b) {
  return static_cast<CipherBio*>(BIO_get_data(b));
}

int bio_write(BIO* b, const char* data, size_t len, size_t* written) {
  BIO_clear_retry_flags(b);
  CipherQueue& q = state(b)->out;
  const std::span<std::byte> room = q.room();
  if (room.empty()) {
    BIO_set_retry_write(b);
    return 0;
  }
  const size_t n = std::min(len, room.size());
  std::memcpy(room.data(), data, n);
  q.commit(n);
  *written = n;
  return 1;
}

int bio_read(BIO* b, char* out, size_t len, size_t* got) {
  BIO_clear_retry_flags(b);
  CipherBio* st = state(b);
  CipherQueue& q = st->in;
  if (q.size() == 0) {
    if (!st->in_eof) BIO_set_retry_read(b);  // else the end of stream: 0, no retry
    return 0;
  }
  const size_t n = std::min(len, q.size());
  std::memcpy(out, q.data().data(), n);
  q.consume(n);
  *got = n;
  return 1;
}

long bio_ctrl(BIO* b, int cmd, long num, void*) {
  CipherBio* st = state(b);
  switch (cmd) {
    case BIO_CTRL_PENDING:
      return static_cast<long>(st->in.size());
    case BIO_CTRL_WPENDING:
      return static_cast<long>(st->out.size());
    case BIO_CTRL_EOF:  // OpenSSL tells a peer's close from a reset by this
      return st->in_eof && st->in.size() == 0 ? 1 : 0;
    case BIO_CTRL_FLUSH:  // the stream flushes `out` itself after each call into OpenSSL
    case BIO_CTRL_DUP:
      return 1;
    case BIO_CTRL_GET_CLOSE:
      return BIO_get_shutdown(b);
    case BIO_CTRL_SET_CLOSE:
      BIO_set_shutdown(b, static_cast<int>(num));
      return 1;
    default:
      return 0;
  }
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

const BIO_METHOD* method() {
  static BIO_METHOD* const m = [] {
    BIO_METHOD* bm =
        BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringpoll ciphertext");
    if (!bm) return bm;
    BIO_meth_set_write_ex(bm, bio_write);
    BIO_meth_set_read_ex(bm, bio_read);
    BIO_meth_set_ctrl(bm, bio_ctrl);
    BIO_meth_set_create(bm, bio_create);
    return bm;
  }();
  return m;
}

}  // namespace

int64_t cipher_bytes_held() noexcept {
  return g_held.load(std::memory_order_relaxed);
}

std::span<std::byte> CipherQueue::room() {
  if (!buf_) {
    buf_ = pool().take(cap_);
    g_held.fetch_add(static_cast<int64_t>(cap_), std::memory_order_relaxed);
    head_ = tail_ = 0;
  } else if (head_ > 0) {
    std::memmove(buf_, buf_ + head_, tail_ - head_);
    tail_ -= head_;
    head_ = 0;
  }
  return {buf_ + tail_, cap_ - tail_};
}

void CipherQueue::release() noexcept {
  if (!buf_) return;
  pool().give(buf_, cap_);
  g_held.fetch_sub(static_cast<int64_t>(cap_), std::memory_order_relaxed);
  buf_ = nullptr;
  head_ = tail_ = 0;
}

BIO* new_cipher_bio(CipherBio* st) {
  const BIO_METHOD* m = method();
  if (!m) return nullptr;
  BIO* b = BIO_new(m);
  if (b) BIO_set_data(b, st);
  return b;
}

}  // namespace ringpoll::tls::detail
