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

// The emulated-CUDA mode (common/emulation.h): whether this build has it, and switching it.
bool emulation_built_op();
void set_emulation_op(bool active, int64_t schedule, int64_t seed, int64_t threads, bool metrics);
std::vector<std::string> emulated_launches_op();

// The on-device self-test's bookkeeping (fastconv/selftest.py): per GPU index, -1 not run,
// 0 failed, 1 passed; the trial lets emulated kernels run while the self-test tries them.
int64_t selftest_result_op(int64_t device);
void set_selftest_result_op(int64_t device, bool passed);
void set_selftest_trial_op(bool on);
// Each CUDA algorithm's state ("unverified", "emulated", "verified"), in list order.
std::vector<std::string> algorithm_states_op(const std::string& device);

// How many threads an at::parallel_for compiled into this library runs on: the build must
// give ATen's header-only OpenMP loop its -fopenmp, or every kernel silently runs serially.
int64_t parallel_threads_op();

}  // namespace fastconv
