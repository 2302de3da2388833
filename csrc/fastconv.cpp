// Every fastconv operator's schema, in one place. Kernels register per device
// (csrc/cpu/register.cpp, csrc/cuda/register.cpp); fake kernels, autograd and the
// Python-side argument handling live in fastconv/_ops.py.
//
// Convolution padding is per side: (top, bottom, left, right). Backward operators take an
// output mask (grad_input, grad_weight, grad_bias) and return None where it is false.
#include "common/algorithm_ops.h"
#include "common/filter_cache.h"

#include <ATen/core/Tensor.h>
#include <torch/library.h>

TORCH_LIBRARY(fastconv, m) {
  m.set_python_module("fastconv._ops");
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};

  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups) -> Tensor",
      tags);
  // activation(conv2d(input, weight, bias) + residual) for inference, the epilogue in the
  // kernel where the chosen algorithm fuses it. activation: none, relu, relu6, silu,
  // hardswish or leaky_relu (with negative_slope). Not differentiable: it refuses inputs that
  // need a gradient (fastconv/_ops.py).
  m.def(
      "conv2d_fused(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, str activation=\"none\", "
      "float negative_slope=0.01) -> Tensor",
      tags);
  m.def(
      "conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, bool[3] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?)",
      tags);
  m.def(
      "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
      "int[4] padding, int[2] output_padding, int[2] dilation, int groups) -> Tensor",
      tags);
  m.def(
      "conv_transpose2d_backward(Tensor grad_output, Tensor input, Tensor weight, "
      "int[2] stride, int[4] padding, int[2] output_padding, int[2] dilation, int groups, "
      "bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)",
      tags);

  // rois: [K, 5] rows of (batch index, x1, y1, x2, y2) in input coordinates / spatial_scale.
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned) -> Tensor",
      tags);
  // The FPN pooler: box k from features[levels[k]] at spatial_scales[levels[k]].
  m.def(
      "roi_align_multilevel(Tensor[] features, Tensor rois, Tensor levels, float[] spatial_scales, "
      "int pooled_height, int pooled_width, int sampling_ratio, bool aligned) -> Tensor",
      tags);
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned) -> Tensor",
      tags);
  // Returns the pooled maxima and, for the backward pass, the flat h * W + w index of each
  // maximum within its input plane (-1 for an empty bin).
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width) -> (Tensor, Tensor)",
      tags);
  m.def(
      "roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
      "int pooled_height, int pooled_width, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width) -> Tensor",
      tags);

  // The library's answers about its algorithms (common/algorithm_ops.h), for Python, C++ and
  // the tests. Kernels for every device: they take no tensor, or only read sizes, dtypes and
  // addresses.
  m.def("_algorithm_names(str device) -> str[]", &fastconv::algorithm_names_op);
  m.def("_forced_algorithm() -> str", &fastconv::forced_algorithm_op);
  m.def("_set_forced_algorithm(str name) -> ()", &fastconv::set_forced_algorithm_op);
  m.def(
      "_can_implement(str algorithm, str device, str direction, Tensor input, Tensor weight, "
      "int[2] stride, int[4] padding, int[2] dilation, int groups, int[]? output_padding, "
      "int compute_capability=-1) -> bool",
      &fastconv::can_implement_op);
  // The epilogue stages (1 bias, 2 residual, 4 activation) the algorithm's kernel applies
  // itself for this request (common/algorithms.h, EpilogueStage).
  m.def(
      "_fused_stages(str algorithm, str device, str direction, Tensor input, Tensor weight, "
      "int[2] stride, int[4] padding, int[2] dilation, int groups, int[]? output_padding, "
      "int compute_capability=-1) -> int",
      &fastconv::fused_stages_op);
  m.def(
      "_chosen_algorithm(str device, str direction, Tensor input, Tensor weight, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, int[]? output_padding) -> str",
      &fastconv::chosen_algorithm_op);
  // Frozen filters (common/filter_cache.h): fastconv.freeze_filters and fastconv.fuse.
  m.def("_freeze_filter(Tensor weight) -> ()", &fastconv::freeze_filter);
  m.def("_thaw_filter(Tensor weight) -> ()", &fastconv::thaw_filter);
  m.def("_thaw_all_filters() -> ()", &fastconv::thaw_all_filters);
  m.def("_filter_cache_state() -> int[]", &fastconv::filter_cache_state);
  m.def("_parallel_threads() -> int", &fastconv::parallel_threads_op);
  m.def("_emulation_built() -> bool", &fastconv::emulation_built_op);
  m.def("_algorithm_states(str device) -> str[]", &fastconv::algorithm_states_op);
  m.def("_roi_kernel_names() -> str[]", &fastconv::roi_kernel_names_op);
  m.def("_roi_kernel_state(str device) -> str", &fastconv::roi_kernel_state_op);
  m.def("_kernel_source_digests() -> str[]", &fastconv::kernel_source_digests_op);
  // The gate (csrc/common/kernel_gate.h): the self-test's verdicts per GPU index and kernel,
  // and the kernels verified on real hardware per SM version.
  m.def("_selftest_result(int device, str kernel) -> int", &fastconv::selftest_result_op);
  m.def("_set_selftest_result(int device, str kernel, bool passed, str failures=\"\") -> ()",
        &fastconv::set_selftest_result_op);
  m.def("_clear_selftest_results(int device) -> ()", &fastconv::clear_selftest_results_op);
  m.def("_set_selftest_trial(bool on) -> ()", &fastconv::set_selftest_trial_op);
  m.def("_set_selftest_record(str where) -> ()", &fastconv::set_selftest_record_op);
  m.def("_set_verified_kernels(int compute_capability, str[] kernels) -> ()",
        &fastconv::set_verified_kernels_op);
  m.def("_kernel_may_run(str device, str kernel, int device_index, int compute_capability) -> bool",
        &fastconv::kernel_may_run_op);
  m.def("_kernel_refusal(str device, str kernel, int device_index, int compute_capability) -> str",
        &fastconv::kernel_refusal_op);
  // a @ bt.T for bf16 a [16, 16] and bt [8, 16], through mma.sync, ldmatrix and cp.async
  // (csrc/cuda/selftest/): on a GPU, and on CPU tensors in the emulation build.
  m.def("_tensor_core_check(Tensor a, Tensor bt) -> Tensor");
  // Launches a probe kernel correctly or with a planted fault (csrc/cuda/selftest/launch_probe.cu):
  // launch failures and faults must come back as errors naming the kernel.
  m.def("_launch_probe(Tensor(a!) out, str fault) -> ()");
  m.def("_set_emulation(bool active, int schedule, int seed, int threads, bool metrics=False, "
        "bool gate=False) -> ()",
        &fastconv::set_emulation_op);
  m.def("_emulated_launches() -> str[]", &fastconv::emulated_launches_op);
}
