// The implicit-GEMM algorithms (one per tile configuration): the mapping of each direction of a
// ConvProblem onto the kernels' GatherGemm / WgradGemm, their capability and speed rules.
// Host code only (g++); the kernels are in igemm_kernels.cuh.
//
//   fprop: one GatherGemm over x and w.
//   dgrad: at stride 1, the convolution of dy with the flipped, transposed filter. At stride
//          s > 1, the s_h x s_w phases of dx (pixels h = ph + s_h*i, w = pw + s_w*j) each take
//          only the filter taps that reach them, so no zero between the outputs is multiplied:
//          each phase is a stride-1 GatherGemm with a sub-filter, writing its pixels in place.
//   wgrad: split-K over the N*P*Q pixels into a float workspace, then a fixed-order sum:
//          deterministic on every run, with or without torch.use_deterministic_algorithms.
#include "cuda/implicit_gemm/config.h"
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

// 2-byte units per cp.async: 8 (16 bytes) when every operand's base and channel run is
// 16-byte aligned, 4 (8 bytes) when they are 8-byte aligned, else 2 (4 bytes: float on the
// FFMA tile; can_implement asks the others for 8).
int vector_width(std::initializer_list<const at::Tensor*> tensors, std::initializer_list<int64_t> runs) {
  uint64_t bits = 0;
  int64_t element = 2;
  for (const at::Tensor* t : tensors)
    if (t->defined()) {
      bits |= reinterpret_cast<uint64_t>(t->const_data_ptr());
      element = t->element_size();
    }
  for (int64_t run : runs) bits |= uint64_t(run) * uint64_t(element);
  return bits % 16 == 0 ? 8 : bits % 8 == 0 ? 4 : 2;
}

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
                    const at::Tensor& w, const at::Tensor& bias, at::Tensor& y) {
    GatherGemm g{};
    g.N = p.N, g.H = p.H, g.W = p.W, g.Ctot = p.C, g.Cg = p.C_per_group();
    g.OH = p.P, g.OW = p.Q, g.R = p.R, g.S = p.S;
    g.stride_h = p.stride_h, g.stride_w = p.stride_w, g.dil_h = p.dilation_h, g.dil_w = p.dilation_w;
    g.pad_top = p.pad_top, g.pad_left = p.pad_left;
    g.Kg = p.K_per_group();
    g.YH = p.P, g.YW = p.Q, g.Ktot = p.K;
    g.out_stride_h = g.out_stride_w = 1, g.out_offset_h = g.out_offset_w = 0;
    const int vec = vector_width({&x, &w, &y}, {g.Cg, g.Kg});
    igemm::launch_gather_gemm<Cfg>(g, p.groups, vec, x, w, bias, y);
  }

  // The taps r in [0, R) that reach phase `phase` of dx along one axis: (phase + pad - r*dil)
  // divisible by stride. They step by stride / gcd(dil, stride).
  static std::vector<int64_t> taps(int64_t phase, int64_t pad, int64_t R, int64_t stride, int64_t dil) {
    std::vector<int64_t> r_list;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t offset = phase + pad - r * dil;
      if (((offset % stride) + stride) % stride == 0) r_list.push_back(r);
    }
    return r_list;
  }

  static void dgrad(const ConvProblem& p, const KernelLayouts&, const at::Tensor& dy,
                    const at::Tensor& w, const at::Tensor& bias, at::Tensor& dx) {
    const int64_t Kg = p.K_per_group(), Cg = p.C_per_group();
    // w, logically [K, C/g, R, S], as [groups, K/g, C/g, R, S] (a view of its KRSC memory),
    // flipped and transposed once for every phase: [groups * C/g][R][S][K/g] with the taps in
    // reverse order. A phase's filter is then a strided slice of it, copied once where it is
    // not already contiguous (stride 1 has one phase, the whole filter).
    const at::Tensor flipped = w.view({p.groups, Kg, Cg, p.R, p.S})
                                   .permute({0, 2, 3, 4, 1})
                                   .flip({2, 3})
                                   .contiguous()
                                   .view({p.groups * Cg, p.R, p.S, Kg});
    for (int64_t ph = 0; ph < std::min(p.stride_h, p.H); ++ph) {
      const std::vector<int64_t> rs_h = taps(ph, p.pad_top, p.R, p.stride_h, p.dilation_h);
      for (int64_t pw = 0; pw < std::min(p.stride_w, p.W); ++pw) {
        const std::vector<int64_t> rs_w = taps(pw, p.pad_left, p.S, p.stride_w, p.dilation_w);
        GatherGemm g{};
        g.N = p.N, g.H = p.P, g.W = p.Q, g.Ctot = p.K, g.Cg = Kg;
        g.OH = ceil_div(p.H - ph, p.stride_h), g.OW = ceil_div(p.W - pw, p.stride_w);
        g.R = int64_t(rs_h.size()), g.S = int64_t(rs_w.size());
        g.stride_h = g.stride_w = 1;
        // Tap j of the phase reads dy row i + base - j * step: flipped, a stride-1 convolution
        // with dilation `step` and padding (taps - 1) * step - base.
        auto axis = [](const std::vector<int64_t>& r_list, int64_t phase, int64_t pad, int64_t stride,
                       int64_t dil, int64_t& step, int64_t& padding) {
          if (r_list.empty()) {
            step = 1, padding = 0;
            return;
          }
          const int64_t base = (phase + pad - r_list.front() * dil) / stride;
          step = r_list.size() > 1 ? (r_list[1] - r_list[0]) * dil / stride : 1;
          padding = (int64_t(r_list.size()) - 1) * step - base;
        };
        axis(rs_h, ph, p.pad_top, p.stride_h, p.dilation_h, g.dil_h, g.pad_top);
        axis(rs_w, pw, p.pad_left, p.stride_w, p.dilation_w, g.dil_w, g.pad_left);
        g.Kg = Cg;
        g.YH = p.H, g.YW = p.W, g.Ktot = p.C;
        g.out_stride_h = p.stride_h, g.out_stride_w = p.stride_w;
        g.out_offset_h = ph, g.out_offset_w = pw;
        // The phase's filter, flipped and transposed: [groups * C/g][taps_h][taps_w][K/g], its
        // taps r_list read backwards: flipped index R - 1 - r, ascending.
        auto pick = [](const at::Tensor& t, int64_t dim, int64_t taps, const std::vector<int64_t>& r_list) {
          if (r_list.empty()) return t.narrow(dim, 0, 0);
          const int64_t step = r_list.size() > 1 ? r_list[1] - r_list[0] : 1;
          return t.slice(dim, taps - 1 - r_list.back(), taps - r_list.front(), step);
        };
        const at::Tensor sub = pick(pick(flipped, 1, p.R, rs_h), 2, p.S, rs_w).contiguous();
        const int vec = vector_width({&dy, &sub, &dx}, {Kg, Cg});
        igemm::launch_gather_gemm<Cfg>(g, p.groups, vec, dy, sub, bias, dx);
      }
    }
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
    const int vec = vector_width({&x, &dy}, {g.Cg, g.Kg});
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
    a.fuses_bias = true;
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
