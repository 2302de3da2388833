// The direct convolution, one element at a time, written once for the CPU and CUDA direct
// kernels (which differ only in how they spread the elements over threads). Every tap of
// the filter is visited and bounds-checked: slow, obvious and always correct, the
// reference the fast algorithms are tested against. Any layout, through strides.
#pragma once

#include "common/conv_problem.h"
#include "common/macros.h"
#include "common/strided.h"

#include <cstdint>

namespace fastconv {

// Views are Strided4 of the element type (any pointer type).

// y[n, k, op, oq]
template <typename acc_t, typename View>
FASTCONV_HD acc_t direct_fprop_element(const ConvProblem& p, const View& x, const View& w,
                                       int64_t n, int64_t k, int64_t op, int64_t oq) {
  const int64_t Cg = p.C_per_group();
  const int64_t c0 = (k / p.K_per_group()) * Cg;
  acc_t acc = 0;
  for (int64_t cl = 0; cl < Cg; ++cl) {
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
      if (h < 0 || h >= p.H) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t wi = oq * p.stride_w - p.pad_left + s * p.dilation_w;
        if (wi < 0 || wi >= p.W) continue;
        acc += acc_t(x.load(n, c0 + cl, h, wi)) * acc_t(w.load(k, cl, r, s));
      }
    }
  }
  return acc;
}

// dx[n, c, h, wi], gathered from the outputs whose taps read it (no atomics needed).
template <typename acc_t, typename View>
FASTCONV_HD acc_t direct_dgrad_element(const ConvProblem& p, const View& dy, const View& w,
                                       int64_t n, int64_t c, int64_t h, int64_t wi) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  const int64_t cl = c % Cg, k0 = (c / Cg) * Kg;
  acc_t acc = 0;
  for (int64_t r = 0; r < p.R; ++r) {
    const int64_t ph = h + p.pad_top - r * p.dilation_h;
    if (ph < 0 || ph % p.stride_h != 0 || ph / p.stride_h >= p.P) continue;
    for (int64_t s = 0; s < p.S; ++s) {
      const int64_t qw = wi + p.pad_left - s * p.dilation_w;
      if (qw < 0 || qw % p.stride_w != 0 || qw / p.stride_w >= p.Q) continue;
      for (int64_t kl = 0; kl < Kg; ++kl) {
        acc += acc_t(dy.load(n, k0 + kl, ph / p.stride_h, qw / p.stride_w)) *
               acc_t(w.load(k0 + kl, cl, r, s));
      }
    }
  }
  return acc;
}

// One of the N * P * Q terms of dw[k, cl, r, s]: term j is output position (n, op, oq).
template <typename acc_t, typename View>
FASTCONV_HD acc_t direct_wgrad_term(const ConvProblem& p, const View& x, const View& dy,
                                    int64_t k, int64_t cl, int64_t r, int64_t s, int64_t j) {
  const int64_t oq = j % p.Q;
  const int64_t op = (j / p.Q) % p.P;
  const int64_t n = j / (p.Q * p.P);
  const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
  const int64_t wi = oq * p.stride_w - p.pad_left + s * p.dilation_w;
  if (h < 0 || h >= p.H || wi < 0 || wi >= p.W) return acc_t(0);
  const int64_t c = (k / p.K_per_group()) * p.C_per_group() + cl;
  return acc_t(x.load(n, c, h, wi)) * acc_t(dy.load(n, k, op, oq));
}

}  // namespace fastconv
