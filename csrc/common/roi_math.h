// RoIAlign and RoIPool geometry, shared by the CPU and CUDA kernels. The arithmetic follows
// torchvision's kernels step for step (same types, same order), so results match them.
//
// Unlike torchvision, nothing here can overflow or run unbounded on absurd boxes: sample
// counts are doubles, and only the samples that can land inside [-1, size] (all others
// contribute zero) are ever visited, so a box 1e7 pixels wide costs no more than the image.
// A box with a non-finite coordinate or size (after scaling, in the input's precision) is
// marked invalid: its output is NaN and it contributes no gradient.
#pragma once

#include "common/macros.h"

#include <cmath>
#include <cstdint>

namespace fastconv {

template <typename T>
struct RoiAlignGeometry {
  T start_h, start_w;  // top-left corner in input pixels
  T bin_h, bin_w;      // size of one output bin
  double grid_h, grid_w;  // samples per bin along each axis
  T count;             // divisor of a bin's sum
  bool valid;
};

template <typename T>
FASTCONV_HD RoiAlignGeometry<T> roi_align_geometry(const T* roi, T spatial_scale,
                                                   int64_t pooled_height, int64_t pooled_width,
                                                   int64_t sampling_ratio, bool aligned) {
  RoiAlignGeometry<T> g;
  const T offset = aligned ? T(0.5) : T(0.0);
  g.start_w = roi[1] * spatial_scale - offset;
  g.start_h = roi[2] * spatial_scale - offset;
  const T end_w = roi[3] * spatial_scale - offset;
  const T end_h = roi[4] * spatial_scale - offset;
  T roi_width = end_w - g.start_w;
  T roi_height = end_h - g.start_h;
  g.valid = std::isfinite(g.start_w) && std::isfinite(g.start_h) && std::isfinite(roi_width) &&
            std::isfinite(roi_height);
  if (!aligned) {  // torchvision's legacy behaviour: boxes are at least one pixel
    roi_width = roi_width > T(1) ? roi_width : T(1);
    roi_height = roi_height > T(1) ? roi_height : T(1);
  }
  g.bin_h = roi_height / T(pooled_height);
  g.bin_w = roi_width / T(pooled_width);
  g.grid_h = sampling_ratio > 0 ? double(sampling_ratio) : double(std::ceil(roi_height / T(pooled_height)));
  g.grid_w = sampling_ratio > 0 ? double(sampling_ratio) : double(std::ceil(roi_width / T(pooled_width)));
  const double n = g.grid_h * g.grid_w;
  g.count = T(n > 1.0 ? n : 1.0);
  if (!g.valid) g.grid_h = g.grid_w = 0;
  return g;
}

// Sample i (0 <= i < grid) of bin b sits at base + (i + 0.5) * bin / grid, base = start +
// b * bin. Returns in [lo, hi) every i whose sample can lie in [low, high] (a slightly wider
// set: callers apply torchvision's exact test to each).
FASTCONV_HD void roi_sample_window(double base, double bin, double grid, double low, double high,
                                   int64_t* lo, int64_t* hi) {
  *lo = *hi = 0;
  if (!(grid >= 1.0)) return;
  const double step = bin / grid;
  double first, last;
  if (step > 0) {
    first = (low - base) / step - 0.5;
    last = (high - base) / step - 0.5;
  } else if (step < 0) {
    first = (high - base) / step - 0.5;
    last = (low - base) / step - 0.5;
  } else {
    const bool inside = base >= low && base <= high;
    first = 0;
    last = inside ? grid - 1 : -1;
  }
  first = std::floor(first) - 1;
  last = std::ceil(last) + 1;
  first = first > 0 ? first : 0;
  last = last < grid - 1 ? last : grid - 1;
  if (last < first) return;
  *lo = int64_t(first);
  *hi = int64_t(last) + 1;
}

// The samples of a bin that can land on an image axis of `size` pixels, [-1, size].
FASTCONV_HD void roi_sample_range(double base, double bin, double grid, int64_t size,
                                  int64_t* lo, int64_t* hi) {
  roi_sample_window(base, bin, grid, -1.0, double(size), lo, hi);
}

// The bins [lo, hi) of an axis (`bins` of size `bin` from `start`) whose samples can lie in
// [low, high]: a slightly wider set, or every bin where `bin` is zero or not finite.
FASTCONV_HD void roi_bin_window(double start, double bin, int64_t bins, double low, double high,
                                int64_t* lo, int64_t* hi) {
  double first = 0, last = double(bins - 1);
  if (bin > 0) {
    first = std::floor((low - start) / bin) - 1;
    last = std::floor((high - start) / bin) + 1;
  } else if (bin < 0) {
    first = std::floor((high - start) / bin) - 1;
    last = std::floor((low - start) / bin) + 1;
  }
  first = first > 0 ? first : 0;
  last = last < double(bins - 1) ? last : double(bins - 1);
  if (!(last >= first)) {  // also false for NaN
    *lo = *hi = 0;
    return;
  }
  *lo = int64_t(first);
  *hi = int64_t(last) + 1;
}

// One axis of a bilinear sample: value = high_weight * v[low] + low_weight * v[high].
template <typename T>
struct BilinearAxis {
  int64_t low, high;
  T low_weight;   // torchvision's hy (or hx): the weight of index `low`
  T high_weight;  // torchvision's ly (or lx): the weight of index `high`
};

// False when the sample lies outside [-1, size] and contributes nothing.
template <typename T>
FASTCONV_HD bool bilinear_axis(T y, int64_t size, BilinearAxis<T>* out) {
  if (y < -1.0 || y > size) return false;
  if (y <= 0) y = 0;
  int64_t low = int64_t(y);
  int64_t high;
  if (low >= size - 1) {
    high = low = size - 1;
    y = T(low);
  } else {
    high = low + 1;
  }
  out->low = low;
  out->high = high;
  out->high_weight = y - T(low);
  out->low_weight = T(1.) - out->high_weight;
  return true;
}

// torchvision's roi_pool quantises box corners with round(); clamping first keeps absurd
// coordinates from overflowing the integer conversion (any value beyond the clamp lands
// outside every image all the same).
template <typename T>
FASTCONV_HD int64_t roi_pool_corner(T coordinate, T spatial_scale) {
  double v = std::round(double(coordinate * spatial_scale));
  const double limit = 4.0e15;
  v = v < -limit ? -limit : (v > limit ? limit : v);
  return int64_t(v);
}

// Pixel bounds [start, end) of RoIPool's output bin b along one axis, clamped to [0, size).
template <typename T>
FASTCONV_HD void roi_pool_bin(int64_t b, int64_t roi_start, T bin_size, int64_t size,
                              int64_t* start, int64_t* end) {
  const int64_t s = int64_t(std::floor(T(b) * bin_size)) + roi_start;
  const int64_t e = int64_t(std::ceil(T(b + 1) * bin_size)) + roi_start;
  *start = s < 0 ? 0 : (s > size ? size : s);
  *end = e < 0 ? 0 : (e > size ? size : e);
}

}  // namespace fastconv
