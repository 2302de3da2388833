// A 4-D view of a tensor through its strides, so kernels read NCHW, channels_last and
// non-contiguous tensors alike without copying them first. Built on the host, usable on the
// host and on the device.
#pragma once

#include "common/macros.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fastconv {

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

  FASTCONV_HD T& operator()(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return data[a * s0 + b * s1 + c * s2 + d * s3];
  }
};

}  // namespace fastconv
