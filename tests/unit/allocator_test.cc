// mimalloc is the process allocator (in builds without a sanitizer, which bring their own).
#include <gtest/gtest.h>

#include <memory>
#include <string>

#ifdef RINGPOLL_WITH_MIMALLOC
#include <mimalloc.h>
#endif

namespace {

TEST(Allocator, MimallocServesNewAndMalloc) {
#ifndef RINGPOLL_WITH_MIMALLOC
  GTEST_SKIP() << "built without mimalloc (sanitizer build or RINGPOLL_MIMALLOC=OFF)";
#else
  EXPECT_GE(mi_version(), 200);
  auto p = std::make_unique<std::string>(1000, 'x');  // operator new
  void* m = std::malloc(4096);                        // malloc
  EXPECT_TRUE(mi_is_in_heap_region(p.get()));
  EXPECT_TRUE(mi_is_in_heap_region(p->data()));
  EXPECT_TRUE(mi_is_in_heap_region(m));
  std::free(m);
#endif
}

}  // namespace
