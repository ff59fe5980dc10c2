#include "win_alloc_counter.h"

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
void* counted(std::size_t size) {
  if (ringpoll::test::t_counting) ++ringpoll::test::t_count;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) {
  return counted(size);
}
void* operator new[](std::size_t size) {
  return counted(size);
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
