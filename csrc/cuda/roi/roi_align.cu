// RoIAlign on CUDA (kernels and their strategies: roi_align_kernels.cuh). Forward on NCHW or
// channels_last input as it comes; backward atomic, or under
// torch.use_deterministic_algorithms(True) the gather (FASTCONV_ROI_DETERMINISTIC=planes
// forces the plane-walking kernel, which the tests check against it).
#include "cuda/roi/roi_align_kernels.cuh"
#include "cuda/kernels.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>

#include <algorithm>
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
    const auto in = global_view<const scalar_t>(input, "input");
    const auto r = global_view<const acc_t>(rois, "rois");
    const auto o = global_view<scalar_t>(out, "out");
    if (a.channels_last) {
      const int64_t blocks = s.K * ceil_div(s.C, roi::NhwcForwardConfig::kChannels);
      launch_kernel("align::forward_nhwc_kernel", align::forward_nhwc_kernel<scalar_t, acc_t>,
                    unsigned(std::min<int64_t>(blocks, int64_t(1) << 30)), roi::NhwcForwardConfig::kThreads, 0, in, r,
                    o, s, a);
    } else {
      launch_kernel("align::forward_kernel", align::forward_kernel<scalar_t, acc_t>,
                    blocks_for(out.numel()), kThreads, 0, in, r, o, s, a);
    }
  });
}

void roi_align_forward_multilevel(const std::vector<at::Tensor>& features, const at::Tensor& rois,
                                  const at::Tensor& levels, const std::vector<double>& scales,
                                  const RoiArgs& a, at::Tensor& out) {
  const at::Tensor& first = features[0];
  const align::Shape s{rois.size(0), first.size(1), 0, 0, a.pooled_height, a.pooled_width};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "roi_align_multilevel", [&] {
    using acc_t = acc_type<scalar_t>;
    align::LevelViews<scalar_t> views{};
    for (size_t l = 0; l < features.size(); ++l) {
      views.data[l] = global_view<const scalar_t>(features[l], "features");
      views.H[l] = features[l].size(2), views.W[l] = features[l].size(3);
      views.scale[l] = scales[l];
    }
    launch_kernel("align::forward_multilevel_kernel", align::forward_multilevel_kernel<scalar_t, acc_t>,
                  blocks_for(out.numel()), kThreads, 0, views, global_view<const int64_t>(levels, "levels"),
                  global_view<const acc_t>(rois, "rois"), global_view<scalar_t>(out, "out"), s, a);
  });
}

void roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, const RoiArgs& a,
                        at::Tensor& grad_input) {
  const align::Shape s = shape_of(rois, grad_input.sizes(), a);
  const int64_t N = grad_input.size(0);
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const bool planes = deterministic && roi_deterministic_planes_forced("fastconv::roi_align_backward");
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward", [&] {
    const auto g = global_view<const scalar_t>(grad, "grad");
    const auto r = global_view<const scalar_t>(rois, "rois");
    const auto gi = global_view<scalar_t>(grad_input, "grad_input");
    // The gather's grid has images in z and 8-channel groups in y; past that, the plane walker.
    const bool gather = deterministic && !planes && N <= 65535 &&
                        ceil_div(s.C, int64_t(roi::GatherBackwardConfig::kChannels)) <= 65535;
    if (gather) {
      // Boxes in image order (a stable sort keeps each image's boxes in index order), where
      // each image's run starts, and each box's reach in pixels.
      const at::Tensor batch = rois.select(1, 0).to(at::kLong);
      const at::Tensor order = std::get<1>(at::sort(batch, /*stable=*/true, 0, /*descending=*/false)).contiguous();
      const at::Tensor starts =
          at::searchsorted(batch.index_select(0, order), at::arange(N + 1, batch.options())).contiguous();
      at::Tensor table = at::empty({s.K, roi::GatherBackwardConfig::kTableColumns}, batch.options());
      launch_kernel("align::box_table_kernel", align::box_table_kernel<scalar_t>, blocks_for(s.K), kThreads, 0,
                    r, global_view<const int64_t>(order, "order"), global_view<int64_t>(table, "table"), s, a);
      const Dim3 grid(unsigned(ceil_div(s.H * s.W, int64_t(kThreads))),
                      unsigned(ceil_div(s.C, int64_t(roi::GatherBackwardConfig::kChannels))), unsigned(N));
      launch_kernel("align::backward_gather_kernel", align::backward_gather_kernel<scalar_t>, grid, kThreads, 0,
                    g, r, global_view<const int64_t>(table, "table"), global_view<const int64_t>(starts, "starts"),
                    gi, s, a);
    } else if (deterministic) {
      launch_kernel("align::backward_deterministic_kernel", align::backward_deterministic_kernel<scalar_t>,
                    blocks_for(N * s.C), kThreads, 0, g, r, gi, N, s, a);
    } else {
      launch_kernel("align::backward_atomic_kernel", align::backward_atomic_kernel<scalar_t>,
                    blocks_for(grad.numel()), kThreads, 0, g, r, gi, s, a);
    }
  });
}

}  // namespace fastconv::cuda
