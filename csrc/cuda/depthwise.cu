// Depthwise convolution on CUDA (groups == C, so each filter reads one input channel; K =
// C * multiplier). Memory-bound, so the kernels are shaped around the memory order: threads
// walk the output (fprop) or input (dgrad) in its own layout, so that neighbouring threads
// touch neighbouring addresses in NCHW (along W) and in channels_last (along C) alike, and the
// per-group loops of the direct kernel disappear. dgrad gathers (no atomics); wgrad reduces
// each filter tap in one block in a fixed order (deterministic).
#include "common/conv_problem.h"
#include "common/strided.h"
#include "cuda/helpers.cuh"
#include "cuda/kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

namespace fastconv::cuda {

namespace {

// Splits a flat index over [N, C, H, W] in the tensor's memory order.
struct Index4 {
  int64_t n, c, h, w;
};

template <bool channels_last>
__device__ __forceinline__ Index4 split(int64_t i, int64_t C, int64_t H, int64_t W) {
  if (channels_last) {
    return {i / (W * H * C), i % C, (i / (C * W)) % H, (i / C) % W};
  }
  return {i / (W * H * C), (i / (W * H)) % C, (i / W) % H, i % W};
}

template <typename scalar_t, bool channels_last>
__global__ void fprop_kernel(const ConvProblem p, const Strided4<const scalar_t> x,
                             const Strided4<const scalar_t> w, const Strided4<scalar_t> y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t multiplier = p.K / p.C;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.K * p.P * p.Q) {
    const Index4 o = split<channels_last>(i, p.K, p.P, p.Q);
    const int64_t c = o.c / multiplier;
    acc_t acc = 0;
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t h = o.h * p.stride_h - p.pad_top + r * p.dilation_h;
      if (h < 0 || h >= p.H) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t wi = o.w * p.stride_w - p.pad_left + s * p.dilation_w;
        if (wi < 0 || wi >= p.W) continue;
        acc += acc_t(x(o.n, c, h, wi)) * acc_t(w(o.c, 0, r, s));
      }
    }
    y(o.n, o.c, o.h, o.w) = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, bool channels_last>
__global__ void dgrad_kernel(const ConvProblem p, const Strided4<const scalar_t> dy,
                             const Strided4<const scalar_t> w, const Strided4<scalar_t> dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t multiplier = p.K / p.C;
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.C * p.H * p.W) {
    const Index4 in = split<channels_last>(i, p.C, p.H, p.W);
    acc_t acc = 0;
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t ph = in.h + p.pad_top - r * p.dilation_h;
      if (ph < 0 || ph % p.stride_h != 0 || ph / p.stride_h >= p.P) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t qw = in.w + p.pad_left - s * p.dilation_w;
        if (qw < 0 || qw % p.stride_w != 0 || qw / p.stride_w >= p.Q) continue;
        for (int64_t j = 0; j < multiplier; ++j) {
          const int64_t k = in.c * multiplier + j;
          acc += acc_t(dy(in.n, k, ph / p.stride_h, qw / p.stride_w)) * acc_t(w(k, 0, r, s));
        }
      }
    }
    dx(in.n, in.c, in.h, in.w) = static_cast<scalar_t>(acc);
  }
}

// One block per filter tap (k, r, s); threads stride over the output positions and the block
// adds their partial sums as a fixed tree.
template <typename scalar_t>
__global__ void wgrad_kernel(const ConvProblem p, const Strided4<const scalar_t> x,
                             const Strided4<const scalar_t> dy, const Strided4<scalar_t> dw) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[kThreads];
  const int64_t multiplier = p.K / p.C;
  const int64_t taps = p.K * p.R * p.S;
  const int64_t positions = p.N * p.P * p.Q;
  for (int64_t e = blockIdx.x; e < taps; e += gridDim.x) {
    const int64_t s = e % p.S;
    const int64_t r = (e / p.S) % p.R;
    const int64_t k = e / (p.S * p.R);
    const int64_t c = k / multiplier;
    acc_t acc = 0;
    for (int64_t j = threadIdx.x; j < positions; j += blockDim.x) {
      const int64_t oq = j % p.Q;
      const int64_t op = (j / p.Q) % p.P;
      const int64_t n = j / (p.Q * p.P);
      const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
      const int64_t wi = oq * p.stride_w - p.pad_left + s * p.dilation_w;
      if (h >= 0 && h < p.H && wi >= 0 && wi < p.W)
        acc += acc_t(x(n, c, h, wi)) * acc_t(dy(n, k, op, oq));
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) dw(k, 0, r, s) = static_cast<scalar_t>(partial[0]);
    __syncthreads();
  }
}

bool is_channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

void fprop(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  const auto blocks = blocks_for(p.N * p.K * p.P * p.Q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_fprop", [&] {
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "depthwise_dgrad", [&] {
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
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>(p.K * p.R * p.S, int64_t(1) << 20));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_wgrad", [&] {
    const Strided4<const scalar_t> xs(x), dys(dy);
    const Strided4<scalar_t> dws(dw);
    wgrad_kernel<scalar_t><<<blocks, kThreads, 0, current_stream()>>>(p, xs, dys, dws);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

bool can_implement(const ConvProblem& p, Direction, at::ScalarType) { return p.is_depthwise(); }

}  // namespace

ConvAlgorithm depthwise_algorithm() {
  // Not yet run on a GPU: see ConvAlgorithm::verified.
  return {"depthwise", &can_implement, &fprop, &dgrad, &wgrad, /*verified=*/false};
}

}  // namespace fastconv::cuda
