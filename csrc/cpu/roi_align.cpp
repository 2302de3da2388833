// RoIAlign on the CPU, torchvision's definition. For each RoI, the bilinear taps of every
// sample row (per output row) and sample column (per output column) are computed once and
// reused for all channels. Forward runs RoIs in parallel; backward runs RoIs in order and
// channels in parallel, so each input-gradient plane has one writer and a fixed summation
// order: deterministic, with no atomics.
#include "common/acc_type.h"
#include "common/roi_math.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/vector_clones.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>
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
  cpu::parallel_for(0, rois.size(0), 1, [&](int64_t begin, int64_t end) {
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
    cpu::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
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

// ---------------------------------------------------------------------------- channels last
//
// With channels innermost, one bilinear sample is four contiguous runs of C values, so the
// channel loop is a vectorisable multiply-add instead of four scalar gathers per channel.
// The per-box taps are the same as above and so is each channel's summation order.

// acc[c] += w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c], for c in [0, count).
// Cloned per instruction set (picked once at load time): the build has no -march flag.
template <typename scalar_t, typename acc_t>
FASTCONV_VECTOR_CLONES void add_sample(acc_t* __restrict acc, const scalar_t* __restrict p1,
                                       const scalar_t* __restrict p2,
                                       const scalar_t* __restrict p3,
                                       const scalar_t* __restrict p4, acc_t w1, acc_t w2, acc_t w3,
                                       acc_t w4, int64_t count) {
  for (int64_t c = 0; c < count; ++c)
    acc[c] += w1 * acc_t(p1[c]) + w2 * acc_t(p2[c]) + w3 * acc_t(p3[c]) + w4 * acc_t(p4[c]);
}

// p_j[c] += w_j * g[c] for the four taps of one sample (the transpose of add_sample).
template <typename acc_t>
FASTCONV_VECTOR_CLONES void scatter_sample(const acc_t* __restrict g, acc_t* p1, acc_t* p2,
                                           acc_t* p3, acc_t* p4, acc_t w1, acc_t w2, acc_t w3,
                                           acc_t w4, int64_t count) {
  // Taps may coincide (at the image's last row or column), so the four stores stay in order.
  for (int64_t c = 0; c < count; ++c) {
    const acc_t v = g[c];
    p1[c] += w1 * v;
    p2[c] += w2 * v;
    p3[c] += w3 * v;
    p4[c] += w4 * v;
  }
}

// Channels are taken in runs of kChannelRun (one AVX-512 vector of floats). A task owns whole
// runs: it lays its run out channels-last in a dense buffer of N*H*W*run elements (7 MB for
// Mask R-CNN's 2x200x272 level), then visits every box. Memory stays bounded by one buffer
// per thread, not a transposed copy of the whole input.
constexpr int64_t kChannelRun = 16;
constexpr int64_t kPixelTile = 64;  // pixels per step of the blocked (un)transposes

// run[(n, hw), c] = planes[n, c0 + c, hw] for c < count (planes: contiguous NCHW). Tiles of
// pixels keep the 16 read streams and the interleaved writes within a few cache lines.
template <typename scalar_t>
void gather_run(const scalar_t* planes, int64_t N, int64_t C, int64_t HW, int64_t c0,
                int64_t count, scalar_t* run) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t hw0 = 0; hw0 < HW; hw0 += kPixelTile) {
      const int64_t hw1 = std::min(HW, hw0 + kPixelTile);
      for (int64_t c = 0; c < count; ++c) {
        const scalar_t* plane = planes + (n * C + c0 + c) * HW;
        for (int64_t hw = hw0; hw < hw1; ++hw) run[(n * HW + hw) * count + c] = plane[hw];
      }
    }
}

// planes[n, c0 + c, hw] += run[(n, hw), c]: the inverse of gather_run, adding.
template <typename acc_t>
void scatter_run_add(const acc_t* run, int64_t N, int64_t C, int64_t HW, int64_t c0,
                     int64_t count, acc_t* planes) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t hw0 = 0; hw0 < HW; hw0 += kPixelTile) {
      const int64_t hw1 = std::min(HW, hw0 + kPixelTile);
      for (int64_t c = 0; c < count; ++c) {
        acc_t* plane = planes + (n * C + c0 + c) * HW;
        for (int64_t hw = hw0; hw < hw1; ++hw) plane[hw] += run[(n * HW + hw) * count + c];
      }
    }
}

// input: contiguous NCHW, or contiguous channels_last.
template <typename scalar_t>
void forward_channel_runs(const at::Tensor& input, int64_t N, int64_t C, int64_t H, int64_t W,
                          const at::Tensor& rois, at::Tensor& out, double scale, int64_t pooled_h,
                          int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  using acc_t = acc_type<scalar_t>;
  const bool in_place = !input.is_contiguous();  // channels_last memory: [N, H, W, C]
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  const acc_t* roi_data = rois.const_data_ptr<acc_t>();
  scalar_t* out_data = out.data_ptr<scalar_t>();
  // A channels_last input is read in place, where a pixel's channels share cache lines:
  // long runs (two per thread) use each fetched line fully. Gathering 16-channel runs out of
  // it instead measured 1.5x slower on Mask R-CNN's rows; from NCHW, gathering pays.
  const int64_t threads = at::get_num_threads();
  const int64_t run =
      in_place ? std::max(kChannelRun, (C / (2 * threads) + kChannelRun - 1) / kChannelRun * kChannelRun)
               : kChannelRun;
  const int64_t bins = pooled_h * pooled_w, runs = (C + run - 1) / run;
  cpu::parallel_for(0, runs, 1, [&](int64_t begin, int64_t end) {
    RoiTaps<acc_t> taps;
    std::vector<scalar_t> buffer;
    std::vector<acc_t> acc_run(run);
    acc_t* acc = acc_run.data();
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c0 = r * run, count = std::min(run, C - c0);
      const scalar_t* base = in + c0;
      int64_t pixel = C;  // elements from one pixel's run to the next
      if (!in_place) {
        buffer.resize(N * H * W * count);
        gather_run(in, N, C, H * W, c0, count, buffer.data());
        base = buffer.data();
        pixel = count;
      }
      for (int64_t k = 0; k < rois.size(0); ++k) {
        const acc_t* roi = roi_data + k * 5;
        const auto g = roi_align_geometry<acc_t>(roi, acc_t(scale), pooled_h, pooled_w,
                                                 sampling_ratio, aligned);
        scalar_t* o = out_data + (k * C + c0) * bins;
        if (!g.valid) {
          std::fill(o, o + count * bins, scalar_t(std::numeric_limits<float>::quiet_NaN()));
          continue;
        }
        taps.build(g, pooled_h, pooled_w, H, W);
        const scalar_t* image = base + int64_t(roi[0]) * H * W * pixel;
        for (int64_t ph = 0; ph < pooled_h; ++ph) {
          for (int64_t pw = 0; pw < pooled_w; ++pw) {
            std::fill(acc, acc + count, acc_t(0));
            for (int64_t iy = taps.y_begin[ph]; iy < taps.y_begin[ph + 1]; ++iy) {
              const auto& y = taps.ys[iy];
              const scalar_t* row_low = image + y.low * W * pixel;
              const scalar_t* row_high = image + y.high * W * pixel;
              for (int64_t ix = taps.x_begin[pw]; ix < taps.x_begin[pw + 1]; ++ix) {
                const auto& x = taps.xs[ix];
                add_sample<scalar_t, acc_t>(
                    acc, row_low + x.low * pixel, row_low + x.high * pixel,
                    row_high + x.low * pixel, row_high + x.high * pixel,
                    y.low_weight * x.low_weight, y.low_weight * x.high_weight,
                    y.high_weight * x.low_weight, y.high_weight * x.high_weight, count);
              }
            }
            scalar_t* bin_out = o + ph * pooled_w + pw;
            for (int64_t c = 0; c < count; ++c) bin_out[c * bins] = scalar_t(acc[c] / g.count);
          }
        }
      }
    }
  });
}

// grad: contiguous [K, C, bins] in acc_t; grad_input: zeroed contiguous NCHW in acc_t. A task
// owns runs of channels and visits every box in order: one writer per element, a fixed order.
template <typename acc_t>
void backward_channel_runs(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input,
                           double scale, int64_t pooled_h, int64_t pooled_w,
                           int64_t sampling_ratio, bool aligned) {
  const int64_t N = grad_input.size(0), C = grad_input.size(1), H = grad_input.size(2),
                W = grad_input.size(3);
  const acc_t* g_data = grad.const_data_ptr<acc_t>();
  const acc_t* roi_data = rois.const_data_ptr<acc_t>();
  acc_t* gi = grad_input.data_ptr<acc_t>();
  const int64_t bins = pooled_h * pooled_w, runs = (C + kChannelRun - 1) / kChannelRun;
  cpu::parallel_for(0, runs, 1, [&](int64_t begin, int64_t end) {
    RoiTaps<acc_t> taps;
    std::vector<acc_t> buffer;
    acc_t bin_grad[kChannelRun];
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c0 = r * kChannelRun, count = std::min(kChannelRun, C - c0);
      buffer.assign(N * H * W * count, acc_t(0));
      for (int64_t k = 0; k < rois.size(0); ++k) {
        const acc_t* roi = roi_data + k * 5;
        const auto g = roi_align_geometry<acc_t>(roi, acc_t(scale), pooled_h, pooled_w,
                                                 sampling_ratio, aligned);
        if (!g.valid) continue;
        taps.build(g, pooled_h, pooled_w, H, W);
        acc_t* image = buffer.data() + int64_t(roi[0]) * H * W * count;
        const acc_t* gk = g_data + (k * C + c0) * bins;
        for (int64_t ph = 0; ph < pooled_h; ++ph) {
          for (int64_t pw = 0; pw < pooled_w; ++pw) {
            for (int64_t c = 0; c < count; ++c) bin_grad[c] = gk[c * bins + ph * pooled_w + pw] / g.count;
            for (int64_t iy = taps.y_begin[ph]; iy < taps.y_begin[ph + 1]; ++iy) {
              const auto& y = taps.ys[iy];
              acc_t* row_low = image + y.low * W * count;
              acc_t* row_high = image + y.high * W * count;
              for (int64_t ix = taps.x_begin[pw]; ix < taps.x_begin[pw + 1]; ++ix) {
                const auto& x = taps.xs[ix];
                scatter_sample<acc_t>(bin_grad, row_low + x.low * count, row_low + x.high * count,
                                      row_high + x.low * count, row_high + x.high * count,
                                      y.low_weight * x.low_weight, y.low_weight * x.high_weight,
                                      y.high_weight * x.low_weight,
                                      y.high_weight * x.high_weight, count);
              }
            }
          }
        }
      }
      scatter_run_add(buffer.data(), N, C, H * W, c0, count, gi);
    }
  });
}

enum class RoiLayout { planes, channels_last };

// FASTCONV_ROI_LAYOUT=nchw|nhwc forces a layout (tests run both); otherwise channels_last
// inputs run channels last as they are, and NCHW inputs are laid out channels-last run by
// run when the boxes read enough for the copy (about five sample reads per input pixel) to
// pay.
RoiLayout choose_layout(const char* op, bool input_channels_last, int64_t rois, int64_t bins,
                        int64_t N, int64_t C, int64_t H, int64_t W) {
  const char* forced = std::getenv("FASTCONV_ROI_LAYOUT");
  if (forced != nullptr && *forced != '\0') {
    const std::string f(forced);
    TORCH_CHECK_VALUE(f == "nchw" || f == "nhwc", op,
                      ": FASTCONV_ROI_LAYOUT must be 'nchw' or 'nhwc', got '", f, "'");
    return f == "nhwc" ? RoiLayout::channels_last : RoiLayout::planes;
  }
  if (input_channels_last) return RoiLayout::channels_last;
  const bool two_runs = C >= 2 * kChannelRun;  // tasks own runs: fewer leaves a thread idle
  return two_runs && 5 * rois * bins >= N * H * W ? RoiLayout::channels_last : RoiLayout::planes;
}

}  // namespace

void roi_align_forward(const at::Tensor& input, const at::Tensor& rois, const RoiArgs& a,
                       at::Tensor& out) {
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const bool channels_last = !input.is_contiguous();  // the contract's other form
  const RoiLayout layout = choose_layout("fastconv::roi_align", channels_last, rois.size(0),
                                         a.pooled_height * a.pooled_width, N, C, H, W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align", [&] {
    if (layout == RoiLayout::planes) {
      forward_impl<scalar_t>(input.contiguous(), rois, out, a.spatial_scale, a.pooled_height,
                             a.pooled_width, a.sampling_ratio, a.aligned);
    } else {
      forward_channel_runs<scalar_t>(input, N, C, H, W, rois, out, a.spatial_scale,
                                     a.pooled_height, a.pooled_width, a.sampling_ratio,
                                     a.aligned);
    }
  });
}

void roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, const RoiArgs& a,
                        at::Tensor& grad_input) {
  const int64_t N = grad_input.size(0), C = grad_input.size(1), H = grad_input.size(2),
                W = grad_input.size(3);
  const int64_t bins = a.pooled_height * a.pooled_width;
  const RoiLayout layout =
      choose_layout("fastconv::roi_align_backward", false, rois.size(0), bins, N, C, H, W);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward", [&] {
    if (layout == RoiLayout::planes) {
      backward_impl<scalar_t>(grad, rois, grad_input, a.spatial_scale, a.pooled_height,
                              a.pooled_width, a.sampling_ratio, a.aligned);
    } else {
      backward_channel_runs<scalar_t>(grad, rois, grad_input, a.spatial_scale, a.pooled_height,
                                      a.pooled_width, a.sampling_ratio, a.aligned);
    }
  });
}

}  // namespace fastconv::cpu
