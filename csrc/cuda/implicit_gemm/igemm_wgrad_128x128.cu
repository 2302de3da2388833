// One instance: wgrad on the 128 x 128 tile (config.h).
#include "cuda/implicit_gemm/igemm_launch.cuh"

namespace fastconv::cuda::igemm {
template void launch_wgrad_gemm<Tile128x128>(const WgradGemm&, int, const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&);
}  // namespace fastconv::cuda::igemm
