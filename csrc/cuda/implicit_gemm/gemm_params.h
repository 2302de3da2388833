// The implicit-GEMM kernels' problem descriptions, read by host (launchers) and device
// (kernels). The mapping from ConvProblem to these is in implicit_gemm.cpp, written once.
#pragma once

#include "common/macros.h"

#include <cstdint>

namespace fastconv::cuda::igemm {

// C[m, n] = sum_k A[m, k] B[n, k] for each group g (grid z), where
//   A is an NHWC activation gathered by rows: row m = (img, oh, ow) of an OH x OW grid, column
//     k = (r, s, c) with c fastest: x[img, oh*stride_h - pad_top + r*dil_h,
//     ow*stride_w - pad_left + s*dil_w, g*Cg + c], zero outside the image;
//   B is a filter [groups*Kg][R][S][Cg] (KRSC), row n = filter g*Kg + n;
//   C is an NHWC output [N][YH][YW][Ktot], row m written at pixel
//     (oh*out_stride_h + out_offset_h, ow*out_stride_w + out_offset_w), channel g*Kg + n.
// fprop is this GEMM as it stands; dgrad is this GEMM over dy with a flipped, transposed
// filter, once per stride phase (out_stride and out_offset place each phase's pixels).
struct GatherGemm {
  int64_t N, H, W, Ctot, Cg;
  int64_t OH, OW;
  int64_t R, S;
  int64_t stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
  int64_t Kg;
  int64_t YH, YW, Ktot, out_stride_h, out_stride_w, out_offset_h, out_offset_w;

  FASTCONV_HD int64_t rows() const { return N * OH * OW; }
  FASTCONV_HD int64_t reduction() const { return R * S * Cg; }

  // Reduction index k (< reduction(), k = (r * S + s) * Cg + c) as its channel c and the
  // filter tap's row and column offsets in the image, r * dil_h and s * dil_w. In 32 bits:
  // can_implement keeps the filter under 2^31 elements.
  struct Tap {
    int c, r_off, s_off;
  };
  FASTCONV_HD Tap tap(int64_t k) const {
    const int kk = int(k), cg = int(Cg), rs = kk / cg;
    return {kk - rs * cg, (rs / int(S)) * int(dil_h), (rs % int(S)) * int(dil_w)};
  }
};

// wgrad: dw[g*Kg + m][r][s][c] = sum over the N*P*Q output pixels of
//   dy[pixel, g*Kg + m] * x[img, p*stride_h - pad_top + r*dil_h, q*stride_w - pad_left + s*dil_w, g*Cg + c],
// a GEMM with M = Kg, N = R*S*Cg and the pixels as its reduction, split into `splits` runs
// of `pixels_per_split` (a multiple of kSliceUnits, so of every dtype's stage slice) that
// write float partial sums to a workspace [splits][groups*Kg][R*S*Cg]; a second pass adds
// them in split order.
struct WgradGemm {
  int64_t N, H, W, Ctot, Cg;
  int64_t P, Q, Ktot, Kg;
  int64_t R, S;
  int64_t stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
  int64_t groups, splits, pixels_per_split;

  FASTCONV_HD int64_t pixels() const { return N * P * Q; }
  FASTCONV_HD int64_t columns() const { return R * S * Cg; }
};

}  // namespace fastconv::cuda::igemm
