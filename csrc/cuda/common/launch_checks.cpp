// The host side of launch_kernel (cuda/common/primitives.h) in the CUDA build: the dynamic
// shared-memory opt-in and the check after each launch (declared in launch_checks.h).
#if !defined(FASTCONV_SIMT)

#include "cuda/common/launch_checks.h"

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace fastconv::cuda {

namespace {

std::string shape(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

std::string launch_str(const char* name, dim3 grid, dim3 block, size_t shared_bytes) {
  return std::string("the CUDA kernel ") + name + " (grid " + shape(grid) + ", block " + shape(block) +
         ", " + std::to_string(shared_bytes) + " bytes of dynamic shared memory)";
}

bool sync_launches() {
  static const bool on = [] {
    const char* v = std::getenv("FASTCONV_SYNC_LAUNCHES");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}

}  // namespace

void opt_in_dynamic_shared(const char* name, const void* kernel, size_t shared_bytes) {
  // The attribute belongs to the kernel on one device: set it once per pair, to the most asked.
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, size_t> granted;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  size_t& have = granted[{device, kernel}];
  if (have >= shared_bytes) return;
  const cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it, so that it is not blamed on a later launch
    TORCH_CHECK(false, "fastconv: ", name, " asks for ", shared_bytes,
                " bytes of dynamic shared memory, which this device refuses (cudaFuncSetAttribute: ",
                cudaGetErrorString(e), ")");
  }
  have = shared_bytes;
}

void check_launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && sync_launches()) {
    e = cudaStreamSynchronize(stream);
    TORCH_CHECK(e == cudaSuccess, "fastconv: ", launch_str(name, grid, block, shared_bytes),
                " failed while running: ", cudaGetErrorString(e),
                "; the CUDA context cannot be used after this: restart the process");
    return;
  }
  TORCH_CHECK(e == cudaSuccess, "fastconv: ", launch_str(name, grid, block, shared_bytes),
              " did not launch: ", cudaGetErrorString(e),
              ". An error such as an illegal address may come from an earlier kernel (CUDA reports "
              "faults at the next call), and leaves the CUDA context unusable: restart the process. "
              "FASTCONV_SYNC_LAUNCHES=1 waits for each fastconv kernel and names the one that faults");
}

}  // namespace fastconv::cuda

#endif
