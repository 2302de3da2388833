// What both RoI kernel families share: the problem's shape and an output element's place in
// it, a box read once into registers, and an element read as its own type before it widens to
// the accumulation type (a half-type element cannot convert to float in one step through the
// emulator's checked pointer).
#pragma once

#include "cuda/common/launch.cuh"
#include "cuda/roi/config.h"

#include <cstdint>

namespace fastconv::cuda::roi_loads {

// K boxes pooled from an [N, C, H, W] input into [K, C, pooled_h, pooled_w].
struct Shape {
  int64_t K, C, H, W, pooled_h, pooled_w;
};

// Output element i of [K][C][pooled_h][pooled_w]: box k, channel c, bin (ph, pw).
struct Bin {
  int64_t k, c, ph, pw;
};

FASTCONV_DEVICE Bin bin_of(int64_t i, const Shape& s) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  return {i / (bins * s.C), (i / bins) % s.C, (i / s.pooled_w) % s.pooled_h, i % s.pooled_w};
}

// RoI k's five numbers (batch index, x1, y1, x2, y2), read once into registers.
template <typename acc_t>
struct Box {
  acc_t v[5];
};

template <typename acc_t>
FASTCONV_DEVICE Box<acc_t> load_box(gptr<const acc_t> rois, int64_t k) {
  Box<acc_t> b;
  for (int j = 0; j < 5; ++j) b.v[j] = rois[k * 5 + j];
  return b;
}

template <typename acc_t, typename scalar_t>
FASTCONV_DEVICE acc_t load(gptr<const scalar_t> p, int64_t i) {
  const scalar_t v = p[i];
  return acc_t(v);
}

}  // namespace fastconv::cuda::roi_loads
