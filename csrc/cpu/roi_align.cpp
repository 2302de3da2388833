// RoIAlign on the CPU, torchvision's definition. For each RoI, the bilinear taps of every
// sample row (per output row) and sample column (per output column) are computed once and
// reused for all channels. Forward runs RoIs in parallel; backward runs RoIs in order and
// channels in parallel, so each input-gradient plane has one writer and a fixed summation
// order: deterministic, with no atomics.
#include "common/roi_math.h"
#include "cpu/kernels.h"
#include "cpu/strided.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

namespace fastconv::cpu {

namespace {

// The bilinear taps of the samples of one RoI, grouped by output row (ys) and column (xs).
template <typename T>
struct RoiTaps {
  std::vector<BilinearAxis<T>> ys, xs;
  std::vector<int64_t> y_begin, x_begin;  // bin b's taps are [begin[b], begin[b + 1])

  void build(const RoiAlignGeometry<T>& g, int64_t pooled_h, int64_t pooled_w, int64_t H,
             int64_t W) {
    fill(ys, y_begin, g.start_h, g.bin_h, g.grid_h, pooled_h, H);
    fill(xs, x_begin, g.start_w, g.bin_w, g.grid_w, pooled_w, W);
  }

 private:
  static void fill(std::vector<BilinearAxis<T>>& taps, std::vector<int64_t>& begin, T start,
                   T bin, double grid, int64_t pooled, int64_t size) {
    taps.clear();
    begin.assign(pooled + 1, 0);
    for (int64_t b = 0; b < pooled; ++b) {
      begin[b] = int64_t(taps.size());
      const T base = start + T(b) * bin;
      int64_t lo, hi;
      roi_sample_range(double(base), double(bin), grid, size, &lo, &hi);
      for (int64_t i = lo; i < hi; ++i) {
        // torchvision: start + b * bin + (i + .5f) * bin / grid, in T.
        const T coordinate = base + T(float(i) + .5f) * bin / T(grid);
        BilinearAxis<T> axis;
        if (bilinear_axis(coordinate, size, &axis)) taps.push_back(axis);
      }
    }
    begin[pooled] = int64_t(taps.size());
  }
};

template <typename scalar_t>
void forward_impl(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out, double scale,
                  int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  using acc_t = acc_type<scalar_t>;
  const int64_t C = input.size(1), H = input.size(2), W = input.size(3);
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  const acc_t* roi_data = rois.const_data_ptr<acc_t>();
  scalar_t* out_data = out.data_ptr<scalar_t>();
  const int64_t bins = pooled_h * pooled_w;
  at::parallel_for(0, rois.size(0), 1, [&](int64_t begin, int64_t end) {
    RoiTaps<acc_t> taps;
    for (int64_t k = begin; k < end; ++k) {
      const acc_t* roi = roi_data + k * 5;
      const auto g = roi_align_geometry<acc_t>(roi, acc_t(scale), pooled_h, pooled_w,
                                               sampling_ratio, aligned);
      scalar_t* o = out_data + k * C * bins;
      if (!g.valid) {
        std::fill(o, o + C * bins, scalar_t(std::numeric_limits<float>::quiet_NaN()));
        continue;
      }
      taps.build(g, pooled_h, pooled_w, H, W);
      const int64_t n = int64_t(roi[0]);
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* plane = in + (n * C + c) * H * W;
        for (int64_t ph = 0; ph < pooled_h; ++ph) {
          for (int64_t pw = 0; pw < pooled_w; ++pw) {
            acc_t sum = 0;
            for (int64_t iy = taps.y_begin[ph]; iy < taps.y_begin[ph + 1]; ++iy) {
              const auto& y = taps.ys[iy];
              for (int64_t ix = taps.x_begin[pw]; ix < taps.x_begin[pw + 1]; ++ix) {
                const auto& x = taps.xs[ix];
                const acc_t w1 = y.low_weight * x.low_weight, w2 = y.low_weight * x.high_weight;
                const acc_t w3 = y.high_weight * x.low_weight, w4 = y.high_weight * x.high_weight;
                sum += w1 * acc_t(plane[y.low * W + x.low]) + w2 * acc_t(plane[y.low * W + x.high]) +
                       w3 * acc_t(plane[y.high * W + x.low]) + w4 * acc_t(plane[y.high * W + x.high]);
              }
            }
            o[(c * pooled_h + ph) * pooled_w + pw] = scalar_t(sum / g.count);
          }
        }
      }
    }
  });
}

template <typename acc_t>
void backward_impl(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input,
                   double scale, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                   bool aligned) {
  const int64_t C = grad_input.size(1), H = grad_input.size(2), W = grad_input.size(3);
  const acc_t* g_data = grad.const_data_ptr<acc_t>();
  const acc_t* roi_data = rois.const_data_ptr<acc_t>();
  acc_t* gi = grad_input.data_ptr<acc_t>();
  const int64_t bins = pooled_h * pooled_w;
  RoiTaps<acc_t> taps;
  for (int64_t k = 0; k < rois.size(0); ++k) {
    const acc_t* roi = roi_data + k * 5;
    const auto g = roi_align_geometry<acc_t>(roi, acc_t(scale), pooled_h, pooled_w,
                                             sampling_ratio, aligned);
    if (!g.valid) continue;
    taps.build(g, pooled_h, pooled_w, H, W);
    const int64_t n = int64_t(roi[0]);
    at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        acc_t* plane = gi + (n * C + c) * H * W;
        const acc_t* gk = g_data + (k * C + c) * bins;
        for (int64_t ph = 0; ph < pooled_h; ++ph) {
          for (int64_t pw = 0; pw < pooled_w; ++pw) {
            const acc_t bin_grad = gk[ph * pooled_w + pw] / g.count;
            for (int64_t iy = taps.y_begin[ph]; iy < taps.y_begin[ph + 1]; ++iy) {
              const auto& y = taps.ys[iy];
              for (int64_t ix = taps.x_begin[pw]; ix < taps.x_begin[pw + 1]; ++ix) {
                const auto& x = taps.xs[ix];
                plane[y.low * W + x.low] += bin_grad * (y.low_weight * x.low_weight);
                plane[y.low * W + x.high] += bin_grad * (y.low_weight * x.high_weight);
                plane[y.high * W + x.low] += bin_grad * (y.high_weight * x.low_weight);
                plane[y.high * W + x.high] += bin_grad * (y.high_weight * x.high_weight);
              }
            }
          }
        }
      }
    });
  }
}

}  // namespace

void roi_align_forward(const at::Tensor& input, const at::Tensor& rois, const RoiArgs& a,
                       at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align", [&] {
    forward_impl<scalar_t>(input, rois, out, a.spatial_scale, a.pooled_height, a.pooled_width,
                           a.sampling_ratio, a.aligned);
  });
}

void roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, const RoiArgs& a,
                        at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward", [&] {
    backward_impl<scalar_t>(grad, rois, grad_input, a.spatial_scale, a.pooled_height,
                            a.pooled_width, a.sampling_ratio, a.aligned);
  });
}

}  // namespace fastconv::cpu
