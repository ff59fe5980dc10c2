#pragma once
// Counts global operator new calls made by the calling thread while counting is on. The
// replacement allocation functions (alloc_counter.cc) are program-wide and forward to
// malloc/free; linked into both test binaries (S27, and the wheel's no-allocation test).
#include <cstddef>

namespace ringpoll::test {
void alloc_counting(bool on);
size_t alloc_count();
}  // namespace ringpoll::test
