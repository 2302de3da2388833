// The CUDA kernels' host entry points, registered in csrc/cuda/register.cpp. Host-only
// declarations: this header is included by both g++ and nvcc.
#pragma once

#include "common/algorithms.h"
#include "common/roi_ops.h"

namespace fastconv::cuda {

ConvAlgorithm direct_algorithm();  // one thread per output element: always correct, slow

void roi_align_forward(const at::Tensor& input, const at::Tensor& rois, const RoiArgs& args,
                       at::Tensor& out);
// Deterministic (no atomics) when torch.use_deterministic_algorithms(True) is set.
void roi_align_backward(const at::Tensor& grad, const at::Tensor& rois, const RoiArgs& args,
                        at::Tensor& grad_input);
void roi_pool_forward(const at::Tensor& input, const at::Tensor& rois, const RoiArgs& args,
                      at::Tensor& out, at::Tensor& argmax);
void roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                       at::Tensor& grad_input);

}  // namespace fastconv::cuda
