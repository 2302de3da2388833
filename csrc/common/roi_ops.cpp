#include "common/roi_ops.h"

#include "common/acc_type.h"
#include "common/algorithms.h"
#include "common/checks.h"
#include "common/conv_ops.h"
#include "common/emulation.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace fastconv {

namespace {

std::mutex& kernels_mutex() {
  static std::mutex m;
  return m;
}

std::map<c10::DeviceType, RoiKernels>& kernel_table() {
  static std::map<c10::DeviceType, RoiKernels> table;
  return table;
}

// A device's RoI kernels for a tensor, and where the gate stands for them there.
struct DeviceKernels {
  RoiKernels kernels;
  c10::DeviceType device;
  int index;
  int compute_capability;

  bool may_run(const char* kernel) const {
    return fastconv::may_run(kernel, kernels.state, device, index, compute_capability);
  }
  void require(const char* kernel, const char* op) const {
    check_runnable(kernel, kernels.state, device, index, compute_capability,
                   std::string(op) + " on " + c10::DeviceTypeName(device));
  }
};

DeviceKernels kernels_for(const at::Tensor& t, const char* op) {
  const c10::DeviceType device = kernel_device(t);
  RoiKernels kernels;
  {
    std::lock_guard<std::mutex> lock(kernels_mutex());
    auto it = kernel_table().find(device);
    TORCH_CHECK(it != kernel_table().end(), op, ": no kernels for device ", t.device());
    kernels = it->second;
  }
  const int index = t.device().is_cuda() ? t.device().index() : -1;
  return {kernels, device, index, compute_capability_of(device, t.device().index())};
}

const char* backward_kernel(const char* plain, const char* deterministic) {
  return at::globalContext().deterministicAlgorithms() ? deterministic : plain;
}

at::Tensor acc_rois(const at::Tensor& rois, at::ScalarType dtype) {
  return rois.to(acc_dtype(dtype)).contiguous();
}

}  // namespace

void register_roi_kernels(c10::DeviceType device, RoiKernels kernels) {
  std::lock_guard<std::mutex> lock(kernels_mutex());
  kernel_table()[device] = kernels;
}

const std::vector<std::string>& roi_kernel_names() {
  static const std::vector<std::string> names{
      "roi_align", "roi_align_nhwc", "roi_align_multilevel", "roi_align_backward",
      "roi_align_backward_deterministic", "roi_pool", "roi_pool_backward", "roi_pool_backward_deterministic"};
  return names;
}

KernelState roi_kernel_state(c10::DeviceType device) {
  std::lock_guard<std::mutex> lock(kernels_mutex());
  auto it = kernel_table().find(device);
  TORCH_CHECK(it != kernel_table().end(), "fastconv: no RoI kernels for device type ", device);
  return it->second.state;
}

bool roi_deterministic_planes_forced(const char* op) {
  const char* forced = std::getenv("FASTCONV_ROI_DETERMINISTIC");
  if (forced == nullptr || *forced == '\0') return false;
  const std::string f(forced);
  TORCH_CHECK_VALUE(f == "planes", op, ": FASTCONV_ROI_DETERMINISTIC must be 'planes' or unset, got '", f, "'");
  return true;
}

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                     bool aligned) {
  constexpr const char* op = "fastconv::roi_align";
  check_roi_arguments(op, input, "input", input.sizes(), rois, spatial_scale, pooled_height,
                      pooled_width);
  c10::OptionalDeviceGuard guard(input.device());
  check_roi_batch_indices(op, rois, input.size(0));
  at::Tensor out = at::empty({rois.size(0), input.size(1), pooled_height, pooled_width},
                             input.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  RoiArgs args{spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned};
  const DeviceKernels device = kernels_for(input, op);
  const RoiKernels& kernels = device.kernels;
  // A channels_last input stays as it is where the kernel can read it: no copy to NCHW.
  const bool channels_last = kernels.align_takes_channels_last &&
                             input.suggest_memory_format() == at::MemoryFormat::ChannelsLast &&
                             device.may_run("roi_align_nhwc");
  if (!channels_last) device.require("roi_align", op);
  args.channels_last = channels_last;
  kernels.align_forward(
      input.contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous),
      acc_rois(rois, input.scalar_type()), args, out);
  return out;
}

at::Tensor roi_align_multilevel(at::TensorList features, const at::Tensor& rois,
                                const at::Tensor& levels, at::ArrayRef<double> spatial_scales,
                                int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                bool aligned) {
  constexpr const char* op = "fastconv::roi_align_multilevel";
  const int64_t count = int64_t(features.size());
  FASTCONV_CHECK_VALUE(count >= 1 && count <= kMaxRoiLevels, op, ": features must hold 1 to ",
                       kMaxRoiLevels, " feature maps, got ", count);
  FASTCONV_CHECK_VALUE(int64_t(spatial_scales.size()) == count, op, ": spatial_scales must give one scale per "
                       "feature map (", count, "), got ", spatial_scales.size());
  const at::Tensor& first = features[0];
  for (int64_t l = 0; l < count; ++l) {
    const std::string name = "features[" + std::to_string(l) + "]";
    check_roi_arguments(op, features[l], name.c_str(), features[l].sizes(), rois, spatial_scales[l],
                        pooled_height, pooled_width);
    FASTCONV_CHECK_VALUE(features[l].scalar_type() == first.scalar_type() && features[l].device() == first.device(),
                         op, ": ", name, " is ", features[l].scalar_type(), " on ", features[l].device(),
                         ", features[0] is ", first.scalar_type(), " on ", first.device());
    FASTCONV_CHECK_VALUE(features[l].size(0) == first.size(0) && features[l].size(1) == first.size(1), op, ": ",
                         name, " has batch and channels ", features[l].size(0), ", ", features[l].size(1),
                         "; features[0] has ", first.size(0), ", ", first.size(1));
  }
  FASTCONV_CHECK_TYPE(levels.scalar_type() == at::kLong, op, ": levels must be int64, got ", levels.scalar_type());
  FASTCONV_CHECK_VALUE(levels.dim() == 1 && levels.size(0) == rois.size(0), op,
                       ": levels must hold one level per box, shape [", rois.size(0), "], got ", levels.sizes());
  FASTCONV_CHECK_VALUE(levels.device() == rois.device(), op, ": levels is on ", levels.device(),
                       ", rois on ", rois.device());
  c10::OptionalDeviceGuard guard(first.device());
  check_roi_batch_indices(op, rois, first.size(0));
  if (levels.numel() > 0) {
    const auto [low, high] = at::aminmax(levels);
    FASTCONV_CHECK_VALUE(low.item<int64_t>() >= 0 && high.item<int64_t>() < count, op,
                         ": levels must lie in [0, ", count, "), got values from ", low.item<int64_t>(), " to ",
                         high.item<int64_t>());
  }
  at::Tensor out = at::empty({rois.size(0), first.size(1), pooled_height, pooled_width},
                             first.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const DeviceKernels device = kernels_for(first, op);
  const RoiKernels& kernels = device.kernels;
  if (kernels.align_forward_multilevel && device.may_run("roi_align_multilevel")) {
    std::vector<at::Tensor> planes;
    for (const at::Tensor& f : features) planes.push_back(f.contiguous());
    const RoiArgs args{0.0, pooled_height, pooled_width, sampling_ratio, aligned};
    kernels.align_forward_multilevel(planes, acc_rois(rois, first.scalar_type()), levels.contiguous(),
                                     std::vector<double>(spatial_scales.begin(), spatial_scales.end()), args, out);
    return out;
  }
  // Level by level: the boxes of each level gathered, pooled and put back in place.
  for (int64_t l = 0; l < count; ++l) {
    const at::Tensor index = at::nonzero(levels == l).squeeze(1);
    if (index.numel() == 0) continue;
    out.index_copy_(0, index,
                    roi_align(features[l], rois.index_select(0, index), spatial_scales[l], pooled_height,
                              pooled_width, sampling_ratio, aligned));
  }
  return out;
}

at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                              double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                              int64_t batch_size, int64_t channels, int64_t height,
                              int64_t width, int64_t sampling_ratio, bool aligned) {
  constexpr const char* op = "fastconv::roi_align_backward";
  check_roi_arguments(op, grad, "grad", {batch_size, channels, height, width}, rois,
                      spatial_scale, pooled_height, pooled_width);
  check_sizes(op, grad, "grad", {rois.size(0), channels, pooled_height, pooled_width});
  c10::OptionalDeviceGuard guard(grad.device());
  check_roi_batch_indices(op, rois, batch_size);
  const auto acc = acc_dtype(grad.scalar_type());
  at::Tensor grad_input =
      at::zeros({batch_size, channels, height, width}, grad.options().dtype(acc));
  if (grad.numel() > 0 && grad_input.numel() > 0) {
    const RoiArgs args{spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned};
    const DeviceKernels device = kernels_for(grad, op);
    device.require(backward_kernel("roi_align_backward", "roi_align_backward_deterministic"), op);
    device.kernels.align_backward(grad.to(acc).contiguous(), acc_rois(rois, acc), args, grad_input);
  }
  return grad_input.to(grad.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                            double spatial_scale, int64_t pooled_height,
                                            int64_t pooled_width) {
  constexpr const char* op = "fastconv::roi_pool";
  check_roi_arguments(op, input, "input", input.sizes(), rois, spatial_scale, pooled_height,
                      pooled_width);
  c10::OptionalDeviceGuard guard(input.device());
  check_roi_batch_indices(op, rois, input.size(0));
  const std::vector<int64_t> sizes{rois.size(0), input.size(1), pooled_height, pooled_width};
  const auto contiguous = at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty(sizes, input.options().memory_format(contiguous));
  at::Tensor argmax = at::empty(sizes, input.options().dtype(at::kLong).memory_format(contiguous));
  if (out.numel() == 0) return {out, argmax};
  const RoiArgs args{spatial_scale, pooled_height, pooled_width, 0, false};
  const DeviceKernels device = kernels_for(input, op);
  device.require("roi_pool", op);
  device.kernels.pool_forward(input.contiguous(), acc_rois(rois, input.scalar_type()), args, out, argmax);
  return {out, argmax};
}

at::Tensor roi_pool_backward(const at::Tensor& grad, const at::Tensor& rois,
                             const at::Tensor& argmax, double spatial_scale,
                             int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                             int64_t channels, int64_t height, int64_t width) {
  constexpr const char* op = "fastconv::roi_pool_backward";
  check_roi_arguments(op, grad, "grad", {batch_size, channels, height, width}, rois,
                      spatial_scale, pooled_height, pooled_width);
  const std::vector<int64_t> sizes{rois.size(0), channels, pooled_height, pooled_width};
  check_sizes(op, grad, "grad", sizes);
  check_sizes(op, argmax, "argmax", sizes);
  FASTCONV_CHECK_TYPE(argmax.scalar_type() == at::kLong, op,
                      ": argument 'argmax' must be int64, got ", argmax.scalar_type());
  check_same_device(op, grad, "grad", argmax, "argmax");
  c10::OptionalDeviceGuard guard(grad.device());
  check_roi_batch_indices(op, rois, batch_size);
  const auto acc = acc_dtype(grad.scalar_type());
  at::Tensor grad_input =
      at::zeros({batch_size, channels, height, width}, grad.options().dtype(acc));
  if (grad.numel() > 0 && grad_input.numel() > 0) {
    const DeviceKernels device = kernels_for(grad, op);
    device.require(backward_kernel("roi_pool_backward", "roi_pool_backward_deterministic"), op);
    device.kernels.pool_backward(grad.to(acc).contiguous(), acc_rois(rois, acc), argmax.contiguous(),
                                 grad_input);
  }
  return grad_input.to(grad.scalar_type());
}

}  // namespace fastconv
