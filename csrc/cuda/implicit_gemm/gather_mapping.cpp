#include "cuda/implicit_gemm/gather_mapping.h"

#include "cuda/common/launch_shape.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace fastconv::cuda::igemm {

namespace {

// The taps r in [0, R) that reach phase `phase` of dx along one axis: (phase + pad - r*dil)
// divisible by stride. They step by stride / gcd(dil, stride).
std::vector<int64_t> taps(int64_t phase, int64_t pad, int64_t R, int64_t stride, int64_t dil) {
  std::vector<int64_t> r_list;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t offset = phase + pad - r * dil;
    if (((offset % stride) + stride) % stride == 0) r_list.push_back(r);
  }
  return r_list;
}

}  // namespace

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

GatherGemm fprop_gemm(const ConvProblem& p) {
  GatherGemm g{};
  g.N = p.N, g.H = p.H, g.W = p.W, g.Ctot = p.C, g.Cg = p.C_per_group();
  g.OH = p.P, g.OW = p.Q, g.R = p.R, g.S = p.S;
  g.stride_h = p.stride_h, g.stride_w = p.stride_w, g.dil_h = p.dilation_h, g.dil_w = p.dilation_w;
  g.pad_top = p.pad_top, g.pad_left = p.pad_left;
  g.Kg = p.K_per_group();
  g.YH = p.P, g.YW = p.Q, g.Ktot = p.K;
  g.out_stride_h = g.out_stride_w = 1, g.out_offset_h = g.out_offset_w = 0;
  return g;
}

void for_each_dgrad_phase(const ConvProblem& p, const at::Tensor& w,
                          const std::function<void(const GatherGemm&, const at::Tensor&)>& run) {
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
      run(g, sub);
    }
  }
}

}  // namespace fastconv::cuda::igemm
