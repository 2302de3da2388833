// RoIPool (max) on the CPU, torchvision's definition: box corners rounded to pixels, bins of
// roi_size / pooled pixels, the maximum of each bin (0 for an empty bin) and its index for the
// backward pass. Backward runs RoIs in order and channels in parallel: deterministic.
#include "common/acc_type.h"
#include "common/roi_math.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace fastconv::cpu {

namespace {

template <typename scalar_t>
void forward_impl(const at::Tensor& input, const at::Tensor& rois, at::Tensor& out,
                  at::Tensor& argmax, double scale, int64_t pooled_h, int64_t pooled_w) {
  using acc_t = acc_type<scalar_t>;
  const int64_t C = input.size(1), H = input.size(2), W = input.size(3);
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  const acc_t* roi_data = rois.const_data_ptr<acc_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  int64_t* am = argmax.data_ptr<int64_t>();
  const int64_t bins = pooled_h * pooled_w;
  cpu::parallel_for(0, rois.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const acc_t* roi = roi_data + k * 5;
      scalar_t* ok = o + k * C * bins;
      int64_t* ak = am + k * C * bins;
      bool finite = true;
      for (int i = 1; i < 5; ++i) finite = finite && std::isfinite(double(roi[i] * acc_t(scale)));
      if (!finite) {
        std::fill(ok, ok + C * bins, scalar_t(std::numeric_limits<float>::quiet_NaN()));
        std::fill(ak, ak + C * bins, int64_t(-1));
        continue;
      }
      const int64_t n = int64_t(roi[0]);
      const int64_t start_w = roi_pool_corner(roi[1], acc_t(scale));
      const int64_t start_h = roi_pool_corner(roi[2], acc_t(scale));
      const int64_t end_w = roi_pool_corner(roi[3], acc_t(scale));
      const int64_t end_h = roi_pool_corner(roi[4], acc_t(scale));
      const acc_t bin_h = acc_t(std::max<int64_t>(end_h - start_h + 1, 1)) / acc_t(pooled_h);
      const acc_t bin_w = acc_t(std::max<int64_t>(end_w - start_w + 1, 1)) / acc_t(pooled_w);
      for (int64_t ph = 0; ph < pooled_h; ++ph) {
        int64_t h0, h1;
        roi_pool_bin(ph, start_h, bin_h, H, &h0, &h1);
        for (int64_t pw = 0; pw < pooled_w; ++pw) {
          int64_t w0, w1;
          roi_pool_bin(pw, start_w, bin_w, W, &w0, &w1);
          const bool empty = h1 <= h0 || w1 <= w0;
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t* plane = in + (n * C + c) * H * W;
            // -FLT_MAX for every dtype, as torchvision starts from.
            acc_t best = empty ? acc_t(0) : acc_t(-std::numeric_limits<float>::max());
            int64_t best_index = -1;
            for (int64_t h = h0; h < h1; ++h) {
              for (int64_t w = w0; w < w1; ++w) {
                const acc_t v = acc_t(plane[h * W + w]);
                if (v > best) {
                  best = v;
                  best_index = h * W + w;
                }
              }
            }
            ok[(c * pooled_h + ph) * pooled_w + pw] = scalar_t(best);
            ak[(c * pooled_h + ph) * pooled_w + pw] = best_index;
          }
        }
      }
    }
  });
}

template <typename acc_t>
void backward_impl(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                   at::Tensor& grad_input) {
  const int64_t C = grad_input.size(1), plane_size = grad_input.size(2) * grad_input.size(3);
  const int64_t bins = grad.size(2) * grad.size(3);
  const acc_t* g = grad.const_data_ptr<acc_t>();
  const int64_t* am = argmax.const_data_ptr<int64_t>();
  const acc_t* roi_data = rois.const_data_ptr<acc_t>();
  acc_t* gi = grad_input.data_ptr<acc_t>();
  cpu::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = 0; k < rois.size(0); ++k) {
      const int64_t n = int64_t(roi_data[k * 5]);
      for (int64_t c = begin; c < end; ++c) {
        acc_t* plane = gi + (n * C + c) * plane_size;
        const int64_t offset = (k * C + c) * bins;
        for (int64_t b = 0; b < bins; ++b) {
          const int64_t index = am[offset + b];
          if (index >= 0 && index < plane_size) plane[index] += g[offset + b];
        }
      }
    }
  });
}

}  // namespace

void roi_pool_forward(const at::Tensor& input, const at::Tensor& rois, const RoiArgs& a,
                      at::Tensor& out, at::Tensor& argmax) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool", [&] {
    forward_impl<scalar_t>(input, rois, out, argmax, a.spatial_scale, a.pooled_height,
                           a.pooled_width);
  });
}

void roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                       at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_pool_backward",
                             [&] { backward_impl<scalar_t>(grad, rois, argmax, grad_input); });
}

}  // namespace fastconv::cpu
