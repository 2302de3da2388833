// CPU kernel helpers: the shared strided view and the accumulation types.
#pragma once

#include "common/strided.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

// The build carries no -march flag (a wheel must run on any x86-64), so the few loops that
// are worth wide vectors are compiled once per instruction-set level and picked at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTCONV_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTCONV_VECTOR_CLONES
#endif

namespace fastconv::cpu {

using fastconv::Strided4;

// Half types accumulate in float; float in float; double in double.
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// For kernels that write contiguous memory of one format: the output itself when it is
// contiguous in that format, otherwise a stand-in that finish_output copies back.
inline at::Tensor contiguous_output(at::Tensor& out,
                                    at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  return out.is_contiguous(format) ? out
                                   : at::empty(out.sizes(), out.options().memory_format(format));
}

inline void finish_output(at::Tensor& out, const at::Tensor& buffer) {
  if (!buffer.is_same(out)) out.copy_(buffer);
}

}  // namespace fastconv::cpu
