#include "common/algorithm_ops.h"

#include "common/algorithms.h"
#include "common/checks.h"
#include "common/conv_ops.h"
#include "common/conv_problem.h"
#include "common/emulation.h"
#include "common/kernel_gate.h"
#include "common/roi_ops.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

namespace fastconv {

namespace {

c10::DeviceType parse_device(const char* op, const std::string& device) {
  if (device == "cpu") return c10::DeviceType::CPU;
  if (device == "cuda") return c10::DeviceType::CUDA;
  TORCH_CHECK_VALUE(false, op, ": device must be 'cpu' or 'cuda', got '", device, "'");
}

}  // namespace

std::vector<std::string> algorithm_names_op(const std::string& device) {
  std::vector<std::string> names;
  try {
    for (const auto& a : conv_algorithms(parse_device("fastconv::_algorithm_names", device)))
      names.emplace_back(a.name);
  } catch (const c10::ValueError&) {
    throw;
  } catch (const c10::Error&) {
    names.clear();  // no kernels for that device in this build
  }
  return names;
}

std::string forced_algorithm_op() { return forced_algorithm(); }

void set_forced_algorithm_op(const std::string& name) { set_forced_algorithm(name); }

namespace {

struct QueriedRequest {
  ConvProblem problem;
  ConvRequest request;
};

QueriedRequest query_request(const char* op, const std::string& direction, const at::Tensor& input,
                             const at::Tensor& weight, c10::IntArrayRef stride, c10::IntArrayRef padding,
                             c10::IntArrayRef dilation, int64_t groups, at::OptionalIntArrayRef output_padding,
                             int64_t compute_capability) {
  const auto d = parse_direction(direction);
  TORCH_CHECK_VALUE(d.has_value(), op, ": direction must be 'fprop', 'dgrad' or 'wgrad', got '",
                    direction, "'");
  const ConvParams params = make_conv_params(op, stride, padding, dilation, groups);
  check_conv_tensors(op, input, weight, std::nullopt);
  const ConvProblem p =
      output_padding.has_value()
          ? make_transposed_problem(op, input.sizes(), weight.sizes(), params, *output_padding)
          : make_conv_problem(op, input.sizes(), weight.sizes(), params);
  const ConvRequest r =
      make_conv_request(*d, p, input, weight, conv_output_memory_format(input, weight),
                        static_cast<int>(compute_capability));
  return {p, r};
}

}  // namespace

std::string chosen_algorithm_op(const std::string& device, const std::string& direction,
                                const at::Tensor& input, const at::Tensor& weight, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                                at::OptionalIntArrayRef output_padding) {
  constexpr const char* op = "fastconv::_chosen_algorithm";
  const c10::DeviceType type = parse_device(op, device);
  const QueriedRequest q = query_request(op, direction, input, weight, stride, padding, dilation, groups,
                                         output_padding, -1);
  // The operands' values are not read: an algorithm that needs finite ones is taken as if they were.
  return choose_conv_algorithm(type, q.problem, q.request, nullptr, nullptr).name;
}

bool can_implement_op(const std::string& algorithm, const std::string& device,
                      const std::string& direction, const at::Tensor& input,
                      const at::Tensor& weight, c10::IntArrayRef stride,
                      c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                      at::OptionalIntArrayRef output_padding,
                      int64_t compute_capability) {
  constexpr const char* op = "fastconv::_can_implement";
  const c10::DeviceType type = parse_device(op, device);
  const ConvAlgorithm* a = find_conv_algorithm(type, algorithm);
  TORCH_CHECK_VALUE(a != nullptr, op, ": no algorithm '", algorithm, "' on ", device);
  const QueriedRequest q = query_request(op, direction, input, weight, stride, padding, dilation, groups,
                                         output_padding, compute_capability);
  return a->has_kernel(q.request.direction) && a->can_implement(q.problem, q.request);
}

int64_t fused_stages_op(const std::string& algorithm, const std::string& device,
                        const std::string& direction, const at::Tensor& input,
                        const at::Tensor& weight, c10::IntArrayRef stride,
                        c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                        at::OptionalIntArrayRef output_padding, int64_t compute_capability) {
  constexpr const char* op = "fastconv::_fused_stages";
  const c10::DeviceType type = parse_device(op, device);
  const ConvAlgorithm* a = find_conv_algorithm(type, algorithm);
  TORCH_CHECK_VALUE(a != nullptr, op, ": no algorithm '", algorithm, "' on ", device);
  const QueriedRequest q = query_request(op, direction, input, weight, stride, padding, dilation, groups,
                                         output_padding, compute_capability);
  return a->fused_stages_for(q.problem, q.request);
}

int64_t selftest_result_op(int64_t device, const std::string& kernel) {
  return selftest_result(int(device), kernel);
}
void set_selftest_result_op(int64_t device, const std::string& kernel, bool passed,
                            const std::string& failures) {
  set_selftest_result(int(device), kernel, passed, failures);
}
void clear_selftest_results_op(int64_t device) { clear_selftest_results(int(device)); }
void set_selftest_trial_op(bool on) { set_selftest_trial(on); }
void set_selftest_record_op(const std::string& where) { set_selftest_record(where); }
void set_verified_kernels_op(int64_t compute_capability, const std::vector<std::string>& kernels) {
  set_verified_kernels(int(compute_capability), kernels);
}

namespace {

// A kernel's compiled state on a device, by the name the gate knows it by.
KernelState kernel_state(const char* op, const std::string& device, const std::string& kernel) {
  const c10::DeviceType type = parse_device(op, device);
  if (const ConvAlgorithm* a = find_conv_algorithm(type, kernel)) return a->state;
  const auto& roi = roi_kernel_names();
  TORCH_CHECK_VALUE(std::find(roi.begin(), roi.end(), kernel) != roi.end(), op, ": no kernel '", kernel,
                    "' on ", device);
  return roi_kernel_state(type);
}

}  // namespace

bool kernel_may_run_op(const std::string& device, const std::string& kernel, int64_t device_index,
                       int64_t compute_capability) {
  constexpr const char* op = "fastconv::_kernel_may_run";
  return may_run(kernel, kernel_state(op, device, kernel), parse_device(op, device), int(device_index),
                 int(compute_capability));
}

std::string kernel_refusal_op(const std::string& device, const std::string& kernel, int64_t device_index,
                              int64_t compute_capability) {
  constexpr const char* op = "fastconv::_kernel_refusal";
  return why_not_runnable(kernel, kernel_state(op, device, kernel), parse_device(op, device),
                          int(device_index), int(compute_capability));
}

std::vector<std::string> algorithm_states_op(const std::string& device) {
  std::vector<std::string> states;
  for (const auto& name : algorithm_names_op(device))
    states.emplace_back(state_name(find_conv_algorithm(parse_device("fastconv::_algorithm_states", device), name)->state));
  return states;
}

std::vector<std::string> roi_kernel_names_op() { return roi_kernel_names(); }

std::string roi_kernel_state_op(const std::string& device) {
  return state_name(roi_kernel_state(parse_device("fastconv::_roi_kernel_state", device)));
}

std::vector<std::string> kernel_source_digests_op() { return kernel_source_digests(); }

bool emulation_built_op() { return emulation_built(); }

void set_emulation_op(bool active, int64_t schedule, int64_t seed, int64_t threads, bool metrics,
                      bool gate) {
  set_emulation({active, int(schedule), uint64_t(seed), int(threads), metrics, gate});
}

std::vector<std::string> emulated_launches_op() { return take_emulated_launches(); }

int64_t parallel_threads_op() {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  at::parallel_for(0, 1 << 12, 1, [&](int64_t, int64_t) {
    // Long enough that no thread finishes the whole range before the others start.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(seen.size());
}

}  // namespace fastconv
