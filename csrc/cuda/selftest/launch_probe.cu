// fastconv::_launch_probe(out, fault): launches selftest::launch_probe_kernel as asked.
// "none" and "large_shared" (100 KiB of dynamic shared memory, past the 48 KiB default) must
// run and set out[0] = 1; "out_of_bounds" (a write 2^38 floats past out), "block_over_bounds"
// (256 threads for a kernel bounded at 128) and "shared_over_limit" (228 KiB) must raise an
// error naming the kernel, as the GPU check and the emulation tests verify (registered in
// selftest_ops.cpp).
#include "cuda/selftest/launch_probe_kernels.cuh"
#include "cuda/selftest/selftest_ops.h"

#include <ATen/core/Tensor.h>

#include <string>

namespace fastconv::cuda {

void launch_probe(const at::Tensor& out, c10::string_view fault_view) {
  constexpr const char* op = "fastconv::_launch_probe";
  const std::string fault(fault_view);
  TORCH_CHECK_TYPE(out.scalar_type() == at::kFloat, op, ": out must be float32, got ", out.scalar_type());
  TORCH_CHECK_VALUE(out.numel() >= 1 && out.is_contiguous(), op, ": out must be contiguous and non-empty");
  int64_t index = 0, shared_floats = 0;
  unsigned threads = 128;
  if (fault == "large_shared") {
    shared_floats = 100 * 1024 / 4;
  } else if (fault == "out_of_bounds") {
    index = out.numel() + (int64_t(1) << 38);
  } else if (fault == "block_over_bounds") {
    threads = 256;
  } else if (fault == "shared_over_limit") {
    shared_floats = 228 * 1024 / 4;
  } else {
    TORCH_CHECK_VALUE(fault == "none", op, ": fault must be 'none', 'large_shared', 'out_of_bounds', "
                      "'block_over_bounds' or 'shared_over_limit', got '", fault, "'");
  }
  launch_kernel("selftest::launch_probe_kernel", selftest::launch_probe_kernel, selftest::kLaunchProbeBounds,
                1, threads, size_t(shared_floats) * 4, global_view<float>(out, "out"), index, shared_floats);
}

}  // namespace fastconv::cuda
