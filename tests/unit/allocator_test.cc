// mimalloc is the process allocator (in builds without a sanitizer, which bring their own).
#include <gtest/gtest.h>

#include <memory>
#include <string>

#ifdef RINGPOLL_WITH_MIMALLOC
#include <mimalloc.h>
#endif

namespace {

// Only in builds with mimalloc (not sanitizer builds, which bring their own allocator, nor
// RINGPOLL_MIMALLOC=OFF): a test that cannot apply to a build is not registered there,
// so a skipped test always means something the environment lacked.
#ifdef RINGPOLL_WITH_MIMALLOC
TEST(Allocator, MimallocServesNewAndMalloc) {
  EXPECT_GE(mi_version(), 200);
  auto p = std::make_unique<std::string>(1000, 'x');  // operator new
  void* m = std::malloc(4096);                        // malloc
  EXPECT_TRUE(mi_is_in_heap_region(p.get()));
  EXPECT_TRUE(mi_is_in_heap_region(p->data()));
  EXPECT_TRUE(mi_is_in_heap_region(m));
  std::free(m);
}
#endif

}  // namespace
