// The CUDA kernel families' entry points, registered in csrc/cuda/register.cpp. Host-only
// declarations: this header is included by both g++ and nvcc.
//
// Where things go, and the rules every kernel file keeps:
//
//   csrc/cuda/common/     primitives.h (every construct that is not plain C++: indices,
//                         barriers, shared memory, warp collectives, atomics, mma.sync,
//                         ldmatrix, cp.async, the launch; CUDA under nvcc, the emulator of
//                         csrc/simt/ under FASTCONV_SIMT), launch helpers (launch.cuh),
//                         compile-time switches (static_switch.h), the cached device query
//                         (device_info.h).
//   csrc/cuda/<family>/   one folder per kernel family: direct/, roi/, implicit_gemm/,
//                         depthwise/. A family holds
//                           config.h          its tile configurations, each a struct of
//                                             constants checked by static_asserts (never
//                                             constants inside a kernel body);
//                           *_kernels.cuh     device code only (FASTCONV_GLOBAL and
//                                             FASTCONV_DEVICE functions reaching memory only
//                                             through gptr/sptr/View4), no host code, no ATen;
//                           <name>.cu         the launcher: dtype dispatch, grid and shared
//                                             memory sizes, stream, launch check; no math;
//                           <name>_<config>.cu one explicit instantiation per file where a
//                                             family has several, so a 2-core build stays
//                                             incremental;
//                         and the algorithm factory declared below.
//
// A kernel file includes only the CUDA helpers in cuda/common/, its own folder and
// csrc/common/, and writes no CUDA keyword, intrinsic or PTX itself (primitives.h has them
// all), so that it also compiles for the emulator. It never allocates its outputs, checks arguments, converts layouts, adds a
// bias it did not fuse, or calls another algorithm: the operators in common/conv_ops.cpp do
// all of that once for every device, and hand it operands in the layouts it declares.
//
// A new algorithm states its limits in its ConvAlgorithm (common/algorithms.h):
// can_implement(problem, request) sees direction, dtype, layout, alignment and the SM
// version (for example "bf16 or fp16 only, channels_last, alignment >= 16, sm >= 80, and the
// tile's shared memory within device_info().shared_memory_per_block_optin"); layouts says
// what it takes (an implicit GEMM: nhwc in and out); preferred is its measured speed rule;
// state is emulated once it passes tests/test_emulated_cuda.py, verified once
// bench/gpu_check.sh passes on real hardware. It goes into the
// list in register.cpp ahead of the direct kernel, and the tests force it on every case the
// library says it claims (fastconv::_can_implement).
#pragma once

#include "common/algorithms.h"
#include "common/roi_ops.h"

namespace fastconv::cuda {

ConvAlgorithm direct_algorithm();  // one thread per output element: always correct, slow
// Tensor-core implicit GEMM (implicit_gemm/), bf16 and fp16 (and float32 fprop and dgrad on
// TF32 where torch.backends.cudnn.allow_tf32 says so), NHWC/KRSC, sm >= 80: one algorithm per
// tile configuration of implicit_gemm/config.h.
ConvAlgorithm implicit_gemm_128x128_algorithm();
ConvAlgorithm implicit_gemm_64x64_algorithm();
// The same implicit GEMM on FFMA: exact float32 (TF32 allowed or not), any channel count,
// sm >= 80. After depthwise in the list, which is faster on its own problems.
ConvAlgorithm implicit_gemm_ffma_algorithm();
// The Hopper implicit GEMM (hopper/): wgmma from swizzled shared memory, a cp.async producer
// warpgroup over an mbarrier ring; fprop and dgrad, bf16 and fp16, sm 9.0 running the binary's
// sm_90a kernels. Ahead of the mma.sync tiles in the list.
ConvAlgorithm hopper_128x256_algorithm();
ConvAlgorithm hopper_128x128_algorithm();
ConvAlgorithm hopper_128x64_algorithm();
// Depthwise convolution (depthwise/): C/groups == 1, any channel multiplier, every dtype, both
// layouts (channels_last: threads over channels; NCHW: plane tiles staged in shared memory),
// 3x3 / 5x5 / 7x7 specialised; dgrad gathers and wgrad sums in a fixed order (deterministic).
ConvAlgorithm depthwise_algorithm();

// RoI kernels (contracts in common/roi_ops.h). The backward passes are deterministic (no
// atomics) when torch.use_deterministic_algorithms(True) is set.
RoiAlignForward roi_align_forward;
RoiAlignMultilevelForward roi_align_forward_multilevel;
RoiAlignBackward roi_align_backward;
RoiPoolForward roi_pool_forward;
RoiPoolBackward roi_pool_backward;

}  // namespace fastconv::cuda
