// The algorithm list of each device. A convolution operator asks for the first algorithm of
// its device that can implement the problem in the direction it needs; the list ends with a
// direct kernel that implements everything, so every input has a correct path. Tests force
// each algorithm by name (set_forced_algorithm) on every case it claims.
#pragma once

#include "common/conv_problem.h"

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <string>
#include <vector>

namespace fastconv {

enum class Direction { fprop, dgrad, wgrad };
const char* direction_name(Direction d);

// Every kernel writes each element of its output tensor, which the operator allocates in the
// memory format PyTorch would return. Inputs may have any strides. All sizes of the problem
// are positive (the operators handle empty problems themselves).
using FpropKernel = void (*)(const ConvProblem&, const at::Tensor& x, const at::Tensor& w,
                             at::Tensor& y);
using DgradKernel = void (*)(const ConvProblem&, const at::Tensor& dy, const at::Tensor& w,
                             at::Tensor& dx);
using WgradKernel = void (*)(const ConvProblem&, const at::Tensor& x, const at::Tensor& dy,
                             at::Tensor& dw);

struct ConvAlgorithm {
  const char* name;
  // Whether this algorithm handles the problem in this direction for this dtype.
  bool (*can_implement)(const ConvProblem&, Direction, at::ScalarType);
  FpropKernel fprop;
  DgradKernel dgrad;
  WgradKernel wgrad;
  // Whether the kernels have run, and passed the test suite, on real hardware of their
  // device. Unverified kernels (compiled, never run) stay off unless the user allows them.
  bool verified = true;
  // For the automatic choice only: whether this algorithm should take a problem it can
  // implement (a speed rule, where can_implement is a capability). A forced algorithm runs
  // whatever this says. nullptr: every problem it can implement.
  bool (*preferred)(const ConvProblem&, Direction, at::ScalarType) = nullptr;
};

// Installs a device's list, fastest first. Called once by each device's registration.
void register_conv_algorithms(c10::DeviceType device, std::vector<ConvAlgorithm> list);
const std::vector<ConvAlgorithm>& conv_algorithms(c10::DeviceType device);

// The algorithm that runs: the forced one if set (an error if it cannot implement the
// problem), otherwise the first in the device's list that can.
const ConvAlgorithm& choose_conv_algorithm(c10::DeviceType device, Direction direction,
                                           const ConvProblem& problem, at::ScalarType dtype);

// Kernels compiled but never run on their hardware run only with
// FASTCONV_ALLOW_UNVERIFIED_KERNELS=1 (read once); otherwise asking for one raises
// NotImplementedError naming `what`.
bool unverified_kernels_allowed();
void check_verified(bool verified, const std::string& what);

// Process-wide, so that it also reaches autograd's worker threads. Empty means "choose".
// The environment variable FASTCONV_ALGO sets it when the library loads.
void set_forced_algorithm(const std::string& name);
std::string forced_algorithm();

}  // namespace fastconv
