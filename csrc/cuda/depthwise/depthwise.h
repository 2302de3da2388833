// The depthwise family's host side, shared by its files: the tile planning (depthwise.cpp),
// the filter copy the nhwc kernels read, the filter-size switch, and each direction's launcher,
// one .cu per direction so that a 2-core build stays incremental and a many-core one short.
#pragma once

#include "common/algorithms.h"
#include "common/conv_problem.h"
#include "cuda/depthwise/config.h"

#include <ATen/core/Tensor.h>

#include <type_traits>

namespace fastconv::cuda::depthwise {

// The filter size as a template constant: 3, 5 or 7 for square filters, 0 for any other.
template <typename Body>
void filter_switch(const ConvProblem& p, Body&& body) {
  if (p.R == p.S && p.R == 3) return body(std::integral_constant<int, 3>{});
  if (p.R == p.S && p.R == 5) return body(std::integral_constant<int, 5>{});
  if (p.R == p.S && p.R == 7) return body(std::integral_constant<int, 7>{});
  body(std::integral_constant<int, 0>{});
}

// The largest NCHW tile (rows halved first, then columns) whose window fits the staged
// buffer; rows == 0 when not even one output's does.
PlaneTile plane_tile(const ConvProblem& p, Direction d, int64_t element_size);

// The filter [K, 1, R, S] with k innermost in memory, for the nhwc kernels (depthwise.cpp).
at::Tensor channels_innermost(const at::Tensor& w);

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x, const at::Tensor& w,
           const Epilogue& epilogue, at::Tensor& y);
void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy, const at::Tensor& w,
           const Epilogue& epilogue, at::Tensor& dx);
void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x, const at::Tensor& dy,
           at::Tensor& dw);

}  // namespace fastconv::cuda::depthwise
