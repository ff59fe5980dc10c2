#pragma once
// Counts global operator new calls made by the current thread while counting is on (S27).
#include <cstddef>

namespace ringpoll::test {
void alloc_counting(bool on);
size_t alloc_count();
}  // namespace ringpoll::test
