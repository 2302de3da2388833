// The always-correct CPU convolution (common/direct_conv.h, element by element), the last
// entry of the CPU list: parallel over (n, k) output planes, (n, c) input planes and filter
// elements, so no two tasks write the same element. It reads any layout through strides and
// applies the whole epilogue (bias, residual, activation) to its accumulator before the one
// rounding.
#include "common/acc_type.h"
#include "common/direct_conv.h"
#include "common/strided.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"

#include <ATen/Dispatch.h>

namespace fastconv::cpu {

namespace {

template <typename scalar_t>
void fprop_impl(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w,
                const Epilogue& epilogue, at::Tensor& y) {
  const Strided4<const scalar_t> X(x), Wt(w);
  const Strided4<scalar_t> Y(y);
  const EpilogueView<scalar_t> ep(epilogue);
  cpu::parallel_for(0, p.N * p.K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nk = begin; nk < end; ++nk) {
      const int64_t n = nk / p.K, k = nk % p.K;
      for (int64_t op = 0; op < p.P; ++op)
        for (int64_t oq = 0; oq < p.Q; ++oq) {
          const int64_t i = Y.offset(n, k, op, oq);
          Y.data[i] = scalar_t(ep(direct_fprop_element<acc_type<scalar_t>>(p, X, Wt, n, k, op, oq), k, i));
        }
    }
  });
}

template <typename scalar_t>
void dgrad_impl(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w,
                const Epilogue& epilogue, at::Tensor& dx) {
  const Strided4<const scalar_t> DY(dy), Wt(w);
  const Strided4<scalar_t> DX(dx);
  const EpilogueView<scalar_t> ep(epilogue);
  cpu::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / p.C, c = nc % p.C;
      for (int64_t h = 0; h < p.H; ++h)
        for (int64_t wi = 0; wi < p.W; ++wi) {
          const int64_t i = DX.offset(n, c, h, wi);
          DX.data[i] = scalar_t(ep(direct_dgrad_element<acc_type<scalar_t>>(p, DY, Wt, n, c, h, wi), c, i));
        }
    }
  });
}

template <typename scalar_t>
void wgrad_impl(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy,
                at::Tensor& dw) {
  using acc_t = acc_type<scalar_t>;
  const Strided4<const scalar_t> X(x), DY(dy);
  const Strided4<scalar_t> DW(dw);
  const int64_t Cg = p.C_per_group(), terms = p.N * p.P * p.Q;
  cpu::parallel_for(0, p.K * Cg * p.R * p.S, 1, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const int64_t s = e % p.S, r = (e / p.S) % p.R, cl = (e / (p.S * p.R)) % Cg;
      const int64_t k = e / (p.S * p.R * Cg);
      acc_t acc = 0;
      for (int64_t j = 0; j < terms; ++j) acc += direct_wgrad_term<acc_t>(p, X, DY, k, cl, r, s, j);
      DW(k, cl, r, s) = scalar_t(acc);
    }
  });
}

void fprop(const ConvProblem& p, const KernelLayouts&, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_fprop",
                                  [&] { fprop_impl<scalar_t>(p, x, w, epilogue, y); });
}

void dgrad(const ConvProblem& p, const KernelLayouts&, const at::Tensor& dy,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "direct_dgrad",
                                  [&] { dgrad_impl<scalar_t>(p, dy, w, epilogue, dx); });
}

void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_wgrad",
                                  [&] { wgrad_impl<scalar_t>(p, x, dy, dw); });
}

bool can_implement(const ConvProblem&, const ConvRequest&) { return true; }

}  // namespace

ConvAlgorithm direct_algorithm() {
  ConvAlgorithm a{"direct", &can_implement, &fprop, &dgrad, &wgrad};
  a.fused_stages = &fuses_every_stage;
  return a;
}

}  // namespace fastconv::cpu
