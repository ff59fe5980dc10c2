#include "engine/allocator.h"

#include <cstdlib>
#include <new>

#include "engine/task.h"

#if defined(RINGPOLL_WITH_MIMALLOC)
#include <mimalloc.h>
#endif

namespace ringpoll {

#if defined(RINGPOLL_WITH_MIMALLOC)
namespace {
// One per thread, made at its first use and never deleted here: at thread exit mimalloc
// hands a heap's pages that still hold blocks to the thread's backing heap, so a frame
// that outlives its thread stays valid. mi_free frees a block of any heap, which is why a
// frame's ordinary operator delete is right for these frames too.
mi_heap_t* short_lived_heap() {
  thread_local mi_heap_t* heap = mi_heap_new();
  return heap;
}

bool count_area(const mi_heap_t*, const mi_heap_area_t* area, void* block, size_t, void* arg) {
  if (block) return true;  // areas only
  auto* use = static_cast<detail::ShortLivedHeapUse*>(arg);
  use->blocks += area->used;
  use->committed_bytes += area->committed;
  return true;
}
}  // namespace

bool return_freed_memory_at_once() {
  if (std::getenv("MIMALLOC_DECOMMIT_DELAY") || std::getenv("MIMALLOC_PURGE_DELAY")) return false;
  mi_option_set(mi_option_decommit_delay, 0);
  return true;
}

namespace detail {
void* short_lived_frame_alloc(std::size_t n) {
  mi_heap_t* h = short_lived_heap();
  void* p = h ? mi_heap_malloc(h, n) : nullptr;
  return p ? p : ::operator new(n);  // no heap (or no memory there): the ordinary path
}

ShortLivedHeapUse short_lived_heap_use() {
  ShortLivedHeapUse use;
  if (mi_heap_t* h = short_lived_heap()) mi_heap_visit_blocks(h, false, count_area, &use);
  return use;
}

bool in_short_lived_heap(const void* p) {
  mi_heap_t* h = short_lived_heap();
  return h && mi_heap_contains_block(h, p);
}
}  // namespace detail
#else
bool return_freed_memory_at_once() {
  return false;
}

namespace detail {
// Without mimalloc (sanitizer builds, Windows) short-lived frames share the process heap.
void* short_lived_frame_alloc(std::size_t n) {
  return ::operator new(n);
}
ShortLivedHeapUse short_lived_heap_use() {
  return {};
}
bool in_short_lived_heap(const void*) {
  return false;
}
}  // namespace detail
#endif

}  // namespace ringpoll
