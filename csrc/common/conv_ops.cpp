#include "common/conv_ops.h"

#include "common/acc_type.h"
#include "common/algorithms.h"
#include "common/checks.h"
#include "common/conv_problem.h"
#include "common/emulation.h"
#include "common/filter_cache.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/DeviceGuard.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <mutex>

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

// The operands of one direction: the two tensors its kernel reads and the one it writes
// (fprop: x, w -> y; dgrad: dy, w -> dx; wgrad: x, dy -> dw).
struct Operands {
  const at::Tensor& first;
  const at::Tensor& second;
  at::Tensor& out;
};

bool all_finite(const at::Tensor& t) {
  if (!t.device().is_cpu()) return at::isfinite(t).all().item<bool>();
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "all_finite", [&] {
    using acc_t = acc_type<scalar_t>;
    // Any dense layout will do, so a channels-last tensor is read where it lies.
    const at::Tensor c = t.is_contiguous(at::MemoryFormat::ChannelsLast) ? t : t.contiguous();
    const scalar_t* p = c.const_data_ptr<scalar_t>();
    std::atomic<bool> ok{true};
    at::parallel_for(0, c.numel(), 1 << 16, [&](int64_t b, int64_t e) {
      int good = 1;
      for (int64_t i = b; i < e; ++i)
        good &= std::abs(acc_t(p[i])) <= std::numeric_limits<acc_t>::max();
      if (!good) ok = false;
    });
    finite = ok;
  });
  return finite;
}

bool operands_finite(const void* context) {
  const auto* o = static_cast<const Operands*>(context);
  // A frozen filter is read once, not on every call.
  return finite_operand(o->first, [&] { return all_finite(o->first); }) &&
         finite_operand(o->second, [&] { return all_finite(o->second); });
}

int largest_power_of_two_dividing(uint64_t v, int most) {
  int a = 1;
  while (a < most && v % uint64_t(2 * a) == 0) a *= 2;
  return a;
}

// Where the operand lies once it conforms to `format`: a tensor that does not conform is
// copied into a fresh (fully aligned) buffer first.
uint64_t conformed_address(const at::Tensor& t, at::MemoryFormat format) {
  if (!t.is_contiguous(format) || t.device().is_meta()) return 0;
  return reinterpret_cast<uint64_t>(t.const_data_ptr());
}

// Installed once per device type by its registration, read by every request (autograd's
// threads included), hence the lock.
std::mutex& queries_mutex() {
  static std::mutex m;
  return m;
}

std::map<c10::DeviceType, std::function<int(c10::DeviceIndex)>>& queries() {
  static std::map<c10::DeviceType, std::function<int(c10::DeviceIndex)>> q;
  return q;
}

void apply_activation(at::Tensor& t, Activation a, double negative_slope) {
  switch (a) {
    case Activation::none: break;
    case Activation::relu: t.relu_(); break;
    case Activation::relu6: at::hardtanh_(t, 0.0, 6.0); break;
    case Activation::silu: at::silu_(t); break;
    case Activation::hardswish: at::hardswish_(t); break;
    case Activation::leaky_relu: at::leaky_relu_(t, negative_slope); break;
  }
}

// Applies the stages of `e` named in `stages` to out, in the epilogue's order, with ATen's ops.
void apply_stages(at::Tensor& out, const Epilogue& e, unsigned stages) {
  if (stages & kBiasStage) out.add_(e.bias.view({1, -1, 1, 1}));
  if (stages & kResidualStage) out.add_(e.residual);
  if (stages & kActivationStage) apply_activation(out, e.activation, e.negative_slope);
}

// The stages of `wanted` that a kernel fusing `fusable` is given: the additions it fuses, and
// the activation only when it is given every addition asked for, which must come first.
unsigned kernel_stages(unsigned wanted, unsigned fusable) {
  constexpr unsigned additions = kBiasStage | kResidualStage;
  unsigned given = wanted & fusable & additions;
  if ((wanted & fusable & kActivationStage) && given == (wanted & additions)) given |= kActivationStage;
  return given;
}

// Runs one direction through the device's list: conforms the operands to the chosen
// algorithm's layouts, and applies whatever of the epilogue the kernel does not fuse.
// `format` is the memory format the operator returns (and allocated o.out in); the epilogue
// (for fprop and dgrad) has a bias of one value per channel of out and a residual of out's
// shape.
void run(Direction direction, const ConvProblem& p, const Operands& o, at::MemoryFormat format,
         const Epilogue& epilogue = {}) {
  const unsigned wanted = direction == Direction::wgrad ? 0u : epilogue.stages();
  // An empty operand (no images, no input channels, a zero-size plane) leaves every output a
  // sum of nothing: zeros, then the epilogue.
  if (p.is_empty() || o.first.numel() == 0 || o.second.numel() == 0) {
    o.out.zero_();
    apply_stages(o.out, epilogue, wanted);
    return;
  }
  const ConvRequest request =
      make_conv_request(direction, p, o.first, o.second, format, -1);
  const ConvAlgorithm& a =
      choose_conv_algorithm(kernel_device(o.first), p, request, &operands_finite, &o);
  const KernelLayouts layouts = a.layouts_for(p, request);
  const auto in_format = memory_format_of(layouts.inputs);
  const auto out_format = memory_format_of(layouts.output);
  const at::Tensor first = contiguous_in(o.first, in_format);
  const at::Tensor second = contiguous_in(o.second, in_format);
  at::Tensor target = o.out.is_contiguous(out_format)
                          ? o.out
                          : at::empty(o.out.sizes(), o.out.options().memory_format(out_format));
  poison(target);
  const unsigned fused = kernel_stages(wanted, a.fused_stages_for(p, request));
  Epilogue given;
  if (fused & kBiasStage) given.bias = epilogue.bias.contiguous();
  if (fused & kResidualStage) given.residual = epilogue.residual.contiguous(out_format);
  if (fused & kActivationStage) {
    given.activation = epilogue.activation;
    given.negative_slope = epilogue.negative_slope;
  }
  // fprop's and dgrad's second operand is the filter (kernels key what they derive from it on
  // the caller's tensor, not on a contiguous copy of it).
  const FilterScope filter_scope(direction == Direction::wgrad ? nullptr : &o.second);
  switch (direction) {
    case Direction::fprop: a.fprop(p, layouts, first, second, given, target); break;
    case Direction::dgrad: a.dgrad(p, layouts, first, second, given, target); break;
    case Direction::wgrad: a.wgrad(p, layouts, first, second, target); break;
  }
  if (!target.is_same(o.out)) copy_between_layouts(target, o.out);
  apply_stages(o.out, epilogue, wanted & ~fused);
}

Epilogue bias_only(const OptionalTensor& bias) {
  Epilogue e;
  if (bias.has_value() && bias->defined()) e.bias = *bias;
  return e;
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

void register_compute_capability_query(c10::DeviceType device,
                                       std::function<int(c10::DeviceIndex)> query) {
  std::lock_guard<std::mutex> lock(queries_mutex());
  queries()[device] = std::move(query);
}

int compute_capability_of(c10::DeviceType device, c10::DeviceIndex index) {
  std::function<int(c10::DeviceIndex)> query;
  {
    std::lock_guard<std::mutex> lock(queries_mutex());
    auto it = queries().find(device);
    if (it != queries().end()) query = it->second;
  }
  return query ? query(index) : 0;
}

ConvRequest make_conv_request(Direction direction, const ConvProblem& p, const at::Tensor& first,
                              const at::Tensor& second, at::MemoryFormat format,
                              int compute_capability) {
  ConvRequest r{};
  r.direction = direction;
  r.dtype = first.scalar_type();
  r.layout = format == at::MemoryFormat::ChannelsLast ? Layout::nhwc : Layout::nchw;
  r.device_index = first.device().is_cuda() ? first.device().index() : -1;
  const uint64_t element = first.element_size();
  // Outputs are fresh allocations, aligned far beyond 16 bytes.
  const uint64_t spans = conformed_address(first, format) | conformed_address(second, format) |
                         uint64_t(p.C_per_group()) * element |
                         uint64_t(p.K_per_group()) * element;
  r.alignment = largest_power_of_two_dividing(spans, 16);
  if (compute_capability < 0)
    compute_capability = compute_capability_of(kernel_device(first), first.device().index());
  r.compute_capability = compute_capability;
  r.allow_tf32 = at::globalContext().allowTF32CuDNN();
  return r;
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const OptionalTensor& bias,
                  c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                  int64_t groups) {
  constexpr const char* op = "fastconv::conv2d";
  const ConvParams params = make_conv_params(op, stride, padding, dilation, groups);
  check_conv_tensors(op, input, weight, bias);
  const ConvProblem p = make_conv_problem(op, input.sizes(), weight.sizes(), params);
  check_bias_size(op, bias, p.K);
  c10::OptionalDeviceGuard guard(input.device());
  const auto format = conv_output_memory_format(input, weight);
  at::Tensor y = empty_like_format({p.N, p.K, p.P, p.Q}, input, format);
  run(Direction::fprop, p, {input, weight, y}, format, bias_only(bias));
  return y;
}

std::optional<Activation> activation_from_name(const std::string& name) {
  static const std::pair<const char*, Activation> names[] = {
      {"none", Activation::none}, {"relu", Activation::relu},
      {"relu6", Activation::relu6}, {"silu", Activation::silu},
      {"hardswish", Activation::hardswish}, {"leaky_relu", Activation::leaky_relu}};
  for (const auto& [n, a] : names)
    if (name == n) return a;
  return std::nullopt;
}

at::Tensor conv2d_fused(const at::Tensor& input, const at::Tensor& weight,
                        const OptionalTensor& bias, const OptionalTensor& residual,
                        c10::IntArrayRef stride, c10::IntArrayRef padding,
                        c10::IntArrayRef dilation, int64_t groups, const std::string& activation,
                        double negative_slope) {
  constexpr const char* op = "fastconv::conv2d_fused";
  const ConvParams params = make_conv_params(op, stride, padding, dilation, groups);
  check_conv_tensors(op, input, weight, bias);
  const ConvProblem p = make_conv_problem(op, input.sizes(), weight.sizes(), params);
  check_bias_size(op, bias, p.K);
  const auto act = activation_from_name(activation);
  FASTCONV_CHECK_VALUE(act.has_value(), op, ": activation must be one of 'none', 'relu', 'relu6', "
                       "'silu', 'hardswish', 'leaky_relu', got '", activation, "'");
  FASTCONV_CHECK_VALUE(std::isfinite(negative_slope), op, ": negative_slope must be finite, got ",
                       negative_slope);
  Epilogue e = bias_only(bias);
  if (residual.has_value() && residual->defined()) {
    check_floating(op, *residual, "residual");
    check_same_dtype(op, input, "input", *residual, "residual");
    check_same_device(op, input, "input", *residual, "residual");
    check_sizes(op, *residual, "residual", {p.N, p.K, p.P, p.Q});
    e.residual = *residual;
  }
  e.activation = *act;
  e.negative_slope = negative_slope;
  c10::OptionalDeviceGuard guard(input.device());
  const auto format = conv_output_memory_format(input, weight);
  at::Tensor y = empty_like_format({p.N, p.K, p.P, p.Q}, input, format);
  run(Direction::fprop, p, {input, weight, y}, format, e);
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
    run(Direction::dgrad, p, {grad_output, weight, dx}, format);
    std::get<0>(grads) = dx;
  }
  if (output_mask[1]) {
    at::Tensor dw = empty_like_format(weight.sizes(), weight, format);
    run(Direction::wgrad, p, {input, grad_output, dw}, format);
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
  const auto format = conv_output_memory_format(input, weight);
  at::Tensor out = empty_like_format({p.N, p.C, p.H, p.W}, input, format);
  run(Direction::dgrad, p, {input, weight, out}, format, bias_only(bias));
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
    run(Direction::fprop, p, {grad_output, weight, dx}, format);
    std::get<0>(grads) = dx;
  }
  if (output_mask[1]) {
    at::Tensor dw = empty_like_format(weight.sizes(), weight, format);
    run(Direction::wgrad, p, {grad_output, input, dw}, format);
    std::get<1>(grads) = dw;
  }
  if (output_mask[2]) std::get<2>(grads) = bias_grad(grad_output);
  return grads;
}

}  // namespace fastconv
