// The convolution operators, written once for every device: argument checks, the problem,
// output allocation in PyTorch's memory format, empty problems, bias, and the choice of
// algorithm from the device's list. Device files register these for their dispatch key.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace fastconv {

using OptionalTensor = std::optional<at::Tensor>;
using GradTriple = std::tuple<OptionalTensor, OptionalTensor, OptionalTensor>;

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const OptionalTensor& bias,
                  c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                  int64_t groups);

GradTriple conv2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                           const at::Tensor& weight, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                           std::array<bool, 3> output_mask);

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                            const OptionalTensor& bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef output_padding,
                            c10::IntArrayRef dilation, int64_t groups);

GradTriple conv_transpose2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& weight, c10::IntArrayRef stride,
                                     c10::IntArrayRef padding, c10::IntArrayRef output_padding,
                                     c10::IntArrayRef dilation, int64_t groups,
                                     std::array<bool, 3> output_mask);

}  // namespace fastconv
