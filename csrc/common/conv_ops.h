// The convolution operators, written once for every device: argument checks, the problem,
// output allocation in PyTorch's memory format, empty problems, bias, and the choice of
// algorithm from the device's list. Device files register these for their dispatch key.
#pragma once

#include "common/algorithms.h"
#include "common/conv_problem.h"

#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>
#include <string>
#include <tuple>

namespace fastconv {

// The request an operator makes for one direction whose kernel reads `first` and `second`
// (fprop: x, w; dgrad: dy, w; wgrad: x, dy) and returns its result in `format`.
// compute_capability < 0: the device's own, from the query its registration installed.
ConvRequest make_conv_request(Direction direction, const ConvProblem& p, const at::Tensor& first,
                              const at::Tensor& second, at::MemoryFormat format,
                              int compute_capability);

// Installed by a device's registration (CUDA: the SM version of a device index).
void register_compute_capability_query(c10::DeviceType device,
                                       std::function<int(c10::DeviceIndex)> query);
// The device's SM version from that query (0 where none is installed: the CPU).
int compute_capability_of(c10::DeviceType device, c10::DeviceIndex index);

using OptionalTensor = std::optional<at::Tensor>;
using GradTriple = std::tuple<OptionalTensor, OptionalTensor, OptionalTensor>;

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const OptionalTensor& bias,
                  c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                  int64_t groups);

// act(conv2d(input, weight, bias) + residual), one rounding: the inference operator that
// fastconv.fuse() builds on. residual (optional) has the output's shape; activation is one
// of none, relu, relu6, silu, hardswish, leaky_relu (with negative_slope).
at::Tensor conv2d_fused(const at::Tensor& input, const at::Tensor& weight,
                        const OptionalTensor& bias, const OptionalTensor& residual,
                        c10::IntArrayRef stride, c10::IntArrayRef padding,
                        c10::IntArrayRef dilation, int64_t groups, const std::string& activation,
                        double negative_slope);
std::optional<Activation> activation_from_name(const std::string& name);

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
