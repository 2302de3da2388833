// A kernel for proving that launch failures and faults reach the caller as errors naming the
// kernel, in both builds: launch_probe.cu launches it correctly, or with a planted fault.
// Device code only.
#pragma once

#include "cuda/common/launch.cuh"

#include <cstdint>

namespace fastconv::cuda::selftest {

inline constexpr KernelBounds kLaunchProbeBounds{128, 1};

// Thread t writes float(t + 1) into the far end of the dynamic shared memory (shared_floats of
// it, where there is any), then thread 0 writes out[index] = 1, read back from its own slot: a
// launch that opted into more than 48 KiB must have received all of it.
FASTCONV_GLOBAL void FASTCONV_LAUNCH_BOUNDS(kLaunchProbeBounds)
    launch_probe_kernel(gptr<float> out, int64_t index, int64_t shared_floats) {
  FASTCONV_DYNAMIC_SHARED(float, scratch);
  const int64_t t = thread_index().x;
  float value = 1.f;
  if (shared_floats > 0) {
    scratch[shared_floats - 1 - t] = float(t + 1);
    sync_threads();
    value = scratch[shared_floats - 1];
  }
  if (t == 0) out[index] = value;
}

}  // namespace fastconv::cuda::selftest
