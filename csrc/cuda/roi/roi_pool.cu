// RoIPool (max) on CUDA, torchvision's definition. Forward: one thread per output element,
// recording the argmax. Backward: atomics into the input gradient, or, in deterministic
// mode, one thread per (image, channel) plane walking the RoIs in order.
#include "cuda/roi/roi_pool_kernels.cuh"
#include "cuda/kernels.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
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
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_pool_backward", [&] {
    const auto g = global_view<const scalar_t>(grad, "grad");
    const auto r = global_view<const scalar_t>(rois, "rois");
    const auto am = global_view<const int64_t>(argmax, "argmax");
    const auto gi = global_view<scalar_t>(grad_input, "grad_input");
    if (deterministic) {
      launch_kernel("pool::backward_deterministic_kernel", pool::backward_deterministic_kernel<scalar_t>,
                    blocks_for(N * s.C), kThreads, 0, g, r, am, gi, N, s);
    } else {
      launch_kernel("pool::backward_atomic_kernel", pool::backward_atomic_kernel<scalar_t>,
                    blocks_for(grad.numel()), kThreads, 0, g, r, am, gi, s);
    }
  });
}

}  // namespace fastconv::cuda
