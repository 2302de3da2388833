// A 4-D view of a tensor through its strides, so kernels read NCHW, channels_last and
// non-contiguous tensors alike without copying them first.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/OpMathType.h>

#include <cstdint>
#include <type_traits>

namespace fastconv::cpu {

template <typename T>
struct Strided4 {
  T* data;
  int64_t s0, s1, s2, s3;

  explicit Strided4(const at::Tensor& t)
      : data(static_cast<T*>(const_cast<void*>(t.const_data_ptr()))),
        s0(t.stride(0)),
        s1(t.stride(1)),
        s2(t.stride(2)),
        s3(t.stride(3)) {}

  T& operator()(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return data[a * s0 + b * s1 + c * s2 + d * s3];
  }
};

// Half types accumulate in float; float in float; double in double.
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fastconv::cpu
