// Log2 histograms as carried on the wire (fairwatch.v1.Log2Histogram): bucket
// i counts samples in [2^i, 2^(i+1)) ns, bucket 0 also holds 0.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "fairwatch/v1/types.pb.h"

namespace fairwatch {

// newer - older, bucket by bucket; a bucket that went backwards (counter
// restart) counts as newer's value.
std::vector<uint64_t> HistogramDelta(const v1::Log2Histogram& newer,
                                     const v1::Log2Histogram& older);

// Adds `h` into `sum`, growing it as needed.
void AddHistogram(const v1::Log2Histogram& h, std::vector<uint64_t>* sum);

// The q-quantile (0 < q <= 1) in ns, interpolated linearly inside the bucket
// that holds it. 0 when the histogram is empty.
double Log2Quantile(absl::Span<const uint64_t> buckets, double q);

}  // namespace fairwatch
