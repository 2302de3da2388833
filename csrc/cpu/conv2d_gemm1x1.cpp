// A 1×1 convolution at stride 1 with no padding is a plain matrix product: its column matrix
// would be x itself, so im2col's copy (and its buffer) buys nothing. Per group g, with
// Kg = K/G and Cg = C/G:
//   NCHW, image n:  y[n][Kg, H*W]  = w[Kg, Cg] @ x[n][Cg, H*W]
//   NHWC, batch:    y[N*H*W, Kg]   = x[N*H*W, Cg] @ w[Kg, Cg]^T   (one GEMM for the batch)
// dgrad swaps in w^T and wgrad sums dy @ x^T. The products run in the tensor's own dtype:
// ATen's CPU GEMM accumulates half types in float and rounds once, which is the library's
// accumulation rule; only wgrad's sum over images, which ATen would round per image, is
// carried in float by hand.
#include "common/acc_type.h"
#include "common/filter_cache.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/sgemm.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>

namespace fastconv::cpu {

namespace {

// [N*H*W, C] rows of a contiguous channels_last activation.
at::Tensor nhwc_rows(const at::Tensor& t) {
  const auto sizes = t.sizes();
  return t.permute({0, 2, 3, 1}).view({sizes[0] * sizes[2] * sizes[3], sizes[1]});
}

// [N, C, H*W] planes of a contiguous NCHW activation.
at::Tensor nchw_planes(const at::Tensor& t) {
  const auto sizes = t.sizes();
  return t.view({sizes[0], sizes[1], sizes[2] * sizes[3]});
}

// Pixels per GEMM when an epilogue follows: about 1 MiB of float outputs, so that the pass
// over them finds the block in L2 (Zen 4 has 1 MiB per core, Sapphire Rapids 2 MiB).
int64_t epilogue_pixels(int64_t K) { return std::max<int64_t>(256, (int64_t(1) << 18) / K); }

template <typename T>
void apply_nhwc(const Epilogue& epilogue, at::Tensor& y, int64_t K, int64_t m0, int64_t count) {
  apply_channels_last(EpilogueView<T>(epilogue), y.data_ptr<T>(), K, m0, count, 0, K);
}

// The epilogue (only ever given for float and double outputs: fused_stages) of the block just
// written.
#define FASTCONV_EPILOGUE_DISPATCH(dtype, ...) \
  AT_DISPATCH_FLOATING_TYPES(dtype, "gemm_1x1_epilogue", __VA_ARGS__)

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  const int64_t G = p.groups, Kg = p.K_per_group(), Cg = p.C_per_group();
  const at::Tensor w_mat = w.reshape({p.K, Cg});
  const bool nhwc = layouts.output == Layout::nhwc;
  const bool fused = epilogue.stages() != 0;
  at::Tensor& out = y;
  if (nhwc) {
    const at::Tensor X = nhwc_rows(x);
    at::Tensor Y = out.permute({0, 2, 3, 1}).view({p.N * p.P * p.Q, p.K});
    const int64_t pixels = p.N * p.P * p.Q, chunk = fused ? epilogue_pixels(p.K) : pixels;
    // [G, Cg, Kg], kept between calls for a frozen filter (common/filter_cache.h).
    const at::Tensor w_cols = derived_from_filter(
        c10::str("gemm1x1 channels_last groups ", G),
        [&] { return transposed_operand(w_mat.view({G, Kg, Cg})); });
    for (int64_t m0 = 0; m0 < pixels; m0 += chunk) {
      const int64_t count = std::min(chunk, pixels - m0);
      for (int64_t g = 0; g < G; ++g) {
        at::Tensor Yg = Y.narrow(0, m0, count).narrow(1, g * Kg, Kg);
        cpu::mm_out(Yg, X.narrow(0, m0, count).narrow(1, g * Cg, Cg), w_cols[g]);
      }
      if (fused)
        FASTCONV_EPILOGUE_DISPATCH(y.scalar_type(), [&] { apply_nhwc<scalar_t>(epilogue, y, p.K, m0, count); });
    }
  } else {
    const at::Tensor X = nchw_planes(x);
    at::Tensor Y = out.view({p.N, p.K, p.P * p.Q});
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        at::Tensor Yg = Y[n].narrow(0, g * Kg, Kg);
        cpu::mm_out(Yg, w_mat.narrow(0, g * Kg, Kg), X[n].narrow(0, g * Cg, Cg));
        if (!fused) continue;
        FASTCONV_EPILOGUE_DISPATCH(y.scalar_type(), [&] {
          const EpilogueView<scalar_t> ep(epilogue);
          cpu::parallel_for(g * Kg, (g + 1) * Kg, 16, [&](int64_t b, int64_t e) {
            for (int64_t k = b; k < e; ++k)
              apply_plane_run(ep, y.data_ptr<scalar_t>(), p.P * p.Q, p.K, n, k, 0, p.P * p.Q);
          });
        });
      }
  }
}

void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const Epilogue&, at::Tensor& dx) {
  const int64_t G = p.groups, Kg = p.K_per_group(), Cg = p.C_per_group();
  const at::Tensor w_mat = w.reshape({p.K, Cg});
  const bool nhwc = layouts.output == Layout::nhwc;
  at::Tensor& out = dx;
  if (nhwc) {
    const at::Tensor DY = nhwc_rows(dy);
    at::Tensor DX = out.permute({0, 2, 3, 1}).view({p.N * p.H * p.W, p.C});
    for (int64_t g = 0; g < G; ++g) {
      at::Tensor DXg = DX.narrow(1, g * Cg, Cg);
      cpu::mm_out(DXg, DY.narrow(1, g * Kg, Kg), w_mat.narrow(0, g * Kg, Kg));
    }
  } else {
    const at::Tensor DY = nchw_planes(dy);
    at::Tensor DX = out.view({p.N, p.C, p.H * p.W});
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        at::Tensor DXg = DX[n].narrow(0, g * Cg, Cg);
        cpu::mm_out(DXg, w_mat.narrow(0, g * Kg, Kg).t(), DY[n].narrow(0, g * Kg, Kg));
      }
  }
}

void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& dy, at::Tensor& dw) {
  const int64_t G = p.groups, Kg = p.K_per_group(), Cg = p.C_per_group();
  const bool nhwc = layouts.inputs == Layout::nhwc;
  at::Tensor dw_mat;
  if (nhwc) {
    // One GEMM over the whole batch: the reduction over images happens inside it.
    const at::Tensor X = nhwc_rows(x), DY = nhwc_rows(dy);
    dw_mat = at::empty({p.K, Cg}, dy.options());
    for (int64_t g = 0; g < G; ++g) {
      at::Tensor dWg = dw_mat.narrow(0, g * Kg, Kg);
      cpu::mm_out(dWg, DY.narrow(1, g * Kg, Kg).t(), X.narrow(1, g * Cg, Cg));
    }
  } else {
    const at::ScalarType acc = acc_dtype(x.scalar_type());
    const at::Tensor X = nchw_planes(x), DY = nchw_planes(dy);
    dw_mat = at::zeros({p.K, Cg}, dy.options().dtype(acc));
    for (int64_t n = 0; n < p.N; ++n) {
      const at::Tensor Xn = X[n].to(acc), DYn = DY[n].to(acc);
      for (int64_t g = 0; g < G; ++g) {
        at::Tensor dWg = dw_mat.narrow(0, g * Kg, Kg);
        cpu::mm_out(dWg, DYn.narrow(0, g * Kg, Kg), Xn.narrow(0, g * Cg, Cg).t(), /*accumulate=*/true);
      }
    }
  }
  dw.copy_(dw_mat.view({p.K, Cg, 1, 1}));
}

// P == H and Q == W rule out a transposed convolution's output_padding, whose extra rows
// and columns no output reads.
bool can_implement(const ConvProblem& p, const ConvRequest&) {
  return p.P == p.H && p.Q == p.W && p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
         p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
}

}  // namespace

ConvAlgorithm gemm_1x1_algorithm() {
  ConvAlgorithm a{"gemm_1x1", &can_implement, &fprop, &dgrad, &wgrad};
  a.fused_stages = &fprop_fuses_every_stage_in_float;
  return a;
}

}  // namespace fastconv::cpu
