#include "common/histogram.h"

#include <algorithm>
#include <cmath>

namespace fairwatch {

std::vector<uint64_t> HistogramDelta(const v1::Log2Histogram& newer,
                                     const v1::Log2Histogram& older) {
  std::vector<uint64_t> delta(newer.buckets().begin(), newer.buckets().end());
  for (int i = 0; i < older.buckets_size() && i < newer.buckets_size(); ++i) {
    if (newer.buckets(i) >= older.buckets(i)) delta[i] = newer.buckets(i) - older.buckets(i);
  }
  return delta;
}

void AddHistogram(const v1::Log2Histogram& h, std::vector<uint64_t>* sum) {
  if (sum->size() < static_cast<size_t>(h.buckets_size())) sum->resize(h.buckets_size());
  for (int i = 0; i < h.buckets_size(); ++i) (*sum)[i] += h.buckets(i);
}

double Log2Quantile(absl::Span<const uint64_t> buckets, double q) {
  uint64_t total = 0;
  for (uint64_t b : buckets) total += b;
  if (total == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // Rank of the sample sought, 1-based.
  const double rank = std::max(1.0, std::ceil(q * static_cast<double>(total)));
  double seen = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (buckets[i] == 0) continue;
    const double before = seen;
    seen += static_cast<double>(buckets[i]);
    if (seen >= rank) {
      const double low = i == 0 ? 0.0 : std::ldexp(1.0, static_cast<int>(i));
      const double high = std::ldexp(1.0, static_cast<int>(i) + 1);
      const double within = (rank - before) / static_cast<double>(buckets[i]);
      return low + (high - low) * within;
    }
  }
  return std::ldexp(1.0, static_cast<int>(buckets.size()));
}

}  // namespace fairwatch
