// The Hopper gather GEMM on the 128x128 tile (fprop, and dgrad by phases), built for sm_90a.
#include "cuda/hopper/launch.cuh"

namespace fastconv::cuda::hopper {
template void launch_gather_gemm<Tile128x128>(const igemm::GatherGemm&, int64_t, const at::Tensor&, const at::Tensor&,
                                             const Epilogue&, at::Tensor&);
}  // namespace fastconv::cuda::hopper

#if !defined(FASTCONV_SIMT)
#include <cuda_runtime_api.h>

namespace fastconv::cuda::hopper {
bool kernels_loadable(int device) {
  int current = 0;
  if (cudaGetDevice(&current) != cudaSuccess) return false;
  if (current != device && cudaSetDevice(device) != cudaSuccess) return false;
  cudaFuncAttributes attributes;
  const bool ok = cudaFuncGetAttributes(&attributes, gather_gemm_kernel<Tile128x128, c10::BFloat16>) == cudaSuccess;
  (void)cudaGetLastError();  // a device without the image reports it here: not an error of a later launch
  if (current != device) (void)cudaSetDevice(current);
  return ok;
}
}  // namespace fastconv::cuda::hopper
#else
namespace fastconv::cuda::hopper {
bool kernels_loadable(int) { return true; }  // the emulated GPU is an sm_90
}  // namespace fastconv::cuda::hopper
#endif
