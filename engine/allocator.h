#pragma once
// What the engine asks of the process allocator (mimalloc when the build links it; see
// CMakeLists.txt's RINGPOLL_MIMALLOC). Both calls are harmless without mimalloc.
//
// Two things keep a burst's memory from going back to the system once it is over:
//  - short-lived coroutine frames sharing allocator pages with frames that stay, so no
//    page empties: ShortLivedFrames (engine/task.h) gives the short-lived ones a heap of
//    their own;
//  - the allocator waiting before it returns an emptied page (mimalloc decommits after a
//    delay, and only when the thread next allocates or frees there, which a shard that
//    went quiet may not do for hours): return_freed_memory_at_once() turns the wait off.
#include <cstddef>

namespace ringpoll {

// Emptied allocator pages go back to the system when they empty (mimalloc's
// decommit_delay set to 0), unless the environment sets MIMALLOC_DECOMMIT_DELAY, which
// wins. Process-wide; call it at start, before the shards run. False: nothing changed
// (no mimalloc, or the environment decides).
bool return_freed_memory_at_once();

namespace detail {
// Blocks the calling thread's short-lived frame heap holds in use and the bytes of the
// pages it keeps committed (0, 0 without mimalloc). Tests read it.
struct ShortLivedHeapUse {
  size_t blocks = 0;
  size_t committed_bytes = 0;
};
ShortLivedHeapUse short_lived_heap_use();
// True when p is a block of the calling thread's short-lived heap (false without mimalloc).
bool in_short_lived_heap(const void* p);
}  // namespace detail

}  // namespace ringpoll
