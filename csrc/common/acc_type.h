// The accumulation rule, for every device: half types accumulate in float, float in float,
// double in double (at::opmath_type's rule, also as a dtype for buffers made with ATen).
#pragma once

#include <ATen/OpMathType.h>
#include <c10/core/ScalarType.h>

namespace fastconv {

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fastconv
