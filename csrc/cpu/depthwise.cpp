// Depthwise convolution on the CPU (groups == C, so each filter sees one input channel; K =
// C * multiplier). Works on contiguous NCHW planes: for each output row and tap, the range of
// output columns whose input column lies inside the image is computed once, so the inner loop
// has no bounds test. At stride 1 every direction works on zero-padded planes instead, one
// long loop per tap (cpu/padded_planes.h). A channels_last fprop
// with multiplier 1 runs channels last instead, vectorised across channels, with no copy of
// x or y to planes and back; so do float32 dgrad at stride 1 and 3x3 wgrad on AVX-512F.
#include "common/acc_type.h"
#include "cpu/column_range.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/padded_planes.h"
#include "cpu/parallel.h"
#include "cpu/vector_clones.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fastconv::cpu {

namespace {

// Planes per task: enough multiply-adds (about 16K) that a tiny problem runs on one thread
// rather than paying for waking the others (measured 18 ms instead of 0.13 ms for a 10x10
// plane under a loaded machine).
int64_t plane_grain(const ConvProblem& p) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(p.P * p.Q * p.R * p.S, 1));
}

// Tasks per output rows, so that a tiny problem runs on one thread rather than waking the others.
int64_t row_grain(const ConvProblem& p) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(p.Q * p.C * p.R * p.S, 1));
}

// One output plane (n, k) from its input plane and filter: for each output row, the taps
// are added over the row's valid columns into a row of sums. Cloned per instruction set, as
// a whole, so that the short inner loops inline and run wide.
template <typename scalar_t, typename acc_t>
FASTCONV_VECTOR_CLONES void fprop_plane(const ConvProblem& p, const scalar_t* __restrict plane,
                                        const scalar_t* __restrict filter,
                                        const EpilogueView<scalar_t>& ep, int64_t k,
                                        int64_t first, scalar_t* __restrict out,
                                        acc_t* __restrict row) {
  for (int64_t op = 0; op < p.P; ++op) {
    for (int64_t q = 0; q < p.Q; ++q) row[q] = acc_t(0);
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
      if (h < 0 || h >= p.H) continue;
      const scalar_t* in = plane + h * p.W;
      for (int64_t s = 0; s < p.S; ++s) {
        const acc_t tap = acc_t(filter[r * p.S + s]);
        const int64_t offset = s * p.dilation_w - p.pad_left;
        const auto cols = valid_columns(offset, p.stride_w, p.W, p.Q);
        const scalar_t* src = in + offset;
        if (p.stride_w == 1) {
          for (int64_t q = cols.lo; q < cols.hi; ++q) row[q] += tap * acc_t(src[q]);
        } else {
          for (int64_t q = cols.lo; q < cols.hi; ++q) row[q] += tap * acc_t(src[q * p.stride_w]);
        }
      }
    }
    if (ep.empty()) {
      for (int64_t q = 0; q < p.Q; ++q) out[op * p.Q + q] = scalar_t(row[q]);
    } else {
      for (int64_t q = 0; q < p.Q; ++q)
        out[op * p.Q + q] = scalar_t(ep(row[q], k, first + op * p.Q + q));
    }
  }
}

// One output row (n, op) channels last, multiplier 1: each output pixel is a vector of C
// sums of R*S taps read from contiguous channel runs of x. taps: [R*S, C] in acc_t.
template <typename scalar_t, typename acc_t>
FASTCONV_VECTOR_CLONES void fprop_row_channels_last(const ConvProblem& p,
                                                    const scalar_t* __restrict image,
                                                    const acc_t* __restrict taps, int64_t op,
                                                    const EpilogueView<scalar_t>& ep,
                                                    int64_t first, scalar_t* __restrict out,
                                                    acc_t* __restrict acc) {
  const int64_t C = p.C;
  for (int64_t q = 0; q < p.Q; ++q) {
    for (int64_t c = 0; c < C; ++c) acc[c] = acc_t(0);
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
      if (h < 0 || h >= p.H) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t wi = q * p.stride_w - p.pad_left + s * p.dilation_w;
        if (wi < 0 || wi >= p.W) continue;
        const acc_t* tap = taps + (r * p.S + s) * C;
        const scalar_t* src = image + (h * p.W + wi) * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += tap[c] * acc_t(src[c]);
      }
    }
    if (ep.empty()) {
      for (int64_t c = 0; c < C; ++c) out[q * C + c] = scalar_t(acc[c]);
    } else {
      for (int64_t c = 0; c < C; ++c) out[q * C + c] = scalar_t(ep(acc[c], c, first + q * C + c));
    }
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
constexpr int64_t kStreamBytes = int64_t(4) << 20;

// The same row in float32 on AVX-512F. A block of output pixels × 16·V channels keeps its sums
// in zmm registers through all R*S taps: per tap, V tap vectors and Px·V input vectors for
// Px·V FMAs, where the loop above loads and stores its row of sums for every tap (3 loads and a
// store per FMA: 0.24-0.46x oneDNN on the seed rows on Zen 5). Blocks of 64 channels read each
// input pixel's 256 bytes together; then a run of 32 if there is one, and the rest 16 at a time,
// the last run masked. Pixel blocks whose every tap lies inside the row skip the bounds tests.
template <int V, int Px>
FASTCONV_TARGET_AVX512F inline void row_block_avx512(const ConvProblem& p, const float* __restrict image,
                                                     const float* __restrict taps, int64_t op,
                                                     int64_t r_lo, int64_t r_hi, int64_t q0,
                                                     int64_t pixels, int64_t c0, __mmask16 last,
                                                     const EpilogueView<float>& ep, int64_t first,
                                                     float* __restrict out, bool stream) {
  const int64_t C = p.C, W = p.W, S = p.S;
  const int64_t step = p.stride_w * C;
  const int64_t h0 = op * p.stride_h - p.pad_top;
  const int64_t w_first = q0 * p.stride_w - p.pad_left;
  const bool interior = pixels == Px && w_first >= 0 &&
                        w_first + (Px - 1) * p.stride_w + (S - 1) * p.dilation_w < W;
  __mmask16 mask[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) mask[v] = v == V - 1 ? last : __mmask16(0xffff);
  __m512 acc[Px][V];
#pragma GCC unroll 12
  for (int j = 0; j < Px; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[j][v] = _mm512_setzero_ps();
  for (int64_t r = r_lo; r < r_hi; ++r) {
    const float* row = image + (h0 + r * p.dilation_h) * W * C + c0;
    const float* tap_row = taps + r * S * C + c0;
    for (int64_t s = 0; s < S; ++s) {
      __m512 tap[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) tap[v] = _mm512_maskz_loadu_ps(mask[v], tap_row + s * C + 16 * v);
      const int64_t w0 = w_first + s * p.dilation_w;
      if (interior) {
        const float* src = row + w0 * C;
#pragma GCC unroll 12
        for (int j = 0; j < Px; ++j, src += step)
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v)
            acc[j][v] = _mm512_fmadd_ps(tap[v], _mm512_maskz_loadu_ps(mask[v], src + 16 * v), acc[j][v]);
      } else {
#pragma GCC unroll 12
        for (int j = 0; j < Px; ++j) {
          const int64_t wi = w0 + j * p.stride_w;
          if (j >= pixels || wi < 0 || wi >= W) continue;
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v)
            acc[j][v] = _mm512_fmadd_ps(tap[v], _mm512_maskz_loadu_ps(mask[v], row + wi * C + 16 * v), acc[j][v]);
        }
      }
    }
  }
#pragma GCC unroll 12
  for (int j = 0; j < Px; ++j) {
    if (j >= pixels) break;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      float* dst = out + (q0 + j) * C + c0 + 16 * v;
      const int64_t c = c0 + 16 * v;
      const __m512 bias = ep.bias ? _mm512_maskz_loadu_ps(mask[v], ep.bias + c) : _mm512_setzero_ps();
      const float* residual = ep.residual ? ep.residual + first + (q0 + j) * C + c : nullptr;
      const __m512 sum = epilogue16(ep, acc[j][v], bias, residual, mask[v]);
      store16(dst, mask[v], sum, stream);
    }
  }
}

FASTCONV_TARGET_AVX512F void fprop_row_channels_last_avx512(const ConvProblem& p,
                                                            const float* __restrict image,
                                                            const float* __restrict taps, int64_t op,
                                                            const EpilogueView<float>& ep,
                                                            int64_t first, float* __restrict out,
                                                            bool stream) {
  constexpr int kWidePixels = 6, kMidPixels = 12, kNarrowPixels = 8;
  const int64_t C = p.C, Q = p.Q, R = p.R;
  // The taps' rows that fall inside the image: r in [r_lo, r_hi).
  const int64_t h0 = op * p.stride_h - p.pad_top;
  int64_t r_lo = 0;
  while (r_lo < R && h0 + r_lo * p.dilation_h < 0) ++r_lo;
  int64_t r_hi = r_lo;
  while (r_hi < R && h0 + r_hi * p.dilation_h < p.H) ++r_hi;
  const int64_t wide = C / 64 * 64, mid = wide + (C - wide) / 32 * 32;
  for (int64_t q0 = 0; q0 < Q; q0 += kWidePixels)
    for (int64_t c0 = 0; c0 < wide; c0 += 64)
      row_block_avx512<4, kWidePixels>(p, image, taps, op, r_lo, r_hi, q0,
                                       std::min<int64_t>(kWidePixels, Q - q0), c0, 0xffff, ep,
                                       first, out, stream);
  if (mid > wide)  // one run of 32 channels: 12 pixels of 2 vectors
    for (int64_t q0 = 0; q0 < Q; q0 += kMidPixels)
      row_block_avx512<2, kMidPixels>(p, image, taps, op, r_lo, r_hi, q0,
                                      std::min<int64_t>(kMidPixels, Q - q0), wide, 0xffff, ep,
                                      first, out, stream);
  if (mid == C) return;
  for (int64_t q0 = 0; q0 < Q; q0 += kNarrowPixels)
    for (int64_t c0 = mid; c0 < C; c0 += 16) {
      const __mmask16 m = C - c0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (C - c0)) - 1);
      row_block_avx512<1, kNarrowPixels>(p, image, taps, op, r_lo, r_hi, q0,
                                         std::min<int64_t>(kNarrowPixels, Q - q0), c0, m, ep,
                                         first, out, stream);
    }
}

// Every output row of p (channels last, multiplier 1) from x and taps [R*S, C]. An output far
// larger than the caches goes to memory whatever we do: streaming stores spare the read of each
// line before it is written (a third of the traffic).
void rows_channels_last_avx512(const ConvProblem& p, const float* x, const float* taps,
                               const EpilogueView<float>& ep, float* y) {
  const bool stream = p.N * p.P * p.Q * p.C * int64_t(sizeof(float)) >= kStreamBytes;
  cpu::parallel_for(0, p.N * p.P, row_grain(p), [&](int64_t begin, int64_t end) {
    for (int64_t np = begin; np < end; ++np) {
      const int64_t n = np / p.P, op = np % p.P;
      fprop_row_channels_last_avx512(p, x + n * p.H * p.W * p.C, taps, op, ep, np * p.Q * p.C,
                                     y + np * p.Q * p.C, stream);
    }
  });
  if (stream) _mm_sfence();
}

// Channels-last wgrad of a 3x3 filter, multiplier 1, on AVX-512F: the nine taps' sums of 16·V
// channels stay in 9·V zmm registers through a run of output rows, each output pixel's
// gradient vector loaded once for its nine taps. The NCHW path this replaces copied x and dy
// to planes first, which cost more than the sums (4.2 ms for a 64-channel 112x112 layer,
// against 1.2 ms for the same layer in NCHW).
template <int V>
FASTCONV_TARGET_AVX512F void wgrad_rows_3x3_avx512(const ConvProblem& p, const float* __restrict x,
                                                   const float* __restrict dy, int64_t rows_begin,
                                                   int64_t rows_end, int64_t c0, __mmask16 last,
                                                   float* __restrict part) {
  const int64_t C = p.C, H = p.H, W = p.W, Q = p.Q;
  __mmask16 mask[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) mask[v] = v == V - 1 ? last : __mmask16(0xffff);
  __m512 acc[9][V];
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[t][v] = _mm512_setzero_ps();
  for (int64_t np = rows_begin; np < rows_end; ++np) {
    const int64_t n = np / p.P, op = np % p.P;
    const float* grad = dy + np * Q * C + c0;
    const float* image = x + n * H * W * C + c0;
    const int64_t h0 = op * p.stride_h - p.pad_top;
    bool row_in[3];
    const float* rows[3];
#pragma GCC unroll 3
    for (int r = 0; r < 3; ++r) {
      const int64_t h = h0 + r * p.dilation_h;
      row_in[r] = h >= 0 && h < H;
      rows[r] = image + (row_in[r] ? h : 0) * W * C;
    }
    for (int64_t q = 0; q < Q; ++q) {
      __m512 g[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) g[v] = _mm512_maskz_loadu_ps(mask[v], grad + q * C + 16 * v);
      const int64_t w0 = q * p.stride_w - p.pad_left;
      const bool interior = w0 >= 0 && w0 + 2 * p.dilation_w < W;
#pragma GCC unroll 3
      for (int r = 0; r < 3; ++r) {
        if (!row_in[r]) continue;
#pragma GCC unroll 3
        for (int s = 0; s < 3; ++s) {
          const int64_t wi = w0 + s * p.dilation_w;
          if (!interior && (wi < 0 || wi >= W)) continue;
          const float* src = rows[r] + wi * C;
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v)
            acc[r * 3 + s][v] =
                _mm512_fmadd_ps(g[v], _mm512_maskz_loadu_ps(mask[v], src + 16 * v), acc[r * 3 + s][v]);
        }
      }
    }
  }
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      float* dst = part + t * C + c0 + 16 * v;
      _mm512_mask_storeu_ps(dst, mask[v], _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], dst), acc[t][v]));
    }
}
#endif

// Channels-last fprop for multiplier 1 (K == C); tasks own output rows.
template <typename scalar_t>
void fprop_channels_last(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w,
                         const EpilogueView<scalar_t>& ep, at::Tensor& y) {
  using acc_t = acc_type<scalar_t>;
  const at::Tensor taps = w.reshape({p.C, p.R * p.S}).t().to(acc_dtype(w.scalar_type())).contiguous();
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const acc_t* td = taps.const_data_ptr<acc_t>();
  scalar_t* yd = y.data_ptr<scalar_t>();  // [N, P, Q, C] memory
#if defined(__GNUC__) && defined(__x86_64__)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu_has_avx512f()) {
      rows_channels_last_avx512(p, xd, td, ep, yd);
      return;
    }
  }
#endif
  cpu::parallel_for(0, p.N * p.P, row_grain(p), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(p.C);
    for (int64_t np = begin; np < end; ++np) {
      const int64_t n = np / p.P, op = np % p.P;
      fprop_row_channels_last<scalar_t, acc_t>(p, xd + n * p.H * p.W * p.C, td, op, ep,
                                               np * p.Q * p.C, yd + np * p.Q * p.C, acc.data());
    }
  });
}

template <typename scalar_t>
void fprop_impl(const ConvProblem& p, bool channels_last, const at::Tensor& x,
                const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  const EpilogueView<scalar_t> ep(epilogue);
  if (channels_last) {
    fprop_channels_last<scalar_t>(p, x, w, ep, y);
    return;
  }
  if (padded_planes_apply(p)) {  // groups of one channel
    padded_planes_fprop<scalar_t>(p, x, w, epilogue, y);
    return;
  }
  using acc_t = acc_type<scalar_t>;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  scalar_t* yd = y.data_ptr<scalar_t>();
  const int64_t multiplier = p.K / p.C;
  cpu::parallel_for(0, p.N * p.K, plane_grain(p), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(p.Q);
    for (int64_t nk = begin; nk < end; ++nk) {
      const int64_t n = nk / p.K, k = nk % p.K, c = k / multiplier;
      fprop_plane<scalar_t, acc_t>(p, xd + (n * p.C + c) * p.H * p.W, wd + k * p.R * p.S, ep, k,
                                   nk * p.P * p.Q, yd + nk * p.P * p.Q, row.data());
    }
  });
}

// Whether the channels-last dgrad and wgrad below take the problem (multiplier 1, float32 on
// AVX-512F; dgrad at stride 1, wgrad with 3x3 filters). Elsewhere both run on NCHW planes.
#if defined(__GNUC__) && defined(__x86_64__)
constexpr bool kChannelsLastBackward = true;
#else
constexpr bool kChannelsLastBackward = false;
#endif
bool channels_last_dgrad_applies(const ConvProblem& p, at::ScalarType dtype) {
  return kChannelsLastBackward && p.K == p.C && p.stride_h == 1 && p.stride_w == 1 &&
         dtype == at::kFloat && cpu_has_avx512f();
}
bool channels_last_wgrad_applies(const ConvProblem& p, at::ScalarType dtype) {
  return kChannelsLastBackward && p.K == p.C && p.R == 3 && p.S == 3 && dtype == at::kFloat &&
         cpu_has_avx512f();
}

#if defined(__GNUC__) && defined(__x86_64__)
// At stride 1, dx is the depthwise convolution of dy with the filter turned by 180 degrees
// (turned_dgrad_problem): channels-last fprop's row kernel, with no copy to planes.
void dgrad_channels_last(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w,
                         at::Tensor& dx) {
  // The row kernel bounds-checks every tap, so any padding of the turned problem will do.
  const ConvProblem t = turned_dgrad_problem(p);
  // taps [R*S, C]: tap (r, s) of the turned filter is w[c][R-1-r][S-1-s].
  const at::Tensor taps =
      w.reshape({p.C, p.R, p.S}).flip({1, 2}).reshape({p.C, p.R * p.S}).t().contiguous();
  rows_channels_last_avx512(t, dy.const_data_ptr<float>(), taps.const_data_ptr<float>(),
                            EpilogueView<float>{}, dx.data_ptr<float>());
}

// Output rows in a fixed number of runs, whatever the threads: each run sums its rows into its
// own [9, C] part, and the parts are added in run order, so dw does not depend on the team.
void wgrad_channels_last(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy,
                         at::Tensor& dw) {
  const int64_t rows = p.N * p.P, C = p.C;
  const int64_t work = rows * p.Q * C * 9;
  const int64_t runs = std::clamp<int64_t>(work / (int64_t(1) << 18), 1, std::min<int64_t>(rows, 16));
  std::vector<float> parts(runs * 9 * C, 0.f);
  const float* xd = x.const_data_ptr<float>();
  const float* g = dy.const_data_ptr<float>();
  const int64_t pairs = C / 32 * 32;
  cpu::parallel_for(0, runs, 1, [&](int64_t b, int64_t e) {
    for (int64_t run = b; run < e; ++run) {
      const int64_t r0 = rows * run / runs, r1 = rows * (run + 1) / runs;
      float* part = parts.data() + run * 9 * C;
      for (int64_t c0 = 0; c0 < pairs; c0 += 32)
        wgrad_rows_3x3_avx512<2>(p, xd, g, r0, r1, c0, 0xffff, part);
      for (int64_t c0 = pairs; c0 < C; c0 += 16) {
        const __mmask16 m = C - c0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (C - c0)) - 1);
        wgrad_rows_3x3_avx512<1>(p, xd, g, r0, r1, c0, m, part);
      }
    }
  });
  // The parts into the first, then dw [C, 1, 3, 3] contiguous: dw[c][t] from part[t][c].
  for (int64_t run = 1; run < runs; ++run)
    for (int64_t i = 0; i < 9 * C; ++i) parts[i] += parts[run * 9 * C + i];
  float* out = dw.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < 9; ++t) out[c * 9 + t] = parts[t * C + c];
}
#endif

// Each task owns one (n, c) plane of dx and scatters into it from the multiplier outputs
// that read channel c, so no two tasks write alike.
template <typename scalar_t>
void dgrad_impl(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w,
                at::Tensor& dx) {
  if (padded_planes_apply(p)) {  // groups of one channel
    padded_planes_dgrad<scalar_t>(p, dy, w, dx);
    return;
  }
  using acc_t = acc_type<scalar_t>;
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  scalar_t* dxd = dx.data_ptr<scalar_t>();
  const int64_t multiplier = p.K / p.C;
  cpu::parallel_for(0, p.N * p.C, plane_grain(p), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(p.H * p.W);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / p.C, c = nc % p.C;
      std::fill(plane.begin(), plane.end(), acc_t(0));
      for (int64_t j = 0; j < multiplier; ++j) {
        const int64_t k = c * multiplier + j;
        const scalar_t* grad = dyd + (n * p.K + k) * p.P * p.Q;
        const scalar_t* filter = wd + k * p.R * p.S;
        for (int64_t op = 0; op < p.P; ++op) {
          const scalar_t* g = grad + op * p.Q;
          for (int64_t r = 0; r < p.R; ++r) {
            const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
            if (h < 0 || h >= p.H) continue;
            acc_t* out = plane.data() + h * p.W;
            for (int64_t s = 0; s < p.S; ++s) {
              const acc_t tap = acc_t(filter[r * p.S + s]);
              const int64_t offset = s * p.dilation_w - p.pad_left;
              const auto cols = valid_columns(offset, p.stride_w, p.W, p.Q);
              for (int64_t q = cols.lo; q < cols.hi; ++q)
                out[q * p.stride_w + offset] += tap * acc_t(g[q]);
            }
          }
        }
      }
      scalar_t* dst = dxd + nc * p.H * p.W;
      for (int64_t i = 0; i < p.H * p.W; ++i) dst[i] = scalar_t(plane[i]);
    }
  });
}

template <typename scalar_t>
void wgrad_impl(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy,
                at::Tensor& dw) {
  if (padded_planes_apply(p)) {  // groups of one channel
    padded_planes_wgrad<scalar_t>(p, x, dy, dw);
    return;
  }
  using acc_t = acc_type<scalar_t>;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  scalar_t* dwd = dw.data_ptr<scalar_t>();
  const int64_t multiplier = p.K / p.C;
  const int64_t grain = std::max<int64_t>(1, plane_grain(p) / p.N);
  cpu::parallel_for(0, p.K, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> taps(p.R * p.S);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t c = k / multiplier;
      std::fill(taps.begin(), taps.end(), acc_t(0));
      for (int64_t n = 0; n < p.N; ++n) {
        const scalar_t* plane = xd + (n * p.C + c) * p.H * p.W;
        const scalar_t* grad = dyd + (n * p.K + k) * p.P * p.Q;
        for (int64_t op = 0; op < p.P; ++op) {
          const scalar_t* g = grad + op * p.Q;
          for (int64_t r = 0; r < p.R; ++r) {
            const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
            if (h < 0 || h >= p.H) continue;
            const scalar_t* in = plane + h * p.W;
            for (int64_t s = 0; s < p.S; ++s) {
              const int64_t offset = s * p.dilation_w - p.pad_left;
              const auto cols = valid_columns(offset, p.stride_w, p.W, p.Q);
              acc_t sum = 0;
              for (int64_t q = cols.lo; q < cols.hi; ++q)
                sum += acc_t(g[q]) * acc_t(in[q * p.stride_w + offset]);
              taps[r * p.S + s] += sum;
            }
          }
        }
      }
      for (int64_t i = 0; i < p.R * p.S; ++i) dwd[k * p.R * p.S + i] = scalar_t(taps[i]);
    }
  });
}

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "depthwise_fprop", [&] {
                                    fprop_impl<scalar_t>(p, layouts.output == Layout::nhwc, x, w,
                                                         epilogue, y);
                                  });
}

void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const Epilogue&, at::Tensor& dx) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (layouts.output == Layout::nhwc) {  // layouts() asks for it only where it applies
    dgrad_channels_last(p, dy, w, dx);
    return;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(),
                                  "depthwise_dgrad", [&] { dgrad_impl<scalar_t>(p, dy, w, dx); });
}

void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& dy, at::Tensor& dw) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (layouts.inputs == Layout::nhwc) {
    wgrad_channels_last(p, x, dy, dw);
    return;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "depthwise_wgrad", [&] { wgrad_impl<scalar_t>(p, x, dy, dw); });
}

bool can_implement(const ConvProblem& p, const ConvRequest&) { return p.is_depthwise(); }

// Channels-last for fprop with multiplier 1, and for dgrad and wgrad where their kernels above
// apply; everything else on NCHW planes.
KernelLayouts layouts(const ConvProblem& p, const ConvRequest& r) {
  bool last = false;
  switch (r.direction) {
    case Direction::fprop: last = p.K == p.C; break;
    case Direction::dgrad: last = channels_last_dgrad_applies(p, r.dtype); break;
    case Direction::wgrad: last = channels_last_wgrad_applies(p, r.dtype); break;
  }
  const Layout l = last ? r.layout : Layout::nchw;
  return {l, l};
}

}  // namespace

ConvAlgorithm depthwise_algorithm() {
  ConvAlgorithm a{"depthwise", &can_implement, &fprop, &dgrad, &wgrad, &layouts};
  a.fused_stages = &fprop_fuses_every_stage;
  return a;
}

}  // namespace fastconv::cpu
