// The direct convolution's CUDA kernels (device code only; the launcher is conv2d_direct.cu).
// fprop and dgrad run one thread per element of their output, taken in that tensor's memory
// order, so neighbouring threads write neighbouring addresses in NCHW (along W) and in
// channels_last (along C) alike; dgrad gathers, so it needs no atomics. wgrad runs one block
// per filter element and adds the threads' partial sums as a fixed tree (deterministic).
#pragma once

#include "common/acc_type.h"
#include "common/direct_conv.h"
#include "cuda/common/launch.cuh"

namespace fastconv::cuda::direct {

struct Index4 {
  int64_t n, c, h, w;
};

// A flat index over [N, C, H, W] split in the tensor's memory order.
template <bool channels_last>
FASTCONV_DEVICE Index4 split(int64_t i, int64_t C, int64_t H, int64_t W) {
  if (channels_last) return {i / (W * H * C), i % C, (i / (C * W)) % H, (i / C) % W};
  return {i / (W * H * C), (i / (W * H)) % C, (i / W) % H, i % W};
}

// bias: null, or one value per output channel, added before the one rounding.
template <typename scalar_t, bool channels_last>
FASTCONV_GLOBAL void fprop_kernel(const ConvProblem p, const View4<const scalar_t> x,
                                  const View4<const scalar_t> w, gptr<const scalar_t> bias,
                                  const View4<scalar_t> y) {
  using acc_t = acc_type<scalar_t>;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.K * p.P * p.Q) {
    const Index4 o = split<channels_last>(i, p.K, p.P, p.Q);
    const acc_t b = bias_value<scalar_t>(bias, o.c);
    y(o.n, o.c, o.h, o.w) =
        static_cast<scalar_t>(b + direct_fprop_element<acc_t>(p, x, w, o.n, o.c, o.h, o.w));
  }
}

template <typename scalar_t, bool channels_last>
FASTCONV_GLOBAL void dgrad_kernel(const ConvProblem p, const View4<const scalar_t> dy,
                                  const View4<const scalar_t> w, gptr<const scalar_t> bias,
                                  const View4<scalar_t> dx) {
  using acc_t = acc_type<scalar_t>;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.C * p.H * p.W) {
    const Index4 o = split<channels_last>(i, p.C, p.H, p.W);
    const acc_t b = bias_value<scalar_t>(bias, o.c);
    dx(o.n, o.c, o.h, o.w) =
        static_cast<scalar_t>(b + direct_dgrad_element<acc_t>(p, dy, w, o.n, o.c, o.h, o.w));
  }
}

template <typename scalar_t>
FASTCONV_GLOBAL void wgrad_kernel(const ConvProblem p, const View4<const scalar_t> x,
                                  const View4<const scalar_t> dy, const View4<scalar_t> dw) {
  using acc_t = acc_type<scalar_t>;
  FASTCONV_SHARED(acc_t, partial, kThreads);
  const int64_t Cg = p.C_per_group();
  const int64_t elements = p.K * Cg * p.R * p.S;
  const int64_t terms = p.N * p.P * p.Q;
  const unsigned t = thread_index().x, threads = block_size().x;
  for (int64_t e = block_index().x; e < elements; e += grid_size().x) {
    const int64_t s = e % p.S;
    const int64_t r = (e / p.S) % p.R;
    const int64_t cl = (e / (p.S * p.R)) % Cg;
    const int64_t k = e / (p.S * p.R * Cg);
    acc_t acc = 0;
    for (int64_t j = t; j < terms; j += threads)
      acc += direct_wgrad_term<acc_t>(p, x, dy, k, cl, r, s, j);
    partial[t] = acc;
    sync_threads();
    for (unsigned half = threads / 2; half > 0; half /= 2) {
      if (t < half) {
        const acc_t other = partial[t + half];
        partial[t] += other;
      }
      sync_threads();
    }
    if (t == 0) {
      const acc_t total = partial[0];
      dw(k, cl, r, s) = static_cast<scalar_t>(total);
    }
    sync_threads();  // partial is reused by the block's next element
  }
}

}  // namespace fastconv::cuda::direct
