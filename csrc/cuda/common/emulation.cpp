// The launch options of emulated kernels, from the settings fastconv.testing.emulated_cuda()
// makes (common/emulation.h). Only the emulation build has launches to configure.
#if defined(FASTCONV_SIMT)

#include "common/emulation.h"
#include "cuda/common/primitives.h"

#include <sstream>

namespace fastconv::cuda {

simt::LaunchOptions& emulation_options() {
  static thread_local simt::LaunchOptions options;
  const EmulationSettings s = emulation_settings();
  options.schedule = s.schedule == 1   ? simt::Schedule::reverse
                     : s.schedule == 2 ? simt::Schedule::shuffle
                                       : simt::Schedule::forward;
  options.seed = s.seed;
  options.threads = s.threads;
  options.metrics = s.metrics;
  return options;
}

void record_launch(const char* name, Dim3 grid, Dim3 block, const simt::LaunchReport& report) {
  if (!emulation_settings().metrics) return;
  const simt::Metrics& m = report.metrics;
  std::ostringstream s;
  s << "{\"kernel\": \"" << name << "\", \"grid\": [" << grid.x << ", " << grid.y << ", " << grid.z
    << "], \"block\": [" << block.x << ", " << block.y << ", " << block.z
    << "], \"load_requests\": " << m.global_load_requests << ", \"load_sectors\": " << m.global_load_sectors
    << ", \"store_requests\": " << m.global_store_requests << ", \"store_sectors\": " << m.global_store_sectors
    << ", \"bytes_requested\": " << m.global_bytes_requested
    << ", \"distinct_sectors\": " << m.global_distinct_sectors
    << ", \"shared_requests\": " << m.shared_requests << ", \"shared_wavefronts\": " << m.shared_wavefronts
    << ", \"bank_conflicts\": " << m.shared_bank_conflicts << "}";
  record_emulated_launch(s.str());
}

}  // namespace fastconv::cuda

#endif
