// The depthwise dgrad launcher (dx from dy, gathered): dtype and filter-size
// dispatch, grid, launch. The kernels are in depthwise_kernels.cuh, the algorithm and its
// tiles in depthwise.cpp.
#include "cuda/depthwise/depthwise.h"
#include "cuda/depthwise/depthwise_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace fastconv::cuda::depthwise {

void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "depthwise_dgrad", [&] {
    filter_switch(p, [&](auto ksize) {
      constexpr int KSize = decltype(ksize)::value;
      if (layouts.output == Layout::nhwc) {
        const at::Tensor wk = channels_innermost(w);
        launch_kernel("depthwise::dgrad_nhwc_kernel", dgrad_nhwc_kernel<scalar_t, KSize>,
                      launch_bounds<NhwcConfig, scalar_t, KSize, false>(), blocks_for(p.N * p.H * p.W * p.C, NhwcConfig::kThreads), NhwcConfig::kThreads,
                      0, p, view4<const scalar_t>(dy, "dy"), view4<const scalar_t>(wk, "w"),
                      optional_view<const scalar_t>(epilogue.bias, "bias"), view4<scalar_t>(dx, "dx"));
      } else {
        const PlaneTile tile = plane_tile(p, Direction::dgrad, sizeof(scalar_t));
        TORCH_CHECK(tile.rows > 0, "fastconv: depthwise NCHW dgrad without a tile (layouts says nhwc)");
        const int64_t items = PlaneTiles(tile, p.C, p.H, p.W).count(p.N);
        launch_kernel("depthwise::dgrad_nchw_kernel", dgrad_nchw_kernel<scalar_t, KSize>,
                      launch_bounds<NchwConfig, scalar_t, KSize, true>(), blocks_for(items, 1), NchwConfig::kThreads, 0, p, tile,
                      view4<const scalar_t>(dy, "dy"), view4<const scalar_t>(w, "w"),
                      optional_view<const scalar_t>(epilogue.bias, "bias"), view4<scalar_t>(dx, "dx"));
      }
    });
  });
}

}  // namespace fastconv::cuda::depthwise
