// RoIAlign on CUDA, torchvision's definition through the same geometry helpers as the CPU
// (common/roi_math.h). Forward: one thread per output element, visiting only the samples that
// can land on the image. Backward: one thread per output element adding into the input
// gradient with atomics, or, when torch.use_deterministic_algorithms(True) is set, one thread
// per (image, channel) plane walking the RoIs in order, so every sum has a fixed order.
// Device code only; the launcher is roi_align.cu.
#pragma once

#include "common/acc_type.h"
#include "common/roi_math.h"
#include "common/roi_ops.h"
#include "cuda/common/launch.cuh"
#include "cuda/roi/roi_loads.cuh"

#include <cfloat>
#include <limits>

namespace fastconv::cuda::align {

using roi_loads::Box;
using roi_loads::load;
using roi_loads::load_box;

struct Shape {
  int64_t K, C, H, W, pooled_h, pooled_w;
};

// Calls visit(y_tap, x_tap) for every sample of bin (ph, pw) that lands on the image.
template <typename T, typename Visit>
FASTCONV_DEVICE void for_each_sample(const RoiAlignGeometry<T>& g, int64_t ph, int64_t pw,
                                const Shape& s, Visit visit) {
  const T base_y = g.start_h + T(ph) * g.bin_h;
  const T base_x = g.start_w + T(pw) * g.bin_w;
  int64_t y_lo, y_hi, x_lo, x_hi;
  roi_sample_range(double(base_y), double(g.bin_h), g.grid_h, s.H, &y_lo, &y_hi);
  roi_sample_range(double(base_x), double(g.bin_w), g.grid_w, s.W, &x_lo, &x_hi);
  for (int64_t iy = y_lo; iy < y_hi; ++iy) {
    BilinearAxis<T> y;
    if (!bilinear_axis(base_y + T(float(iy) + .5f) * g.bin_h / T(g.grid_h), s.H, &y)) continue;
    for (int64_t ix = x_lo; ix < x_hi; ++ix) {
      BilinearAxis<T> x;
      if (!bilinear_axis(base_x + T(float(ix) + .5f) * g.bin_w / T(g.grid_w), s.W, &x)) continue;
      visit(y, x);
    }
  }
}

template <typename scalar_t, typename acc_t>
FASTCONV_GLOBAL void forward_kernel(gptr<const scalar_t> input, gptr<const acc_t> rois,
                                    gptr<scalar_t> out, Shape s, RoiArgs a) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  FASTCONV_GRID_STRIDE_LOOP(i, s.K * s.C * bins) {
    const int64_t pw = i % s.pooled_w;
    const int64_t ph = (i / s.pooled_w) % s.pooled_h;
    const int64_t c = (i / bins) % s.C;
    const int64_t k = i / (bins * s.C);
    const Box<acc_t> roi = load_box(rois, k);
    const auto g = roi_align_geometry<acc_t>(roi.v, acc_t(a.spatial_scale), s.pooled_h, s.pooled_w,
                                             a.sampling_ratio, a.aligned);
    if (!g.valid) {
      out[i] = scalar_t(std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    const gptr<const scalar_t> plane = input + (int64_t(roi.v[0]) * s.C + c) * s.H * s.W;
    acc_t sum = 0;
    for_each_sample(g, ph, pw, s, [&](const BilinearAxis<acc_t>& y, const BilinearAxis<acc_t>& x) {
      sum += y.low_weight * x.low_weight * load<acc_t>(plane, y.low * s.W + x.low) +
             y.low_weight * x.high_weight * load<acc_t>(plane, y.low * s.W + x.high) +
             y.high_weight * x.low_weight * load<acc_t>(plane, y.high * s.W + x.low) +
             y.high_weight * x.high_weight * load<acc_t>(plane, y.high * s.W + x.high);
    });
    out[i] = scalar_t(sum / g.count);
  }
}

template <typename acc_t>
FASTCONV_DEVICE void scatter(gptr<acc_t> plane, const Shape& s, const BilinearAxis<acc_t>& y,
                        const BilinearAxis<acc_t>& x, acc_t g, bool atomic) {
  const int64_t index[4] = {y.low * s.W + x.low, y.low * s.W + x.high, y.high * s.W + x.low,
                            y.high * s.W + x.high};
  const acc_t value[4] = {g * (y.low_weight * x.low_weight), g * (y.low_weight * x.high_weight),
                          g * (y.high_weight * x.low_weight), g * (y.high_weight * x.high_weight)};
  for (int j = 0; j < 4; ++j) {
    if (atomic) {
      atomic_add(plane + index[j], value[j]);
    } else {
      plane[index[j]] += value[j];
    }
  }
}

template <typename acc_t>
FASTCONV_GLOBAL void backward_atomic_kernel(gptr<const acc_t> grad, gptr<const acc_t> rois,
                                            gptr<acc_t> grad_input, Shape s, RoiArgs a) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  FASTCONV_GRID_STRIDE_LOOP(i, s.K * s.C * bins) {
    const int64_t pw = i % s.pooled_w;
    const int64_t ph = (i / s.pooled_w) % s.pooled_h;
    const int64_t c = (i / bins) % s.C;
    const int64_t k = i / (bins * s.C);
    const Box<acc_t> roi = load_box(rois, k);
    const auto g = roi_align_geometry<acc_t>(roi.v, acc_t(a.spatial_scale), s.pooled_h, s.pooled_w,
                                             a.sampling_ratio, a.aligned);
    if (!g.valid) continue;
    const gptr<acc_t> plane = grad_input + (int64_t(roi.v[0]) * s.C + c) * s.H * s.W;
    const acc_t bin_grad = load<acc_t>(grad, i) / g.count;
    for_each_sample(g, ph, pw, s, [&](const BilinearAxis<acc_t>& y, const BilinearAxis<acc_t>& x) {
      scatter(plane, s, y, x, bin_grad, /*atomic=*/true);
    });
  }
}

template <typename acc_t>
FASTCONV_GLOBAL void backward_deterministic_kernel(gptr<const acc_t> grad, gptr<const acc_t> rois,
                                                   gptr<acc_t> grad_input, int64_t N, Shape s,
                                                   RoiArgs a) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  FASTCONV_GRID_STRIDE_LOOP(i, N * s.C) {
    const int64_t c = i % s.C;
    const int64_t n = i / s.C;
    const gptr<acc_t> plane = grad_input + i * s.H * s.W;
    for (int64_t k = 0; k < s.K; ++k) {
      const Box<acc_t> roi = load_box(rois, k);
      if (int64_t(roi.v[0]) != n) continue;
      const auto g = roi_align_geometry<acc_t>(roi.v, acc_t(a.spatial_scale), s.pooled_h,
                                               s.pooled_w, a.sampling_ratio, a.aligned);
      if (!g.valid) continue;
      for (int64_t b = 0; b < bins; ++b) {
        const acc_t bin_grad = load<acc_t>(grad, (k * s.C + c) * bins + b) / g.count;
        for_each_sample(g, b / s.pooled_w, b % s.pooled_w, s,
                        [&](const BilinearAxis<acc_t>& y, const BilinearAxis<acc_t>& x) {
                          scatter(plane, s, y, x, bin_grad, /*atomic=*/false);
                        });
      }
    }
  }
}

}  // namespace fastconv::cuda::align
