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
__device__ __forceinline__ Index4 split(int64_t i, int64_t C, int64_t H, int64_t W) {
  if (channels_last) return {i / (W * H * C), i % C, (i / (C * W)) % H, (i / C) % W};
  return {i / (W * H * C), (i / (W * H)) % C, (i / W) % H, i % W};
}

// bias: nullptr, or one value per output channel, added before the one rounding.
template <typename scalar_t, bool channels_last>
__global__ void fprop_kernel(const ConvProblem p, const Strided4<const scalar_t> x,
                             const Strided4<const scalar_t> w, const scalar_t* __restrict__ bias,
                             const Strided4<scalar_t> y) {
  using acc_t = acc_type<scalar_t>;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.K * p.P * p.Q) {
    const Index4 o = split<channels_last>(i, p.K, p.P, p.Q);
    const acc_t b = bias ? acc_t(bias[o.c]) : acc_t(0);
    y(o.n, o.c, o.h, o.w) =
        static_cast<scalar_t>(b + direct_fprop_element<acc_t>(p, x, w, o.n, o.c, o.h, o.w));
  }
}

template <typename scalar_t, bool channels_last>
__global__ void dgrad_kernel(const ConvProblem p, const Strided4<const scalar_t> dy,
                             const Strided4<const scalar_t> w, const scalar_t* __restrict__ bias,
                             const Strided4<scalar_t> dx) {
  using acc_t = acc_type<scalar_t>;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.C * p.H * p.W) {
    const Index4 o = split<channels_last>(i, p.C, p.H, p.W);
    const acc_t b = bias ? acc_t(bias[o.c]) : acc_t(0);
    dx(o.n, o.c, o.h, o.w) =
        static_cast<scalar_t>(b + direct_dgrad_element<acc_t>(p, dy, w, o.n, o.c, o.h, o.w));
  }
}

template <typename scalar_t>
__global__ void wgrad_kernel(const ConvProblem p, const Strided4<const scalar_t> x,
                             const Strided4<const scalar_t> dy, const Strided4<scalar_t> dw) {
  using acc_t = acc_type<scalar_t>;
  __shared__ acc_t partial[kThreads];
  const int64_t Cg = p.C_per_group();
  const int64_t elements = p.K * Cg * p.R * p.S;
  const int64_t terms = p.N * p.P * p.Q;
  for (int64_t e = blockIdx.x; e < elements; e += gridDim.x) {
    const int64_t s = e % p.S;
    const int64_t r = (e / p.S) % p.R;
    const int64_t cl = (e / (p.S * p.R)) % Cg;
    const int64_t k = e / (p.S * p.R * Cg);
    acc_t acc = 0;
    for (int64_t j = threadIdx.x; j < terms; j += blockDim.x)
      acc += direct_wgrad_term<acc_t>(p, x, dy, k, cl, r, s, j);
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) dw(k, cl, r, s) = static_cast<scalar_t>(partial[0]);
    __syncthreads();  // partial is reused by the block's next element
  }
}

}  // namespace fastconv::cuda::direct
