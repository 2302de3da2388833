// The launchers of igemm_kernels.cuh for one tile configuration: grid, dtype and vector-width
// dispatch, and the launch. Included only by the per-configuration .cu instance files.
#pragma once

#include "cuda/implicit_gemm/igemm_kernels.cuh"
#include "cuda/implicit_gemm/implicit_gemm.h"

#include <c10/util/Exception.h>

#include <type_traits>

namespace fastconv::cuda::igemm {

// Calls f(T{}, integral_constant<int, vec>), vec in 2-byte units per copy: 8, or 4 (2) where
// the configuration is built for 8-byte (4-byte) copies.
template <class Cfg, typename T, typename F>
void dispatch_width(int vec, const char* what, F&& f) {
  if (vec == 8) return f(T{}, std::integral_constant<int, 8>{});
  if constexpr (Cfg::kMinAlignment <= 8)
    if (vec == 4) return f(T{}, std::integral_constant<int, 4>{});
  if constexpr (Cfg::kMinAlignment <= 4)
    if (vec == 2) return f(T{}, std::integral_constant<int, 2>{});
  TORCH_CHECK(false, what, ": ", 2 * vec, "-byte copies are not built for this tile");
}
// mma: float16 and bfloat16, and float (on TF32) where with_float. ffma: float only.
template <class Cfg, bool with_float, typename F>
void dispatch_types(at::ScalarType dtype, int vec, const char* what, F&& f) {
  if constexpr (Cfg::kMath == Math::ffma) {
    TORCH_CHECK(dtype == at::kFloat, what, ": the FFMA tile takes float32, got ", dtype);
    return dispatch_width<Cfg, float>(vec, what, f);
  } else {
    if (dtype == at::kHalf)
      return dispatch_width<Cfg, c10::Half>(vec, what, f);
    if (dtype == at::kBFloat16)
      return dispatch_width<Cfg, c10::BFloat16>(vec, what, f);
    if constexpr (with_float)
      if (dtype == at::kFloat) return dispatch_width<Cfg, float>(vec, what, f);
    TORCH_CHECK(false, what, ": takes ", with_float ? "float32, " : "", "float16 or bfloat16, got ", dtype);
  }
}

template <class Cfg>
void launch_gather_gemm(const GatherGemm& p, int64_t groups, int vec, const at::Tensor& x,
                        const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  const Dim3 grid(unsigned(ceil_div(p.rows(), Cfg::BM)), unsigned(ceil_div(p.Kg, Cfg::BN)),
                  unsigned(groups));
  auto launch = [&](auto type, auto width) {
    using T = decltype(type);
    launch_kernel("igemm::gather_gemm_kernel", gather_gemm_kernel<Cfg, T, decltype(width)::value>,
                  Cfg::kGatherBounds, grid, Dim3(Cfg::kThreads), 0, p, global_view<const T>(x, "x"),
                  global_view<const T>(w, "w"), epilogue_args<T>(epilogue), global_view<T>(y, "y"));
  };
  if constexpr (Cfg::kMath == Math::ffma) {
    // One float per copy whatever the alignment: the copies transpose k into k-major tiles.
    TORCH_CHECK(x.scalar_type() == at::kFloat, "igemm::gather_gemm: the FFMA tile takes float32, got ",
                x.scalar_type());
    launch(float{}, std::integral_constant<int, 2>{});
  } else {
    dispatch_types<Cfg, true>(x.scalar_type(), vec, "igemm::gather_gemm", launch);
  }
}

template <class Cfg>
void launch_wgrad_gemm(const WgradGemm& p, int vec, const at::Tensor& x, const at::Tensor& dy,
                       at::Tensor& workspace, at::Tensor& dw) {
  const Dim3 grid(unsigned(ceil_div(p.Kg, Cfg::BM)), unsigned(ceil_div(p.columns(), Cfg::BN)),
                  unsigned(p.groups * p.splits));
  dispatch_types<Cfg, Cfg::kMath == Math::ffma || kTf32Wgrad<Cfg>>(x.scalar_type(), vec, "igemm::wgrad", [&](auto type, auto width) {
    using T = decltype(type);
    launch_kernel("igemm::wgrad_kernel", wgrad_kernel<Cfg, T, decltype(width)::value>,
                  Cfg::kWgradBounds, grid, Dim3(Cfg::kThreads), 0, p, global_view<const T>(x, "x"),
                  global_view<const T>(dy, "dy"), global_view<float>(workspace, "workspace"),
                  global_view<T>(dw, "dw"));
  });
}

}  // namespace fastconv::cuda::igemm
