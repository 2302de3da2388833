// The emulated-CUDA mode of the tests (fastconv.testing.emulated_cuda): in a build made with
// FASTCONV_SIMT=1, the CUDA kernels are compiled for the host against the emulation layer
// (csrc/simt/) and registered as the CUDA list; while the mode is on, the operators run CPU
// tensors through that list and the CUDA RoI kernels, under every checker. Process-wide, like
// the forced algorithm, so that it reaches autograd's threads.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fastconv {

struct EmulationSettings {
  bool active = false;
  int schedule = 0;   // 0 forward, 1 reverse, 2 seeded shuffle: the order a block's threads run in
  uint64_t seed = 0;  // for the shuffle
  int threads = 1;    // OS threads running blocks (1: deterministic)
  bool metrics = false;  // trace every access and keep each launch's traffic figures
  // Gate the emulated GPU like a real one (common/kernel_gate.h): its emulated kernels run
  // only where its self-test passed them. Off: every kernel runs, the point of emulating.
  bool gate = false;
};

// Whether this build has the emulated CUDA kernels (FASTCONV_SIMT=1).
bool emulation_built();
void mark_emulation_built();

EmulationSettings emulation_settings();
// Raises when turning it on in a build without the emulated kernels.
void set_emulation(const EmulationSettings& settings);

// Each emulated launch's traffic, as one JSON object per launch, while settings.metrics is
// on (recorded by the launcher in cuda/common/primitives.h; taken, and cleared, by the
// metrics report through fastconv::_emulated_launches).
void record_emulated_launch(std::string json);
std::vector<std::string> take_emulated_launches();

// The device whose kernels run for a tensor: CUDA for a CPU tensor while emulating.
c10::DeviceType kernel_device(const at::Tensor& t);

}  // namespace fastconv
