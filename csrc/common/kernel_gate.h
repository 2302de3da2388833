// The gate between how far a kernel is proved and a user's device: which kernels may run
// where, and the records that open it. One kernel that fails never closes the gate on another.
//
// A kernel is named as the tests and the records name it: a convolution algorithm by its name
// in the device's list ("igemm_64x64", "direct"), a RoI kernel by its operator and variant
// (roi_kernel_names() below).
//
// Proof, per kernel:
//   unverified  compiled only: runs only with FASTCONV_ALLOW_UNVERIFIED_KERNELS=1.
//   emulated    passes the emulation suite in CI. On a GPU it runs where the self-test
//               (fastconv/selftest.py) has passed that kernel on that GPU, or where the
//               committed record of real-hardware runs (fastconv/_verified/, written from a
//               bench/gpu_check.sh result) lists it, at its current sources, as verified for the
//               GPU's SM version.
//   verified    compiled so (every CPU kernel): always runs.
// Under emulation (CPU tensors through the CUDA kernels) every kernel runs, unless the
// emulation's gate is on (fastconv.testing.emulated_cuda(gate=True)), when the emulated GPU
// (index -1, SM 9.0) is gated like a real one.
#pragma once

#include <c10/core/DeviceType.h>

#include <string>
#include <vector>

namespace fastconv {

enum class KernelState { unverified, emulated, verified };
const char* state_name(KernelState s);

// FASTCONV_ALLOW_UNVERIFIED_KERNELS=1 (read once), or emulation with its gate off.
bool unverified_kernels_allowed();

// Whether `kernel`, proved to `state`, may run on a device of type `device`, index
// `device_index` and SM version `compute_capability`.
bool may_run(const std::string& kernel, KernelState state, c10::DeviceType device, int device_index,
             int compute_capability);
// Why it may not, in a sentence that names the kernel and what would open the gate ("" when
// it may run).
std::string why_not_runnable(const std::string& kernel, KernelState state, c10::DeviceType device,
                             int device_index, int compute_capability);
// Raises NotImplementedError with why_not_runnable's sentence, unless may_run. `what` says
// what the caller asked for ("roi_align on CUDA").
void check_runnable(const std::string& kernel, KernelState state, c10::DeviceType device,
                    int device_index, int compute_capability, const std::string& what);

// The self-test's verdicts, per GPU index and kernel: -1 not run, 0 failed, 1 passed.
// `failures` names the failing cases, for the errors that refuse the kernel.
int selftest_result(int device_index, const std::string& kernel);
void set_selftest_result(int device_index, const std::string& kernel, bool passed,
                         const std::string& failures);
// Forgets every verdict of one GPU (a rerun of its self-test replaces them all).
void clear_selftest_results(int device_index);
// Where the self-test keeps its results, named in the errors ("" until it is told).
void set_selftest_record(const std::string& where);
// While the self-test tries the kernels, every emulated one may run.
void set_selftest_trial(bool on);

// The committed record of real-hardware runs: `kernels` passed bench/gpu_check.sh on a GPU of
// this SM version at the sources this build was compiled from (fastconv/_verified.py checks
// the sources before it calls this).
void set_verified_kernels(int compute_capability, const std::vector<std::string>& kernels);
bool verified_on(int compute_capability, const std::string& kernel);

// Each kernel family's source digest, compiled in by setup.py (family -> hex digest of its
// folder under csrc/cuda/ and of csrc/cuda/common/); empty in a build without them (CMake).
std::vector<std::string> kernel_source_digests();

}  // namespace fastconv
