#pragma once
// RelayBuffers: a shard's relay buffers (apps/proxy/relay.h). A pump takes one only once
// its source has data (PollFd::wait_readable, or inside the readiness read itself) and
// gives it back as soon as the chunk was written, so an idle proxied connection holds no
// buffer at all: the memory of 100,000 idle connections is their sockets, descriptors and
// task frames, not 2 × buffer_bytes each. Given-back buffers wait on a free list for the
// next chunk, at most kKeep of them per shard; the rest go back to the allocator. One per
// thread (shard), so nothing is shared or locked.
#include <cstddef>
#include <new>

namespace ringpoll::proxy {

class RelayBuffers {
 public:
  static constexpr size_t kKeep = 64;  // free buffers a shard keeps for the next chunks

  // The calling shard's buffers.
  static RelayBuffers& local() {
    thread_local RelayBuffers b;
    return b;
  }
  ~RelayBuffers() { trim(0); }

  // A buffer of `size` bytes (all buffers of a shard have the size of the last request:
  // a reload that changes limits.buffer_bytes drops the free ones of the old size).
  std::byte* take(size_t size) {
    if (size != size_) {
      trim(0);
      size_ = size;
    }
    ++in_use_;
    if (Free* f = free_) {
      free_ = f->next;
      --free_count_;
      return reinterpret_cast<std::byte*>(f);
    }
    return static_cast<std::byte*>(::operator new(size < sizeof(Free) ? sizeof(Free) : size));
  }
  void give(std::byte* p, size_t size) noexcept {
    --in_use_;
    if (size == size_ && free_count_ < kKeep) {
      auto* f = reinterpret_cast<Free*>(p);
      f->next = free_;
      free_ = f;
      ++free_count_;
      return;
    }
    ::operator delete(p);
  }
  size_t in_use() const noexcept { return in_use_; }  // taken and not given back
  size_t kept() const noexcept { return free_count_; }

 private:
  struct Free {
    Free* next;
  };
  void trim(size_t keep) noexcept {
    while (free_count_ > keep) {
      Free* f = free_;
      free_ = f->next;
      --free_count_;
      ::operator delete(f);
    }
  }
  size_t size_ = 0;
  Free* free_ = nullptr;
  size_t free_count_ = 0;
  size_t in_use_ = 0;
};

}  // namespace ringpoll::proxy
