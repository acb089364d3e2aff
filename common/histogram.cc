#include "common/histogram.h"

#include <algorithm>
#include <cmath>

namespace fairwatch {

uint64_t Log2Count(absl::Span<const uint64_t> buckets) {
  uint64_t total = 0;
  for (uint64_t b : buckets) total += b;
  return total;
}

double Log2Quantile(absl::Span<const uint64_t> buckets, double quantile) {
  const uint64_t total = Log2Count(buckets);
  if (total == 0) return 0;
  quantile = std::clamp(quantile, 0.0, 1.0);
  // Rank of the wanted sample among `total`, 1-based; at least the first.
  const double rank = std::max(quantile * static_cast<double>(total), 1.0);
  double seen = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (buckets[i] == 0) continue;
    const double count = static_cast<double>(buckets[i]);
    if (seen + count >= rank) {
      const double lower = i == 0 ? 0.0 : std::ldexp(1.0, static_cast<int>(i));
      const double upper = std::ldexp(1.0, static_cast<int>(i) + 1);
      return lower + (upper - lower) * (rank - seen) / count;
    }
    seen += count;
  }
  return std::ldexp(1.0, static_cast<int>(buckets.size()));  // not reached: rank <= total
}

double Log2Quantile(const v1::Log2Histogram& hist, double quantile) {
  return Log2Quantile(absl::MakeConstSpan(hist.buckets().data(), hist.buckets_size()), quantile);
}

std::vector<uint64_t> Log2Delta(absl::Span<const uint64_t> later,
                                absl::Span<const uint64_t> earlier) {
  std::vector<uint64_t> out(later.size());
  for (size_t i = 0; i < later.size(); ++i) {
    const uint64_t before = i < earlier.size() ? earlier[i] : 0;
    out[i] = later[i] >= before ? later[i] - before : later[i];
  }
  return out;
}

v1::Log2Histogram Log2Delta(const v1::Log2Histogram& later, const v1::Log2Histogram& earlier) {
  std::vector<uint64_t> delta =
      Log2Delta(absl::MakeConstSpan(later.buckets().data(), later.buckets_size()),
                absl::MakeConstSpan(earlier.buckets().data(), earlier.buckets_size()));
  v1::Log2Histogram out;
  out.mutable_buckets()->Add(delta.begin(), delta.end());
  return out;
}

void AddHistogram(const v1::Log2Histogram& h, std::vector<uint64_t>* sum) {
  if (sum->size() < static_cast<size_t>(h.buckets_size())) sum->resize(h.buckets_size());
  for (int i = 0; i < h.buckets_size(); ++i) (*sum)[i] += h.buckets(i);
}

}  // namespace fairwatch
