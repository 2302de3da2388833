// Launch helpers shared by the CUDA kernel families: tensor views, the fused epilogue, and the
// grid-stride loop over a 64-bit index (tensors may pass 2^31 elements); launch_shape.h has
// the block and grid sizes.
// Launches go through launch_kernel (cuda/common/primitives.h), which checks them.
#pragma once

#include "common/acc_type.h"
#include "common/activation.h"
#include "common/strided.h"
#include "cuda/common/launch_shape.h"
#include "cuda/common/primitives.h"
#include "cuda/common/static_switch.h"

#include <cstdint>

namespace fastconv::cuda {

// A tensor seen by a kernel: its strides, and a pointer into global memory (bounds-checked
// under emulation).
template <typename T>
using View4 = Strided4<T, gptr<T>>;

template <typename T, typename Tensor>
View4<T> view4(const Tensor& t, const char* name) {
  return View4<T>(global_view<T>(t, name), t);
}

// A fused bias: 0 when there is none, else channel's value in the accumulator type, added
// before the kernel's one rounding.
template <typename scalar_t>
FASTCONV_DEVICE acc_type<scalar_t> bias_value(gptr<const scalar_t> bias, int64_t channel) {
  if (!bias) return 0;
  const scalar_t b = bias[channel];
  return acc_type<scalar_t>(b);
}

// A kernel's view of an optional tensor (a bias): null where it is undefined.
template <typename T, typename Tensor>
gptr<T> optional_view(const Tensor& t, const char* name) {
  return t.defined() ? global_view<T>(t, name) : gptr<T>();
}

// The fused epilogue (common/algorithms.h, Epilogue) as a kernel argument: each output is
// activation(sum + bias[channel] + residual[index]) in the accumulator type, then rounded
// once; index is the element's offset in the output, which the operator lays the residual
// out to match. Null pointers and Activation::none are stages not asked for.
template <typename scalar_t>
struct EpilogueArgs {
  gptr<const scalar_t> bias;
  gptr<const scalar_t> residual;
  Activation activation;
  float slope;

  FASTCONV_DEVICE acc_type<scalar_t> operator()(acc_type<scalar_t> sum, int64_t channel,
                                                int64_t index) const {
    using acc_t = acc_type<scalar_t>;
    // Read into scalar_t first: under emulation an element is a checked reference.
    if (bias) {
      const scalar_t b = bias[channel];
      sum += acc_t(b);
    }
    if (residual) {
      const scalar_t r = residual[index];
      sum += acc_t(r);
    }
    return activate(activation, sum, acc_t(slope));
  }
};

template <typename scalar_t, typename Epilogue>
EpilogueArgs<scalar_t> epilogue_args(const Epilogue& e) {
  return {optional_view<const scalar_t>(e.bias, "bias"),
          optional_view<const scalar_t>(e.residual, "residual"), e.activation,
          float(e.negative_slope)};
}

}  // namespace fastconv::cuda

#define FASTCONV_GRID_STRIDE_LOOP(i, n)                                                      \
  for (int64_t i = int64_t(::fastconv::cuda::block_index().x) *                             \
                       ::fastconv::cuda::block_size().x +                                   \
                   ::fastconv::cuda::thread_index().x;                                      \
       i < (n); i += int64_t(::fastconv::cuda::block_size().x) * ::fastconv::cuda::grid_size().x)
