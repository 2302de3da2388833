// Grouped convolution at stride 1, chosen for few channels per group (ResNeXt's 32 groups of
// 4, 8 and 16), directly on zero-padded planes (the kernels are in cpu/padded_planes.h,
// shared with depthwise). As GEMMs these are Kg x Cg*R*S matrices too small to pay for unrolling x nine
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

// The automatic choice, measured on ResNeXt's layers against im2col + GEMM (2-core EPYC, both
// threads, speed over oneDNN, fprop/dgrad/wgrad): 4 channels per group at 56x56 2.37/2.08/3.54
// vs 1.13/0.84/1.99; 8 at 28x28 0.44/0.37/0.48 vs 0.23/0.20/0.38; 16 at 14x14 0.35/0.25/0.22
// vs 0.29/0.21/0.40; 32 at 7x7 0.16/0.12/0.10 vs 0.31/0.35/0.44.
constexpr int64_t kMostChannelsPerGroup = 8;
constexpr int64_t kMostChannelsPerGroupNoWgrad = 16;

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
  return p.groups > 1 && padded_planes_apply(p);
}

bool preferred(const ConvProblem& p, Direction d, at::ScalarType) {
  const int64_t most = d == Direction::wgrad ? kMostChannelsPerGroup : kMostChannelsPerGroupNoWgrad;
  return p.C_per_group() <= most;
}

}  // namespace

ConvAlgorithm grouped_planes_algorithm() {
  return {"grouped_planes", &can_implement, &fprop, &dgrad, &wgrad, true, &preferred};
}

}  // namespace fastconv::cpu
