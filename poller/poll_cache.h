#pragma once
// PollCache: the per-shard slab of PollDescs (Go's pollCache).
//
// Descriptors are carved from blocks obtained with mmap and bound to the shard's NUMA
// node. A block is never returned to the OS: a kernel event or completion can name a
// descriptor after it was closed, so the memory must stay a PollDesc forever (type
// stability, S25). Freed descriptors go on a free list with fdseq bumped, so an event
// tagged with the old generation is recognised and dropped (S26).
//
// A cache belongs to one shard and is not locked. When a cache is destroyed (its shard
// stopped, after its backend closed) its blocks go to a process-wide pool of retired
// blocks, still mapped and still PollDescs, which the next cache takes from first.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "poll_desc.h"

namespace ringpoll {

class PollCache {
 public:
  // 64 KiB: 512 descriptors per mmap call; large enough that growth is rare, small enough
  // that an idle shard costs little.
  static constexpr size_t kBlockBytes = 64 * 1024;
  static constexpr size_t kPerBlock = kBlockBytes / sizeof(PollDesc);

  // numa_node < 0: no binding (the kernel's default policy).
  explicit PollCache(int numa_node = -1) noexcept : numa_node_(numa_node) {}
  ~PollCache();
  PollCache(const PollCache&) = delete;
  PollCache& operator=(const PollCache&) = delete;

  // Never fails: running out of memory for descriptors stops the process with a message.
  PollDesc* alloc() noexcept {
    if (!first_) grow();
    PollDesc* pd = first_;
    first_ = pd->link;
    pd->link = nullptr;
    ++live_;
    return pd;
  }
  // Bumps fdseq (so stale events for this descriptor are dropped) and publishes it.
  void free(PollDesc* pd) noexcept {
    pd->fdseq.store(next_fdseq(pd->fdseq.load()));
    pd->publish_info();
    pd->link = first_;
    first_ = pd;
    --live_;
  }

  bool owns(const PollDesc* pd) const noexcept;
  size_t blocks() const noexcept { return blocks_.size(); }
  size_t live() const noexcept { return live_; }
  int numa_node() const noexcept { return numa_node_; }
  // The NUMA node of the CPU the caller runs on, or -1 when NUMA is not available.
  static int current_numa_node() noexcept;

 private:
  void grow() noexcept;
  int numa_node_;
  PollDesc* first_ = nullptr;
  size_t live_ = 0;
  std::vector<void*> blocks_;
};

}  // namespace ringpoll
