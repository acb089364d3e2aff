// Percentiles and windows over Log2Histogram (bucket i counts values in
// [2^i, 2^(i+1)), e.g. run-queue wait ns). Pure functions: the agent fills the
// histograms, the controller turns cumulative ones into per-window figures.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch {

// The value below which `quantile` (0..1, e.g. 0.99) of the counted samples
// fall, interpolating linearly inside the bucket that holds that rank (as
// Prometheus' histogram_quantile does). Bucket 0 is taken as [0, 2). 0 when the
// histogram is empty; quantile is clamped to [0, 1].
double Log2Quantile(absl::Span<const uint64_t> buckets, double quantile);
double Log2Quantile(const v1::Log2Histogram& hist, double quantile);

// Per-bucket later - earlier, for a window between two cumulative reports.
// A bucket that went down (counter reset, new epoch) yields later's count.
std::vector<uint64_t> Log2Delta(absl::Span<const uint64_t> later,
                                absl::Span<const uint64_t> earlier);
v1::Log2Histogram Log2Delta(const v1::Log2Histogram& later, const v1::Log2Histogram& earlier);

// Adds `h` into `sum` bucket by bucket, growing it as needed.
void AddHistogram(const v1::Log2Histogram& h, std::vector<uint64_t>* sum);

// Sum of all buckets.
uint64_t Log2Count(absl::Span<const uint64_t> buckets);

}  // namespace fairwatch
