// The always-correct CUDA convolution, last in the CUDA list: the host side (grid, stream,
// dtype dispatch) of the kernels in conv2d_direct_kernels.cuh. Reads any layout through
// strides, fuses the bias, and takes a problem of any shape, dtype or architecture.
#include "cuda/direct/conv2d_direct_kernels.cuh"
#include "cuda/kernels.h"

#include <ATen/Dispatch.h>

namespace fastconv::cuda {

namespace {

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  const auto blocks = blocks_for(p.N * p.K * p.P * p.Q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_fprop", [&] {
    bool_switch(layouts.output == Layout::nhwc, [&](auto channels_last) {
      launch_kernel("direct::fprop_kernel", direct::fprop_kernel<scalar_t, decltype(channels_last)::value>,
                    blocks, kThreads, 0, p, view4<const scalar_t>(x, "x"),
                    view4<const scalar_t>(w, "w"), optional_view<const scalar_t>(epilogue.bias, "bias"), view4<scalar_t>(y, "y"));
    });
  });
}

void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& dx) {
  const auto blocks = blocks_for(p.N * p.C * p.H * p.W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "direct_dgrad", [&] {
    bool_switch(layouts.output == Layout::nhwc, [&](auto channels_last) {
      launch_kernel("direct::dgrad_kernel", direct::dgrad_kernel<scalar_t, decltype(channels_last)::value>,
                    blocks, kThreads, 0, p, view4<const scalar_t>(dy, "dy"),
                    view4<const scalar_t>(w, "w"), optional_view<const scalar_t>(epilogue.bias, "bias"), view4<scalar_t>(dx, "dx"));
    });
  });
}

void wgrad(const ConvProblem& p, const KernelLayouts&, const at::Tensor& x, const at::Tensor& dy,
           at::Tensor& dw) {
  const int64_t elements = p.K * p.C_per_group() * p.R * p.S;
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>(elements, int64_t(1) << 20));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_wgrad", [&] {
    launch_kernel("direct::wgrad_kernel", direct::wgrad_kernel<scalar_t>, blocks, kThreads, 0, p,
                  view4<const scalar_t>(x, "x"), view4<const scalar_t>(dy, "dy"),
                  view4<scalar_t>(dw, "dw"));
  });
}

bool can_implement(const ConvProblem&, const ConvRequest&) { return true; }

}  // namespace

ConvAlgorithm direct_algorithm() {
  ConvAlgorithm a{"direct", &can_implement, &fprop, &dgrad, &wgrad};
  a.fused_stages = &fuses_bias;
  a.state = KernelState::emulated;  // passes the emulation suite; not yet run on a GPU
  return a;
}

}  // namespace fastconv::cuda
