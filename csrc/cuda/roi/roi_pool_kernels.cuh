// RoIPool (max) on CUDA, torchvision's definition. Forward: one thread per output element,
// recording the argmax. Backward: atomics into the input gradient; or, in deterministic mode,
// a segmented sum: the contributions sorted stably by destination element (on the device,
// by ATen), then one thread per destination adding its run in the original order; or the
// simple deterministic one kept beside it, one thread per (image, channel) plane walking the
// RoIs in order (FASTCONV_ROI_DETERMINISTIC=planes).
// Device code only; the launcher is roi_pool.cu.
#pragma once

#include "common/acc_type.h"
#include "common/roi_math.h"
#include "common/roi_ops.h"
#include "cuda/common/launch.cuh"
#include "cuda/roi/roi_loads.cuh"

#include <cfloat>
#include <limits>

namespace fastconv::cuda::pool {

using roi_loads::bin_of;
using roi_loads::Shape;

template <typename scalar_t, typename acc_t>
FASTCONV_GLOBAL void forward_kernel(gptr<const scalar_t> input, gptr<const acc_t> rois,
                                    gptr<scalar_t> out, gptr<int64_t> argmax, Shape s, acc_t scale) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  FASTCONV_GRID_STRIDE_LOOP(i, s.K * s.C * bins) {
    const auto [k, c, ph, pw] = bin_of(i, s);
    const roi_loads::Box<acc_t> box = roi_loads::load_box(rois, k);
    const acc_t* roi = box.v;
    bool finite = true;
    for (int j = 1; j < 5; ++j) finite = finite && isfinite(double(roi[j] * scale));
    if (!finite) {
      out[i] = scalar_t(std::numeric_limits<float>::quiet_NaN());
      argmax[i] = -1;
      continue;
    }
    const int64_t start_w = roi_pool_corner(roi[1], scale), start_h = roi_pool_corner(roi[2], scale);
    const int64_t end_w = roi_pool_corner(roi[3], scale), end_h = roi_pool_corner(roi[4], scale);
    const int64_t roi_h = end_h - start_h + 1, roi_w = end_w - start_w + 1;
    const acc_t bin_h = acc_t(roi_h > 1 ? roi_h : 1) / acc_t(s.pooled_h);
    const acc_t bin_w = acc_t(roi_w > 1 ? roi_w : 1) / acc_t(s.pooled_w);
    int64_t h0, h1, w0, w1;
    roi_pool_bin(ph, start_h, bin_h, s.H, &h0, &h1);
    roi_pool_bin(pw, start_w, bin_w, s.W, &w0, &w1);
    const bool empty = h1 <= h0 || w1 <= w0;
    const gptr<const scalar_t> plane = input + (int64_t(roi[0]) * s.C + c) * s.H * s.W;
    acc_t best = empty ? acc_t(0) : acc_t(-FLT_MAX);  // torchvision's starting value
    int64_t best_index = -1;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t w = w0; w < w1; ++w) {
        const scalar_t value = plane[h * s.W + w];
        const acc_t v = acc_t(value);
        if (v > best) {
          best = v;
          best_index = h * s.W + w;
        }
      }
    }
    out[i] = scalar_t(best);
    argmax[i] = best_index;
  }
}

template <typename acc_t>
FASTCONV_GLOBAL void backward_atomic_kernel(gptr<const acc_t> grad, gptr<const acc_t> rois,
                                            gptr<const int64_t> argmax, gptr<acc_t> grad_input,
                                            Shape s) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  FASTCONV_GRID_STRIDE_LOOP(i, s.K * s.C * bins) {
    const int64_t index = argmax[i];
    if (index < 0 || index >= s.H * s.W) continue;
    const auto [k, c, ph, pw] = bin_of(i, s);
    const acc_t batch = rois[k * 5], g = grad[i];
    atomic_add(grad_input + (int64_t(batch) * s.C + c) * s.H * s.W + index, g);
  }
}

template <typename acc_t>
FASTCONV_GLOBAL void backward_deterministic_kernel(gptr<const acc_t> grad, gptr<const acc_t> rois,
                                                   gptr<const int64_t> argmax,
                                                   gptr<acc_t> grad_input, int64_t N, Shape s) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  FASTCONV_GRID_STRIDE_LOOP(i, N * s.C) {
    const int64_t c = i % s.C;
    const int64_t n = i / s.C;
    const gptr<acc_t> plane = grad_input + i * s.H * s.W;
    for (int64_t k = 0; k < s.K; ++k) {
      const acc_t batch = rois[k * 5];
      if (int64_t(batch) != n) continue;
      const int64_t offset = (k * s.C + c) * bins;
      for (int64_t b = 0; b < bins; ++b) {
        const int64_t index = argmax[offset + b];
        const acc_t g = grad[offset + b];
        if (index >= 0 && index < s.H * s.W) plane[index] += g;
      }
    }
  }
}

// keys: each contribution's destination in grad_input (< 0: none), sorted stably; order: the
// contribution (flat index into grad) at each sorted position. The thread at the head of a
// run of equal keys sums the run in order: the order of the contributions' indices.
template <typename acc_t>
FASTCONV_GLOBAL void backward_segmented_kernel(gptr<const int64_t> keys, gptr<const int64_t> order,
                                               gptr<const acc_t> grad, int64_t count, gptr<acc_t> grad_input) {
  FASTCONV_GRID_STRIDE_LOOP(i, count) {
    const int64_t key = keys[i];
    if (key < 0) continue;
    if (i > 0) {
      const int64_t before = keys[i - 1];
      if (before == key) continue;  // not the head of its run
    }
    acc_t sum = 0;
    for (int64_t j = i; j < count; ++j) {
      const int64_t next = keys[j];
      if (next != key) break;
      const acc_t g = grad[order[j]];
      sum += g;
    }
    grad_input[key] = sum;  // zeroed, and this thread alone writes it
  }
}

}  // namespace fastconv::cuda::pool
