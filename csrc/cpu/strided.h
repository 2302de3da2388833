// CPU kernel helpers: the shared strided view and the accumulation types.
#pragma once

#include "common/strided.h"

#include <ATen/OpMathType.h>

namespace fastconv::cpu {

using fastconv::Strided4;

// Half types accumulate in float; float in float; double in double.
template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fastconv::cpu
