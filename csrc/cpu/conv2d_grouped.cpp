// Grouped convolution at stride 1, chosen for few channels per group (ResNeXt's 32 groups of
// 4, 8 and 16), directly on zero-padded planes (the kernels are in cpu/padded_planes.h,
// shared with depthwise). As GEMMs these are Kg x Cg*R*S matrices too small to pay for unrolling x nine
// times into columns; here every input plane is padded once per image and read by the
// group's Kg outputs straight from cache.
#include "common/acc_type.h"
#include "cpu/kernels.h"
#include "cpu/padded_planes.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace fastconv::cpu {

namespace {

// The automatic choice: up to 16 channels per group for fprop and dgrad, 8 for wgrad, where
// the padded planes beat im2col + GEMM on ResNeXt's layers (bench/NOTES.md, "Speed rules and
// their measurements").
constexpr int64_t kMostChannelsPerGroup = 8;
constexpr int64_t kMostChannelsPerGroupNoWgrad = 16;
// float fprop and dgrad on the AVX-512 plane kernel (4 outputs x 64 sums in registers): up to
// 32, where fprop measured 0.95x oneDNN on ResNeXt's 3x3 g32 @7 against 0.38x for im2col +
// GEMM (Zen 5, bench/NOTES.md, "float32 GEMM on AVX-512"), and dgrad 0.28 ms against im2col's
// 0.38 (0.32 against 0.58 channels_last; "depthwise and grouped backward").
constexpr int64_t kMostChannelsPerGroupAvx512 = 32;
// float wgrad on AVX-512 (nine taps' sums at once): up to 16 on planes of 100 pixels or more,
// where it measured 0.21-0.48 ms against im2col's 0.33-0.80 (1.5 channels_last); on 7x7 planes
// im2col stays faster in NCHW (0.28 against 0.39 at 16 channels; "depthwise and grouped
// backward").
constexpr int64_t kMostChannelsPerGroupAvx512Wgrad = 16;
constexpr int64_t kLeastPixelsAvx512Wgrad = 100;

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "grouped_fprop",
                                  [&] { padded_planes_fprop<scalar_t>(p, x, w, epilogue, y); });
}

void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const Epilogue&, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "grouped_dgrad",
                                  [&] { padded_planes_dgrad<scalar_t>(p, dy, w, dx); });
}

void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "grouped_wgrad",
                                  [&] { padded_planes_wgrad<scalar_t>(p, x, dy, dw); });
}

bool can_implement(const ConvProblem& p, const ConvRequest&) {
  return p.groups > 1 && padded_planes_apply(p);
}

bool preferred(const ConvProblem& p, const ConvRequest& r) {
  const bool avx512 = r.dtype == at::kFloat && cpu_has_avx512f();
  if (r.direction == Direction::wgrad) {
    const bool wide_planes = avx512 && p.P * p.Q >= kLeastPixelsAvx512Wgrad;
    return p.C_per_group() <= (wide_planes ? kMostChannelsPerGroupAvx512Wgrad : kMostChannelsPerGroup);
  }
  // dgrad runs on fprop's kernel (cpu/padded_planes.h), with the group's Kg outputs as inputs.
  const int64_t most = avx512 ? kMostChannelsPerGroupAvx512 : kMostChannelsPerGroupNoWgrad;
  return p.C_per_group() <= most && (r.direction != Direction::dgrad || !avx512 || p.K_per_group() <= most);
}

KernelLayouts layouts(const ConvProblem&, const ConvRequest&) {
  return {Layout::nchw, Layout::nchw};
}

}  // namespace

ConvAlgorithm grouped_planes_algorithm() {
  ConvAlgorithm a{"grouped_planes", &can_implement, &fprop, &dgrad, &wgrad, &layouts};
  a.preferred = &preferred;
  a.fused_stages = &fprop_fuses_every_stage;
  return a;
}

}  // namespace fastconv::cpu
