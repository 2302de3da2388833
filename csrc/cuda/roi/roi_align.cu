// RoIAlign on CUDA, torchvision's definition through the same geometry helpers as the CPU
// (common/roi_math.h). Forward: one thread per output element, visiting only the samples that
// can land on the image. Backward: one thread per output element adding into the input
// gradient with atomics, or, when torch.use_deterministic_algorithms(True) is set, one thread
// per (image, channel) plane walking the RoIs in order, so every sum has a fixed order.
#include "cuda/roi/roi_align_kernels.cuh"
#include "cuda/kernels.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <limits>

namespace fastconv::cuda {

namespace {

align::Shape shape_of(const at::Tensor& rois, c10::IntArrayRef input_sizes, const RoiArgs& a) {
  return {rois.size(0), input_sizes[1], input_sizes[2], input_sizes[3], a.pooled_height,
          a.pooled_width};
}

}  // namespace

void roi_align_forward(const at::Tensor& input, const at::Tensor& rois, const RoiArgs& a,
                       at::Tensor& out) {
  const align::Shape s = shape_of(rois, input.sizes(), a);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align", [&] {
    using acc_t = acc_type<scalar_t>;
    launch_kernel("align::forward_kernel", align::forward_kernel<scalar_t, acc_t>,
                  blocks_for(out.numel()), kThreads, 0, global_view<const scalar_t>(input, "input"),
                  global_view<const acc_t>(rois, "rois"), global_view<scalar_t>(out, "out"), s, a);
  });
}

void roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, const RoiArgs& a,
                        at::Tensor& grad_input) {
  const align::Shape s = shape_of(rois, grad_input.sizes(), a);
  const int64_t N = grad_input.size(0);
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward", [&] {
    const auto g = global_view<const scalar_t>(grad, "grad");
    const auto r = global_view<const scalar_t>(rois, "rois");
    const auto gi = global_view<scalar_t>(grad_input, "grad_input");
    if (deterministic) {
      launch_kernel("align::backward_deterministic_kernel", align::backward_deterministic_kernel<scalar_t>,
                    blocks_for(N * s.C), kThreads, 0, g, r, gi, N, s, a);
    } else {
      launch_kernel("align::backward_atomic_kernel", align::backward_atomic_kernel<scalar_t>,
                    blocks_for(grad.numel()), kThreads, 0, g, r, gi, s, a);
    }
  });
}

}  // namespace fastconv::cuda
