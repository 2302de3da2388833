// bfloat16 fprop as a GEMM on AVX512-BF16's dot product (VDPBF16PS), for CPUs that have it and
// no AMX (AMD Zen 4, Intel Cooper Lake). One micro-kernel serves both layouts:
//   C[M, N] += A[M, Kr] · B[Kr, N], Kr the reduction (C/G·R·S, padded to even)
// A is read by broadcasting one pair of bf16 along Kr (32 bits) per row; B is packed as
// [Kr/2][N][2], so that one 512-bit load holds 16 columns' pairs, which is what VDPBF16PS
// multiplies lane by lane. The accumulators are float; the epilogue (bias, residual,
// activation) runs in float and each output is rounded to bf16 once.
//   NCHW, image n, group g:  y[n][Kg, P·Q] = w[Kg, Kr] · col[Kr, P·Q]
//       A = the filter rows (zero-padded to even Kr), B = im2col written straight into pairs.
//   NHWC, group g:           y[N·P·Q, Kg] = col[N·P·Q, Kr] · w[Kg, Kr]^T
//       A = the pixel rows im2col makes anyway (pairs are adjacent), B = the packed filter.
// Only the AVX512-BF16 clone of the kernel exists: the rest of the build has no -march, and
// the algorithm claims nothing on a CPU without the feature, so im2col_gemm (ATen's GEMM) is
// what runs there.
#include "common/activation.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/pixel_rows.h"
#include "cpu/column_range.h"
#include "cpu/vector_clones.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FASTCONV_HAVE_BF16DOT 1
#else
#define FASTCONV_HAVE_BF16DOT 0
#endif

namespace fastconv::cpu {

bool cpu_has_avx512bf16() {
#if FASTCONV_HAVE_BF16DOT
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bf16");
  return has && !cpu_feature_hidden("avx512bf16");
#else
  return false;
#endif
}

namespace {

#if FASTCONV_HAVE_BF16DOT

// Rows by 16-lane vectors of accumulators: 6 x 4 = 24 zmm, plus 4 loads of B and one
// broadcast of A, fits the 32 registers; each B load feeds 6 dot products, each broadcast 4.
constexpr int kRows = 6;
constexpr int kVectors = 4;
constexpr int64_t kPanel = 16 * kVectors;  // columns per task
// Rows of A per task: enough blocks that a task's B panel (kept in L2) is reused many times,
// few enough that the 2 threads get several tasks on layers with 7x7 outputs.
constexpr int64_t kRowGroup = 8 * kRows;
// Pairs of the reduction per pass over a task's rows: 96 x 64 columns x 4 bytes = 24 KiB of B,
// which stays in Zen 4's 32 KiB L1 while 8 row blocks read it.
constexpr int64_t kPairBlock = 96;

struct GemmEpilogue {
  const float* row_bias = nullptr;  // per row of C (NCHW: per filter)
  const float* col_bias = nullptr;  // per column of C (NHWC: per filter)
  // bf16, laid out as C is (the same ldc): element (i, j) is added to C's (i, j). Points at the
  // element of this GEMM's C[0, 0].
  const uint16_t* residual = nullptr;
  Activation activation = Activation::none;
  float slope = 0.f;
};

// Adds A[rows, 2·pairs] · B[2·pairs, cols] to the float block `part` (row stride kPanel),
// which starts from zero when `first`; when `last`, writes C[i, j] = bf16(part + bias)
// instead, the one rounding. rows <= R, cols <= 16·V; B must be readable for 16·V columns of
// every pair (the packers pad it).
template <int R, int V>
FASTCONV_TARGET_AVX512BF16 void micro_kernel(int64_t pairs, const uint32_t* __restrict a,
                                             int64_t lda, const uint32_t* __restrict b, int64_t ldb,
                                             float* __restrict part, bool first, bool last,
                                             uint16_t* __restrict c, int64_t ldc, int64_t cols,
                                             const GemmEpilogue& e, int64_t row0, int64_t col0) {
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v)
      acc[i][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(part + i * kPanel + 16 * v);
  for (int64_t k = 0; k < pairs; ++k) {
    __m512bh bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[i * lda + k]));
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
    }
  }
  if (!last) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) _mm512_storeu_ps(part + i * kPanel + 16 * v, acc[i][v]);
    return;
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const int64_t left = cols - 16 * v;
    const __mmask16 mask = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    const __m512 cb = e.col_bias ? _mm512_maskz_loadu_ps(mask, e.col_bias + col0 + 16 * v)
                                 : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      __m512 out = _mm512_add_ps(acc[i][v], cb);
      if (e.row_bias) out = _mm512_add_ps(out, _mm512_set1_ps(e.row_bias[row0 + i]));
      if (e.residual) {
        const __m256i r16 = _mm256_maskz_loadu_epi16(mask, e.residual + (row0 + i) * ldc + col0 + 16 * v);
        out = _mm512_add_ps(out, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(r16), 16)));
      }
      out = activate16(e.activation, e.slope, out);
      const __m256i rounded = (__m256i)_mm512_cvtneps_pbh(out);
      _mm256_mask_storeu_epi16(c + i * ldc + 16 * v, mask, rounded);
    }
  }
}

using MicroKernel = void (*)(int64_t, const uint32_t*, int64_t, const uint32_t*, int64_t, float*,
                             bool, bool, uint16_t*, int64_t, int64_t, const GemmEpilogue&, int64_t,
                             int64_t);

template <int R>
MicroKernel pick_vectors(int64_t vectors) {
  switch (vectors) {
    case 1: return &micro_kernel<R, 1>;
    case 2: return &micro_kernel<R, 2>;
    case 3: return &micro_kernel<R, 3>;
    default: return &micro_kernel<R, 4>;
  }
}

MicroKernel pick(int64_t rows, int64_t vectors) {
  switch (rows) {
    case 1: return pick_vectors<1>(vectors);
    case 2: return pick_vectors<2>(vectors);
    case 3: return pick_vectors<3>(vectors);
    case 4: return pick_vectors<4>(vectors);
    case 5: return pick_vectors<5>(vectors);
    default: return pick_vectors<6>(vectors);
  }
}

// C[M, N] for A [M, 2·pairs] (row stride lda, in pairs) and packed B [pairs][ldb], on every
// thread. Tasks are (panel of 64 columns, group of 48 rows); within a task the reduction runs
// in blocks of kPairBlock pairs, each block of the B panel (24 KiB) read from L1 by all 8 row
// blocks, the partial sums kept in float in a 12 KiB block of the task's own.
void gemm(int64_t M, int64_t N, int64_t pairs, const uint32_t* a, int64_t lda, const uint32_t* b,
          int64_t ldb, uint16_t* c, int64_t ldc, const GemmEpilogue& e) {
  const int64_t panels = (N + kPanel - 1) / kPanel, row_groups = (M + kRowGroup - 1) / kRowGroup;
  cpu::parallel_for(0, panels * row_groups, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float part[kRowGroup * kPanel];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t j0 = (task / row_groups) * kPanel, cols = std::min(kPanel, N - j0);
      const int64_t g0 = (task % row_groups) * kRowGroup, g1 = std::min(M, g0 + kRowGroup);
      const int64_t vectors = (cols + 15) / 16;
      for (int64_t k0 = 0; k0 < pairs; k0 += kPairBlock) {
        const int64_t kc = std::min(kPairBlock, pairs - k0);
        const bool first = k0 == 0, last = k0 + kc == pairs;
        for (int64_t i0 = g0; i0 < g1; i0 += kRows) {
          const int64_t rows = std::min<int64_t>(kRows, g1 - i0);
          pick(rows, vectors)(kc, a + i0 * lda + k0, lda, b + k0 * ldb + j0, ldb,
                              part + (i0 - g0) * kPanel, first, last, c + i0 * ldc + j0, ldc, cols,
                              e, i0, j0);
        }
      }
    }
  });
}

inline uint16_t bits(at::BFloat16 v) { return v.x; }
inline uint32_t pair_of(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// dst[q] = x_row[q·step] on the valid columns, zero elsewhere: one row of one tap.
void tap_row(uint16_t* dst, const uint16_t* x_row, const ColumnRange& valid, int64_t step,
             int64_t offset, int64_t Q) {
  std::fill(dst, dst + valid.lo, uint16_t(0));
  const uint16_t* src = x_row + valid.lo * step + offset;
  if (step == 1) {
    std::memcpy(dst + valid.lo, src, sizeof(uint16_t) * (valid.hi - valid.lo));
  } else {
    for (int64_t q = valid.lo; q < valid.hi; ++q) dst[q] = src[(q - valid.lo) * step];
  }
  std::fill(dst + valid.hi, dst + Q, uint16_t(0));
}

// ------------------------------------------------------------------------------- NCHW

// B[pair][ld] for group g of image n, output rows [p0, p0 + np): the column matrix of im2col
// with rows (c, r, s) taken two at a time and interleaved, so no second pass packs it.
void im2col_pairs(const ConvProblem& p, const uint16_t* x, int64_t n, int64_t g, int64_t p0,
                  int64_t np, int64_t pairs, int64_t ld, uint32_t* B) {
  const int64_t RS = p.R * p.S, rows = p.C_per_group() * RS, Q = p.Q;
  cpu::parallel_for(0, pairs, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t> lo(Q), hi(Q);
    for (int64_t pr = begin; pr < end; ++pr) {
      uint32_t* dst = B + pr * ld;
      for (int64_t pi = 0; pi < np; ++pi, dst += Q) {
        for (int half = 0; half < 2; ++half) {
          uint16_t* out = half == 0 ? lo.data() : hi.data();
          const int64_t row = 2 * pr + half;
          if (row >= rows) {
            std::fill(out, out + Q, uint16_t(0));
            continue;
          }
          const int64_t c = g * p.C_per_group() + row / RS, r = (row / p.S) % p.R, s = row % p.S;
          const int64_t h = (p0 + pi) * p.stride_h - p.pad_top + r * p.dilation_h;
          const int64_t offset = s * p.dilation_w - p.pad_left;
          const ColumnRange valid = valid_columns(offset, p.stride_w, p.W, Q);
          if (h < 0 || h >= p.H || valid.lo == valid.hi) {
            std::fill(out, out + Q, uint16_t(0));
            continue;
          }
          tap_row(out, x + ((n * p.C + c) * p.H + h) * p.W, valid, p.stride_w, offset, Q);
        }
        for (int64_t q = 0; q < Q; ++q) dst[q] = pair_of(lo[q], hi[q]);
      }
    }
  });
}

void fprop_nchw(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w,
                const GemmEpilogue& stages, at::Tensor& y) {
  const int64_t G = p.groups, Kg = p.K_per_group(), rows = p.C_per_group() * p.R * p.S;
  const int64_t pairs = (rows + 1) / 2, PQ = p.P * p.Q;
  // The filter as A: [K, 2·pairs] bf16, a zero after each odd row.
  at::Tensor a = at::zeros({p.K, 2 * pairs}, w.options());
  a.narrow(1, 0, rows).copy_(w.reshape({p.K, rows}));
  // Output rows per tile: the column buffer stays within 4 MiB of pairs (2 M bf16).
  const int64_t np = std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(pairs * p.Q, 1), 1, p.P);
  const int64_t ld = round_up(np * p.Q, 16);
  at::Tensor col = at::empty({pairs * ld}, x.options().dtype(at::kInt));
  const uint16_t* xd = reinterpret_cast<const uint16_t*>(x.const_data_ptr<at::BFloat16>());
  uint16_t* yd = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  const uint32_t* ad = reinterpret_cast<const uint32_t*>(a.const_data_ptr<at::BFloat16>());
  uint32_t* B = reinterpret_cast<uint32_t*>(col.data_ptr<int32_t>());
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t p0 = 0; p0 < p.P; p0 += np) {
        const int64_t rows_here = std::min(np, p.P - p0);
        im2col_pairs(p, xd, n, g, p0, rows_here, pairs, ld, B);
        const int64_t first = (n * p.K + g * Kg) * PQ + p0 * p.Q;
        GemmEpilogue e = stages;
        if (stages.row_bias) e.row_bias = stages.row_bias + g * Kg;
        if (stages.residual) e.residual = stages.residual + first;
        gemm(Kg, rows_here * p.Q, pairs, ad + g * Kg * pairs, pairs, B, ld, yd + first, PQ, e);
      }
}

// ------------------------------------------------------------------------------- NHWC

// A[i][2·pairs] for the output pixels [m0, m0 + count) of group g: each pixel's R·S runs of
// Cg channels (x is channels_last), then a zero when the row is odd.
void im2col_pixel_rows(const ConvProblem& p, const uint16_t* x, int64_t g, int64_t m0,
                       int64_t count, int64_t pairs, uint16_t* A) {
  gather_pixel_rows<uint16_t, uint16_t>(p, x, g, m0, count, 2 * pairs, A);
  const int64_t rows = p.R * p.S * p.C_per_group();
  if (rows % 2)
    for (int64_t i = 0; i < count; ++i) A[i * 2 * pairs + rows] = 0;
}

void fprop_nhwc(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w,
                const GemmEpilogue& stages, at::Tensor& y) {
  const int64_t G = p.groups, Kg = p.K_per_group(), Cg = p.C_per_group();
  const int64_t rows = p.R * p.S * Cg, pairs = (rows + 1) / 2, pixels = p.N * p.P * p.Q;
  const int64_t ld = round_up(Kg, 16);
  // The packed filter, per group [pairs][ld] pairs of (r, s, c) rows; zeros pad both ends.
  at::Tensor wr = at::zeros({p.K, 2 * pairs}, w.options());
  wr.narrow(1, 0, rows).copy_(w.permute({0, 2, 3, 1}).reshape({p.K, rows}));
  at::Tensor packed = at::zeros({G, ld, pairs}, x.options().dtype(at::kInt));
  packed.narrow(1, 0, Kg).copy_(wr.view(at::kInt).view({G, Kg, pairs}));
  packed = packed.transpose(1, 2).contiguous();  // [G, pairs, ld]
  const int64_t tile = std::clamp<int64_t>((int64_t(2) << 20) / std::max<int64_t>(2 * pairs, 1), 1, pixels);
  at::Tensor col = at::empty({tile * 2 * pairs}, x.options());
  const uint16_t* xd = reinterpret_cast<const uint16_t*>(x.const_data_ptr<at::BFloat16>());
  uint16_t* yd = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  uint16_t* A = reinterpret_cast<uint16_t*>(col.data_ptr<at::BFloat16>());
  const uint32_t* Bd = reinterpret_cast<const uint32_t*>(packed.const_data_ptr<int32_t>());
  for (int64_t m0 = 0; m0 < pixels; m0 += tile) {
    const int64_t count = std::min(tile, pixels - m0);
    for (int64_t g = 0; g < G; ++g) {
      im2col_pixel_rows(p, xd, g, m0, count, pairs, A);
      const int64_t first = m0 * p.K + g * Kg;
      GemmEpilogue e = stages;
      if (stages.col_bias) e.col_bias = stages.col_bias + g * Kg;
      if (stages.residual) e.residual = stages.residual + first;
      gemm(count, Kg, pairs, reinterpret_cast<const uint32_t*>(A), pairs, Bd + g * pairs * ld, ld,
           yd + first, p.K, e);
    }
  }
}

#endif  // FASTCONV_HAVE_BF16DOT

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
#if FASTCONV_HAVE_BF16DOT
  const at::Tensor bias_f =
      epilogue.bias.defined() ? epilogue.bias.to(at::kFloat).contiguous() : at::Tensor();
  const float* b = bias_f.defined() ? bias_f.const_data_ptr<float>() : nullptr;
  GemmEpilogue e;
  if (epilogue.residual.defined())
    e.residual = reinterpret_cast<const uint16_t*>(epilogue.residual.const_data_ptr<at::BFloat16>());
  e.activation = epilogue.activation;
  e.slope = float(epilogue.negative_slope);
  if (layouts.output == Layout::nhwc) {
    e.col_bias = b;
    fprop_nhwc(p, x, w, e, y);
  } else {
    e.row_bias = b;
    fprop_nchw(p, x, w, e, y);
  }
#else
  TORCH_CHECK(false, "gemm_bf16dot was built without AVX512-BF16 support");
#endif
}

// A capability of the CPU as much as of the problem: without AVX512-BF16 the kernel cannot
// run at all, so the algorithm claims nothing and im2col_gemm takes bf16.
bool can_implement(const ConvProblem&, const ConvRequest& r) {
  return r.dtype == at::kBFloat16 && r.direction == Direction::fprop && cpu_has_avx512bf16();
}

// The automatic choice, from one-thread timings against im2col_gemm (ATen's bf16 GEMM) on the
// seed layers (bench/NOTES.md, 2026-12-03). Channels-last: the pixel rows im2col writes anyway
// are the broadcast side, and with >= 1024 output pixels this kernel won by 1.3-2.3x
// (VGG conv2_2 and conv3_3, ResNet 28_3x3 and 56_3x3, DenseNet 56_3x3); with 98-392 it tied
// or lost (ResNet 7_3x3 0.65x, VGG conv5_3 0.9x). NCHW: packing the columns into pairs costs
// a pass and 7x7 to 28x28 planes leave lanes idle, so it lost 5-20 % except on VGG conv1_1
// (27 reduction rows: 1.4-1.5x), where MKL's packing dominates.
bool preferred(const ConvProblem& p, const ConvRequest& r) {
  if (r.layout == Layout::nhwc) return p.N * p.P * p.Q >= 1024;
  return p.C_per_group() * p.R * p.S <= 32;
}

}  // namespace

ConvAlgorithm gemm_bf16dot_algorithm() {
  ConvAlgorithm a{"gemm_bf16dot", &can_implement, &fprop, nullptr, nullptr};
  a.fused_stages = &fuses_every_stage;  // fprop is its only direction
  a.preferred = &preferred;
  return a;
}

}  // namespace fastconv::cpu
