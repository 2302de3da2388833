#include "common/algorithms.h"

#include <ATen/ATen.h>
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

namespace {
std::map<c10::DeviceType, LayoutCopy>& layout_copies() {
  static std::map<c10::DeviceType, LayoutCopy> copies;
  return copies;
}
}  // namespace

void register_layout_copy(c10::DeviceType device, LayoutCopy copy) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  layout_copies()[device] = copy;
}

void copy_between_layouts(const at::Tensor& src, at::Tensor& dst) {
  LayoutCopy copy = nullptr;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = layout_copies().find(src.device().type());
    if (it != layout_copies().end()) copy = it->second;
  }
  if (copy == nullptr || src.device() != dst.device() || !copy(src, dst)) dst.copy_(src);
}

at::Tensor contiguous_in(const at::Tensor& t, at::MemoryFormat format) {
  if (t.is_contiguous(format)) return t;
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(format));
  copy_between_layouts(t, out);
  return out;
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
    check_runnable(a->name, a->state, device, request.device_index, request.compute_capability,
                   std::string("the forced algorithm '") + a->name + "' on " + c10::DeviceTypeName(device));
    return *a;
  }
  // First the algorithms whose speed rule takes the problem; where the gate keeps all of those
  // off, any other that implements it (a slower kernel that runs beats an error).
  std::string kept_off;  // the algorithms that would have run, and why the gate keeps them off
  for (const bool by_speed_rule : {true, false}) {
    for (const auto& a : list) {
      if (!a.has_kernel(request.direction) || !a.can_implement(problem, request)) continue;
      const bool preferred = a.preferred == nullptr || a.preferred(problem, request);
      if (preferred != by_speed_rule) continue;
      learn_finiteness(a);
      if (!a.implements(problem, request)) continue;
      const std::string why =
          why_not_runnable(a.name, a.state, device, request.device_index, request.compute_capability);
      if (why.empty()) return a;
      kept_off += "\n  " + why;
    }
  }
  TORCH_CHECK_NOT_IMPLEMENTED(kept_off.empty(), "fastconv: no kernel that may run on this ",
                              c10::DeviceTypeName(device), " device implements ",
                              direction_name(request.direction), " for ", problem.str(), ":", kept_off);
  TORCH_CHECK(false, "fastconv: no algorithm implements ", direction_name(request.direction),
              " for ", problem.str(), "; the last algorithm of each list must implement everything");
}

}  // namespace fastconv
