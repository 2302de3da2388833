// Autocast rules, the same as PyTorch's and torchvision's: convolutions run in the autocast
// dtype (float16 or bfloat16); RoIAlign and RoIPool compute in float32 and return the input's
// dtype. Backward operators need no rule: autograd calls them with the forward's dtypes.
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

namespace fastconv {

namespace {

using OptionalTensor = std::optional<at::Tensor>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

template <c10::DeviceType device>
at::Tensor conv2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                           const OptionalTensor& bias, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto dtype = at::autocast::get_autocast_dtype(device);
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                         c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t)>(
          "fastconv::conv2d");
  return op.call(at::autocast::cached_cast(dtype, input, device),
                 at::autocast::cached_cast(dtype, weight, device),
                 at::autocast::cached_cast(dtype, bias, device), stride, padding, dilation,
                 groups);
}

// The residual is cast with the rest: the operator adds it before its one rounding, in the
// dtype the convolution runs in, as torch's conv2d(...) + residual would under autocast.
template <c10::DeviceType device>
at::Tensor conv2d_fused_autocast(const at::Tensor& input, const at::Tensor& weight,
                                 const OptionalTensor& bias, const OptionalTensor& residual,
                                 c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 c10::IntArrayRef dilation, int64_t groups,
                                 const std::string& activation, double negative_slope) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto dtype = at::autocast::get_autocast_dtype(device);
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                         const OptionalTensor&, c10::IntArrayRef, c10::IntArrayRef,
                         c10::IntArrayRef, int64_t, const std::string&, double)>(
          "fastconv::conv2d_fused");
  return op.call(at::autocast::cached_cast(dtype, input, device),
                 at::autocast::cached_cast(dtype, weight, device),
                 at::autocast::cached_cast(dtype, bias, device),
                 at::autocast::cached_cast(dtype, residual, device), stride, padding, dilation,
                 groups, activation, negative_slope);
}

template <c10::DeviceType device>
at::Tensor conv_transpose2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                                     const OptionalTensor& bias, c10::IntArrayRef stride,
                                     c10::IntArrayRef padding, c10::IntArrayRef output_padding,
                                     c10::IntArrayRef dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto dtype = at::autocast::get_autocast_dtype(device);
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                         c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef,
                         int64_t)>("fastconv::conv_transpose2d");
  return op.call(at::autocast::cached_cast(dtype, input, device),
                 at::autocast::cached_cast(dtype, weight, device),
                 at::autocast::cached_cast(dtype, bias, device), stride, padding, output_padding,
                 dilation, groups);
}

// RoIAlign and RoIPool under autocast return the input's dtype after float32 arithmetic, as
// torchvision's do. float16 and bfloat16 features are passed as they are: the kernels read
// them and accumulate in float32 (the boxes converted to float32 too), which is the same
// arithmetic as torchvision's cast to float32, without a float32 copy of the features.
// Other dtypes are cast to float32 and back, as torchvision does.
inline bool roi_native(const at::Tensor& input) {
  return input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
}

template <c10::DeviceType device>
at::Tensor roi_align_autocast(const at::Tensor& input, const at::Tensor& rois,
                              double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                              int64_t sampling_ratio, bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, double,
                                            int64_t, int64_t, int64_t, bool)>("fastconv::roi_align");
  if (roi_native(input)) return op.call(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
  return op
      .call(at::autocast::cached_cast(at::kFloat, input, device),
            at::autocast::cached_cast(at::kFloat, rois, device), spatial_scale, pooled_height,
            pooled_width, sampling_ratio, aligned)
      .to(input.scalar_type());
}

template <c10::DeviceType device>
std::tuple<at::Tensor, at::Tensor> roi_pool_autocast(const at::Tensor& input,
                                                     const at::Tensor& rois,
                                                     double spatial_scale,
                                                     int64_t pooled_height,
                                                     int64_t pooled_width) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double,
                                                 int64_t, int64_t)>("fastconv::roi_pool");
  if (roi_native(input)) return op.call(input, rois, spatial_scale, pooled_height, pooled_width);
  auto [out, argmax] = op.call(at::autocast::cached_cast(at::kFloat, input, device),
                               at::autocast::cached_cast(at::kFloat, rois, device),
                               spatial_scale, pooled_height, pooled_width);
  return {out.to(input.scalar_type()), argmax};
}

}  // namespace

}  // namespace fastconv

TORCH_LIBRARY_IMPL(fastconv, AutocastCPU, m) {
  using namespace fastconv;
  m.impl("conv2d", &conv2d_autocast<c10::DeviceType::CPU>);
  m.impl("conv2d_fused", &conv2d_fused_autocast<c10::DeviceType::CPU>);
  m.impl("conv_transpose2d", &conv_transpose2d_autocast<c10::DeviceType::CPU>);
  m.impl("roi_align", &roi_align_autocast<c10::DeviceType::CPU>);
  m.impl("roi_pool", &roi_pool_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fastconv, AutocastCUDA, m) {
  using namespace fastconv;
  m.impl("conv2d", &conv2d_autocast<c10::DeviceType::CUDA>);
  m.impl("conv2d_fused", &conv2d_fused_autocast<c10::DeviceType::CUDA>);
  m.impl("conv_transpose2d", &conv_transpose2d_autocast<c10::DeviceType::CUDA>);
  m.impl("roi_align", &roi_align_autocast<c10::DeviceType::CUDA>);
  m.impl("roi_pool", &roi_pool_autocast<c10::DeviceType::CUDA>);
}
