// The always-correct CUDA convolution (common/direct_conv.h, element by element), last in the
// CUDA list. fprop and dgrad run one thread per element of their output, taken in that
// tensor's memory order, so neighbouring threads write neighbouring addresses in NCHW (along
// W) and in channels_last (along C) alike; dgrad gathers, so it needs no atomics. wgrad runs
// one block per filter element and adds the threads' partial sums as a fixed tree
// (deterministic). Half types accumulate in float.
#include "common/direct_conv.h"
#include "cuda/helpers.cuh"
#include "cuda/kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

namespace fastconv::cuda {

namespace {

struct Index4 {
  int64_t n, c, h, w;
};

// A flat index over [N, C, H, W] split in the tensor's memory order.
template <bool channels_last>
__device__ __forceinline__ Index4 split(int64_t i, int64_t C, int64_t H, int64_t W) {
  if (channels_last) return {i / (W * H * C), i % C, (i / (C * W)) % H, (i / C) % W};
  return {i / (W * H * C), (i / (W * H)) % C, (i / W) % H, i % W};
}

template <typename scalar_t, bool channels_last>
__global__ void fprop_kernel(const ConvProblem p, const Strided4<const scalar_t> x,
                             const Strided4<const scalar_t> w, const Strided4<scalar_t> y) {
  using acc_t = at::opmath_type<scalar_t>;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.K * p.P * p.Q) {
    const Index4 o = split<channels_last>(i, p.K, p.P, p.Q);
    y(o.n, o.c, o.h, o.w) = static_cast<scalar_t>(direct_fprop_element<acc_t>(p, x, w, o.n, o.c, o.h, o.w));
  }
}

template <typename scalar_t, bool channels_last>
__global__ void dgrad_kernel(const ConvProblem p, const Strided4<const scalar_t> dy,
                             const Strided4<const scalar_t> w, const Strided4<scalar_t> dx) {
  using acc_t = at::opmath_type<scalar_t>;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.C * p.H * p.W) {
    const Index4 o = split<channels_last>(i, p.C, p.H, p.W);
    dx(o.n, o.c, o.h, o.w) = static_cast<scalar_t>(direct_dgrad_element<acc_t>(p, dy, w, o.n, o.c, o.h, o.w));
  }
}

template <typename scalar_t>
__global__ void wgrad_kernel(const ConvProblem p, const Strided4<const scalar_t> x,
                             const Strided4<const scalar_t> dy, const Strided4<scalar_t> dw) {
  using acc_t = at::opmath_type<scalar_t>;
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

bool is_channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

void fprop(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  const auto blocks = blocks_for(p.N * p.K * p.P * p.Q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_fprop", [&] {
    const Strided4<const scalar_t> xs(x), ws(w);
    const Strided4<scalar_t> ys(y);
    if (is_channels_last(y)) {
      fprop_kernel<scalar_t, true><<<blocks, kThreads, 0, current_stream()>>>(p, xs, ws, ys);
    } else {
      fprop_kernel<scalar_t, false><<<blocks, kThreads, 0, current_stream()>>>(p, xs, ws, ys);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void dgrad(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx) {
  const auto blocks = blocks_for(p.N * p.C * p.H * p.W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "direct_dgrad", [&] {
    const Strided4<const scalar_t> dys(dy), ws(w);
    const Strided4<scalar_t> dxs(dx);
    if (is_channels_last(dx)) {
      dgrad_kernel<scalar_t, true><<<blocks, kThreads, 0, current_stream()>>>(p, dys, ws, dxs);
    } else {
      dgrad_kernel<scalar_t, false><<<blocks, kThreads, 0, current_stream()>>>(p, dys, ws, dxs);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void wgrad(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy, at::Tensor& dw) {
  const int64_t elements = p.K * p.C_per_group() * p.R * p.S;
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>(elements, int64_t(1) << 20));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_wgrad", [&] {
    wgrad_kernel<scalar_t><<<blocks, kThreads, 0, current_stream()>>>(
        p, Strided4<const scalar_t>(x), Strided4<const scalar_t>(dy), Strided4<scalar_t>(dw));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

bool can_implement(const ConvProblem&, Direction, at::ScalarType) { return true; }

}  // namespace

ConvAlgorithm direct_algorithm() {
  // Not yet run on a GPU: see ConvAlgorithm::verified.
  return {"direct", &can_implement, &fprop, &dgrad, &wgrad, /*verified=*/false};
}

}  // namespace fastconv::cuda
