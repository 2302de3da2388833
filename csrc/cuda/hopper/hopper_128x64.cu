// The Hopper gather GEMM on the 128x64 tile (fprop, and dgrad by phases), built for sm_90a.
#include "cuda/hopper/launch.cuh"

namespace fastconv::cuda::hopper {
template void launch_gather_gemm<Tile128x64>(const igemm::GatherGemm&, int64_t, const at::Tensor&, const at::Tensor&,
                                            const Epilogue&, at::Tensor&);
}  // namespace fastconv::cuda::hopper
