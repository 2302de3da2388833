// The always-correct CUDA convolution, last in the CUDA list: the host side (grid, stream,
// dtype dispatch) of the kernels in conv2d_direct_kernels.cuh. Reads any layout through
// strides, fuses the bias, and takes a problem of any shape, dtype or architecture.
#include "cuda/direct/conv2d_direct_kernels.cuh"
#include "cuda/kernels.h"

#include <ATen/Dispatch.h>

namespace fastconv::cuda {

namespace {

template <typename scalar_t>
const scalar_t* bias_data(const at::Tensor& bias) {
  return bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
}

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const at::Tensor& bias, at::Tensor& y) {
  const auto blocks = blocks_for(p.N * p.K * p.P * p.Q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_fprop", [&] {
    const Strided4<const scalar_t> xs(x), ws(w);
    const Strided4<scalar_t> ys(y);
    bool_switch(layouts.output == Layout::nhwc, [&](auto channels_last) {
      direct::fprop_kernel<scalar_t, decltype(channels_last)::value>
          <<<blocks, kThreads, 0, current_stream()>>>(p, xs, ws, bias_data<scalar_t>(bias), ys);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const at::Tensor& bias, at::Tensor& dx) {
  const auto blocks = blocks_for(p.N * p.C * p.H * p.W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "direct_dgrad", [&] {
    const Strided4<const scalar_t> dys(dy), ws(w);
    const Strided4<scalar_t> dxs(dx);
    bool_switch(layouts.output == Layout::nhwc, [&](auto channels_last) {
      direct::dgrad_kernel<scalar_t, decltype(channels_last)::value>
          <<<blocks, kThreads, 0, current_stream()>>>(p, dys, ws, bias_data<scalar_t>(bias), dxs);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void wgrad(const ConvProblem& p, const KernelLayouts&, const at::Tensor& x, const at::Tensor& dy,
           at::Tensor& dw) {
  const int64_t elements = p.K * p.C_per_group() * p.R * p.S;
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>(elements, int64_t(1) << 20));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_wgrad", [&] {
    direct::wgrad_kernel<scalar_t><<<blocks, kThreads, 0, current_stream()>>>(
        p, Strided4<const scalar_t>(x), Strided4<const scalar_t>(dy), Strided4<scalar_t>(dw));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

bool can_implement(const ConvProblem&, const ConvRequest&) { return true; }

}  // namespace

ConvAlgorithm direct_algorithm() {
  ConvAlgorithm a{"direct", &can_implement, &fprop, &dgrad, &wgrad};
  a.fuses_bias = true;
  a.verified = false;  // not yet run on a GPU: see ConvAlgorithm::verified
  return a;
}

}  // namespace fastconv::cuda
