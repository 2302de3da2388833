// The RoI operators, written once for every device: checks, output allocation, dtypes, empty
// inputs. Each device registers the kernels below (register_roi_kernels) and the operators
// for its dispatch key.
#pragma once

#include "common/algorithms.h"

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <string>
#include <tuple>
#include <vector>

namespace fastconv {

struct RoiArgs {
  double spatial_scale;
  int64_t pooled_height, pooled_width;
  int64_t sampling_ratio;  // RoIAlign only
  bool aligned;            // RoIAlign only
  // RoIAlign forward: the input is contiguous channels_last rather than NCHW (only for a
  // device whose kernels take it, align_takes_channels_last).
  bool channels_last = false;
};

// Kernel contracts. input: contiguous NCHW in its dtype (or contiguous channels_last, for
// RoIAlign forward on a device whose kernels take it and when the caller's input is). rois: contiguous [K, 5] in the
// accumulation dtype (float, or double for double inputs), batch indices already checked.
// Forward outputs are contiguous and every element is written. Backward kernels add into
// grad_input, contiguous and zeroed, in the accumulation dtype; grad is contiguous in it too.
// Each device declares its kernels with these types (cpu/kernels.h, cuda/kernels.h).
using RoiAlignForward = void(const at::Tensor& input, const at::Tensor& rois, const RoiArgs&,
                             at::Tensor& out);
using RoiAlignBackward = void(const at::Tensor& grad, const at::Tensor& rois, const RoiArgs&,
                              at::Tensor& grad_input);
// The FPN pooler's kernel: box k pooled from features[levels[k]] at scales[levels[k]], in one
// launch. features: contiguous NCHW, one dtype, at most kMaxRoiLevels of them; levels: int64
// [K], each in range (checked).
constexpr int kMaxRoiLevels = 8;
using RoiAlignMultilevelForward = void(const std::vector<at::Tensor>& features, const at::Tensor& rois,
                                       const at::Tensor& levels, const std::vector<double>& scales,
                                       const RoiArgs&, at::Tensor& out);
using RoiPoolForward = void(const at::Tensor& input, const at::Tensor& rois, const RoiArgs&,
                            at::Tensor& out, at::Tensor& argmax);
using RoiPoolBackward = void(const at::Tensor& grad, const at::Tensor& rois,
                             const at::Tensor& argmax, at::Tensor& grad_input);

struct RoiKernels {
  RoiAlignForward* align_forward;
  RoiAlignBackward* align_backward;
  RoiPoolForward* pool_forward;
  RoiPoolBackward* pool_backward;
  KernelState state;  // see ConvAlgorithm::state
  bool align_takes_channels_last = false;
  // Null: the multi-level operator pools level by level with align_forward.
  RoiAlignMultilevelForward* align_forward_multilevel = nullptr;
};

void register_roi_kernels(c10::DeviceType device, RoiKernels kernels);

// The RoI kernels as the gate (common/kernel_gate.h) and the self-test name them: each
// operator's kernel, and its variants ("roi_align_nhwc": the channels_last forward;
// "..._deterministic": the backward under torch.use_deterministic_algorithms). Where the gate
// keeps a variant off, the operator takes another that computes the same where there is one
// (roi_align_nhwc: roi_align on an NCHW copy; roi_align_multilevel: roi_align level by level).
const std::vector<std::string>& roi_kernel_names();
// A device's RoI kernels' compiled state; raises where the device has none.
KernelState roi_kernel_state(c10::DeviceType device);

// Which deterministic backward a device's RoI kernels run: their default (false), or the
// simple one kept beside it, one thread per (image, channel) plane (true), which
// FASTCONV_ROI_DETERMINISTIC=planes asks for. Any other non-empty value is an error naming
// the variable.
bool roi_deterministic_planes_forced(const char* op);

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                     bool aligned);
at::Tensor roi_align_multilevel(at::TensorList features, const at::Tensor& rois,
                                const at::Tensor& levels, at::ArrayRef<double> spatial_scales,
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

}  // namespace fastconv
