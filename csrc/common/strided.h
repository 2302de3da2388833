// A 4-D view of a tensor through its strides, so kernels read NCHW, channels_last and
// non-contiguous tensors alike without copying them first. Built on the host, usable on the
// host and on the device. Ptr is the pointer type: T* on the CPU and under nvcc, the emulator's
// bounds-checked pointer when the CUDA kernels run under emulation (cuda/common/primitives.h).
#pragma once

#include "common/macros.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <type_traits>

namespace fastconv {

template <typename T, typename Ptr = T*>
struct Strided4 {
  using value_type = std::remove_const_t<T>;
  Ptr data;
  int64_t s0, s1, s2, s3;

  Strided4(Ptr d, const at::Tensor& t)
      : data(d), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)), s3(t.stride(3)) {}
  explicit Strided4(const at::Tensor& t)
    requires std::is_pointer_v<Ptr>
      : Strided4(static_cast<T*>(const_cast<void*>(t.const_data_ptr())), t) {}

  FASTCONV_HD int64_t offset(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return a * s0 + b * s1 + c * s2 + d * s3;
  }
  // The element, to read or to assign.
  FASTCONV_HD decltype(auto) operator()(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return data[offset(a, b, c, d)];
  }
  // The element's value.
  FASTCONV_HD value_type load(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return data[offset(a, b, c, d)];
  }
};

}  // namespace fastconv
