// mimalloc is the process allocator (in builds without a sanitizer, which bring their own).
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/task.h"

#ifdef RINGPOLL_WITH_MIMALLOC
#include <mimalloc.h>
#endif

namespace ringpoll {
namespace {

TEST(ShortLivedFrames, AScopeMarksItsThreadUntilItCloses) {
  EXPECT_FALSE(detail::t_short_lived_frames);
  {
    ShortLivedFrames outer;
    EXPECT_TRUE(detail::t_short_lived_frames);
    {
      ShortLivedFrames inner;
      EXPECT_TRUE(detail::t_short_lived_frames);
    }
    EXPECT_TRUE(detail::t_short_lived_frames) << "an inner scope's end closed the outer one";
  }
  EXPECT_FALSE(detail::t_short_lived_frames);
}

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

// A task whose frame holds its by-value parameter: about 600 bytes (mimalloc's 640-byte
// size class), whatever the optimiser does with the body.
Task<int> padded(std::array<char, 560> pad) {
  co_return pad[0];
}
void* frame_of(Task<int>& t) {
  auto h = t.release();
  void* p = h.address();
  h.destroy();
  return p;
}

// Resident bytes of this process (/proc/self/statm).
long resident_bytes() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return n == 2 ? resident * sysconf(_SC_PAGESIZE) : -1;
}

TEST(ShortLivedFrames, FramesMadeInAScopeComeFromTheShortLivedHeap) {
  std::array<char, 560> pad{};
  Task<int> plain = padded(pad);
  Task<int> short_lived;
  {
    ShortLivedFrames scope;
    short_lived = padded(pad);
  }
  Task<int> after = padded(pad);
  EXPECT_TRUE(detail::in_short_lived_heap(frame_of(short_lived)));
  EXPECT_FALSE(detail::in_short_lived_heap(frame_of(plain)));
  EXPECT_FALSE(detail::in_short_lived_heap(frame_of(after)));
}

// The case the short-lived heap is for (a burst of relays that then hibernate): frames
// that stay and frames that go are made in turn, in the same size class. When the ones
// that go end, their pages empty and go back to the system at once; in shared pages each
// page would stay half used, and none would.
TEST(ShortLivedFrames, ABurstsFramesGoBackToTheSystemWhenTheyEnd) {
  constexpr size_t kEach = 8000;        // about 5 MB of frames each way
  (void)return_freed_memory_at_once();  // as ringpoll-proxy does (unless the environment set it)
  std::array<char, 560> pad{};
  std::vector<Task<int>> stay, go;
  stay.reserve(kEach);
  go.reserve(kEach);
  for (size_t i = 0; i < kEach; ++i) {
    stay.push_back(padded(pad));
    ShortLivedFrames scope;
    go.push_back(padded(pad));
  }
  EXPECT_GE(detail::short_lived_heap_use().blocks, kEach);
  const long with = resident_bytes();
  go.clear();  // destroys their frames
  const long after = resident_bytes();
  const detail::ShortLivedHeapUse use = detail::short_lived_heap_use();
  EXPECT_EQ(use.blocks, 0u);
  EXPECT_LE(use.committed_bytes, 256u * 1024) << "pages kept after their frames ended";
  ASSERT_GT(with, 0);
  // The frames that went held kEach × 640 bytes; at least half of that must be given back.
  EXPECT_GE(with - after, static_cast<long>(kEach * 640 / 2))
      << "resident " << with << " bytes with the short-lived frames, " << after << " after";
  EXPECT_EQ(stay.size(), kEach);
}
#endif

}  // namespace
}  // namespace ringpoll
