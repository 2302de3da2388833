// The launchers of igemm_kernels.cuh for one tile configuration: grid, dtype and vector-width
// dispatch, and the launch. Included only by the per-configuration .cu instance files.
#pragma once

#include "cuda/implicit_gemm/igemm_kernels.cuh"
#include "cuda/implicit_gemm/implicit_gemm.h"

#include <c10/util/Exception.h>

#include <type_traits>

namespace fastconv::cuda::igemm {

// Calls f(T{}, integral_constant<int, vec>), vec in 2-byte units per copy.
template <typename T, typename F>
void dispatch_width(int vec, const char* what, F&& f) {
  TORCH_CHECK(vec == 8 || vec == 4, what, ": vector width ", vec, " is neither 8 nor 4");
  if (vec == 8)
    f(T{}, std::integral_constant<int, 8>{});
  else
    f(T{}, std::integral_constant<int, 4>{});
}
// with_float: float runs too (on TF32).
template <bool with_float, typename F>
void dispatch_types(at::ScalarType dtype, int vec, const char* what, F&& f) {
  if (dtype == at::kHalf)
    return dispatch_width<c10::Half>(vec, what, f);
  if (dtype == at::kBFloat16)
    return dispatch_width<c10::BFloat16>(vec, what, f);
  if constexpr (with_float)
    if (dtype == at::kFloat) return dispatch_width<float>(vec, what, f);
  TORCH_CHECK(false, what, ": takes ", with_float ? "float32, " : "", "float16 or bfloat16, got ", dtype);
}

template <class Cfg>
void launch_gather_gemm(const GatherGemm& p, int64_t groups, int vec, const at::Tensor& x,
                        const at::Tensor& w, const at::Tensor& bias, at::Tensor& y) {
  const Dim3 grid(unsigned(ceil_div(p.rows(), Cfg::BM)), unsigned(ceil_div(p.Kg, Cfg::BN)),
                  unsigned(groups));
  dispatch_types<true>(x.scalar_type(), vec, "igemm::gather_gemm", [&](auto type, auto width) {
    using T = decltype(type);
    const gptr<const T> b = bias.defined() ? global_view<const T>(bias, "bias") : gptr<const T>();
    launch_kernel("igemm::gather_gemm_kernel", gather_gemm_kernel<Cfg, T, decltype(width)::value>,
                  grid, Dim3(Cfg::kThreads), 0, p, global_view<const T>(x, "x"),
                  global_view<const T>(w, "w"), b, global_view<T>(y, "y"));
  });
}

template <class Cfg>
void launch_wgrad_gemm(const WgradGemm& p, int vec, const at::Tensor& x, const at::Tensor& dy,
                       at::Tensor& workspace, at::Tensor& dw) {
  const Dim3 grid(unsigned(ceil_div(p.Kg, Cfg::BM)), unsigned(ceil_div(p.columns(), Cfg::BN)),
                  unsigned(p.groups * p.splits));
  dispatch_types<false>(x.scalar_type(), vec, "igemm::wgrad", [&](auto type, auto width) {
    using T = decltype(type);
    launch_kernel("igemm::wgrad_kernel", wgrad_kernel<Cfg, T, decltype(width)::value>, grid,
                  Dim3(Cfg::kThreads), 0, p, global_view<const T>(x, "x"),
                  global_view<const T>(dy, "dy"), global_view<float>(workspace, "workspace"),
                  global_view<T>(dw, "dw"));
  });
}

}  // namespace fastconv::cuda::igemm
