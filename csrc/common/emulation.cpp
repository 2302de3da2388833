#include "common/emulation.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace fastconv {

namespace {

std::atomic<bool> built{false};
std::mutex settings_mutex;
EmulationSettings current;
std::vector<std::string> launches;

}  // namespace

bool emulation_built() { return built.load(); }
void mark_emulation_built() { built = true; }

EmulationSettings emulation_settings() {
  std::lock_guard<std::mutex> lock(settings_mutex);
  return current;
}

void set_emulation(const EmulationSettings& settings) {
  TORCH_CHECK_VALUE(!settings.active || emulation_built(),
                    "fastconv: this build has no emulated CUDA kernels; build with "
                    "FASTCONV_SIMT=1 pip install --no-build-isolation . to get them");
  TORCH_CHECK_VALUE(settings.schedule >= 0 && settings.schedule <= 2,
                    "fastconv: the emulation schedule must be 0 (forward), 1 (reverse) or 2 "
                    "(shuffle), got ", settings.schedule);
  TORCH_CHECK_VALUE(settings.threads >= 0, "fastconv: emulation threads must be >= 0, got ",
                    settings.threads);
  std::lock_guard<std::mutex> lock(settings_mutex);
  current = settings;
}

void record_emulated_launch(std::string json) {
  std::lock_guard<std::mutex> lock(settings_mutex);
  launches.push_back(std::move(json));
}

std::vector<std::string> take_emulated_launches() {
  std::lock_guard<std::mutex> lock(settings_mutex);
  std::vector<std::string> out;
  out.swap(launches);
  return out;
}

c10::DeviceType kernel_device(const at::Tensor& t) {
  const c10::DeviceType type = t.device().type();
  if (type == c10::DeviceType::CPU && emulation_settings().active) return c10::DeviceType::CUDA;
  return type;
}

}  // namespace fastconv
