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
    pool::forward_kernel<scalar_t, acc_t><<<blocks_for(out.numel()), kThreads, 0, current_stream()>>>(
        input.const_data_ptr<scalar_t>(), rois.const_data_ptr<acc_t>(), out.data_ptr<scalar_t>(),
        argmax.data_ptr<int64_t>(), s, acc_t(a.spatial_scale));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                       at::Tensor& grad_input) {
  const pool::Shape s{rois.size(0), grad_input.size(1), grad_input.size(2), grad_input.size(3),
                grad.size(2), grad.size(3)};
  const int64_t N = grad_input.size(0);
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_pool_backward", [&] {
    if (deterministic) {
      pool::backward_deterministic_kernel<scalar_t><<<blocks_for(N * s.C), kThreads, 0, current_stream()>>>(
          grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
          argmax.const_data_ptr<int64_t>(), grad_input.data_ptr<scalar_t>(), N, s);
    } else {
      pool::backward_atomic_kernel<scalar_t><<<blocks_for(grad.numel()), kThreads, 0, current_stream()>>>(
          grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
          argmax.const_data_ptr<int64_t>(), grad_input.data_ptr<scalar_t>(), s);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace fastconv::cuda
