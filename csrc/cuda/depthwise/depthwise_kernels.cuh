// The depthwise convolution's CUDA kernels (device code only; the launcher is depthwise.cu).
// Depthwise: C/groups == 1, so output channel k reads input channel c = k / M, where
// M = K/groups is the channel multiplier, and dx channel c gathers from outputs c*M .. c*M+M-1.
// Filter w is [K, 1, R, S] through its strides (the nhwc kernels get it with k innermost in
// memory, so a warp's lanes read one tap of 32 channels as one row). Tiles and block shapes
// come from config.h.
//
// KSize is the filter size as a template constant (3, 5, 7: square filters, loops unrolled)
// or 0 (any R x S, read from the problem). fprop and dgrad add the bias in the accumulator
// type before the one rounding; dgrad gathers (no atomics); wgrad sums with a fixed tree.
// Every kernel is deterministic.
#pragma once

#include "common/acc_type.h"
#include "common/conv_problem.h"
#include "cuda/common/launch.cuh"
#include "cuda/depthwise/config.h"

namespace fastconv::cuda::depthwise {

FASTCONV_DEVICE int64_t floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

template <int KSize>
FASTCONV_DEVICE int64_t filter_rows(const ConvProblem& p) {
  return KSize > 0 ? KSize : p.R;
}
template <int KSize>
FASTCONV_DEVICE int64_t filter_cols(const ConvProblem& p) {
  return KSize > 0 ? KSize : p.S;
}

// The filter taps of channel k in registers, for a compile-time size (unused for KSize 0,
// whose taps are read where they are used).
template <typename scalar_t, int KSize>
struct Taps {
  acc_type<scalar_t> v[KSize > 0 ? KSize * KSize : 1];

  FASTCONV_DEVICE void load(const View4<const scalar_t>& w, int64_t k) {
    if constexpr (KSize > 0) {
      for (int r = 0; r < KSize; ++r)
        for (int s = 0; s < KSize; ++s) {
          const scalar_t wv = w(k, 0, r, s);
          v[r * KSize + s] = acc_type<scalar_t>(wv);
        }
    }
  }
  FASTCONV_DEVICE acc_type<scalar_t> at(const View4<const scalar_t>& w, int64_t k, int64_t r,
                                        int64_t s) const {
    if constexpr (KSize > 0) {
      return v[r * KSize + s];
    } else {
      const scalar_t wv = w(k, 0, r, s);
      return acc_type<scalar_t>(wv);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// channels_last: threads over channels.

// Item i: channel k fastest, then a group of kPixelsPerThread output columns, row, image.
// The CTAs per SM a fprop or dgrad instance's registers must allow (__launch_bounds__):
// kMinBlocksPerSM where it fits that many without spilling; float64, and the NCHW dgrad of
// 5x5 and 7x7 filters, spill there and are left to the compiler (1).
template <typename scalar_t, int KSize, bool kNchwDgrad>
constexpr int min_blocks() {
  return sizeof(scalar_t) > 4 || (kNchwDgrad && (KSize == 5 || KSize == 7)) ? 1 : kMinBlocksPerSM;
}
// An instance's launch bounds, for the kernel and for its launch (depthwise.cu). The float
// NCHW fprop of 7x7 filters keeps its 49 taps in registers and, since the fused epilogue
// (bias, residual, activation) came in, spilled 8 bytes at 3 blocks per SM (80 registers):
// it gets 2.
template <class Config, typename scalar_t, int KSize, bool kNchwDgrad>
constexpr KernelBounds launch_bounds() {
  constexpr bool nchw_fprop_7x7_float =
      std::is_same_v<Config, NchwConfig> && !kNchwDgrad && KSize == 7 && sizeof(scalar_t) == 4;
  return {Config::kThreads, nchw_fprop_7x7_float ? 2 : min_blocks<scalar_t, KSize, kNchwDgrad>()};
}

template <typename scalar_t, int KSize>
FASTCONV_GLOBAL void FASTCONV_LAUNCH_BOUNDS((launch_bounds<NhwcConfig, scalar_t, KSize, false>())) fprop_nhwc_kernel(const ConvProblem p, const View4<const scalar_t> x,
                                       const View4<const scalar_t> w, const EpilogueArgs<scalar_t> epilogue,
                                       const View4<scalar_t> y) {
  using acc_t = acc_type<scalar_t>;
  constexpr int kPix = NhwcConfig::kPixelsPerThread;
  const int64_t R = filter_rows<KSize>(p), S = filter_cols<KSize>(p);
  const int64_t M = p.K_per_group();
  const int64_t groups_q = (p.Q + kPix - 1) / kPix;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.P * groups_q * p.K) {
    const int64_t k = i % p.K;
    const int64_t q0 = ((i / p.K) % groups_q) * kPix;
    const int64_t op = (i / (p.K * groups_q)) % p.P;
    const int64_t n = i / (p.K * groups_q * p.P);
    const int64_t c = k / M;
    acc_t acc[kPix];
    for (int u = 0; u < kPix; ++u) acc[u] = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
      if (h < 0 || h >= p.H) continue;
      for (int64_t s = 0; s < S; ++s) {
        const scalar_t wv = w(k, 0, r, s);
        const acc_t tap = acc_t(wv);
        for (int u = 0; u < kPix; ++u) {
          const int64_t q = q0 + u;
          const int64_t wi = q * p.stride_w - p.pad_left + s * p.dilation_w;
          if (q >= p.Q || wi < 0 || wi >= p.W) continue;
          const scalar_t xv = x(n, c, h, wi);
          acc[u] += acc_t(xv) * tap;
        }
      }
    }
    for (int u = 0; u < kPix; ++u) {
      if (q0 + u >= p.Q) continue;
      const int64_t at = y.offset(n, k, op, q0 + u);
      y.data[at] = static_cast<scalar_t>(epilogue(acc[u], k, at));
    }
  }
}

// Item i: input channel c fastest, then column, row, image; gathers over taps and the M
// output channels of c.
template <typename scalar_t, int KSize>
FASTCONV_GLOBAL void FASTCONV_LAUNCH_BOUNDS((launch_bounds<NhwcConfig, scalar_t, KSize, false>())) dgrad_nhwc_kernel(const ConvProblem p, const View4<const scalar_t> dy,
                                       const View4<const scalar_t> w, gptr<const scalar_t> bias,
                                       const View4<scalar_t> dx) {
  using acc_t = acc_type<scalar_t>;
  const int64_t R = filter_rows<KSize>(p), S = filter_cols<KSize>(p);
  const int64_t M = p.K_per_group();
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.H * p.W * p.C) {
    const int64_t c = i % p.C;
    const int64_t wi = (i / p.C) % p.W;
    const int64_t h = (i / (p.C * p.W)) % p.H;
    const int64_t n = i / (p.C * p.W * p.H);
    acc_t acc = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t rows = h + p.pad_top - r * p.dilation_h;
      if (rows < 0 || rows % p.stride_h != 0 || rows / p.stride_h >= p.P) continue;
      const int64_t op = rows / p.stride_h;
      for (int64_t s = 0; s < S; ++s) {
        const int64_t cols = wi + p.pad_left - s * p.dilation_w;
        if (cols < 0 || cols % p.stride_w != 0 || cols / p.stride_w >= p.Q) continue;
        const int64_t oq = cols / p.stride_w;
        for (int64_t m = 0; m < M; ++m) {
          const int64_t k = c * M + m;
          const scalar_t g = dy(n, k, op, oq);
          const scalar_t wv = w(k, 0, r, s);
          acc += acc_t(g) * acc_t(wv);
        }
      }
    }
    dx(n, c, h, wi) = static_cast<scalar_t>(bias_value<scalar_t>(bias, c) + acc);
  }
}

// ---------------------------------------------------------------------------------------------
// NCHW: one block per output tile of one (n, channel) plane, its input window in shared memory.

// Stages rows [row0, row0 + tile.in_rows) x cols [col0, col0 + tile.in_cols) of plane (n, c)
// of v (zeros outside [0, rows) x [0, cols)) into `staged`, rows tile.in_stride apart. The
// threads walk the padded rows, so a warp writes consecutive words (the padding's lanes idle).
template <typename scalar_t>
FASTCONV_DEVICE void stage_window(const View4<const scalar_t>& v, int64_t n, int64_t c,
                                  int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                                  const PlaneTile& tile, sptr<scalar_t> staged) {
  const int count = tile.in_rows * tile.in_stride;
  for (int e = int(thread_index().x); e < count; e += int(block_size().x)) {
    if (e % tile.in_stride >= tile.in_cols) continue;
    const int64_t h = row0 + e / tile.in_stride, wi = col0 + e % tile.in_stride;
    scalar_t value = scalar_t(0);
    if (h >= 0 && h < rows && wi >= 0 && wi < cols) value = v(n, c, h, wi);
    staged[e] = value;
  }
}

// Item b: a tile of output channel k (PlaneTiles over K).
template <typename scalar_t, int KSize>
FASTCONV_GLOBAL void FASTCONV_LAUNCH_BOUNDS((launch_bounds<NchwConfig, scalar_t, KSize, false>())) fprop_nchw_kernel(const ConvProblem p, const PlaneTile tile,
                                       const View4<const scalar_t> x, const View4<const scalar_t> w,
                                       const EpilogueArgs<scalar_t> epilogue, const View4<scalar_t> y) {
  using acc_t = acc_type<scalar_t>;
  constexpr int kSlots = NchwConfig::kOutputsPerThread;
  FASTCONV_SHARED(scalar_t, staged, NchwConfig::kSharedBytes / sizeof(scalar_t));
  const int64_t R = filter_rows<KSize>(p), S = filter_cols<KSize>(p);
  const int64_t M = p.K_per_group();
  const PlaneTiles tiles(tile, p.K, p.P, p.Q);
  const int t = int(thread_index().x), threads = int(block_size().x);
  for (int64_t b = block_index().x; b < tiles.count(p.N); b += grid_size().x) {
    int64_t p0, q0, k, n;
    tiles.item(b, tile, p0, q0, k, n);
    stage_window<scalar_t>(x, n, k / M, p.H, p.W, p0 * p.stride_h - p.pad_top,
                           q0 * p.stride_w - p.pad_left, tile, staged);
    sync_threads();
    Taps<scalar_t, KSize> taps;
    taps.load(w, k);
    for (int u = 0; u < kSlots; ++u) {
      const int o = t + u * threads;
      const int lp = o / tile.cols, lq = o % tile.cols;
      if (o >= tile.rows * tile.cols || p0 + lp >= p.P || q0 + lq >= p.Q) continue;
      acc_t acc = 0;
      for (int64_t r = 0; r < R; ++r) {
        const int64_t row = (lp * p.stride_h + r * p.dilation_h) * tile.in_stride;
        for (int64_t s = 0; s < S; ++s) {
          const scalar_t xv = staged[row + lq * p.stride_w + s * p.dilation_w];
          acc += acc_t(xv) * taps.at(w, k, r, s);
        }
      }
      const int64_t at = y.offset(n, k, p0 + lp, q0 + lq);
      y.data[at] = static_cast<scalar_t>(epilogue(acc, k, at));
    }
    sync_threads();  // staged is refilled for the block's next tile
  }
}

// Item b: a tile of input channel c (PlaneTiles over C). For each of the M
// output channels of c, the dy window that reaches the dx tile is staged, and every dx element
// gathers the taps that land on it.
template <typename scalar_t, int KSize>
FASTCONV_GLOBAL void FASTCONV_LAUNCH_BOUNDS((launch_bounds<NchwConfig, scalar_t, KSize, true>())) dgrad_nchw_kernel(const ConvProblem p, const PlaneTile tile,
                                       const View4<const scalar_t> dy, const View4<const scalar_t> w,
                                       gptr<const scalar_t> bias, const View4<scalar_t> dx) {
  using acc_t = acc_type<scalar_t>;
  constexpr int kSlots = NchwConfig::kOutputsPerThread;
  FASTCONV_SHARED(scalar_t, staged, NchwConfig::kSharedBytes / sizeof(scalar_t));
  const int64_t R = filter_rows<KSize>(p), S = filter_cols<KSize>(p);
  const int64_t M = p.K_per_group();
  const PlaneTiles tiles(tile, p.C, p.H, p.W);
  const int t = int(thread_index().x), threads = int(block_size().x);
  for (int64_t b = block_index().x; b < tiles.count(p.N); b += grid_size().x) {
    int64_t h0, w0, c, n;
    tiles.item(b, tile, h0, w0, c, n);
    // The first dy row and column any tap of the tile reaches (floor, so it may lie below 0).
    const int64_t row0 = floor_div(h0 + p.pad_top - (R - 1) * p.dilation_h, p.stride_h);
    const int64_t col0 = floor_div(w0 + p.pad_left - (S - 1) * p.dilation_w, p.stride_w);
    acc_t acc[kSlots];
#pragma unroll
    for (int u = 0; u < kSlots; ++u) acc[u] = 0;
    for (int64_t m = 0; m < M; ++m) {
      const int64_t k = c * M + m;
      stage_window<scalar_t>(dy, n, k, p.P, p.Q, row0, col0, tile, staged);
      Taps<scalar_t, KSize> taps;
      taps.load(w, k);
      sync_threads();
#pragma unroll
      for (int u = 0; u < kSlots; ++u) {
        const int o = t + u * threads;
        const int64_t h = h0 + o / tile.cols, wi = w0 + o % tile.cols;
        if (o >= tile.rows * tile.cols || h >= p.H || wi >= p.W) continue;
        // Unrolled where the filter size is a compile-time constant, so that taps.at indexes
        // its register array with constants (a run-time index put it on the stack).
#pragma unroll
        for (int64_t r = 0; r < R; ++r) {
          const int64_t rows = h + p.pad_top - r * p.dilation_h;
          if (rows % p.stride_h != 0) continue;
          const int64_t row = (floor_div(rows, p.stride_h) - row0) * tile.in_stride;
#pragma unroll
          for (int64_t s = 0; s < S; ++s) {
            const int64_t cols = wi + p.pad_left - s * p.dilation_w;
            if (cols % p.stride_w != 0) continue;
            const scalar_t g = staged[row + floor_div(cols, p.stride_w) - col0];
            acc[u] += acc_t(g) * taps.at(w, k, r, s);
          }
        }
      }
      sync_threads();  // staged is refilled for the next output channel or tile
    }
    const acc_t bv = bias_value<scalar_t>(bias, c);
#pragma unroll
    for (int u = 0; u < kSlots; ++u) {
      const int o = t + u * threads;
      const int64_t h = h0 + o / tile.cols, wi = w0 + o % tile.cols;
      if (o >= tile.rows * tile.cols || h >= p.H || wi >= p.W) continue;
      dx(n, c, h, wi) = static_cast<scalar_t>(bv + acc[u]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// wgrad, both layouts: block (Cfg::kChannels, Cfg::kPixels); item b is (channel chunk, tap),
// tap fastest. Thread (lane, row) sums pixels j = row, row + kPixels, ... (j over N*P*Q, column
// fastest) for channel k = chunk * kChannels + lane, then the rows are added as a fixed tree.
template <typename scalar_t, class Cfg>
FASTCONV_GLOBAL void wgrad_kernel(const ConvProblem p, const View4<const scalar_t> x,
                                  const View4<const scalar_t> dy, const View4<scalar_t> dw) {
  using acc_t = acc_type<scalar_t>;
  FASTCONV_SHARED(acc_t, partial, Cfg::kThreads);
  const int lane = int(thread_index().x), prow = int(thread_index().y);
  const int slot = prow * Cfg::kChannels + lane;
  const int64_t M = p.K_per_group();
  const int64_t taps = p.R * p.S;
  const int64_t chunks = (p.K + Cfg::kChannels - 1) / Cfg::kChannels;
  const int64_t pixels = p.N * p.P * p.Q;
  for (int64_t b = block_index().x; b < chunks * taps; b += grid_size().x) {
    const int64_t tap = b % taps;
    const int64_t r = tap / p.S, s = tap % p.S;
    const int64_t k = (b / taps) * Cfg::kChannels + lane;
    acc_t acc = 0;
    if (k < p.K) {
      const int64_t c = k / M;
      for (int64_t j = prow; j < pixels; j += Cfg::kPixels) {
        const int64_t oq = j % p.Q, op = (j / p.Q) % p.P, n = j / (p.Q * p.P);
        const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
        const int64_t wi = oq * p.stride_w - p.pad_left + s * p.dilation_w;
        if (h < 0 || h >= p.H || wi < 0 || wi >= p.W) continue;
        const scalar_t xv = x(n, c, h, wi);
        const scalar_t g = dy(n, k, op, oq);
        acc += acc_t(xv) * acc_t(g);
      }
    }
    partial[slot] = acc;
    sync_threads();
    for (int half = Cfg::kPixels / 2; half > 0; half /= 2) {
      if (prow < half) {
        const acc_t other = partial[slot + half * Cfg::kChannels];
        partial[slot] += other;
      }
      sync_threads();
    }
    if (prow == 0 && k < p.K) {
      const acc_t total = partial[lane];
      dw(k, 0, r, s) = static_cast<scalar_t>(total);
    }
    sync_threads();  // partial is reused by the block's next item
  }
}

}  // namespace fastconv::cuda::depthwise
