// RoIAlign on CUDA, torchvision's definition through the same geometry helpers as the CPU
// (common/roi_math.h). Device code only; the launcher is roi_align.cu.
//
// Forward: one thread per output element, visiting only the samples that can land on the
// image; on NCHW input a thread's taps are in its own plane, on channels_last input (the
// _nhwc kernel) a warp's 32 threads take 32 channels of one bin, so each tap is one
// coalesced read, and a block stages its outputs in shared memory to write them as runs.
// Backward, three ways:
//   atomic: one thread per output element adding into the input gradient with atomics;
//   gather (deterministic, the default under torch.use_deterministic_algorithms(True)): one
//     thread per input-gradient pixel and 8 channels, summing what each box of its image
//     sends it, boxes in index order, then bins and samples in order: a fixed order per
//     element, no atomics, every pixel in parallel;
//   planes (deterministic, the simple one kept beside it): one thread per (image, channel)
//     plane walking the RoIs in order.
#pragma once

#include "common/acc_type.h"
#include "common/roi_math.h"
#include "common/roi_ops.h"
#include "cuda/common/launch.cuh"
#include "cuda/roi/roi_loads.cuh"

#include <cfloat>
#include <limits>

namespace fastconv::cuda::align {

using roi_loads::Bin;
using roi_loads::bin_of;
using roi_loads::Box;
using roi_loads::load;
using roi_loads::load_box;
using roi_loads::Shape;
using Nhwc = roi::NhwcForwardConfig;
using Gather = roi::GatherBackwardConfig;

// Sample i of a bin starting at base along one axis: the one expression the forward and
// the gather backward both use, so that they agree on every sample to the bit.
template <typename T>
FASTCONV_DEVICE T sample_at(T base, int64_t i, T bin, double grid) {
  return base + T(float(i) + .5f) * bin / T(grid);
}

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
    if (!bilinear_axis(sample_at(base_y, iy, g.bin_h, g.grid_h), s.H, &y)) continue;
    for (int64_t ix = x_lo; ix < x_hi; ++ix) {
      BilinearAxis<T> x;
      if (!bilinear_axis(sample_at(base_x, ix, g.bin_w, g.grid_w), s.W, &x)) continue;
      visit(y, x);
    }
  }
}

// The average of bin (ph, pw)'s samples over one channel of an image whose pixel (h, w) is
// element (h * W + w) * pixel_stride of `plane` (1: an NCHW plane; C: channels_last).
template <typename scalar_t, typename acc_t>
FASTCONV_DEVICE acc_t average_bin(gptr<const scalar_t> plane, int64_t pixel_stride,
                                  const RoiAlignGeometry<acc_t>& g, int64_t ph, int64_t pw, const Shape& s) {
  acc_t sum = 0;
  for_each_sample(g, ph, pw, s, [&](const BilinearAxis<acc_t>& y, const BilinearAxis<acc_t>& x) {
    sum += y.low_weight * x.low_weight * load<acc_t>(plane, (y.low * s.W + x.low) * pixel_stride) +
           y.low_weight * x.high_weight * load<acc_t>(plane, (y.low * s.W + x.high) * pixel_stride) +
           y.high_weight * x.low_weight * load<acc_t>(plane, (y.high * s.W + x.low) * pixel_stride) +
           y.high_weight * x.high_weight * load<acc_t>(plane, (y.high * s.W + x.high) * pixel_stride);
  });
  return sum / g.count;
}

template <typename scalar_t, typename acc_t>
FASTCONV_GLOBAL void forward_kernel(gptr<const scalar_t> input, gptr<const acc_t> rois,
                                    gptr<scalar_t> out, Shape s, RoiArgs a) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  FASTCONV_GRID_STRIDE_LOOP(i, s.K * s.C * bins) {
    const auto [k, c, ph, pw] = bin_of(i, s);
    const Box<acc_t> roi = load_box(rois, k);
    const auto g = roi_align_geometry<acc_t>(roi.v, acc_t(a.spatial_scale), s.pooled_h, s.pooled_w,
                                             a.sampling_ratio, a.aligned);
    if (!g.valid) {
      out[i] = scalar_t(std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    const gptr<const scalar_t> plane = input + (int64_t(roi.v[0]) * s.C + c) * s.H * s.W;
    out[i] = scalar_t(average_bin<scalar_t, acc_t>(plane, 1, g, ph, pw, s));
  }
}

// The FPN pooler in one launch: forward_kernel with each box's feature map, size and scale
// looked up from its level.
template <typename scalar_t>
struct LevelViews {
  gptr<const scalar_t> data[kMaxRoiLevels];
  int64_t H[kMaxRoiLevels], W[kMaxRoiLevels];
  double scale[kMaxRoiLevels];
};

template <typename scalar_t, typename acc_t>
FASTCONV_GLOBAL void forward_multilevel_kernel(LevelViews<scalar_t> levels, gptr<const int64_t> level_of,
                                               gptr<const acc_t> rois, gptr<scalar_t> out, Shape s,
                                               RoiArgs a) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  FASTCONV_GRID_STRIDE_LOOP(i, s.K * s.C * bins) {
    const auto [k, c, ph, pw] = bin_of(i, s);
    const int64_t l = level_of[k];
    // Picked with constant indices: a run-time index into a kernel parameter would copy the
    // whole table to local memory.
    gptr<const scalar_t> data = levels.data[0];
    Shape sl = s;
    sl.H = levels.H[0], sl.W = levels.W[0];
    double scale = levels.scale[0];
#pragma unroll
    for (int j = 1; j < kMaxRoiLevels; ++j)
      if (l == j) data = levels.data[j], sl.H = levels.H[j], sl.W = levels.W[j], scale = levels.scale[j];
    const Box<acc_t> roi = load_box(rois, k);
    const auto g = roi_align_geometry<acc_t>(roi.v, acc_t(scale), s.pooled_h, s.pooled_w,
                                             a.sampling_ratio, a.aligned);
    if (!g.valid) {
      out[i] = scalar_t(std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    const gptr<const scalar_t> plane = data + (int64_t(roi.v[0]) * s.C + c) * sl.H * sl.W;
    out[i] = scalar_t(average_bin<scalar_t, acc_t>(plane, 1, g, ph, pw, sl));
  }
}

// Channels-last forward. A block takes one box and 32 channels: thread (channel lane,
// bin lane) = (tid % 32, tid / 32) computes bins bin lane, +8, ... of its channel (64 bins at
// a time) into a shared tile, one channel's bins every `stride` words; the tile then goes out
// as one contiguous run, since out[k, c0:c0+32, :, :] is contiguous. stride is the chunk's
// bin count made odd: the 32 lanes' writes land in 32 banks, and the reads run straight
// through the tile (one word of padding a channel where the count is even).
template <typename scalar_t, typename acc_t>
FASTCONV_GLOBAL void forward_nhwc_kernel(gptr<const scalar_t> input, gptr<const acc_t> rois,
                                         gptr<scalar_t> out, Shape s, RoiArgs a) {
  FASTCONV_SHARED(acc_t, staged, Nhwc::kStagedWords);
  const int tid = int(thread_index().x), lane_c = tid % Nhwc::kChannels, lane_b = tid / Nhwc::kChannels;
  const int64_t bins = s.pooled_h * s.pooled_w;
  const int64_t chunks = (s.C + Nhwc::kChannels - 1) / Nhwc::kChannels;
  for (int64_t block = block_index().x; block < s.K * chunks; block += grid_size().x) {
    const int64_t k = block / chunks, c0 = (block % chunks) * Nhwc::kChannels, c = c0 + lane_c;
    const int64_t channels = s.C - c0 < Nhwc::kChannels ? s.C - c0 : Nhwc::kChannels;
    const Box<acc_t> roi = load_box(rois, k);
    const auto g = roi_align_geometry<acc_t>(roi.v, acc_t(a.spatial_scale), s.pooled_h, s.pooled_w,
                                             a.sampling_ratio, a.aligned);
    // [H][W][C] of the box's image, from this thread's channel.
    const gptr<const scalar_t> image = input + (int64_t(roi.v[0]) * s.H * s.W * s.C + (c < s.C ? c : 0));
    for (int64_t b0 = 0; b0 < bins; b0 += Nhwc::kBinChunk) {
      const int64_t count = bins - b0 < Nhwc::kBinChunk ? bins - b0 : Nhwc::kBinChunk;
      const int stride = int(count) | 1;
      for (int64_t bl = lane_b; bl < count; bl += Nhwc::kBinLanes) {
        acc_t v = acc_t(std::numeric_limits<float>::quiet_NaN());
        if (g.valid && c < s.C) {
          const int64_t b = b0 + bl;
          v = average_bin<scalar_t, acc_t>(image, s.C, g, b / s.pooled_w, b % s.pooled_w, s);
        }
        staged[lane_c * stride + int(bl)] = v;
      }
      sync_threads();
      const gptr<scalar_t> run = out + ((k * s.C + c0) * bins + b0);
      for (int64_t t = tid; t < channels * count; t += Nhwc::kThreads) {
        const acc_t v = staged[int(t / count) * stride + int(t % count)];
        run[(t / count) * bins + t % count] = scalar_t(v);
      }
      sync_threads();  // the tile is refilled next
    }
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
    const auto [k, c, ph, pw] = bin_of(i, s);
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

// The gather backward's box table, one row per box in image order (stable: boxes of an image
// keep their index order): (k, first row, last row, first column, last column) of the input
// pixels box k can send gradient to, a little wider than exact; an empty range (first > last)
// for an invalid box or one off the image.

template <typename acc_t>
FASTCONV_GLOBAL void box_table_kernel(gptr<const acc_t> rois, gptr<const int64_t> order,
                                      gptr<int64_t> table, Shape s, RoiArgs a) {
  FASTCONV_GRID_STRIDE_LOOP(j, s.K) {
    const int64_t k = order[j];
    const Box<acc_t> roi = load_box(rois, k);
    const auto g = roi_align_geometry<acc_t>(roi.v, acc_t(a.spatial_scale), s.pooled_h, s.pooled_w,
                                             a.sampling_ratio, a.aligned);
    // Samples lie between start and start + pooled * bin; a tap reaches floor(y) and the row
    // after it, clamped to the image. One pixel of slack on each side covers rounding.
    auto range = [](double start, double bin, int64_t pooled, int64_t size, int64_t* first, int64_t* last) {
      const double end = start + double(pooled) * bin;
      const double lo = std::floor(start < end ? start : end) - 1, hi = std::floor(start < end ? end : start) + 2;
      *first = lo > 0 ? (lo < double(size) ? int64_t(lo) : size) : 0;
      *last = hi < double(size - 1) ? (hi > -1 ? int64_t(hi) : -1) : size - 1;
    };
    int64_t y0 = 1, y1 = 0, x0 = 1, x1 = 0;
    if (g.valid) {
      range(double(g.start_h), double(g.bin_h), s.pooled_h, s.H, &y0, &y1);
      range(double(g.start_w), double(g.bin_w), s.pooled_w, s.W, &x0, &x1);
    }
    const int64_t row[Gather::kTableColumns] = {k, y0, y1, x0, x1};
    for (int e = 0; e < Gather::kTableColumns; ++e) table[j * Gather::kTableColumns + e] = row[e];
  }
}

// Along one axis of `size` pixels: whether a sample at `coordinate` sends anything to pixel
// p, and with what weight (the sum of its two taps' weights that land on p; both do where
// the sample is clamped to the last pixel).
template <typename acc_t>
FASTCONV_DEVICE bool share_of_taps(acc_t coordinate, int64_t size, int64_t p, acc_t* weight) {
  BilinearAxis<acc_t> axis;
  if (!bilinear_axis(coordinate, size, &axis) || (axis.low != p && axis.high != p)) return false;
  *weight = (axis.low == p ? axis.low_weight : acc_t(0)) + (axis.high == p ? axis.high_weight : acc_t(0));
  return true;
}

// grid (pixel blocks, channel groups of 8, image). starts[n] .. starts[n + 1]: image n's rows
// of the table.
template <typename acc_t>
FASTCONV_GLOBAL void backward_gather_kernel(gptr<const acc_t> grad, gptr<const acc_t> rois,
                                            gptr<const int64_t> table, gptr<const int64_t> starts,
                                            gptr<acc_t> grad_input, Shape s, RoiArgs a) {
  const int64_t pixels = s.H * s.W, bins = s.pooled_h * s.pooled_w;
  const int64_t pixel = int64_t(block_index().x) * block_size().x + thread_index().x;
  const int64_t c0 = int64_t(block_index().y) * Gather::kChannels, n = block_index().z;
  if (pixel >= pixels) return;  // no barrier follows
  const int64_t h = pixel / s.W, w = pixel % s.W;
  const int64_t channels = s.C - c0 < Gather::kChannels ? s.C - c0 : Gather::kChannels;
  acc_t sum[Gather::kChannels];
  for (int cc = 0; cc < Gather::kChannels; ++cc) sum[cc] = 0;
  // The rows and columns whose taps can reach this pixel: [h - 1, h + 1], [w - 1, w + 1].
  const double y_lo = double(h - 1), y_hi = double(h + 1), x_lo = double(w - 1), x_hi = double(w + 1);
  const int64_t end = starts[n + 1];
  for (int64_t j = starts[n]; j < end; ++j) {
    const int64_t row_first = table[j * Gather::kTableColumns + 1], row_last = table[j * Gather::kTableColumns + 2];
    if (h < row_first || h > row_last) continue;
    const int64_t col_first = table[j * Gather::kTableColumns + 3], col_last = table[j * Gather::kTableColumns + 4];
    if (w < col_first || w > col_last) continue;
    const int64_t k = table[j * Gather::kTableColumns];
    const Box<acc_t> roi = load_box(rois, k);
    const auto g = roi_align_geometry<acc_t>(roi.v, acc_t(a.spatial_scale), s.pooled_h, s.pooled_w,
                                             a.sampling_ratio, a.aligned);
    const gptr<const acc_t> box_grad = grad + (k * s.C + c0) * bins;
    int64_t ph_lo, ph_hi, pw_lo, pw_hi;
    roi_bin_window(double(g.start_h), double(g.bin_h), s.pooled_h, y_lo, y_hi, &ph_lo, &ph_hi);
    roi_bin_window(double(g.start_w), double(g.bin_w), s.pooled_w, x_lo, x_hi, &pw_lo, &pw_hi);
    for (int64_t ph = ph_lo; ph < ph_hi; ++ph) {
      const acc_t base_y = g.start_h + acc_t(ph) * g.bin_h;
      int64_t iy_lo, iy_hi;
      roi_sample_window(double(base_y), double(g.bin_h), g.grid_h, y_lo, y_hi, &iy_lo, &iy_hi);
      for (int64_t iy = iy_lo; iy < iy_hi; ++iy) {
        // The forward's sample, and this pixel's share of its taps.
        acc_t wy;
        if (!share_of_taps(sample_at(base_y, iy, g.bin_h, g.grid_h), s.H, h, &wy)) continue;
        for (int64_t pw = pw_lo; pw < pw_hi; ++pw) {
          const acc_t base_x = g.start_w + acc_t(pw) * g.bin_w;
          int64_t ix_lo, ix_hi;
          roi_sample_window(double(base_x), double(g.bin_w), g.grid_w, x_lo, x_hi, &ix_lo, &ix_hi);
          for (int64_t ix = ix_lo; ix < ix_hi; ++ix) {
            acc_t wx;
            if (!share_of_taps(sample_at(base_x, ix, g.bin_w, g.grid_w), s.W, w, &wx)) continue;
            const acc_t weight = wy * wx;
            const int64_t bin = ph * s.pooled_w + pw;
            for (int cc = 0; cc < Gather::kChannels; ++cc)
              if (cc < channels) sum[cc] += load<acc_t>(box_grad, cc * bins + bin) / g.count * weight;
          }
        }
      }
    }
  }
  // grad_input is zeroed and this thread alone owns these elements.
  for (int cc = 0; cc < Gather::kChannels; ++cc)
    if (cc < channels) grad_input[(n * s.C + c0 + cc) * pixels + pixel] = sum[cc];
}

}  // namespace fastconv::cuda::align
