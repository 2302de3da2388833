// Launch helpers shared by the CUDA kernel families: block size, grid sizes for grid-stride
// loops over a 64-bit index (tensors may pass 2^31 elements), the current stream, and the
// launch check (C10_CUDA_KERNEL_LAUNCH_CHECK after every launch).
#pragma once

#include "cuda/common/static_switch.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace fastconv::cuda {

constexpr int kThreads = 256;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n items: one item per thread up to a cap, so huge
// tensors loop instead of overflowing the grid.
inline unsigned int blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned int>(std::clamp<int64_t>(ceil_div(n, threads), 1, int64_t(1) << 20));
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace fastconv::cuda

#define FASTCONV_GRID_STRIDE_LOOP(i, n)                                                  \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);             \
       i += int64_t(blockDim.x) * gridDim.x)
