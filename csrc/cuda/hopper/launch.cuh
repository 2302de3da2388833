// The Hopper family's launcher for one tile configuration: dtype dispatch, grid, the dynamic
// shared memory (above 48 KiB, opted into by launch_kernel), the launch. Included only by the
// per-configuration .cu instance files.
#pragma once

#include "cuda/hopper/hopper.h"
#include "cuda/hopper/kernel.cuh"

#include <c10/util/Exception.h>

#include <string>

namespace fastconv::cuda::hopper {

template <class Cfg>
const char* kernel_name() {
  static const std::string name =
      "hopper::gather_gemm_kernel<" + std::to_string(Cfg::BM) + "x" + std::to_string(Cfg::BN) + ">";
  return name.c_str();
}

template <class Cfg>
void launch_gather_gemm(const igemm::GatherGemm& p, int64_t groups, const at::Tensor& x, const at::Tensor& w,
                        const Epilogue& epilogue, at::Tensor& y) {
  const Dim3 grid = TileScheduler::grid<Cfg>(p, groups);
  auto launch = [&](auto type) {
    using T = decltype(type);
    launch_kernel(kernel_name<Cfg>(), gather_gemm_kernel<Cfg, T>, Cfg::kBounds, grid, Dim3(Cfg::kThreads),
                  size_t(Cfg::kSharedBytes), p, global_view<const T>(x, "x"), global_view<const T>(w, "w"),
                  epilogue_args<T>(epilogue), global_view<T>(y, "y"));
  };
  if (x.scalar_type() == at::kBFloat16)
    launch(c10::BFloat16{});
  else if (x.scalar_type() == at::kHalf)
    launch(c10::Half{});
  else
    TORCH_CHECK(false, kernel_name<Cfg>(), ": takes bfloat16 or float16, got ", x.scalar_type());
}

}  // namespace fastconv::cuda::hopper
