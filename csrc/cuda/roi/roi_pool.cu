// RoIPool (max) on CUDA (kernels and their strategies: roi_pool_kernels.cuh).
#include "cuda/roi/roi_pool_kernels.cuh"
#include "cuda/kernels.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/where.h>
#include <ATen/OpMathType.h>

#include <cfloat>
#include <limits>

namespace fastconv::cuda {

void roi_pool_forward(const at::Tensor& input, const at::Tensor& rois, const RoiArgs& a,
                      at::Tensor& out, at::Tensor& argmax) {
  const pool::Shape s{rois.size(0), input.size(1), input.size(2), input.size(3), a.pooled_height, a.pooled_width};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool", [&] {
    using acc_t = acc_type<scalar_t>;
    launch_kernel("pool::forward_kernel", pool::forward_kernel<scalar_t, acc_t>,
                  blocks_for(out.numel()), kThreads, 0, global_view<const scalar_t>(input, "input"),
                  global_view<const acc_t>(rois, "rois"), global_view<scalar_t>(out, "out"),
                  global_view<int64_t>(argmax, "argmax"), s, acc_t(a.spatial_scale));
  });
}

void roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                       at::Tensor& grad_input) {
  const pool::Shape s{rois.size(0), grad_input.size(1), grad_input.size(2), grad_input.size(3),
                grad.size(2), grad.size(3)};
  const int64_t N = grad_input.size(0);
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const bool planes = deterministic && roi_deterministic_planes_forced("fastconv::roi_pool_backward");
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_pool_backward", [&] {
    const auto g = global_view<const scalar_t>(grad, "grad");
    const auto r = global_view<const scalar_t>(rois, "rois");
    const auto am = global_view<const int64_t>(argmax, "argmax");
    const auto gi = global_view<scalar_t>(grad_input, "grad_input");
    if (deterministic && !planes) {
      // Each contribution's destination, ((image * C + c) * H * W + argmax), or -1 for an
      // empty bin; sorted stably, so equal destinations keep the contributions' order.
      const int64_t plane = s.H * s.W;
      const at::Tensor batch = rois.select(1, 0).to(at::kLong).view({s.K, 1, 1});
      const at::Tensor channel = at::arange(s.C, argmax.options()).view({1, s.C, 1});
      const at::Tensor flat = argmax.view({s.K, s.C, -1});
      const at::Tensor dest = (batch * s.C + channel) * plane + flat;
      const at::Tensor keys = at::where((flat >= 0) & (flat < plane), dest, at::full({}, -1, dest.options())).flatten();
      const auto [sorted, order] = at::sort(keys, /*stable=*/true, 0, /*descending=*/false);
      const at::Tensor sorted_keys = sorted.contiguous(), sorted_order = order.contiguous();
      launch_kernel("pool::backward_segmented_kernel", pool::backward_segmented_kernel<scalar_t>,
                    blocks_for(keys.numel()), kThreads, 0, global_view<const int64_t>(sorted_keys, "keys"),
                    global_view<const int64_t>(sorted_order, "order"), g, keys.numel(), gi);
    } else if (deterministic) {
      launch_kernel("pool::backward_deterministic_kernel", pool::backward_deterministic_kernel<scalar_t>,
                    blocks_for(N * s.C), kThreads, 0, g, r, am, gi, N, s);
    } else {
      launch_kernel("pool::backward_atomic_kernel", pool::backward_atomic_kernel<scalar_t>,
                    blocks_for(grad.numel()), kThreads, 0, g, r, am, gi, s);
    }
  });
}

}  // namespace fastconv::cuda
