// Percentiles and window deltas over Log2Histogram (pure math, no root).
#include <gtest/gtest.h>

#include <vector>

#include "common/histogram.h"

namespace fairwatch::agent {
namespace {

TEST(Log2Quantile, EmptyHistogramIsZero) {
  EXPECT_EQ(Log2Quantile(std::vector<uint64_t>{}, 0.99), 0);
  EXPECT_EQ(Log2Quantile(std::vector<uint64_t>(30, 0), 0.5), 0);
}

TEST(Log2Quantile, SingleBucketInterpolatesInsideItsRange) {
  std::vector<uint64_t> b(20, 0);
  b[10] = 100;  // [1024, 2048)
  EXPECT_DOUBLE_EQ(Log2Quantile(b, 0.5), 1024 + 1024 * 0.5);
  EXPECT_DOUBLE_EQ(Log2Quantile(b, 1.0), 2048);
  EXPECT_DOUBLE_EQ(Log2Quantile(b, 0.01), 1024 + 1024 * 0.01);
}

TEST(Log2Quantile, P99FindsTheTailBucket) {
  std::vector<uint64_t> b(30, 0);
  b[12] = 980;  // ~4 us
  b[20] = 20;   // ~1 ms: the slowest 2 %
  const double p50 = Log2Quantile(b, 0.5);
  const double p99 = Log2Quantile(b, 0.99);
  EXPECT_GE(p50, 4096);
  EXPECT_LT(p50, 8192);
  EXPECT_GE(p99, 1 << 20);
  EXPECT_LT(p99, 1 << 21);
  // Rank 990 is the 10th of 20 in bucket 20: halfway through it.
  EXPECT_DOUBLE_EQ(p99, (1 << 20) + (1 << 20) * 0.5);
}

TEST(Log2Quantile, QuantileIsClampedAndMonotonic) {
  std::vector<uint64_t> b{3, 0, 5, 0, 7, 1};
  double last = -1;
  for (int step = -10; step <= 30; ++step) {
    const double q = step * 0.05;
    const double v = Log2Quantile(b, q);
    EXPECT_GE(v, last) << q;
    last = v;
  }
  EXPECT_DOUBLE_EQ(Log2Quantile(b, 2.0), Log2Quantile(b, 1.0));
  EXPECT_DOUBLE_EQ(Log2Quantile(b, 1.0), 64);  // top of bucket 5
  EXPECT_LE(Log2Quantile(b, 0.0), 2) << "bucket 0 is [0, 2)";
}

TEST(Log2Quantile, ProtoOverloadMatchesSpan) {
  v1::Log2Histogram h;
  for (uint64_t v : {0, 0, 4, 0, 9, 2}) h.add_buckets(v);
  std::vector<uint64_t> b{0, 0, 4, 0, 9, 2};
  EXPECT_DOUBLE_EQ(Log2Quantile(h, 0.9), Log2Quantile(b, 0.9));
}

TEST(Log2Delta, WindowIsPerBucketDifference) {
  std::vector<uint64_t> before{1, 2, 3};
  std::vector<uint64_t> after{1, 5, 3, 4};  // a longer histogram gained a bucket
  EXPECT_EQ(Log2Delta(after, before), (std::vector<uint64_t>{0, 3, 0, 4}));
}

TEST(Log2Delta, DecreasedBucketMeansResetAndTakesLaterCount) {
  std::vector<uint64_t> before{10, 10};
  std::vector<uint64_t> after{2, 12};
  EXPECT_EQ(Log2Delta(after, before), (std::vector<uint64_t>{2, 2}));
}

TEST(Log2Delta, ProtoOverloadKeepsLength) {
  v1::Log2Histogram a, b;
  for (uint64_t v : {5, 6, 7}) a.add_buckets(v);
  for (uint64_t v : {1, 1}) b.add_buckets(v);
  v1::Log2Histogram d = Log2Delta(a, b);
  ASSERT_EQ(d.buckets_size(), 3);
  EXPECT_EQ(d.buckets(0), 4u);
  EXPECT_EQ(d.buckets(2), 7u);
  EXPECT_EQ(Log2Count(std::vector<uint64_t>(d.buckets().begin(), d.buckets().end())), 16u);
}

}  // namespace
}  // namespace fairwatch::agent
