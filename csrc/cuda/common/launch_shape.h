// Launch shapes, in plain C++ so that configs and host files include them as well as kernels:
// the default block, grid sizes for grid-stride loops over a 64-bit count, and a kernel's
// launch bounds as one value.
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastconv::cuda {

// The block of the one-thread-per-item kernels (direct, RoI, the depthwise families).
constexpr int kThreads = 256;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n items, `per_block` to a block: one item per thread (or
// per block, with per_block 1) up to a cap, so that huge tensors loop instead of overflowing
// the grid.
inline unsigned int blocks_for(int64_t n, int per_block = kThreads) {
  return static_cast<unsigned int>(std::clamp<int64_t>(ceil_div(n, per_block), 1, int64_t(1) << 20));
}

// A kernel's launch bounds as one value, so that the kernel and its launch cannot disagree:
// a family's config names it, the kernel takes it (FASTCONV_LAUNCH_BOUNDS(bounds), which
// nvcc reads as __launch_bounds__) and so does the launch (launch_kernel(name, kernel,
// bounds, ...)). The GPU refuses a block larger than the bound; so does the emulator, which
// learns the bound from the launch (it sees no attributes).
struct KernelBounds {
  int max_threads;  // threads per block, at most
  int min_blocks;   // CTAs per SM that the kernel's registers must allow (1: the compiler's choice)
};

// A kernel without __launch_bounds__: the hardware's 1024 threads per block.
inline constexpr KernelBounds kNoLaunchBounds{1024, 1};

}  // namespace fastconv::cuda
