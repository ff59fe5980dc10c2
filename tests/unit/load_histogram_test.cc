// ringpoll-load's latency histogram: the 1 % error bound against exact quantiles over
// many magnitudes, merging, and the edges (empty, exact small values, min/max).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "apps/load/histogram.h"

namespace ringpoll::load {
namespace {

constexpr double kQuantiles[] = {0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0};

// The exact nearest-rank quantile the histogram promises to approximate.
uint64_t exact_quantile(const std::vector<uint64_t>& sorted, double q) {
  const auto n = static_cast<uint64_t>(sorted.size());
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(n)));
  rank = std::clamp<uint64_t>(rank, 1, n);
  return sorted[rank - 1];
}

// Values spread log-uniformly from 1 ns to ~1000 s: every power of two gets samples.
std::vector<uint64_t> log_uniform_values(uint32_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> exp2(0.0, 40.0);
  std::vector<uint64_t> v(n);
  for (auto& x : v) x = static_cast<uint64_t>(std::exp2(exp2(rng)));
  return v;
}

TEST(LoadHistogram, QuantilesWithinOnePercentAcrossMagnitudes) {
  for (const uint32_t seed : {1u, 2u, 3u}) {
    std::vector<uint64_t> v = log_uniform_values(seed, 200'000);
    LatencyHistogram h;
    for (const uint64_t x : v) h.record(x);
    std::sort(v.begin(), v.end());
    ASSERT_EQ(h.count(), v.size());
    EXPECT_EQ(h.min(), v.front());
    EXPECT_EQ(h.max(), v.back());
    for (const double q : kQuantiles) {
      const double exact = static_cast<double>(exact_quantile(v, q));
      const double got = static_cast<double>(h.quantile(q));
      EXPECT_LE(std::fabs(got - exact), 0.01 * exact) << "seed " << seed << " q " << q;
    }
  }
}

TEST(LoadHistogram, EveryBucketBoundIsBelowOnePercent) {
  // Any value's bucket is narrower than 1 % of the value (so the midpoint is within 0.5 %).
  for (uint64_t v = 1; v < (uint64_t{1} << 62); v = v * 3 + 7) {
    const int b = LatencyHistogram::bucket_of(v);
    const uint64_t lo = LatencyHistogram::bucket_low(b);
    const uint64_t w = LatencyHistogram::bucket_width(b);
    ASSERT_LE(lo, v);
    ASSERT_LT(v - lo, w);
    ASSERT_LE(static_cast<double>(w), 0.01 * static_cast<double>(v) + 1.0) << v;
  }
  EXPECT_LT(LatencyHistogram::bucket_of(UINT64_MAX), LatencyHistogram::kBuckets);
}

TEST(LoadHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v = 0; v < 128; ++v) h.record(v);
  EXPECT_EQ(h.quantile(0.5), 63u);  // rank 64 of 0..127
  EXPECT_EQ(h.quantile(1.0), 127u);
  EXPECT_EQ(h.quantile(0.0), 0u);
  EXPECT_DOUBLE_EQ(h.mean(), 63.5);
}

TEST(LoadHistogram, EmptyReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.quantile(0.99), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(LoadHistogram, MergeEqualsRecordingEverythingInOne) {
  const std::vector<uint64_t> a = log_uniform_values(7, 50'000);
  const std::vector<uint64_t> b = log_uniform_values(8, 30'000);
  LatencyHistogram ha, hb, all;
  for (const uint64_t x : a) {
    ha.record(x);
    all.record(x);
  }
  for (const uint64_t x : b) {
    hb.record(x);
    all.record(x);
  }
  LatencyHistogram merged;
  merged.merge(ha);
  merged.merge(hb);
  EXPECT_EQ(merged.count(), all.count());
  EXPECT_EQ(merged.min(), all.min());
  EXPECT_EQ(merged.max(), all.max());
  EXPECT_DOUBLE_EQ(merged.mean(), all.mean());
  for (const double q : kQuantiles) EXPECT_EQ(merged.quantile(q), all.quantile(q)) << q;

  // And the merged quantiles keep the error bound against the union of the samples.
  std::vector<uint64_t> u = a;
  u.insert(u.end(), b.begin(), b.end());
  std::sort(u.begin(), u.end());
  for (const double q : kQuantiles) {
    const double exact = static_cast<double>(exact_quantile(u, q));
    EXPECT_LE(std::fabs(static_cast<double>(merged.quantile(q)) - exact), 0.01 * exact) << q;
  }
}

TEST(LoadHistogram, MergeIntoEmptyKeepsMinAndCountAbove) {
  LatencyHistogram h, e;
  h.record(1000);
  h.record(5'000'000);
  e.merge(h);
  EXPECT_EQ(e.min(), 1000u);
  EXPECT_EQ(e.max(), 5'000'000u);
  EXPECT_EQ(e.count_at_or_above(1'000'000), 1u);
  EXPECT_EQ(e.count_at_or_above(0), 2u);
}

}  // namespace
}  // namespace ringpoll::load
