// The implicit-GEMM algorithms (one per tile configuration): their capability and speed rules,
// and each direction through the kernels. Host code only (g++); the kernels are in
// igemm_kernels.cuh.
//
//   fprop, dgrad: gather GEMMs (gather_mapping.h: fprop one, dgrad one per stride phase).
//   wgrad: split-K over the N*P*Q pixels into a float workspace, then a fixed-order sum:
//          deterministic on every run, with or without torch.use_deterministic_algorithms.
#include "cuda/implicit_gemm/config.h"
#include "cuda/implicit_gemm/gather_mapping.h"
#include "cuda/implicit_gemm/implicit_gemm.h"
#include "cuda/common/device_info.h"
#include "cuda/common/launch_shape.h"
#include "cuda/kernels.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace fastconv::cuda {

namespace {

using igemm::GatherGemm;
using igemm::WgradGemm;

template <class Cfg>
struct Algorithm {
  static constexpr bool kFfma = Cfg::kMath == igemm::Math::ffma;

  static bool can_implement(const ConvProblem& p, const ConvRequest& r) {
    if constexpr (kFfma) {
      if (r.dtype != at::kFloat) return false;  // exact float32, TF32 allowed or not
    } else {
      // float32 on TF32 where torch allows it; exact float32 goes to the FFMA tile.
      const bool tf32 = r.dtype == at::kFloat && r.allow_tf32 &&
                        (r.direction != Direction::wgrad || igemm::kTf32Wgrad<Cfg>);
      if (r.dtype != at::kHalf && r.dtype != at::kBFloat16 && !tf32) return false;
    }
    if (r.compute_capability < 80) return false;  // cp.async (and mma.sync bf16, ldmatrix)
    if (r.alignment < Cfg::kMinAlignment) return false;  // copies of whole channel runs
    if (p.groups > 65535) return false;                   // grid z
    // 32-bit image coordinates, pixel indices and filter offsets in the gather GEMM.
    const int64_t pixels = std::max(p.N * p.H * p.W, p.N * p.P * p.Q);
    if (p.H + p.pad_top + p.pad_bottom >= (int64_t(1) << 30) || p.W + p.pad_left + p.pad_right >= (int64_t(1) << 30) ||
        pixels >= (int64_t(1) << 31) || double(p.K) * double(p.C_per_group()) * double(p.R * p.S) >= 2147483647.0)
      return false;
    const GemmShape gemm = p.gemm(r.direction);  // grid x and y
    return ceil_div(gemm.M, Cfg::BM) <= 0x7fffffff && ceil_div(gemm.N, Cfg::BN) <= 65535;
  }

  static KernelLayouts layouts(const ConvProblem&, const ConvRequest&) {
    return {Layout::nhwc, Layout::nhwc};
  }

  static void fprop(const ConvProblem& p, const KernelLayouts&, const at::Tensor& x,
                    const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
    const GatherGemm g = igemm::fprop_gemm(p);
    igemm::launch_gather_gemm<Cfg>(g, p.groups, igemm::vector_width({&x, &w, &y}, {g.Cg, g.Kg}), x, w, epilogue, y);
  }

  static void dgrad(const ConvProblem& p, const KernelLayouts&, const at::Tensor& dy,
                    const at::Tensor& w, const Epilogue& epilogue, at::Tensor& dx) {
    igemm::for_each_dgrad_phase(p, w, [&](const GatherGemm& g, const at::Tensor& sub) {
      igemm::launch_gather_gemm<Cfg>(g, p.groups, igemm::vector_width({&dy, &sub, &dx}, {g.Cg, g.Kg}), dy, sub,
                                     epilogue, dx);
    });
  }

  static void wgrad(const ConvProblem& p, const KernelLayouts&, const at::Tensor& x,
                    const at::Tensor& dy, at::Tensor& dw) {
    WgradGemm g{};
    g.N = p.N, g.H = p.H, g.W = p.W, g.Ctot = p.C, g.Cg = p.C_per_group();
    g.P = p.P, g.Q = p.Q, g.Ktot = p.K, g.Kg = p.K_per_group();
    g.R = p.R, g.S = p.S;
    g.stride_h = p.stride_h, g.stride_w = p.stride_w, g.dil_h = p.dilation_h, g.dil_w = p.dilation_w;
    g.pad_top = p.pad_top, g.pad_left = p.pad_left;
    g.groups = p.groups;
    // Enough splits for two CTAs per SM, each at least 4 stage slices long; the float workspace
    // (written and read once per split) at most half the bytes of x and dy, so that split-K
    // never doubles the traffic where the reduction is short against dw, and under 256 MiB.
    const int64_t tiles = ceil_div(g.Kg, Cfg::BM) * ceil_div(g.columns(), Cfg::BN) * p.groups;
    const int64_t sms = device_info(x.device().is_cuda() ? x.device().index() : -1).sm_count;
    const int64_t result = p.groups * g.Kg * g.columns();
    const int64_t operand_bytes = (x.numel() + dy.numel()) * x.element_size();
    int64_t splits = std::max<int64_t>(1, ceil_div(2 * sms, tiles));
    splits = std::min(splits, std::max<int64_t>(1, g.pixels() / (4 * Cfg::kSliceUnits)));
    splits = std::min(splits, std::max<int64_t>(1, operand_bytes / (2 * 8 * result)));
    splits = std::min(splits, std::max<int64_t>(1, (int64_t(256) << 20) / (4 * result)));
    splits = std::min<int64_t>(splits, 65535 / p.groups);
    g.pixels_per_split = ceil_div(ceil_div(g.pixels(), splits), Cfg::kSliceUnits) * Cfg::kSliceUnits;
    g.splits = ceil_div(g.pixels(), g.pixels_per_split);
    // One split writes dw straight; more add their float partial sums in a second pass.
    at::Tensor workspace = at::empty({g.splits > 1 ? g.splits * result : 0}, x.options().dtype(at::kFloat));
    const int vec = igemm::vector_width({&x, &dy}, {g.Cg, g.Kg});
    igemm::launch_wgrad_gemm<Cfg>(g, vec, x, dy, workspace, dw);
    if (g.splits > 1) igemm::reduce_splits(workspace, g.splits, dw);
  }

  // Speed rule (a model until measured, bench/igemm_prediction.py): the 128 x 128 tile once it
  // fills every SM and more than half its columns hold channels; the 64 x 64 tile takes the
  // rest, wasting half as much on narrow GEMMs (grouped layers with few channels per group).
  static bool preferred_large(const ConvProblem& p, const ConvRequest& r) {
    const GemmShape gemm = p.gemm(r.direction);
    if (r.direction == Direction::wgrad) return gemm.M >= Cfg::BM && gemm.N >= Cfg::BN;
    const int64_t sms = device_info(r.device_index).sm_count;
    return gemm.N > Cfg::BN / 2 && ceil_div(gemm.M, Cfg::BM) * ceil_div(gemm.N, Cfg::BN) * p.groups >= sms;
  }

  static ConvAlgorithm make(const char* name, bool large = false) {
    ConvAlgorithm a{name, &can_implement, &fprop, &dgrad, &wgrad};
    a.layouts = &layouts;
    a.fused_stages = &fuses_every_stage;  // in the epilogue of both math paths
    a.state = KernelState::emulated;  // passes the emulation suite; not yet run on a GPU
    if (large) a.preferred = &preferred_large;
    return a;
  }
};

}  // namespace

ConvAlgorithm implicit_gemm_128x128_algorithm() {
  return Algorithm<igemm::Tile128x128>::make("igemm_128x128", true);
}
ConvAlgorithm implicit_gemm_64x64_algorithm() {
  return Algorithm<igemm::Tile64x64>::make("igemm_64x64");
}
ConvAlgorithm implicit_gemm_ffma_algorithm() {
  return Algorithm<igemm::TileFfma64x64>::make("igemm_ffma_64x64");
}

}  // namespace fastconv::cuda
