// One instance: wgrad on the 64 x 64 FFMA tile (config.h): exact float32.
#include "cuda/implicit_gemm/igemm_launch.cuh"

namespace fastconv::cuda::igemm {
template void launch_wgrad_gemm<TileFfma64x64>(const WgradGemm&, int, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);
}  // namespace fastconv::cuda::igemm
