// The output columns whose tap falls inside the input row, for the row kernels (depthwise,
// im2col): bounds once per row instead of a test per element.
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastconv::cpu {

// Output columns q in [lo, hi) read input column q * stride + offset inside [0, size).
struct ColumnRange {
  int64_t lo, hi;
};

inline ColumnRange valid_columns(int64_t offset, int64_t stride, int64_t size, int64_t Q) {
  const int64_t lo = offset >= 0 ? 0 : std::min(Q, (-offset + stride - 1) / stride);
  const int64_t last = size - 1 - offset;  // q * stride <= last
  const int64_t hi = last < 0 ? 0 : std::min(Q, last / stride + 1);
  return {lo, std::max(lo, hi)};
}

}  // namespace fastconv::cpu
