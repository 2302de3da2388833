// The activations a fused convolution applies to its output (fastconv::conv2d_fused), as
// element math that the CPU kernels (g++) and the CUDA kernels (nvcc) share, so that every
// device computes the same function. The formulas are PyTorch's (torch.nn.functional).
#pragma once

#include "common/macros.h"

#include <cmath>
#include <cstdint>

namespace fastconv {

// The operator's string argument maps to these (activation_from_name); the order is the
// schema's documentation order and must not change (kernels take it as an int).
enum class Activation : int32_t { none, relu, relu6, silu, hardswish, leaky_relu };

// v in the accumulation type; `slope` is leaky_relu's negative slope (unused otherwise).
template <typename T>
FASTCONV_HD T activate(Activation a, T v, T slope) {
  using std::exp;
  switch (a) {
    case Activation::none: return v;
    // Written so that a NaN passes through, as it does through torch's clamps.
    case Activation::relu: return v < T(0) ? T(0) : v;
    case Activation::relu6: return v < T(0) ? T(0) : (v > T(6) ? T(6) : v);
    case Activation::silu: return v / (T(1) + exp(-v));
    case Activation::hardswish: {
      const T gate = v + T(3);
      return v * (gate > T(0) ? (gate < T(6) ? gate : T(6)) : T(0)) / T(6);
    }
    case Activation::leaky_relu: return v > T(0) ? v : v * slope;
  }
  return v;
}

}  // namespace fastconv
