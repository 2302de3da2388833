// Host-side entry points of the Hopper family, one per tile configuration, each instantiated in
// its own .cu (hopper_<tile>.cu, built for sm_90a alone). Host-only declarations: included by
// both g++ and nvcc.
#pragma once

#include "common/algorithms.h"
#include "cuda/implicit_gemm/gemm_params.h"

#include <ATen/core/Tensor.h>

namespace fastconv::cuda::hopper {

// x NHWC, w [groups * Kg][R][S][Cg] (KRSC), y NHWC, all bf16 or fp16 with 16-byte channel
// runs; the epilogue's bias undefined or one value per output channel, its residual undefined or
// laid out as y.
template <class Cfg>
void launch_gather_gemm(const igemm::GatherGemm& p, int64_t groups, const at::Tensor& x, const at::Tensor& w,
                        const Epilogue& epilogue, at::Tensor& y);

// Whether this binary holds the family's sm_90a kernels in a form the device can run.
bool kernels_loadable(int device);

}  // namespace fastconv::cuda::hopper
