#pragma once
// LatencyHistogram: a log-linear histogram of non-negative integer values (nanoseconds in
// ringpoll-load), in the manner of HdrHistogram.
//
// Layout. Values below kSub (128) have one bucket each (exact). Above, each power of two
// [2^m, 2^(m+1)) is cut into kSub equal sub-buckets of width 2^(m-7):
//
//   value range          bucket width   buckets
//   [0, 128)             1              128 (index = value)
//   [2^m, 2^(m+1)), m≥7  2^(m-7)        128 (index = (m-6)*128 + next 7 bits after the msb)
//
// A bucket is never wider than 1/128 of its smallest value, and a quantile is reported as
// the bucket's midpoint (clamped to the exact min and max seen), so a reported quantile is
// within 1/256 (< 0.4 %) of the exact sample at that rank. Quantile rank: the smallest
// sample x with at least ceil(q*n) samples <= x (nearest rank, 1-based).
//
// Recording is a shift, a count-leading-zeros and an increment: cheap enough for every
// request. Histograms of the same layout merge by adding counts (one per shard, merged
// after the run).
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace ringpoll::load {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 7;  // 2^7 sub-buckets per power of two: < 0.4 % error
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  // Power-of-two ranges above the exact part: msb from kSubBits up to 63.
  static constexpr int kBuckets = static_cast<int>((64 - kSubBits + 1) * kSub);

  static constexpr int bucket_of(uint64_t v) noexcept {
    if (v < kSub) return static_cast<int>(v);
    const int msb = 63 - std::countl_zero(v);
    const int shift = msb - kSubBits;
    return static_cast<int>((shift + 1) * kSub + ((v >> shift) & (kSub - 1)));
  }
  // Smallest value in bucket i, and the bucket's width.
  static constexpr uint64_t bucket_low(int i) noexcept {
    const uint64_t u = static_cast<uint64_t>(i);
    if (u < kSub) return u;
    const int shift = static_cast<int>(u / kSub) - 1;
    return (kSub + (u % kSub)) << shift;
  }
  static constexpr uint64_t bucket_width(int i) noexcept {
    const uint64_t u = static_cast<uint64_t>(i);
    return u < kSub ? 1 : uint64_t{1} << (u / kSub - 1);
  }

  void record(uint64_t v) noexcept {
    ++counts_[static_cast<size_t>(bucket_of(v))];
    ++count_;
    sum_ += static_cast<double>(v);
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
  }

  void merge(const LatencyHistogram& o) noexcept {
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    sum_ += o.sum_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
  }

  void reset() noexcept { *this = LatencyHistogram(); }

  uint64_t count() const noexcept { return count_; }
  uint64_t min() const noexcept { return count_ ? min_ : 0; }
  uint64_t max() const noexcept { return max_; }
  double mean() const noexcept { return count_ ? sum_ / static_cast<double>(count_) : 0.0; }

  // The value at quantile q in [0, 1]; 0 for an empty histogram.
  uint64_t quantile(double q) const noexcept {
    if (count_ == 0) return 0;
    q = std::clamp(q, 0.0, 1.0);
    uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[static_cast<size_t>(i)];
      if (seen >= rank) {
        const uint64_t mid = bucket_low(i) + bucket_width(i) / 2;
        return std::clamp(mid, min_, max_);
      }
    }
    return max_;
  }

  // Samples recorded at or above v (exact only at bucket boundaries; for tests and
  // reports that ask "how many requests saw the stall").
  uint64_t count_at_or_above(uint64_t v) const noexcept {
    uint64_t n = 0;
    for (int i = bucket_of(v); i < kBuckets; ++i) n += counts_[static_cast<size_t>(i)];
    return n;
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  double sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
};

}  // namespace ringpoll::load
