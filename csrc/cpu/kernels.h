// The CPU kernels, registered in csrc/cpu/register.cpp.
#pragma once

#include "common/algorithms.h"

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fastconv::cpu {

// Convolution algorithms, in the order the CPU list tries them.
ConvAlgorithm depthwise_algorithm();    // groups == C: direct loops over contiguous planes
ConvAlgorithm im2col_gemm_algorithm();  // tiled im2col / col2im around a batched GEMM
ConvAlgorithm direct_algorithm();       // loops over every tap: always correct, slow

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                     bool aligned);
at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                              double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                              int64_t batch_size, int64_t channels, int64_t height,
                              int64_t width, int64_t sampling_ratio, bool aligned);
std::tuple<at::Tensor, at::Tensor> roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                            double spatial_scale, int64_t pooled_height,
                                            int64_t pooled_width);
at::Tensor roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                             const at::Tensor& argmax, double spatial_scale,
                             int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                             int64_t channels, int64_t height, int64_t width);

}  // namespace fastconv::cpu
