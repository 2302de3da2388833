// One instance: the gather GEMM (fprop, and dgrad by phases) on the 128 x 128 tile (config.h).
#include "cuda/implicit_gemm/igemm_launch.cuh"

namespace fastconv::cuda::igemm {
template void launch_gather_gemm<Tile128x128>(const GatherGemm&, int64_t, int, const at::Tensor&, const at::Tensor&, const Epilogue&, at::Tensor&);
}  // namespace fastconv::cuda::igemm
