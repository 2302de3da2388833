#include "common/conv_ops.h"

#include "common/algorithms.h"
#include "common/checks.h"
#include "common/conv_problem.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include <cstdlib>
#include <cstring>
#include <limits>

namespace fastconv {

namespace {

// FASTCONV_FILL_OUTPUTS_WITH_NAN=1 (the tests set it) fills every buffer with NaN before a
// kernel writes it, so an element a kernel forgets to write cannot pass for a right answer.
bool fill_outputs_with_nan() {
  static const bool fill = [] {
    const char* v = std::getenv("FASTCONV_FILL_OUTPUTS_WITH_NAN");
    return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
  }();
  return fill;
}

void poison(at::Tensor& t) {
  if (fill_outputs_with_nan()) t.fill_(std::numeric_limits<double>::quiet_NaN());
}

at::Tensor empty_like_format(c10::IntArrayRef sizes, const at::Tensor& like,
                             at::MemoryFormat format) {
  return at::empty(sizes, like.options().memory_format(format));
}

void run_fprop(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  if (p.is_empty()) {
    y.zero_();
    return;
  }
  poison(y);
  choose_conv_algorithm(x.device().type(), Direction::fprop, p, x.scalar_type())
      .fprop(p, x, w, y);
}

void run_dgrad(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w,
               at::Tensor& dx) {
  if (p.is_empty()) {
    dx.zero_();
    return;
  }
  poison(dx);
  choose_conv_algorithm(dy.device().type(), Direction::dgrad, p, dy.scalar_type())
      .dgrad(p, dy, w, dx);
}

void run_wgrad(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy,
               at::Tensor& dw) {
  if (p.is_empty()) {
    dw.zero_();
    return;
  }
  poison(dw);
  choose_conv_algorithm(x.device().type(), Direction::wgrad, p, x.scalar_type())
      .wgrad(p, x, dy, dw);
}

void add_bias(at::Tensor& out, const OptionalTensor& bias) {
  if (bias.has_value() && bias->defined() && out.numel() > 0)
    out.add_(bias->view({1, -1, 1, 1}));
}

at::Tensor bias_grad(const at::Tensor& grad_output) {
  return grad_output.sum({0, 2, 3});
}

void check_grad_output(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                       c10::IntArrayRef expected) {
  check_floating(op, grad_output, "grad_output");
  check_same_dtype(op, input, "input", grad_output, "grad_output");
  check_same_device(op, input, "input", grad_output, "grad_output");
  check_sizes(op, grad_output, "grad_output", expected);
}

}  // namespace

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const OptionalTensor& bias,
                  c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                  int64_t groups) {
  constexpr const char* op = "fastconv::conv2d";
  const ConvParams params = make_conv_params(op, stride, padding, dilation, groups);
  check_conv_tensors(op, input, weight, bias);
  const ConvProblem p = make_conv_problem(op, input.sizes(), weight.sizes(), params);
  check_bias_size(op, bias, p.K);
  c10::OptionalDeviceGuard guard(input.device());
  at::Tensor y = empty_like_format({p.N, p.K, p.P, p.Q}, input,
                                   conv_output_memory_format(input, weight));
  run_fprop(p, input, weight, y);
  add_bias(y, bias);
  return y;
}

GradTriple conv2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                           const at::Tensor& weight, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                           std::array<bool, 3> output_mask) {
  constexpr const char* op = "fastconv::conv2d_backward";
  const ConvParams params = make_conv_params(op, stride, padding, dilation, groups);
  check_conv_tensors(op, input, weight, std::nullopt);
  const ConvProblem p = make_conv_problem(op, input.sizes(), weight.sizes(), params);
  check_grad_output(op, grad_output, input, {p.N, p.K, p.P, p.Q});
  c10::OptionalDeviceGuard guard(input.device());
  const auto format = conv_output_memory_format(input, weight);
  GradTriple grads;
  if (output_mask[0]) {
    at::Tensor dx = empty_like_format(input.sizes(), input, format);
    run_dgrad(p, grad_output, weight, dx);
    std::get<0>(grads) = dx;
  }
  if (output_mask[1]) {
    at::Tensor dw = empty_like_format(weight.sizes(), weight, format);
    run_wgrad(p, input, grad_output, dw);
    std::get<1>(grads) = dw;
  }
  if (output_mask[2]) std::get<2>(grads) = bias_grad(grad_output);
  return grads;
}

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                            const OptionalTensor& bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef output_padding,
                            c10::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "fastconv::conv_transpose2d";
  const ConvParams params = make_conv_params(op, stride, padding, dilation, groups);
  check_conv_tensors(op, input, weight, bias);
  const ConvProblem p =
      make_transposed_problem(op, input.sizes(), weight.sizes(), params, output_padding);
  check_bias_size(op, bias, p.C);
  c10::OptionalDeviceGuard guard(input.device());
  at::Tensor out = empty_like_format({p.N, p.C, p.H, p.W}, input,
                                     conv_output_memory_format(input, weight));
  run_dgrad(p, input, weight, out);
  add_bias(out, bias);
  return out;
}

GradTriple conv_transpose2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& weight, c10::IntArrayRef stride,
                                     c10::IntArrayRef padding, c10::IntArrayRef output_padding,
                                     c10::IntArrayRef dilation, int64_t groups,
                                     std::array<bool, 3> output_mask) {
  constexpr const char* op = "fastconv::conv_transpose2d_backward";
  const ConvParams params = make_conv_params(op, stride, padding, dilation, groups);
  check_conv_tensors(op, input, weight, std::nullopt);
  const ConvProblem p =
      make_transposed_problem(op, input.sizes(), weight.sizes(), params, output_padding);
  check_grad_output(op, grad_output, input, {p.N, p.C, p.H, p.W});
  c10::OptionalDeviceGuard guard(input.device());
  const auto format = conv_output_memory_format(input, weight);
  GradTriple grads;
  // The transposed output is the convolution's activation, its input the convolution's y.
  if (output_mask[0]) {
    at::Tensor dx = empty_like_format(input.sizes(), input, format);
    run_fprop(p, grad_output, weight, dx);
    std::get<0>(grads) = dx;
  }
  if (output_mask[1]) {
    at::Tensor dw = empty_like_format(weight.sizes(), weight, format);
    run_wgrad(p, grad_output, input, dw);
    std::get<1>(grads) = dw;
  }
  if (output_mask[2]) std::get<2>(grads) = bias_grad(grad_output);
  return grads;
}

}  // namespace fastconv
