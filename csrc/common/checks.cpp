#include "common/checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cmath>

namespace fastconv {

namespace {

std::atomic<ArgumentErrorThrower>& installed_thrower() {
  static std::atomic<ArgumentErrorThrower> thrower{nullptr};
  return thrower;
}

}  // namespace

void set_argument_error_thrower(ArgumentErrorThrower thrower) { installed_thrower() = thrower; }

void throw_argument_error(ArgumentErrorKind kind, const std::string& message) {
  if (const ArgumentErrorThrower thrower = installed_thrower().load()) thrower(kind, message);
  // No thrower, or one that could not raise (the Python classes are gone at shutdown).
  if (kind == ArgumentErrorKind::type) C10_THROW_ERROR(TypeError, message);
  C10_THROW_ERROR(ValueError, message);
}

void check_floating(const char* op, const at::Tensor& t, const char* name) {
  FASTCONV_CHECK_VALUE(t.defined(), op, ": argument '", name, "' is an undefined tensor");
  const auto dtype = t.scalar_type();
  FASTCONV_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                          dtype == at::kBFloat16,
                      op, ": argument '", name,
                      "' must be float32, float64, float16 or bfloat16, got ", dtype);
}

void check_same_dtype(const char* op, const at::Tensor& ref, const char* ref_name,
                      const at::Tensor& t, const char* name) {
  FASTCONV_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": argument '", name,
                      "' has dtype ", t.scalar_type(), " but '", ref_name, "' has dtype ",
                      ref.scalar_type(), "; they must match");
}

void check_same_device(const char* op, const at::Tensor& ref, const char* ref_name,
                       const at::Tensor& t, const char* name) {
  FASTCONV_CHECK_VALUE(t.device() == ref.device(), op, ": argument '", name, "' is on ",
                       t.device(), " but '", ref_name, "' is on ", ref.device(),
                       "; they must be on the same device");
}

void check_dim(const char* op, const at::Tensor& t, const char* name, int64_t dim,
               const char* layout) {
  FASTCONV_CHECK_VALUE(t.dim() == dim, op, ": argument '", name, "' must be a ", dim,
                       "-D tensor ", layout, ", got a ", t.dim(), "-D tensor of shape ",
                       t.sizes());
}

void check_sizes(const char* op, const at::Tensor& t, const char* name,
                 c10::IntArrayRef expected) {
  FASTCONV_CHECK_VALUE(t.sizes() == expected, op, ": argument '", name, "' must have shape ",
                       expected, ", got ", t.sizes());
}

void check_conv_tensors(const char* op, const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias) {
  check_floating(op, input, "input");
  check_floating(op, weight, "weight");
  check_same_dtype(op, input, "input", weight, "weight");
  check_same_device(op, input, "input", weight, "weight");
  check_dim(op, input, "input", 4, "[N, C, H, W]");
  check_dim(op, weight, "weight", 4, "[out, in/groups, kH, kW]");
  if (bias.has_value() && bias->defined()) {
    check_floating(op, *bias, "bias");
    check_same_dtype(op, input, "input", *bias, "bias");
    check_same_device(op, input, "input", *bias, "bias");
  }
}

void check_bias_size(const char* op, const std::optional<at::Tensor>& bias,
                     int64_t out_channels) {
  if (bias.has_value() && bias->defined())
    FASTCONV_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == out_channels, op,
                         ": argument 'bias' must have shape [", out_channels,
                         "] (one value per output channel), got ", bias->sizes());
}

void check_roi_arguments(const char* op, const at::Tensor& features, const char* features_name,
                         c10::IntArrayRef input_sizes, const at::Tensor& rois,
                         double spatial_scale, int64_t pooled_height, int64_t pooled_width) {
  check_floating(op, features, features_name);
  check_floating(op, rois, "rois");
  check_same_device(op, features, features_name, rois, "rois");
  FASTCONV_CHECK_VALUE(input_sizes.size() == 4, op,
                       ": argument 'input' must be a 4-D tensor [N, C, H, W], got shape ",
                       input_sizes);
  FASTCONV_CHECK_VALUE(input_sizes[0] >= 0 && input_sizes[1] >= 0 && input_sizes[2] > 0 &&
                           input_sizes[3] > 0,
                       op, ": the input must have a positive height and width, got shape ",
                       input_sizes);
  FASTCONV_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, op,
                       ": argument 'rois' must have shape [K, 5] (batch index, x1, y1, x2, y2), "
                       "got ", rois.sizes());
  FASTCONV_CHECK_VALUE(pooled_height > 0 && pooled_width > 0, op,
                       ": output_size must be positive, got (", pooled_height, ", ", pooled_width,
                       ")");
  FASTCONV_CHECK_VALUE(std::isfinite(spatial_scale) && spatial_scale > 0, op,
                       ": spatial_scale must be a positive finite number, got ", spatial_scale);
}

void check_roi_batch_indices(const char* op, const at::Tensor& rois, int64_t batch_size) {
  // On a GPU this copies K numbers to the host: the one synchronisation of the RoI operators.
  const auto index = rois.select(1, 0).to(at::kCPU, at::kDouble).contiguous();
  const double* p = index.data_ptr<double>();
  for (int64_t k = 0; k < index.numel(); ++k) {
    // RoIs name their image by truncating the first column, as torchvision does.
    FASTCONV_CHECK_VALUE(std::isfinite(p[k]) && p[k] > -1.0 && p[k] < double(batch_size), op,
                         ": rois[", k, ", 0] = ", p[k],
                         " is not a batch index of the input (batch size ", batch_size, ")");
  }
}

at::MemoryFormat conv_output_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace fastconv
