#include "common/algorithms.h"

#include "common/emulation.h"

#include <c10/util/Exception.h>

#include <atomic>
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

std::optional<Direction> parse_direction(const std::string& name) {
  for (Direction d : {Direction::fprop, Direction::dgrad, Direction::wgrad})
    if (name == direction_name(d)) return d;
  return std::nullopt;
}

const char* layout_name(Layout l) { return l == Layout::nhwc ? "channels_last" : "nchw"; }

at::MemoryFormat memory_format_of(Layout l) {
  return l == Layout::nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

bool ConvAlgorithm::has_kernel(Direction d) const {
  switch (d) {
    case Direction::fprop: return fprop != nullptr;
    case Direction::dgrad: return dgrad != nullptr;
    case Direction::wgrad: return wgrad != nullptr;
  }
  return false;
}

bool ConvAlgorithm::implements(const ConvProblem& p, const ConvRequest& r) const {
  if (needs_finite_operands && !r.operands_finite) return false;
  return has_kernel(r.direction) && can_implement(p, r);
}

KernelLayouts ConvAlgorithm::layouts_for(const ConvProblem& p, const ConvRequest& r) const {
  return layouts ? layouts(p, r) : KernelLayouts{r.layout, r.layout};
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

}  // namespace

bool unverified_kernels_allowed() {
  static const bool allowed = [] {
    const char* v = std::getenv("FASTCONV_ALLOW_UNVERIFIED_KERNELS");
    return v != nullptr && std::string(v) == "1";
  }();
  // Under emulation no GPU is touched: running what is unverified there is the point.
  return allowed || emulation_settings().active;
}

const char* state_name(KernelState s) {
  switch (s) {
    case KernelState::unverified: return "unverified";
    case KernelState::emulated: return "emulated";
    case KernelState::verified: return "verified";
  }
  return "?";
}

namespace {

std::mutex& selftest_mutex() {
  static std::mutex m;
  return m;
}
std::map<int, bool>& selftest_results() {
  static std::map<int, bool> r;
  return r;
}
std::atomic<bool> selftest_trial{false};

}  // namespace

int selftest_result(int device_index) {
  std::lock_guard<std::mutex> lock(selftest_mutex());
  auto it = selftest_results().find(device_index);
  return it == selftest_results().end() ? -1 : int(it->second);
}

void set_selftest_result(int device_index, bool passed) {
  std::lock_guard<std::mutex> lock(selftest_mutex());
  selftest_results()[device_index] = passed;
}

void set_selftest_trial(bool on) { selftest_trial = on; }

bool may_run(KernelState state, c10::DeviceType device, int device_index) {
  if (state == KernelState::verified || unverified_kernels_allowed()) return true;
  return state == KernelState::emulated && device == c10::DeviceType::CUDA &&
         (selftest_trial.load() || selftest_result(device_index) == 1);
}

void check_runnable(KernelState state, c10::DeviceType device, int device_index,
                    const std::string& what) {
  if (may_run(state, device, device_index)) return;
  TORCH_CHECK_NOT_IMPLEMENTED(
      state != KernelState::emulated, "fastconv: ", what,
      " passes fastconv's emulation suite but has not yet run on real hardware of this kind; ",
      selftest_result(device_index) == 0
          ? "it failed fastconv's self-test on this GPU, so it stays off"
          : "it runs once fastconv's self-test has passed on this GPU: python -m "
            "fastconv.selftest (fastconv.functional runs it by itself on first use)",
      "; FASTCONV_ALLOW_UNVERIFIED_KERNELS=1 runs it anyway");
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, "fastconv: ", what,
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

const ConvAlgorithm* find_conv_algorithm(c10::DeviceType device, const std::string& name) {
  for (const auto& a : conv_algorithms(device))
    if (name == a.name) return &a;
  return nullptr;
}

const ConvAlgorithm& choose_conv_algorithm(c10::DeviceType device, const ConvProblem& problem,
                                           ConvRequest request, FinitenessProbe finite,
                                           const void* context) {
  const auto& list = conv_algorithms(device);
  // Read the operands at most once, and only for an algorithm that needs to know.
  std::optional<bool> known_finite;
  auto learn_finiteness = [&](const ConvAlgorithm& a) {
    if (!a.needs_finite_operands) return;
    if (!known_finite) known_finite = finite == nullptr || finite(context);
    request.operands_finite = *known_finite;
  };
  const std::string forced = forced_algorithm();
  if (!forced.empty()) {
    const ConvAlgorithm* a = find_conv_algorithm(device, forced);
    if (a == nullptr) {
      std::string known;
      for (const auto& b : list) known += std::string(known.empty() ? "" : ", ") + b.name;
      TORCH_CHECK_VALUE(false, "fastconv: unknown algorithm '", forced, "' for device type ",
                        device, " (FASTCONV_ALGO or fastconv.algorithms.force); known: ", known);
    }
    if (a->has_kernel(request.direction) && a->can_implement(problem, request))
      learn_finiteness(*a);
    TORCH_CHECK_NOT_IMPLEMENTED(
        a->implements(problem, request), "fastconv: the forced algorithm '", forced,
        "' cannot run ", direction_name(request.direction), " for ", request.dtype, " in ",
        layout_name(request.layout), " layout on ", problem.str(),
        request.operands_finite ? "" : " (its operands hold inf or NaN, which it cannot keep "
                                       "to the outputs whose windows hold them)");
    check_runnable(a->state, device, request.device_index,
                   std::string("the ") + a->name + " algorithm on " + c10::DeviceTypeName(device));
    return *a;
  }
  const ConvAlgorithm* unverified = nullptr;
  for (const auto& a : list) {
    if (!a.has_kernel(request.direction) || !a.can_implement(problem, request)) continue;
    if (a.preferred != nullptr && !a.preferred(problem, request)) continue;
    learn_finiteness(a);
    if (!a.implements(problem, request)) continue;
    if (may_run(a.state, device, request.device_index)) return a;
    if (!unverified) unverified = &a;
  }
  if (unverified) {
    check_runnable(unverified->state, device, request.device_index,
                   std::string("the ") + unverified->name + " algorithm on " +
                       c10::DeviceTypeName(device));
  }
  TORCH_CHECK(false, "fastconv: no algorithm implements ", direction_name(request.direction),
              " for ", problem.str(), "; the last algorithm of each list must implement everything");
}

}  // namespace fastconv
