// The channels-last im2col row that both GEMM kernels with an NHWC output build: for output
// pixel m (n, p, q), the R*S runs of Cg input channels of group g that its taps read, zeros in
// the padding, in (r, s, c) order. The run copies are contiguous in x (channels last).
#pragma once

#include "common/conv_problem.h"
#include "cpu/parallel.h"


#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastconv::cpu {

// rows[i * row_stride + (r * S + s) * Cg + c] = x[n, g*Cg + c, h, w] for pixels m0 + i of
// [m0, m0 + count), converted to dst_t; x is contiguous channels_last. On every thread.
template <typename src_t, typename dst_t>
void gather_pixel_rows(const ConvProblem& p, const src_t* x, int64_t g, int64_t m0, int64_t count,
                       int64_t row_stride, dst_t* rows) {
  const int64_t Cg = p.C_per_group(), RSCg = p.R * p.S * Cg, PQ = p.P * p.Q;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(RSCg, 1));
  cpu::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t m = m0 + i, n = m / PQ, op = (m % PQ) / p.Q, q = m % p.Q;
      dst_t* dst = rows + i * row_stride;
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
        for (int64_t s = 0; s < p.S; ++s, dst += Cg) {
          const int64_t w = q * p.stride_w - p.pad_left + s * p.dilation_w;
          if (h < 0 || h >= p.H || w < 0 || w >= p.W) {
            std::fill(dst, dst + Cg, dst_t(0));
            continue;
          }
          const src_t* src = x + ((n * p.H + h) * p.W + w) * p.C + g * Cg;
          if constexpr (std::is_same_v<src_t, dst_t>)
            std::memcpy(dst, src, sizeof(dst_t) * Cg);
          else
            for (int64_t c = 0; c < Cg; ++c) dst[c] = dst_t(src[c]);
        }
      }
    }
  });
}

}  // namespace fastconv::cpu
