#include "conformance/alloc_counter.h"

#include <cstdlib>
#include <new>

namespace ringpoll::test {
thread_local bool t_counting = false;
thread_local size_t t_count = 0;
void alloc_counting(bool on) {
  t_counting = on;
}
size_t alloc_count() {
  return t_count;
}
}  // namespace ringpoll::test

namespace {
void* counted_alloc(std::size_t n) {
  if (ringpoll::test::t_counting) ++ringpoll::test::t_count;
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) {
  return counted_alloc(n);
}
void* operator new[](std::size_t n) {
  return counted_alloc(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
