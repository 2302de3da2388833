// The library's own answers about its algorithms, as operators (schemas in csrc/fastconv.cpp)
// so that Python, C++ and the tests ask the library rather than keep copies of its rules.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/OptionalArrayRef.h>

#include <optional>
#include <string>
#include <vector>

namespace fastconv {

// The names in a device's list ("cpu" or "cuda"), in the order they are tried; empty when
// this build has no kernels for the device.
std::vector<std::string> algorithm_names_op(const std::string& device);
std::string forced_algorithm_op();
void set_forced_algorithm_op(const std::string& name);

// Whether `algorithm` of `device`'s list can implement `direction` ("fprop", "dgrad",
// "wgrad") of the convolution that conv2d (output_padding absent) or conv_transpose2d
// (output_padding given) would run for these tensors and arguments: the request it would
// make (dtype, layout, alignment, SM version) and the algorithm's can_implement. Finiteness
// is not asked (it depends on the values). compute_capability < 0: that of the tensors'
// device, 0 for the CPU.
bool can_implement_op(const std::string& algorithm, const std::string& device,
                      const std::string& direction, const at::Tensor& input,
                      const at::Tensor& weight, c10::IntArrayRef stride,
                      c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                      at::OptionalIntArrayRef output_padding,
                      int64_t compute_capability);
// Which epilogue stages (EpilogueStage bits) the algorithm's kernel applies itself for that
// request; the operator applies the others.
int64_t fused_stages_op(const std::string& algorithm, const std::string& device,
                        const std::string& direction, const at::Tensor& input,
                        const at::Tensor& weight, c10::IntArrayRef stride,
                        c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                        at::OptionalIntArrayRef output_padding, int64_t compute_capability);

// The algorithm that conv2d / conv_transpose2d would run for `direction` on these tensors
// now: the forced one, or the automatic choice through the gate (operand values unread).
std::string chosen_algorithm_op(const std::string& device, const std::string& direction,
                                const at::Tensor& input, const at::Tensor& weight, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                                at::OptionalIntArrayRef output_padding);

// The emulated-CUDA mode (common/emulation.h): whether this build has it, and switching it.
bool emulation_built_op();
void set_emulation_op(bool active, int64_t schedule, int64_t seed, int64_t threads, bool metrics,
                      bool gate);
std::vector<std::string> emulated_launches_op();

// The gate's records (common/kernel_gate.h), for fastconv/selftest.py and fastconv/_verified.py:
// the self-test's verdict per GPU index and kernel (-1 not run, 0 failed, 1 passed), the
// trial that lets emulated kernels run while the self-test tries them, where its record is
// kept, and the kernels verified on real hardware per SM version.
int64_t selftest_result_op(int64_t device, const std::string& kernel);
void set_selftest_result_op(int64_t device, const std::string& kernel, bool passed,
                            const std::string& failures);
void clear_selftest_results_op(int64_t device);
void set_selftest_trial_op(bool on);
void set_selftest_record_op(const std::string& where);
void set_verified_kernels_op(int64_t compute_capability, const std::vector<std::string>& kernels);
// Whether `kernel` may run on a device (CUDA index, or -1 for the emulated GPU) of that SM
// version; and if not, why.
bool kernel_may_run_op(const std::string& device, const std::string& kernel, int64_t device_index,
                       int64_t compute_capability);
std::string kernel_refusal_op(const std::string& device, const std::string& kernel, int64_t device_index,
                              int64_t compute_capability);
// Each algorithm's compiled state ("unverified", "emulated", "verified"), in list order.
std::vector<std::string> algorithm_states_op(const std::string& device);
// The RoI kernels the gate names (roi_kernel_names), and their compiled state on a device.
std::vector<std::string> roi_kernel_names_op();
std::string roi_kernel_state_op(const std::string& device);
// "family=digest" per CUDA kernel family: the sources this build was compiled from.
std::vector<std::string> kernel_source_digests_op();

// How many threads an at::parallel_for compiled into this library runs on: the build must
// give ATen's header-only OpenMP loop its -fopenmp, or every kernel silently runs serially.
int64_t parallel_threads_op();

}  // namespace fastconv
