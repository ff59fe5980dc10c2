#pragma once
// Counts global operator new calls made by the calling thread while counting is on (S27).
// The Windows counterpart of tests/support/alloc_counter.h: mingw's CRT has no
// aligned_alloc, so only the plain forms are replaced (the aligned ones stay the
// runtime's, so every new still meets its own delete).
#include <cstddef>

namespace ringpoll::test {
void alloc_counting(bool on);
size_t alloc_count();
}  // namespace ringpoll::test
