#include "common/kernel_gate.h"

#include "common/emulation.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <utility>

// setup.py generates this header (each CUDA family's source digest) into its build folder.
#if __has_include("fastconv_kernel_sources.h")
#include "fastconv_kernel_sources.h"
#endif
#ifndef FASTCONV_KERNEL_SOURCE_DIGESTS
#define FASTCONV_KERNEL_SOURCE_DIGESTS {}
#endif

namespace fastconv {

const char* state_name(KernelState s) {
  switch (s) {
    case KernelState::unverified: return "unverified";
    case KernelState::emulated: return "emulated";
    case KernelState::verified: return "verified";
  }
  return "?";
}

namespace {

struct Verdict {
  bool passed;
  std::string failures;
};

std::mutex& gate_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::pair<int, std::string>, Verdict>& verdicts() {
  static std::map<std::pair<int, std::string>, Verdict> v;
  return v;
}
std::set<std::pair<int, std::string>>& verified() {
  static std::set<std::pair<int, std::string>> v;
  return v;
}
std::string& record_path() {
  static std::string path;
  return path;
}
std::atomic<bool> selftest_trial{false};

std::string arch(int compute_capability) {
  return "sm_" + std::to_string(compute_capability);
}

}  // namespace

bool unverified_kernels_allowed() {
  static const bool allowed = [] {
    const char* v = std::getenv("FASTCONV_ALLOW_UNVERIFIED_KERNELS");
    return v != nullptr && std::string(v) == "1";
  }();
  // Under emulation no GPU is touched: running what is unverified there is the point, unless
  // a test asks for the gate of a real GPU.
  const EmulationSettings emulation = emulation_settings();
  return allowed || (emulation.active && !emulation.gate);
}

int selftest_result(int device_index, const std::string& kernel) {
  std::lock_guard<std::mutex> lock(gate_mutex());
  auto it = verdicts().find({device_index, kernel});
  return it == verdicts().end() ? -1 : int(it->second.passed);
}

void set_selftest_result(int device_index, const std::string& kernel, bool passed,
                         const std::string& failures) {
  std::lock_guard<std::mutex> lock(gate_mutex());
  verdicts()[{device_index, kernel}] = Verdict{passed, failures};
}

void clear_selftest_results(int device_index) {
  std::lock_guard<std::mutex> lock(gate_mutex());
  std::erase_if(verdicts(), [&](const auto& entry) { return entry.first.first == device_index; });
}

void set_selftest_record(const std::string& where) {
  std::lock_guard<std::mutex> lock(gate_mutex());
  record_path() = where;
}

void set_selftest_trial(bool on) { selftest_trial = on; }

void set_verified_kernels(int compute_capability, const std::vector<std::string>& kernels) {
  std::lock_guard<std::mutex> lock(gate_mutex());
  std::erase_if(verified(), [&](const auto& entry) { return entry.first == compute_capability; });
  for (const auto& k : kernels) verified().insert({compute_capability, k});
}

bool verified_on(int compute_capability, const std::string& kernel) {
  std::lock_guard<std::mutex> lock(gate_mutex());
  return verified().count({compute_capability, kernel}) > 0;
}

bool may_run(const std::string& kernel, KernelState state, c10::DeviceType device, int device_index,
             int compute_capability) {
  if (state == KernelState::verified || unverified_kernels_allowed()) return true;
  if (state != KernelState::emulated || device != c10::DeviceType::CUDA) return false;
  return selftest_trial.load() || verified_on(compute_capability, kernel) ||
         selftest_result(device_index, kernel) == 1;
}

std::string why_not_runnable(const std::string& kernel, KernelState state, c10::DeviceType device,
                             int device_index, int compute_capability) {
  if (may_run(kernel, state, device, device_index, compute_capability)) return "";
  const std::string name = "the " + kernel + " kernel";
  if (state != KernelState::emulated || device != c10::DeviceType::CUDA)
    return name + " has been compiled but not yet verified on real hardware, so it is off by "
                  "default (FASTCONV_ALLOW_UNVERIFIED_KERNELS=1 runs it anyway)";
  std::string failures, where;
  int result;
  {
    std::lock_guard<std::mutex> lock(gate_mutex());
    auto it = verdicts().find({device_index, kernel});
    result = it == verdicts().end() ? -1 : int(it->second.passed);
    if (it != verdicts().end()) failures = it->second.failures;
    where = record_path();
  }
  const std::string rerun = "python -m fastconv.selftest --again reruns it";
  if (result == 0)
    return name + " failed fastconv's self-test on this GPU (" + failures + "), so it stays off here" +
           (where.empty() ? "" : "; the record is " + where) + "; " + rerun +
           ", and FASTCONV_ALLOW_UNVERIFIED_KERNELS=1 runs it anyway";
  return name + " passes fastconv's emulation suite but is not verified on real hardware of this kind (" +
         arch(compute_capability) + "); it runs once fastconv's self-test has passed it on this GPU: " +
         "python -m fastconv.selftest (fastconv.functional runs it by itself on first use), or with "
         "FASTCONV_ALLOW_UNVERIFIED_KERNELS=1";
}

void check_runnable(const std::string& kernel, KernelState state, c10::DeviceType device,
                    int device_index, int compute_capability, const std::string& what) {
  const std::string why = why_not_runnable(kernel, state, device, device_index, compute_capability);
  TORCH_CHECK_NOT_IMPLEMENTED(why.empty(), "fastconv: ", what, ": ", why);
}

std::vector<std::string> kernel_source_digests() {
  return std::vector<std::string> FASTCONV_KERNEL_SOURCE_DIGESTS;
}

}  // namespace fastconv
