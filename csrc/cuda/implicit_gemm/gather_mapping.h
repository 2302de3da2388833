// fprop and dgrad of a ConvProblem as gather GEMMs (gemm_params.h), written once for every
// implicit-GEMM family (the mma.sync tiles of this folder, the Hopper wgmma tiles of
// cuda/hopper/). Host code only.
//
//   fprop: one GatherGemm over x and w.
//   dgrad: at stride 1, the convolution of dy with the flipped, transposed filter. At stride
//          s > 1, the s_h x s_w phases of dx (pixels h = ph + s_h*i, w = pw + s_w*j) each take
//          only the filter taps that reach them, so no zero between the outputs is multiplied:
//          each phase is a stride-1 GatherGemm with a sub-filter, writing its pixels in place.
#pragma once

#include "common/conv_problem.h"
#include "cuda/implicit_gemm/gemm_params.h"

#include <ATen/core/Tensor.h>

#include <functional>
#include <initializer_list>

namespace fastconv::cuda::igemm {

// 2-byte units per 16-, 8- or 4-byte copy that every operand's base address and channel run
// allow: 8, 4 or 2.
int vector_width(std::initializer_list<const at::Tensor*> tensors, std::initializer_list<int64_t> runs);

GatherGemm fprop_gemm(const ConvProblem& p);

// Calls run(gemm, filter) for each stride phase of dx, filter being that phase's flipped,
// transposed sub-filter, [groups * C/g][taps_h][taps_w][K/g] contiguous.
void for_each_dgrad_phase(const ConvProblem& p, const at::Tensor& w,
                          const std::function<void(const GatherGemm&, const at::Tensor&)>& run);

}  // namespace fastconv::cuda::igemm
