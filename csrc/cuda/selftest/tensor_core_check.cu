// fastconv::_tensor_core_check(a, bt) = a @ bt.T through mma.sync, ldmatrix and cp.async:
// the GPU check runs it on the card, and the emulation tests on the CPU. Registered for the
// CUDA key (nvcc build) or, in the emulation build, for CPU tensors.
#include "cuda/selftest/tensor_core_check_kernels.cuh"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace fastconv::cuda {

namespace {

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

}  // namespace

#if defined(FASTCONV_SIMT)
TORCH_LIBRARY_IMPL(fastconv, CPU, m) { m.impl("_tensor_core_check", &tensor_core_check); }
#else
TORCH_LIBRARY_IMPL(fastconv, CUDA, m) { m.impl("_tensor_core_check", &tensor_core_check); }
#endif

}  // namespace fastconv::cuda
