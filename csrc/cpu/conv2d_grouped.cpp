// Grouped convolution with few channels per group (ResNeXt's 32 groups of 4 and 8), stride 1,
// directly on zero-padded planes (the kernels are in cpu/padded_planes.h, shared with
// depthwise). As GEMMs these are Kg x Cg*R*S matrices too small to pay for unrolling x nine
// times into columns; here every input plane is padded once per image and read by the
// group's Kg outputs straight from cache.
#include "cpu/kernels.h"
#include "cpu/padded_planes.h"
#include "cpu/strided.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace fastconv::cpu {

namespace {

// Measured on ResNeXt's layers against im2col + GEMM (2-core EPYC, ms, fprop/dgrad/wgrad):
// 4 channels per group at 56x56 2.8/3.1/3.3 vs 9.0/11.5/4.0; 8 at 28x28 2.1/2.7/3.0 vs
// 6.5/6.3/2.3; 16 at 14x14 2.1/2.8/5.0 vs 4.2/3.9/1.5. The claim is one for all directions,
// so 16 stays with im2col.
constexpr int64_t kMostChannelsPerGroup = 8;

void fprop(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "grouped_fprop",
                                  [&] { padded_planes_fprop<scalar_t>(p, x, w, y); });
}

void dgrad(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "grouped_dgrad",
                                  [&] { padded_planes_dgrad<scalar_t>(p, dy, w, dx); });
}

void wgrad(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "grouped_wgrad",
                                  [&] { padded_planes_wgrad<scalar_t>(p, x, dy, dw); });
}

bool can_implement(const ConvProblem& p, Direction, at::ScalarType) {
  return p.groups > 1 && p.C_per_group() <= kMostChannelsPerGroup && padded_planes_apply(p);
}

}  // namespace

ConvAlgorithm grouped_planes_algorithm() {
  return {"grouped_planes", &can_implement, &fprop, &dgrad, &wgrad};
}

}  // namespace fastconv::cpu
