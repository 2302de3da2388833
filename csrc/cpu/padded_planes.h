// Stride-1 convolution of single planes on zero-padded copies, shared by the depthwise and
// grouped kernels. On a padded plane of width Wp = W + pad_left + pad_right, output (op, q)
// is reached at i = op*Wp + q, and tap (r, s) reads padded[i + r*dh*Wp + s*dw]: every tap is
// one long unit-step loop over the whole plane (the columns q >= Q are computed and dropped)
// instead of P short row loops, which on 14x14 planes spent most of their time in loop
// remainders. dgrad and wgrad are the transposes over the same indexing.
#pragma once

#include "common/acc_type.h"
#include "common/conv_problem.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/vector_clones.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fastconv::cpu {

// Elements of the largest padded plane worked on whole (1 MiB of float; 224x224 and far more
// fit). Each task holds a few such buffers, so larger planes take the callers' other paths:
// a 46341x46341 plane would otherwise ask for gigabytes per thread.
constexpr int64_t kMostPaddedPlane = int64_t(1) << 18;

inline int64_t padded_width(const ConvProblem& p) { return p.W + p.pad_left + p.pad_right; }
inline int64_t padded_height(const ConvProblem& p) { return p.H + p.pad_top + p.pad_bottom; }
// Whether the padded-plane loops apply: stride 1, and a plane small enough to hold whole.
inline bool padded_planes_apply(const ConvProblem& p) {
  return p.stride_h == 1 && p.stride_w == 1 &&
         (p.H + p.pad_top + p.pad_bottom) * (p.W + p.pad_left + p.pad_right) <= kMostPaddedPlane;
}

// The outputs' span along padded rows: the last row needs only Q entries.
inline int64_t padded_span(const ConvProblem& p) { return (p.P - 1) * padded_width(p) + p.Q; }

// At stride 1, dx is the convolution of dy with each group's filters transposed (the group's
// Kg outputs become its inputs) and turned by 180 degrees: this is that problem, padded by
// ·dilation - pad on the top and left and, from the sizes rather than pad_bottom, on the
// bottom and right, so that a transposed convolution's output_padding (rows and columns of dx
// that no output reaches) is zeros. A negative padding (pad > (R-1)·dilation) has no such form.
inline ConvProblem turned_dgrad_problem(const ConvProblem& p) {
  ConvProblem t = p;
  t.C = p.K;
  t.K = p.C;
  t.H = p.P;
  t.W = p.Q;
  t.P = p.H;
  t.Q = p.W;
  t.pad_top = (p.R - 1) * p.dilation_h - p.pad_top;
  t.pad_bottom = p.H - p.P + p.pad_top;
  t.pad_left = (p.S - 1) * p.dilation_w - p.pad_left;
  t.pad_right = p.W - p.Q + p.pad_left;
  return t;
}

// padded [Hp, Wp] in acc_t = the plane [H, W] with its zero border.
template <typename scalar_t, typename acc_t>
void pad_plane(const ConvProblem& p, const scalar_t* plane, acc_t* padded) {
  const int64_t Wp = padded_width(p);
  std::fill(padded, padded + padded_height(p) * Wp, acc_t(0));
  for (int64_t h = 0; h < p.H; ++h) {
    acc_t* dst = padded + (h + p.pad_top) * Wp + p.pad_left;
    for (int64_t w = 0; w < p.W; ++w) dst[w] = acc_t(plane[h * p.W + w]);
  }
}

// plane [H, W] = the interior of padded.
template <typename scalar_t, typename acc_t>
void unpad_plane(const ConvProblem& p, const acc_t* padded, scalar_t* plane) {
  const int64_t Wp = padded_width(p);
  for (int64_t h = 0; h < p.H; ++h)
    for (int64_t w = 0; w < p.W; ++w)
      plane[h * p.W + w] = scalar_t(padded[(h + p.pad_top) * Wp + w + p.pad_left]);
}

// Output plane (n, k) [P, Q] = the epilogue of the sums along padded rows.
template <typename scalar_t, typename acc_t>
void gather_outputs(const ConvProblem& p, const acc_t* sums, const EpilogueView<scalar_t>& ep,
                    int64_t n, int64_t k, scalar_t* y) {
  const int64_t Wp = padded_width(p), first = (n * p.K + k) * p.P * p.Q;
  scalar_t* out = y + first;
  if (ep.empty()) {
    for (int64_t op = 0; op < p.P; ++op)
      for (int64_t q = 0; q < p.Q; ++q) out[op * p.Q + q] = scalar_t(sums[op * Wp + q]);
    return;
  }
  for (int64_t op = 0; op < p.P; ++op)
    for (int64_t q = 0; q < p.Q; ++q)
      out[op * p.Q + q] = scalar_t(ep(sums[op * Wp + q], k, first + op * p.Q + q));
}

// grads along padded rows = a dy plane [P, Q]. The dropped columns are not written: they stay
// zero from the buffer's first fill.
template <typename scalar_t, typename acc_t>
void spread_outputs(const ConvProblem& p, const scalar_t* grad, acc_t* grads) {
  const int64_t Wp = padded_width(p);
  for (int64_t op = 0; op < p.P; ++op)
    for (int64_t q = 0; q < p.Q; ++q) grads[op * Wp + q] = acc_t(grad[op * p.Q + q]);
}

// fprop: sums[i] += taps[r, s] * padded[i + offset(r, s)] over the R*S taps.
template <typename acc_t>
FASTCONV_VECTOR_CLONES void fprop_taps_stride1(const ConvProblem& p,
                                               const acc_t* __restrict padded,
                                               const acc_t* __restrict taps,
                                               acc_t* __restrict sums) {
  const int64_t Wp = padded_width(p), span = padded_span(p);
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s) {
      const acc_t tap = taps[r * p.S + s];
      const acc_t* src = padded + r * p.dilation_h * Wp + s * p.dilation_w;
      for (int64_t i = 0; i < span; ++i) sums[i] += tap * src[i];
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
// fprop for float on AVX-512F, KB output channels from all of a group's Cg padded planes at
// once: sums_k[i] = sum over c and (r, s) of taps_k[c, r, s] * padded_c[i + offset(r, s)].
// KB x V vectors of sums stay in zmm registers through all Cg·R·S taps, so each input vector
// loaded feeds KB FMAs, where the loop above loads and stores its sums for every tap of every
// channel and output. KB = 4, V = 4 (16 chains) for grouped layers; KB = 1, V = 8 (enough
// chains to hide the FMA latency) for depthwise and the last outputs of a group.
template <int KB, int V>
FASTCONV_TARGET_AVX512F inline void fprop_planes_avx512(const ConvProblem& p,
                                                        const float* __restrict padded,
                                                        int64_t plane, int64_t Cg,
                                                        const float* __restrict taps,
                                                        float* __restrict sums) {
  const int64_t Wp = padded_width(p), span = padded_span(p), R = p.R, S = p.S, RS = R * S;
  const int64_t row_step = p.dilation_h * Wp, col_step = p.dilation_w, k_step = Cg * RS;
  for (int64_t i0 = 0; i0 < span; i0 += 16 * V) {
    __mmask16 mask[V];
    __m512 acc[KB][V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const int64_t left = span - i0 - 16 * v;
      mask[v] = left >= 16 ? __mmask16(0xffff) : left > 0 ? __mmask16((1u << left) - 1) : __mmask16(0);
#pragma GCC unroll 4
      for (int kb = 0; kb < KB; ++kb) acc[kb][v] = _mm512_setzero_ps();
    }
    for (int64_t c = 0; c < Cg; ++c) {
      const float* base = padded + c * plane + i0;
      const float* t = taps + c * RS;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s) {
          const float* src = base + r * row_step + s * col_step;
          __m512 in[V];
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v) in[v] = _mm512_maskz_loadu_ps(mask[v], src + 16 * v);
#pragma GCC unroll 4
          for (int kb = 0; kb < KB; ++kb) {
            const __m512 tap = _mm512_set1_ps(t[kb * k_step + r * S + s]);
#pragma GCC unroll 8
            for (int v = 0; v < V; ++v) acc[kb][v] = _mm512_fmadd_ps(tap, in[v], acc[kb][v]);
          }
        }
    }
#pragma GCC unroll 4
    for (int kb = 0; kb < KB; ++kb)
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(sums + kb * plane + i0 + 16 * v, mask[v], acc[kb][v]);
  }
}

// gather_outputs for float on AVX-512F: rows of 16 columns, the epilogue in registers
// (epilogue16).
FASTCONV_TARGET_AVX512F inline void gather_outputs_avx512(const ConvProblem& p, const float* sums,
                                                          const EpilogueView<float>& ep, int64_t n,
                                                          int64_t k, float* y) {
  const int64_t Wp = padded_width(p), first = (n * p.K + k) * p.P * p.Q;
  const __m512 bias = _mm512_set1_ps(ep.bias ? ep.bias[k] : 0.f);
  for (int64_t op = 0; op < p.P; ++op)
    for (int64_t q = 0; q < p.Q; q += 16) {
      const int64_t left = p.Q - q;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      const int64_t index = first + op * p.Q + q;
      const float* residual = ep.residual ? ep.residual + index : nullptr;
      const __m512 v = epilogue16(ep, _mm512_maskz_loadu_ps(m, sums + op * Wp + q), bias, residual, m);
      _mm512_mask_storeu_ps(y + index, m, v);
    }
}
#endif

// dgrad: dx_padded[i + offset(r, s)] += taps[r, s] * grads[i].
template <typename acc_t>
FASTCONV_VECTOR_CLONES void dgrad_taps_stride1(const ConvProblem& p,
                                               const acc_t* __restrict grads,
                                               const acc_t* __restrict taps,
                                               acc_t* __restrict dx_padded) {
  const int64_t Wp = padded_width(p), span = padded_span(p);
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s) {
      const acc_t tap = taps[r * p.S + s];
      acc_t* dst = dx_padded + r * p.dilation_h * Wp + s * p.dilation_w;
      for (int64_t i = 0; i < span; ++i) dst[i] += tap * grads[i];
    }
}

// wgrad: taps[r, s] += sum_i grads[i] * padded[i + offset(r, s)]. Sixteen partial sums per
// dot product, so that the reduction vectorises without reassociating a single sum.
template <typename acc_t>
FASTCONV_VECTOR_CLONES void wgrad_taps_stride1(const ConvProblem& p,
                                               const acc_t* __restrict grads,
                                               const acc_t* __restrict padded,
                                               acc_t* __restrict taps) {
  constexpr int64_t kLanes = 16;
  const int64_t Wp = padded_width(p), span = padded_span(p), body = span / kLanes * kLanes;
  for (int64_t r = 0; r < p.R; ++r)
    for (int64_t s = 0; s < p.S; ++s) {
      const acc_t* src = padded + r * p.dilation_h * Wp + s * p.dilation_w;
      acc_t partial[kLanes] = {};
      for (int64_t i = 0; i < body; i += kLanes)
        for (int64_t l = 0; l < kLanes; ++l) partial[l] += grads[i + l] * src[i + l];
      acc_t sum = 0;
      for (int64_t l = 0; l < kLanes; ++l) sum += partial[l];
      for (int64_t i = body; i < span; ++i) sum += grads[i] * src[i];
      taps[r * p.S + s] += sum;
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
// The same sums in float32 on AVX-512F, up to nine taps at once: each vector of grads is loaded
// once for all of them, and the taps' accumulators are independent chains, where the loop above
// runs one tap's sum at a time and waits on each FMA's latency (ResNeXt's wgrad at 0.3x
// oneDNN). The tail is a masked vector; every sum keeps one fixed order.
template <int T>
FASTCONV_TARGET_AVX512F void wgrad_taps_block_avx512(const float* __restrict grads,
                                                     const float* __restrict src,
                                                     const int64_t* offsets, int64_t span,
                                                     float* __restrict taps) {
  __m512 acc[T];
#pragma GCC unroll 9
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= span; i += 16) {
    const __m512 g = _mm512_loadu_ps(grads + i);
#pragma GCC unroll 9
    for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(g, _mm512_loadu_ps(src + offsets[t] + i), acc[t]);
  }
  if (i < span) {
    const __mmask16 m = __mmask16((1u << (span - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(m, grads + i);
#pragma GCC unroll 9
    for (int t = 0; t < T; ++t)
      acc[t] = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, src + offsets[t] + i), acc[t]);
  }
#pragma GCC unroll 9
  for (int t = 0; t < T; ++t) taps[t] += _mm512_reduce_add_ps(acc[t]);
}

FASTCONV_TARGET_AVX512F inline void wgrad_taps_stride1_avx512(const ConvProblem& p,
                                                              const float* __restrict grads,
                                                              const float* __restrict padded,
                                                              float* __restrict taps) {
  constexpr int kMostTaps = 9;
  const int64_t Wp = padded_width(p), span = padded_span(p), RS = p.R * p.S;
  for (int64_t t0 = 0; t0 < RS; t0 += kMostTaps) {
    const int count = int(std::min<int64_t>(kMostTaps, RS - t0));
    int64_t offsets[kMostTaps];
    for (int t = 0; t < count; ++t) {
      const int64_t r = (t0 + t) / p.S, s = (t0 + t) % p.S;
      offsets[t] = r * p.dilation_h * Wp + s * p.dilation_w;
    }
    float* out = taps + t0;
    switch (count) {
      case 9: wgrad_taps_block_avx512<9>(grads, padded, offsets, span, out); break;
      case 8: wgrad_taps_block_avx512<8>(grads, padded, offsets, span, out); break;
      case 7: wgrad_taps_block_avx512<7>(grads, padded, offsets, span, out); break;
      case 6: wgrad_taps_block_avx512<6>(grads, padded, offsets, span, out); break;
      case 5: wgrad_taps_block_avx512<5>(grads, padded, offsets, span, out); break;
      case 4: wgrad_taps_block_avx512<4>(grads, padded, offsets, span, out); break;
      case 3: wgrad_taps_block_avx512<3>(grads, padded, offsets, span, out); break;
      case 2: wgrad_taps_block_avx512<2>(grads, padded, offsets, span, out); break;
      default: wgrad_taps_block_avx512<1>(grads, padded, offsets, span, out); break;
    }
  }
}
#endif

// ---------------------------------------------------------------- whole convolutions
//
// Every direction of a stride-1 convolution whose groups are small (depthwise included: one
// channel per group), for callers that checked padded_planes_apply. x, dy: any strides; the
// results are written in any layout. A task owns one (image, group): fprop writes the
// group's output planes, dgrad its input-gradient planes; wgrad tasks own groups and visit
// the images in order. No two tasks write alike and every sum runs in a fixed order:
// deterministic, no atomics.

// Groups per task: about 16K multiply-adds at least, so that a tiny problem stays on one
// thread rather than paying for waking the others. images: how many each task visits.
inline int64_t group_grain(const ConvProblem& p, int64_t images) {
  const int64_t work = images * p.K_per_group() * p.C_per_group() * p.P * p.Q * p.R * p.S;
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(work, 1));
}

// w [K, Cg, R, S] in acc_t (the operator hands these kernels NCHW operands).
inline at::Tensor acc_weights(const at::Tensor& w) {
  return w.to(acc_dtype(w.scalar_type())).contiguous();
}

template <typename scalar_t>
void padded_planes_fprop(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w_in,
                         const Epilogue& epilogue, at::Tensor& y) {
  const EpilogueView<scalar_t> ep(epilogue);
  using acc_t = acc_type<scalar_t>;
  const at::Tensor w = acc_weights(w_in);
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const acc_t* wd = w.const_data_ptr<acc_t>();
  scalar_t* yd = y.data_ptr<scalar_t>();
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), RS = p.R * p.S;
  const int64_t plane = padded_height(p) * padded_width(p);
  const bool avx512 = std::is_same_v<acc_t, float> && cpu_has_avx512f();
  constexpr int64_t kOutputBlock = 4;
  cpu::parallel_for(0, p.N * p.groups, group_grain(p, 1), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> padded(Cg * plane), sums((avx512 ? kOutputBlock : 1) * plane);
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / p.groups, g = ng % p.groups;
      for (int64_t c = 0; c < Cg; ++c)
        pad_plane(p, xd + (n * p.C + g * Cg + c) * p.H * p.W, padded.data() + c * plane);
#if defined(__GNUC__) && defined(__x86_64__)
      if constexpr (std::is_same_v<acc_t, float>) {
        if (avx512) {
          for (int64_t kg = 0; kg < Kg;) {
            const int64_t k = g * Kg + kg, kb = Kg - kg >= kOutputBlock ? kOutputBlock : 1;
            const float* taps = wd + k * Cg * RS;
            if (kb == kOutputBlock)
              fprop_planes_avx512<kOutputBlock, 4>(p, padded.data(), plane, Cg, taps, sums.data());
            else
              fprop_planes_avx512<1, 8>(p, padded.data(), plane, Cg, taps, sums.data());
            for (int64_t j = 0; j < kb; ++j) {
              if constexpr (std::is_same_v<scalar_t, float>)
                gather_outputs_avx512(p, sums.data() + j * plane, ep, n, k + j, yd);
              else
                gather_outputs(p, sums.data() + j * plane, ep, n, k + j, yd);
            }
            kg += kb;
          }
          continue;
        }
      }
#endif
      for (int64_t kg = 0; kg < Kg; ++kg) {
        const int64_t k = g * Kg + kg;
        std::fill(sums.begin(), sums.end(), acc_t(0));
        for (int64_t c = 0; c < Cg; ++c)
          fprop_taps_stride1<acc_t>(p, padded.data() + c * plane, wd + (k * Cg + c) * RS,
                                    sums.data());
        gather_outputs(p, sums.data(), ep, n, k, yd);
      }
    }
  });
}

template <typename scalar_t>
void padded_planes_dgrad(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w_in,
                         at::Tensor& dx) {
  using acc_t = acc_type<scalar_t>;
  if constexpr (std::is_same_v<acc_t, float>) {
    // The turned problem on fprop's AVX-512 kernel, which keeps its sums in registers through
    // every tap, where the loop below adds one tap at a time into dx's padded planes (1.4-3.7x
    // slower than fprop on ResNeXt's and MobileNet's layers, Zen 5).
    const ConvProblem t = turned_dgrad_problem(p);
    const bool pads_fit = t.pad_top >= 0 && t.pad_bottom >= 0 && t.pad_left >= 0 && t.pad_right >= 0;
    if (cpu_has_avx512f() && pads_fit && padded_planes_apply(t)) {
      const int64_t G = p.groups, Kg = p.K_per_group(), Cg = p.C_per_group();
      const at::Tensor turned = w_in.to(at::kFloat)
                                    .reshape({G, Kg, Cg, p.R, p.S})
                                    .transpose(1, 2)
                                    .flip({3, 4})
                                    .reshape({p.C, Kg, p.R, p.S});
      padded_planes_fprop<scalar_t>(t, dy, turned, Epilogue{}, dx);
      return;
    }
  }
  const at::Tensor w = acc_weights(w_in);
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  const acc_t* wd = w.const_data_ptr<acc_t>();
  scalar_t* dxd = dx.data_ptr<scalar_t>();
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), RS = p.R * p.S;
  const int64_t plane = padded_height(p) * padded_width(p);
  cpu::parallel_for(0, p.N * p.groups, group_grain(p, 1), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> dx_padded(Cg * plane), grads(plane, acc_t(0));
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / p.groups, g = ng % p.groups;
      std::fill(dx_padded.begin(), dx_padded.end(), acc_t(0));
      for (int64_t kg = 0; kg < Kg; ++kg) {
        const int64_t k = g * Kg + kg;
        spread_outputs(p, dyd + (n * p.K + k) * p.P * p.Q, grads.data());
        for (int64_t c = 0; c < Cg; ++c)
          dgrad_taps_stride1<acc_t>(p, grads.data(), wd + (k * Cg + c) * RS,
                                    dx_padded.data() + c * plane);
      }
      for (int64_t c = 0; c < Cg; ++c)
        unpad_plane(p, dx_padded.data() + c * plane, dxd + (n * p.C + g * Cg + c) * p.H * p.W);
    }
  });
}

template <typename scalar_t>
void padded_planes_wgrad(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy,
                         at::Tensor& dw_out) {
  using acc_t = acc_type<scalar_t>;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), RS = p.R * p.S;
  const int64_t plane = padded_height(p) * padded_width(p);
  at::Tensor dw_acc = at::zeros({p.K, Cg, p.R, p.S}, x.options().dtype(acc_dtype(x.scalar_type())));
  acc_t* dwd = dw_acc.data_ptr<acc_t>();
  [[maybe_unused]] const bool avx512 = std::is_same_v<acc_t, float> && cpu_has_avx512f();
  cpu::parallel_for(0, p.groups, group_grain(p, p.N), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> padded(Cg * plane), grads(plane, acc_t(0));
    for (int64_t g = begin; g < end; ++g) {
      for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t c = 0; c < Cg; ++c)
          pad_plane(p, xd + (n * p.C + g * Cg + c) * p.H * p.W, padded.data() + c * plane);
        for (int64_t kg = 0; kg < Kg; ++kg) {
          const int64_t k = g * Kg + kg;
          spread_outputs(p, dyd + (n * p.K + k) * p.P * p.Q, grads.data());
          for (int64_t c = 0; c < Cg; ++c) {
#if defined(__GNUC__) && defined(__x86_64__)
            if constexpr (std::is_same_v<acc_t, float>) {
              if (avx512) {
                wgrad_taps_stride1_avx512(p, grads.data(), padded.data() + c * plane,
                                          dwd + (k * Cg + c) * RS);
                continue;
              }
            }
#endif
            wgrad_taps_stride1<acc_t>(p, grads.data(), padded.data() + c * plane,
                                      dwd + (k * Cg + c) * RS);
          }
        }
      }
    }
  });
  dw_out.copy_(dw_acc);
}

}  // namespace fastconv::cpu
