// The input checks every device shares. Each failure names the operator and the argument. In
// C++ it is a c10::ValueError (bad values, shapes, devices) or c10::TypeError (bad dtypes); the
// Python module installs a thrower that raises fastconv.errors' ArgumentError and
// ArgumentTypeError instead, which are also RuntimeErrors, the class torch's own argument
// checks raise and torch's callers catch.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/StringUtil.h>

#include <optional>
#include <string>

namespace fastconv {

enum class ArgumentErrorKind { value, type };

// Raises a failed argument check: through the installed thrower when there is one (it must
// throw), else as c10::ValueError or c10::TypeError.
[[noreturn]] void throw_argument_error(ArgumentErrorKind kind, const std::string& message);

using ArgumentErrorThrower = void (*)(ArgumentErrorKind kind, const std::string& message);
void set_argument_error_thrower(ArgumentErrorThrower thrower);

// TORCH_CHECK_VALUE and TORCH_CHECK_TYPE for fastconv's operator arguments, raised through
// throw_argument_error.
#define FASTCONV_CHECK_VALUE(cond, ...)                                                \
  do {                                                                                 \
    if (C10_UNLIKELY(!(cond)))                                                         \
      ::fastconv::throw_argument_error(::fastconv::ArgumentErrorKind::value,           \
                                       ::c10::str(__VA_ARGS__));                       \
  } while (false)
#define FASTCONV_CHECK_TYPE(cond, ...)                                                 \
  do {                                                                                 \
    if (C10_UNLIKELY(!(cond)))                                                         \
      ::fastconv::throw_argument_error(::fastconv::ArgumentErrorKind::type,            \
                                       ::c10::str(__VA_ARGS__));                       \
  } while (false)

// float, double, half or bfloat16, and defined.
void check_floating(const char* op, const at::Tensor& t, const char* name);
// Same dtype and same device as the reference tensor.
void check_same_dtype(const char* op, const at::Tensor& ref, const char* ref_name,
                      const at::Tensor& t, const char* name);
void check_same_device(const char* op, const at::Tensor& ref, const char* ref_name,
                       const at::Tensor& t, const char* name);
void check_dim(const char* op, const at::Tensor& t, const char* name, int64_t dim,
               const char* layout);
void check_sizes(const char* op, const at::Tensor& t, const char* name,
                 c10::IntArrayRef expected);

// input, weight and bias of a convolution operator: dtypes, devices and ranks.
void check_conv_tensors(const char* op, const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias);

// The bias size, checked after the problem's shapes so that a channel/group mismatch is
// reported as itself rather than as the bias size it implies.
void check_bias_size(const char* op, const std::optional<at::Tensor>& bias,
                     int64_t out_channels);

// The arguments of the RoI operators: features (the input, or the output gradient of a
// backward operator) and rois [K, 5] on one device; input_sizes [N, C, H, W] with H, W > 0;
// a positive pooled size and scale.
void check_roi_arguments(const char* op, const at::Tensor& features, const char* features_name,
                         c10::IntArrayRef input_sizes, const at::Tensor& rois,
                         double spatial_scale, int64_t pooled_height, int64_t pooled_width);

// Reads the batch index of every RoI and checks it names an image of the batch.
void check_roi_batch_indices(const char* op, const at::Tensor& rois, int64_t batch_size);

// PyTorch's rule: the result is channels_last when the input or the filter is.
at::MemoryFormat conv_output_memory_format(const at::Tensor& input, const at::Tensor& weight);

}  // namespace fastconv
