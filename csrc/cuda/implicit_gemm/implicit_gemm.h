// Host-side entry points of the implicit-GEMM family, one set per tile configuration, each
// instantiated in its own .cu (igemm_<direction>_<tile>.cu) so a 2-core build stays
// incremental. Host-only declarations: included by both g++ and nvcc.
#pragma once

#include "common/algorithms.h"
#include "cuda/implicit_gemm/gemm_params.h"

#include <ATen/core/Tensor.h>

namespace fastconv::cuda::igemm {

// vec: 2-byte units per cp.async, 8 (16-byte copies) or 4 (8-byte). Tensors NHWC / KRSC
// contiguous, bf16 or fp16, or float (the gather GEMM only, on TF32); the epilogue's bias
// undefined or one value per output channel, its residual undefined or laid out as y.
template <class Cfg>
void launch_gather_gemm(const GatherGemm& p, int64_t groups, int vec, const at::Tensor& x,
                        const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y);

// With p.splits == 1 the kernel writes dw; otherwise workspace (float, p.splits * groups * Kg
// * R * S * Cg elements), which reduce_splits then sums into dw.
template <class Cfg>
void launch_wgrad_gemm(const WgradGemm& p, int vec, const at::Tensor& x, const at::Tensor& dy,
                       at::Tensor& workspace, at::Tensor& dw);

void reduce_splits(const at::Tensor& workspace, int64_t splits, at::Tensor& dw);

}  // namespace fastconv::cuda::igemm
