#include "poller/poll_cache.h"

#ifdef _WIN32
#include <windows.h>  // VirtualAlloc: the Windows build has no mmap and no libnuma
#else
#include <numa.h>
#include <sched.h>
#include <sys/mman.h>
#endif

#include <mutex>
#include <new>

namespace ringpoll {
namespace {

// Retired blocks, per NUMA node (index node+1; index 0 is "unbound"). Process-wide and
// locked, but touched only when a cache grows or is destroyed, never on the hot path.
struct RetiredBlocks {
  std::mutex mu;
  std::vector<std::vector<void*>> by_node;
};
RetiredBlocks& retired() {
  static RetiredBlocks* r = new RetiredBlocks();  // never destroyed: blocks outlive statics
  return *r;
}

#ifndef _WIN32  // Windows blocks are not NUMA-bound (yet)
bool numa_ok() {
  static const bool ok = numa_available() >= 0;
  return ok;
}
#endif

}  // namespace

int PollCache::current_numa_node() noexcept {
#ifdef _WIN32
  return -1;
#else
  if (!numa_ok()) return -1;
  // The CPU -> node table is built once: libnuma fills its own caches lazily without a
  // lock, so shards starting together would race inside numa_node_of_cpu.
  static const std::vector<int>* table = [] {
    auto* t = new std::vector<int>();
    const int n = numa_num_configured_cpus();
    for (int c = 0; c < n; ++c) t->push_back(numa_node_of_cpu(c));
    return t;
  }();
  const int cpu = sched_getcpu();
  if (cpu < 0 || cpu >= static_cast<int>(table->size())) return -1;
  return (*table)[static_cast<size_t>(cpu)];
#endif
}

bool PollCache::owns(const PollDesc* pd) const noexcept {
  const auto* p = reinterpret_cast<const char*>(pd);
  for (void* b : blocks_) {
    const auto* base = static_cast<const char*>(b);
    if (p >= base && p < base + kBlockBytes) return true;
  }
  return false;
}

void PollCache::grow() noexcept {
  void* block = nullptr;
  {
    RetiredBlocks& r = retired();
    std::lock_guard<std::mutex> lock(r.mu);
    const size_t idx = static_cast<size_t>(numa_node_ + 1);
    if (idx < r.by_node.size() && !r.by_node[idx].empty()) {
      block = r.by_node[idx].back();
      r.by_node[idx].pop_back();
    }
  }
  const bool reused = block != nullptr;
  if (!reused) {
#ifdef _WIN32
    block = VirtualAlloc(nullptr, kBlockBytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!block) fatal("PollCache: VirtualAlloc of a descriptor block failed (out of memory)");
#else
    block = mmap(nullptr, kBlockBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) fatal("PollCache: mmap of a descriptor block failed", errno);
    // Bind before first touch so the pages are placed on the shard's node.
    if (numa_node_ >= 0 && numa_ok()) numa_tonode_memory(block, kBlockBytes, numa_node_);
#endif
  }
  blocks_.push_back(block);
  auto* pds = static_cast<PollDesc*>(block);
  // Link back to front so alloc hands descriptors out in address order.
  for (size_t i = kPerBlock; i-- > 0;) {
    PollDesc* pd = reused ? &pds[i] : new (&pds[i]) PollDesc();
    if (!reused) pd->fdseq.store(1);
    if (reused) {
      // A retired block may hold descriptors its old shard never freed: make them old.
      pd->fdseq.store(next_fdseq(pd->fdseq.load()));
      pd->rg.store(kPdNil);
      pd->wg.store(kPdNil);
      pd->closing = false;
      pd->rd = pd->wd = 0;
      pd->timer = TimerNode{};
      pd->publish_info();
    }
    pd->link = first_;
    first_ = pd;
  }
}

PollCache::~PollCache() {
  // Blocks stay mapped and stay PollDescs (type stability); the next cache on the same
  // node reuses them. Their fdseq values carry on, so old tags remain old.
  RetiredBlocks& r = retired();
  std::lock_guard<std::mutex> lock(r.mu);
  const size_t idx = static_cast<size_t>(numa_node_ + 1);
  if (r.by_node.size() <= idx) r.by_node.resize(idx + 1);
  for (void* b : blocks_) r.by_node[idx].push_back(b);
}

}  // namespace ringpoll
