// fastconv::_tensor_core_check(a, bt) = a @ bt.T through mma.sync, ldmatrix and cp.async:
// the GPU check runs it on the card, and the emulation tests on the CPU (registered in
// selftest_ops.cpp, so that this unit compiles without the dispatcher's headers).
#include "cuda/selftest/selftest_ops.h"
#include "cuda/selftest/tensor_core_check_kernels.cuh"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

namespace fastconv::cuda {

at::Tensor tensor_core_check(const at::Tensor& a, const at::Tensor& bt) {
  constexpr const char* op = "fastconv::_tensor_core_check";
  TORCH_CHECK_VALUE(a.sizes() == at::IntArrayRef({16, 16}) && bt.sizes() == at::IntArrayRef({8, 16}), op,
                    ": a must be [16, 16] and bt [8, 16], got ", a.sizes(), " and ", bt.sizes());
  TORCH_CHECK_TYPE(a.scalar_type() == at::kBFloat16 && bt.scalar_type() == at::kBFloat16, op,
                   ": a and bt must be bfloat16");
  const at::Tensor ac = a.contiguous(), bc = bt.contiguous();
  at::Tensor d = at::empty({16, 8}, a.options().dtype(at::kFloat));
  launch_kernel("selftest::tensor_core_check_kernel", selftest::tensor_core_check_kernel, 1, 32, 0,
                global_view<const uint16_t>(ac, "a"), global_view<const uint16_t>(bc, "bt"),
                global_view<float>(d, "d"));
  return d;
}

}  // namespace fastconv::cuda
