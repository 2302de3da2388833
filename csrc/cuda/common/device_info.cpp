#include "cuda/common/device_info.h"

#if defined(FASTCONV_SIMT)

namespace fastconv::cuda {

// Under emulation every device is an H100 (SXM): the limits the emulator enforces.
const DeviceInfo& device_info(c10::DeviceIndex) {
  static const DeviceInfo h100{90, 132, 48 * 1024, 227 * 1024, 1024, true};
  return h100;
}

}  // namespace fastconv::cuda

#else

#include <ATen/cuda/CUDAContext.h>

#if defined(FASTCONV_WITH_SM90A)
#include "cuda/hopper/hopper.h"
#endif

#include <map>
#include <mutex>

namespace fastconv::cuda {

const DeviceInfo& device_info(c10::DeviceIndex index) {
  static std::mutex mutex;
  static std::map<c10::DeviceIndex, DeviceInfo> cache;
  if (index < 0) index = c10::cuda::current_device();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(index);
  if (it == cache.end()) {
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(index);
    const int cc = prop->major * 10 + prop->minor;
#if defined(FASTCONV_WITH_SM90A)
    const bool sm90a = cc == 90 && hopper::kernels_loadable(index);
#else
    const bool sm90a = false;
#endif
    DeviceInfo info{cc, prop->multiProcessorCount, int(prop->sharedMemPerBlock),
                    int(prop->sharedMemPerBlockOptin), prop->maxThreadsPerBlock, sm90a};
    it = cache.emplace(index, info).first;
  }
  return it->second;
}

}  // namespace fastconv::cuda

#endif
