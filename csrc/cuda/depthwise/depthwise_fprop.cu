// The depthwise fprop launcher (y from x): dtype and filter-size
// dispatch, grid, launch. The kernels are in depthwise_kernels.cuh, the algorithm and its
// tiles in depthwise.cpp.
#include "cuda/depthwise/depthwise.h"
#include "cuda/depthwise/depthwise_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace fastconv::cuda::depthwise {

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_fprop", [&] {
    filter_switch(p, [&](auto ksize) {
      constexpr int KSize = decltype(ksize)::value;
      if (layouts.output == Layout::nhwc) {
        const int64_t groups_q = ceil_div(p.Q, NhwcConfig::kPixelsPerThread);
        const at::Tensor wk = channels_innermost(w);
        launch_kernel("depthwise::fprop_nhwc_kernel", fprop_nhwc_kernel<scalar_t, KSize>,
                      launch_bounds<NhwcConfig, scalar_t, KSize, false>(), blocks_for(p.N * p.P * groups_q * p.K, NhwcConfig::kThreads),
                      NhwcConfig::kThreads, 0, p, view4<const scalar_t>(x, "x"),
                      view4<const scalar_t>(wk, "w"), epilogue_args<scalar_t>(epilogue), view4<scalar_t>(y, "y"));
      } else {
        const PlaneTile tile = plane_tile(p, Direction::fprop, sizeof(scalar_t));
        TORCH_CHECK(tile.rows > 0, "fastconv: depthwise NCHW fprop without a tile (layouts says nhwc)");
        const int64_t items = PlaneTiles(tile, p.K, p.P, p.Q).count(p.N);
        launch_kernel("depthwise::fprop_nchw_kernel", fprop_nchw_kernel<scalar_t, KSize>,
                      launch_bounds<NchwConfig, scalar_t, KSize, false>(), blocks_for(items, 1), NchwConfig::kThreads, 0, p, tile,
                      view4<const scalar_t>(x, "x"), view4<const scalar_t>(w, "w"),
                      epilogue_args<scalar_t>(epilogue), view4<scalar_t>(y, "y"));
      }
    });
  });
}

}  // namespace fastconv::cuda::depthwise
