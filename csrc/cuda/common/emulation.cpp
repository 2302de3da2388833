// The launch options of emulated kernels, from the settings fastconv.testing.emulated_cuda()
// makes (common/emulation.h). Only the emulation build has launches to configure.
#if defined(FASTCONV_SIMT)

#include "common/emulation.h"
#include "cuda/common/primitives.h"

namespace fastconv::cuda {

simt::LaunchOptions& emulation_options() {
  static thread_local simt::LaunchOptions options;
  const EmulationSettings s = emulation_settings();
  options.schedule = s.schedule == 1   ? simt::Schedule::reverse
                     : s.schedule == 2 ? simt::Schedule::shuffle
                                       : simt::Schedule::forward;
  options.seed = s.seed;
  options.threads = s.threads;
  options.metrics = false;  // traffic is the metrics report's business, not the tests'
  return options;
}

}  // namespace fastconv::cuda

#endif
