// Stride-1 convolution of single planes on zero-padded copies, shared by the depthwise and
// grouped kernels. On a padded plane of width Wp = W + pad_left + pad_right, output (op, q)
// is reached at i = op*Wp + q, and tap (r, s) reads padded[i + r*dh*Wp + s*dw]: every tap is
// one long unit-step loop over the whole plane (the columns q >= Q are computed and dropped)
// instead of P short row loops, which on 14x14 planes spent most of their time in loop
// remainders. dgrad and wgrad are the transposes over the same indexing.
#pragma once

#include "common/conv_problem.h"
#include "cpu/strided.h"

#include <algorithm>
#include <cstdint>

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

// out [P, Q] = sums along padded rows.
template <typename scalar_t, typename acc_t>
void gather_outputs(const ConvProblem& p, const acc_t* sums, scalar_t* out) {
  const int64_t Wp = padded_width(p);
  for (int64_t op = 0; op < p.P; ++op)
    for (int64_t q = 0; q < p.Q; ++q) out[op * p.Q + q] = scalar_t(sums[op * Wp + q]);
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

}  // namespace fastconv::cpu
