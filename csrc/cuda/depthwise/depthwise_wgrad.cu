// The depthwise wgrad launcher (dw from x and dy, by a fixed-order tree): dtype and filter-size
// dispatch, grid, launch. The kernels are in depthwise_kernels.cuh, the algorithm and its
// tiles in depthwise.cpp.
#include "cuda/depthwise/depthwise.h"
#include "cuda/depthwise/depthwise_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace fastconv::cuda::depthwise {

namespace {

template <class Cfg, typename scalar_t>
void launch_wgrad(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy, at::Tensor& dw) {
  const int64_t items = ceil_div(p.K, Cfg::kChannels) * p.R * p.S;
  launch_kernel("depthwise::wgrad_kernel", wgrad_kernel<scalar_t, Cfg>, blocks_for(items, 1),
                Dim3(Cfg::kChannels, Cfg::kPixels, 1), 0, p, view4<const scalar_t>(x, "x"),
                view4<const scalar_t>(dy, "dy"), view4<scalar_t>(dw, "dw"));
}

}  // namespace

void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_wgrad", [&] {
    if (layouts.inputs == Layout::nhwc)
      launch_wgrad<WgradNhwc, scalar_t>(p, x, dy, dw);
    else
      launch_wgrad<WgradNchw, scalar_t>(p, x, dy, dw);
  });
}

}  // namespace fastconv::cuda::depthwise
