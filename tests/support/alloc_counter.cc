#include "support/alloc_counter.h"

#include <cstdlib>
#include <new>

// Replacing the global allocation functions is program-wide; these forward to malloc/free and
// only count while a test has switched counting on for its own thread, so other tests linked
// into the same binary see the ordinary behaviour.
namespace ringpoll::test {
thread_local bool t_count_allocs = false;
thread_local size_t t_allocs = 0;
void alloc_counting(bool on) {
  t_count_allocs = on;
}
size_t alloc_count() {
  return t_allocs;
}
}  // namespace ringpoll::test

namespace {
using ringpoll::test::t_allocs;
using ringpoll::test::t_count_allocs;

void* counted_alloc(std::size_t size) {
  if (t_count_allocs) ++t_allocs;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* counted_alloc_aligned(std::size_t size, std::align_val_t align) {
  if (t_count_allocs) ++t_allocs;
  const std::size_t a = static_cast<std::size_t>(align);
  const std::size_t rounded = (size + a - 1) / a * a;
  if (void* p = std::aligned_alloc(a, rounded == 0 ? a : rounded)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) {
  return counted_alloc(size);
}
void* operator new[](std::size_t size) {
  return counted_alloc(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t size, std::align_val_t a) {
  return counted_alloc_aligned(size, a);
}
void* operator new[](std::size_t size, std::align_val_t a) {
  return counted_alloc_aligned(size, a);
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
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
