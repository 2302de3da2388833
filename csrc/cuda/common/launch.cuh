// Launch helpers shared by the CUDA kernel families: block size, grid sizes for grid-stride
// loops over a 64-bit index (tensors may pass 2^31 elements), and the grid-stride loop itself.
// Launches go through launch_kernel (cuda/common/primitives.h), which checks them.
#pragma once

#include "common/acc_type.h"
#include "common/strided.h"
#include "cuda/common/primitives.h"
#include "cuda/common/static_switch.h"

#include <algorithm>
#include <cstdint>

namespace fastconv::cuda {

constexpr int kThreads = 256;

// A tensor seen by a kernel: its strides, and a pointer into global memory (bounds-checked
// under emulation).
template <typename T>
using View4 = Strided4<T, gptr<T>>;

template <typename T, typename Tensor>
View4<T> view4(const Tensor& t, const char* name) {
  return View4<T>(global_view<T>(t, name), t);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A fused bias: 0 when there is none, else channel's value in the accumulator type, added
// before the kernel's one rounding.
template <typename scalar_t>
FASTCONV_DEVICE acc_type<scalar_t> bias_value(gptr<const scalar_t> bias, int64_t channel) {
  if (!bias) return 0;
  const scalar_t b = bias[channel];
  return acc_type<scalar_t>(b);
}

// Blocks for a grid-stride loop over n items: one item per thread up to a cap, so huge
// tensors loop instead of overflowing the grid.
inline unsigned int blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned int>(std::clamp<int64_t>(ceil_div(n, threads), 1, int64_t(1) << 20));
}

}  // namespace fastconv::cuda

#define FASTCONV_GRID_STRIDE_LOOP(i, n)                                                      \
  for (int64_t i = int64_t(::fastconv::cuda::block_index().x) *                             \
                       ::fastconv::cuda::block_size().x +                                   \
                   ::fastconv::cuda::thread_index().x;                                      \
       i < (n); i += int64_t(::fastconv::cuda::block_size().x) * ::fastconv::cuda::grid_size().x)
