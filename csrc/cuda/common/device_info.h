// What the kernels' can_implement and launchers need to know of a device, read once per
// device and cached: SM version, SM count, and shared memory per block (the default 48 KiB
// and the opt-in maximum that a launch may ask for with cudaFuncSetAttribute).
#pragma once

#include <c10/core/Device.h>

namespace fastconv::cuda {

struct DeviceInfo {
  int compute_capability;       // major * 10 + minor: 90 for the H100 and H200
  int sm_count;
  int shared_memory_per_block;  // bytes without opting in
  int shared_memory_per_block_optin;
  int max_threads_per_block;
  // The binary holds the Hopper family's sm_90a kernels in a form this device runs (sm 9.0).
  bool sm90a_kernels;
};

// index < 0: the current device.
const DeviceInfo& device_info(c10::DeviceIndex index = -1);

}  // namespace fastconv::cuda
