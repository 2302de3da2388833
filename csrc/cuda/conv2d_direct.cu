// The always-correct CUDA convolution, last in the CUDA list: one thread per output element
// for fprop and dgrad (dgrad gathers, so no atomics), one block per filter element for wgrad
// with a fixed-order tree reduction (deterministic). Reads any layout through strides and
// accumulates half types in float. Simple on purpose: it is the reference for the fast paths.
#include "common/conv_problem.h"
#include "common/strided.h"
#include "cuda/helpers.cuh"
#include "cuda/kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>

namespace fastconv::cuda {

namespace {

template <typename scalar_t>
__global__ void fprop_kernel(const ConvProblem p, const Strided4<const scalar_t> x,
                             const Strided4<const scalar_t> w, const Strided4<scalar_t> y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.K * p.P * p.Q) {
    const int64_t oq = i % p.Q;
    const int64_t op = (i / p.Q) % p.P;
    const int64_t k = (i / (p.Q * p.P)) % p.K;
    const int64_t n = i / (p.Q * p.P * p.K);
    const int64_t c0 = (k / Kg) * Cg;
    acc_t acc = 0;
    for (int64_t cl = 0; cl < Cg; ++cl) {
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
        if (h < 0 || h >= p.H) continue;
        for (int64_t s = 0; s < p.S; ++s) {
          const int64_t wi = oq * p.stride_w - p.pad_left + s * p.dilation_w;
          if (wi < 0 || wi >= p.W) continue;
          acc += acc_t(x(n, c0 + cl, h, wi)) * acc_t(w(k, cl, r, s));
        }
      }
    }
    y(n, k, op, oq) = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void dgrad_kernel(const ConvProblem p, const Strided4<const scalar_t> dy,
                             const Strided4<const scalar_t> w, const Strided4<scalar_t> dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  FASTCONV_GRID_STRIDE_LOOP(i, p.N * p.C * p.H * p.W) {
    const int64_t wi = i % p.W;
    const int64_t h = (i / p.W) % p.H;
    const int64_t c = (i / (p.W * p.H)) % p.C;
    const int64_t n = i / (p.W * p.H * p.C);
    const int64_t cl = c % Cg, k0 = (c / Cg) * Kg;
    acc_t acc = 0;
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t ph = h + p.pad_top - r * p.dilation_h;
      if (ph < 0 || ph % p.stride_h != 0 || ph / p.stride_h >= p.P) continue;
      for (int64_t s = 0; s < p.S; ++s) {
        const int64_t qw = wi + p.pad_left - s * p.dilation_w;
        if (qw < 0 || qw % p.stride_w != 0 || qw / p.stride_w >= p.Q) continue;
        for (int64_t kl = 0; kl < Kg; ++kl) {
          acc += acc_t(dy(n, k0 + kl, ph / p.stride_h, qw / p.stride_w)) *
                 acc_t(w(k0 + kl, cl, r, s));
        }
      }
    }
    dx(n, c, h, wi) = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void wgrad_kernel(const ConvProblem p, const Strided4<const scalar_t> x,
                             const Strided4<const scalar_t> dy, const Strided4<scalar_t> dw) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[kThreads];
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  const int64_t elements = p.K * Cg * p.R * p.S;
  const int64_t terms = p.N * p.P * p.Q;
  for (int64_t e = blockIdx.x; e < elements; e += gridDim.x) {
    const int64_t s = e % p.S;
    const int64_t r = (e / p.S) % p.R;
    const int64_t cl = (e / (p.S * p.R)) % Cg;
    const int64_t k = e / (p.S * p.R * Cg);
    const int64_t c = (k / Kg) * Cg + cl;
    acc_t acc = 0;
    for (int64_t j = threadIdx.x; j < terms; j += blockDim.x) {
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
    if (threadIdx.x == 0) dw(k, cl, r, s) = static_cast<scalar_t>(partial[0]);
    __syncthreads();  // partial is reused by the block's next element
  }
}

void fprop(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_fprop", [&] {
    fprop_kernel<scalar_t><<<blocks_for(p.N * p.K * p.P * p.Q), kThreads, 0, current_stream()>>>(
        p, Strided4<const scalar_t>(x), Strided4<const scalar_t>(w), Strided4<scalar_t>(y));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void dgrad(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "direct_dgrad", [&] {
    dgrad_kernel<scalar_t><<<blocks_for(p.N * p.C * p.H * p.W), kThreads, 0, current_stream()>>>(
        p, Strided4<const scalar_t>(dy), Strided4<const scalar_t>(w), Strided4<scalar_t>(dx));
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
