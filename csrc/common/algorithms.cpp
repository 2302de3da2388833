#include "common/algorithms.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <map>
#include <mutex>

namespace fastconv {

const char* direction_name(Direction d) {
  switch (d) {
    case Direction::fprop: return "fprop";
    case Direction::dgrad: return "dgrad";
    case Direction::wgrad: return "wgrad";
  }
  return "?";
}

namespace {

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

std::map<c10::DeviceType, std::vector<ConvAlgorithm>>& registry() {
  static std::map<c10::DeviceType, std::vector<ConvAlgorithm>> r;
  return r;
}

std::string& forced_name() {
  static std::string name = [] {
    const char* env = std::getenv("FASTCONV_ALGO");
    return std::string(env ? env : "");
  }();
  return name;
}

bool has_kernel(const ConvAlgorithm& a, Direction d) {
  switch (d) {
    case Direction::fprop: return a.fprop != nullptr;
    case Direction::dgrad: return a.dgrad != nullptr;
    case Direction::wgrad: return a.wgrad != nullptr;
  }
  return false;
}

bool implements(const ConvAlgorithm& a, Direction d, const ConvProblem& p, at::ScalarType t) {
  return has_kernel(a, d) && a.can_implement(p, d, t);
}

}  // namespace

bool unverified_kernels_allowed() {
  static const bool allowed = [] {
    const char* v = std::getenv("FASTCONV_ALLOW_UNVERIFIED_KERNELS");
    return v != nullptr && std::string(v) == "1";
  }();
  return allowed;
}

void check_verified(bool verified, const std::string& what) {
  TORCH_CHECK_NOT_IMPLEMENTED(
      verified || unverified_kernels_allowed(), "fastconv: ", what,
      " has been compiled but has not yet been verified on real hardware, so it is off by "
      "default; set FASTCONV_ALLOW_UNVERIFIED_KERNELS=1 to run it anyway");
}

void register_conv_algorithms(c10::DeviceType device, std::vector<ConvAlgorithm> list) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[device] = std::move(list);
}

const std::vector<ConvAlgorithm>& conv_algorithms(c10::DeviceType device) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto it = registry().find(device);
  TORCH_CHECK(it != registry().end(), "fastconv has no convolution kernels for device type ",
              device, "; was it built with them?");
  return it->second;
}

void set_forced_algorithm(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  forced_name() = name;
}

std::string forced_algorithm() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  return forced_name();
}

const ConvAlgorithm& choose_conv_algorithm(c10::DeviceType device, Direction direction,
                                           const ConvProblem& problem, at::ScalarType dtype) {
  const auto& list = conv_algorithms(device);
  const std::string forced = forced_algorithm();
  if (!forced.empty()) {
    for (const auto& a : list) {
      if (forced != a.name) continue;
      TORCH_CHECK_NOT_IMPLEMENTED(implements(a, direction, problem, dtype),
                                  "fastconv: the forced algorithm '", forced, "' cannot run ",
                                  direction_name(direction), " for ", dtype, " on ",
                                  problem.str());
      check_verified(a.verified, std::string("the ") + a.name + " algorithm on " +
                                     c10::DeviceTypeName(device));
      return a;
    }
    std::string known;
    for (const auto& a : list) known += std::string(known.empty() ? "" : ", ") + a.name;
    TORCH_CHECK_VALUE(false, "fastconv: unknown algorithm '", forced, "' for device type ",
                      device, " (FASTCONV_ALGO or fastconv.algorithms.force); known: ", known);
  }
  const ConvAlgorithm* unverified = nullptr;
  for (const auto& a : list) {
    if (!implements(a, direction, problem, dtype)) continue;
    if (a.preferred != nullptr && !a.preferred(problem, direction, dtype)) continue;
    if (a.verified || unverified_kernels_allowed()) return a;
    if (!unverified) unverified = &a;
  }
  if (unverified) {
    check_verified(false, std::string("the ") + unverified->name + " algorithm on " +
                              c10::DeviceTypeName(device));
  }
  TORCH_CHECK(false, "fastconv: no algorithm implements ", direction_name(direction), " for ",
              problem.str(), "; the last algorithm of each list must implement everything");
}

}  // namespace fastconv
