// The always-correct CPU convolution: one loop nest per direction over every tap, reading
// any layout through strides and accumulating in acc_type. It is the reference the fast
// algorithms are tested against, and the last entry of the CPU list.
#include "cpu/kernels.h"
#include "cpu/strided.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

namespace fastconv::cpu {

namespace {

template <typename scalar_t>
void fprop_impl(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  using acc_t = acc_type<scalar_t>;
  const Strided4<const scalar_t> X(x), Wt(w);
  const Strided4<scalar_t> Y(y);
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  at::parallel_for(0, p.N * p.K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nk = begin; nk < end; ++nk) {
      const int64_t n = nk / p.K, k = nk % p.K, c0 = (k / Kg) * Cg;
      for (int64_t op = 0; op < p.P; ++op) {
        for (int64_t oq = 0; oq < p.Q; ++oq) {
          acc_t acc = 0;
          for (int64_t cl = 0; cl < Cg; ++cl) {
            for (int64_t r = 0; r < p.R; ++r) {
              const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
              if (h < 0 || h >= p.H) continue;
              for (int64_t s = 0; s < p.S; ++s) {
                const int64_t wi = oq * p.stride_w - p.pad_left + s * p.dilation_w;
                if (wi < 0 || wi >= p.W) continue;
                acc += acc_t(X(n, c0 + cl, h, wi)) * acc_t(Wt(k, cl, r, s));
              }
            }
          }
          Y(n, k, op, oq) = scalar_t(acc);
        }
      }
    }
  });
}

// Gathers, for each input element, the outputs its taps reached: no two tasks write alike.
template <typename scalar_t>
void dgrad_impl(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w,
                at::Tensor& dx) {
  using acc_t = acc_type<scalar_t>;
  const Strided4<const scalar_t> DY(dy), Wt(w);
  const Strided4<scalar_t> DX(dx);
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / p.C, c = nc % p.C, cl = c % Cg, k0 = (c / Cg) * Kg;
      for (int64_t h = 0; h < p.H; ++h) {
        for (int64_t wi = 0; wi < p.W; ++wi) {
          acc_t acc = 0;
          for (int64_t r = 0; r < p.R; ++r) {
            const int64_t ph = h + p.pad_top - r * p.dilation_h;
            if (ph < 0 || ph % p.stride_h != 0 || ph / p.stride_h >= p.P) continue;
            for (int64_t s = 0; s < p.S; ++s) {
              const int64_t qw = wi + p.pad_left - s * p.dilation_w;
              if (qw < 0 || qw % p.stride_w != 0 || qw / p.stride_w >= p.Q) continue;
              for (int64_t kl = 0; kl < Kg; ++kl) {
                acc += acc_t(DY(n, k0 + kl, ph / p.stride_h, qw / p.stride_w)) *
                       acc_t(Wt(k0 + kl, cl, r, s));
              }
            }
          }
          DX(n, c, h, wi) = scalar_t(acc);
        }
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
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  at::parallel_for(0, p.K * Cg, 1, [&](int64_t begin, int64_t end) {
    for (int64_t kc = begin; kc < end; ++kc) {
      const int64_t k = kc / Cg, cl = kc % Cg, c = (k / Kg) * Cg + cl;
      for (int64_t r = 0; r < p.R; ++r) {
        for (int64_t s = 0; s < p.S; ++s) {
          acc_t acc = 0;
          for (int64_t n = 0; n < p.N; ++n) {
            for (int64_t op = 0; op < p.P; ++op) {
              const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
              if (h < 0 || h >= p.H) continue;
              for (int64_t oq = 0; oq < p.Q; ++oq) {
                const int64_t wi = oq * p.stride_w - p.pad_left + s * p.dilation_w;
                if (wi < 0 || wi >= p.W) continue;
                acc += acc_t(X(n, c, h, wi)) * acc_t(DY(n, k, op, oq));
              }
            }
          }
          DW(k, cl, r, s) = scalar_t(acc);
        }
      }
    }
  });
}

void fprop(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_fprop",
                                  [&] { fprop_impl<scalar_t>(p, x, w, y); });
}

void dgrad(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "direct_dgrad",
                                  [&] { dgrad_impl<scalar_t>(p, dy, w, dx); });
}

void wgrad(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "direct_wgrad",
                                  [&] { wgrad_impl<scalar_t>(p, x, dy, dw); });
}

bool can_implement(const ConvProblem&, Direction, at::ScalarType) { return true; }

}  // namespace

ConvAlgorithm direct_algorithm() {
  return {"direct", &can_implement, &fprop, &dgrad, &wgrad};
}

}  // namespace fastconv::cpu
