// Dense convolution on the CPU as GEMM. The activation is unrolled tile by tile into a column
// matrix col [C*R*S, tile columns] in acc_type, so the buffer is bounded (kColumnBudget)
// whatever the batch. Per tile, with G groups, Kg = K/G and CgRS = C/G*R*S:
//   fprop  y_tile  [G, Kg, cols]  = w [G, Kg, CgRS] @ col [G, CgRS, cols]
//   dgrad  col     [G, CgRS, cols] = w^T @ dy_tile [G, Kg, cols], then col2im adds into dx
//   wgrad  dw      [G, Kg, CgRS] += dy_tile @ col^T
// A tile is a run of whole images, or a run of output rows of one image when a single
// image's columns would not fit.
#include "common/acc_type.h"
#include "common/filter_cache.h"
#include "common/strided.h"
#include "cpu/column_range.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/sgemm.h"
#include "cpu/pixel_rows.h"
#include "cpu/vector_clones.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fastconv::cpu {

namespace {

// Elements of a column buffer (8 MiB in float), for every direction: it bounds peak memory
// whatever the batch, and beat 1-4 MiB and 32 MiB on the seed suite (bench/NOTES.md, "Speed
// rules and their measurements").
constexpr int64_t kColumnBudget = int64_t(2) << 20;

// A thread's column tile, in floats (512 KiB).
constexpr int64_t kThreadTileFloats = int64_t(128) << 10;

struct Tile {
  int64_t n0, nb;  // images [n0, n0 + nb)
  int64_t p0, np;  // output rows [p0, p0 + np) of each
  int64_t cols(const ConvProblem& p) const { return nb * np * p.Q; }
};

std::vector<Tile> make_tiles(const ConvProblem& p) {
  const int64_t rows = p.C * p.R * p.S;
  std::vector<Tile> tiles;
  if (rows * p.P * p.Q <= kColumnBudget) {
    const int64_t nb = std::clamp<int64_t>(kColumnBudget / (rows * p.P * p.Q), 1, p.N);
    for (int64_t n0 = 0; n0 < p.N; n0 += nb) tiles.push_back({n0, std::min(nb, p.N - n0), 0, p.P});
  } else {
    const int64_t np = std::clamp<int64_t>(kColumnBudget / (rows * p.Q), 1, p.P);
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t p0 = 0; p0 < p.P; p0 += np) tiles.push_back({n, 1, p0, std::min(np, p.P - p0)});
  }
  return tiles;
}

int64_t max_cols(const ConvProblem& p, const std::vector<Tile>& tiles) {
  int64_t m = 0;
  for (const auto& t : tiles) m = std::max(m, t.cols(p));
  return m;
}

// dst[q] = src[q * step] for q in [0, count), converted: the copy at the heart of im2col,
// cloned per instruction set so that the unit-step case (stride 1, W contiguous) runs wide.
template <typename scalar_t, typename acc_t>
FASTCONV_VECTOR_CLONES void copy_row(acc_t* __restrict dst, const scalar_t* __restrict src,
                                     int64_t step, int64_t count) {
  if (step == 1) {
    for (int64_t q = 0; q < count; ++q) dst[q] = acc_t(src[q]);
  } else {
    for (int64_t q = 0; q < count; ++q) dst[q] = acc_t(src[q * step]);
  }
}

// col[(c, r, s), (n, p, q)] = x[n, c, p*stride - pad + r*dilation, ...], zero in the padding.
// Each row's valid output columns are found once, so the copy itself has no bounds tests.
template <typename scalar_t, typename acc_t>
void im2col(const ConvProblem& p, const Strided4<const scalar_t>& X, const Tile& t, acc_t* col) {
  const int64_t cols = t.cols(p), RS = p.R * p.S;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
  cpu::parallel_for(0, p.C * RS, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t c = row / RS, r = (row / p.S) % p.R, s = row % p.S;
      const int64_t offset = s * p.dilation_w - p.pad_left;
      const ColumnRange valid = valid_columns(offset, p.stride_w, p.W, p.Q);
      acc_t* dst = col + row * cols;
      for (int64_t ni = 0; ni < t.nb; ++ni) {
        for (int64_t pi = 0; pi < t.np; ++pi, dst += p.Q) {
          const int64_t h = (t.p0 + pi) * p.stride_h - p.pad_top + r * p.dilation_h;
          if (h < 0 || h >= p.H || valid.lo == valid.hi) {
            std::fill(dst, dst + p.Q, acc_t(0));
            continue;
          }
          std::fill(dst, dst + valid.lo, acc_t(0));
          const scalar_t* src = &X(t.n0 + ni, c, h, valid.lo * p.stride_w + offset);
          copy_row<scalar_t, acc_t>(dst + valid.lo, src, p.stride_w * X.s3, valid.hi - valid.lo);
          std::fill(dst + valid.hi, dst + p.Q, acc_t(0));
        }
      }
    }
  });
}

// dx[n, c, h, w] += col[(c, r, s), (n, p, q)]; each task owns whole (n, c) planes of dx.
template <typename acc_t>
void col2im_add(const ConvProblem& p, const acc_t* col, const Tile& t, acc_t* dx) {
  const int64_t cols = t.cols(p);
  cpu::parallel_for(0, t.nb * p.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t ni = nc / p.C, c = nc % p.C;
      acc_t* plane = dx + ((t.n0 + ni) * p.C + c) * p.H * p.W;
      for (int64_t r = 0; r < p.R; ++r) {
        for (int64_t s = 0; s < p.S; ++s) {
          const acc_t* src = col + ((c * p.R + r) * p.S + s) * cols + ni * t.np * p.Q;
          for (int64_t pi = 0; pi < t.np; ++pi, src += p.Q) {
            const int64_t h = (t.p0 + pi) * p.stride_h - p.pad_top + r * p.dilation_h;
            if (h < 0 || h >= p.H) continue;
            for (int64_t q = 0; q < p.Q; ++q) {
              const int64_t w = q * p.stride_w - p.pad_left + s * p.dilation_w;
              if (w >= 0 && w < p.W) plane[h * p.W + w] += src[q];
            }
          }
        }
      }
    }
  });
}

// The tile of dy as [G, Kg, cols] in acc_type.
at::Tensor dy_tile_matrix(const ConvProblem& p, const at::Tensor& dy, const Tile& t) {
  at::Tensor m = at::empty({p.K, t.nb, t.np, p.Q}, dy.options().dtype(acc_dtype(dy.scalar_type())));
  m.copy_(dy.narrow(0, t.n0, t.nb).narrow(2, t.p0, t.np).permute({1, 0, 2, 3}));
  return m.view({p.groups, p.K_per_group(), t.cols(p)});
}

at::Tensor weight_matrix(const ConvProblem& p, const at::Tensor& w) {
  return w.to(acc_dtype(w.scalar_type())).contiguous().view(
      {p.groups, p.K_per_group(), p.C_per_group() * p.R * p.S});
}

// bfloat16 unrolls and multiplies in bfloat16: ATen's GEMM (oneDNN's, with the AVX-512 BF16
// dot products where the CPU has them) accumulates in float and rounds once, so the result
// obeys the float-accumulation rule at half the column traffic. Other types unroll into their
// accumulation type.
template <typename scalar_t>
using column_type = std::conditional_t<std::is_same_v<scalar_t, at::BFloat16>, at::BFloat16,
                                       acc_type<scalar_t>>;

// ------------------------------------------------------------------------- channels last
//
// With y channels_last, the transposed product is the natural one: y[N*P*Q, K] = col[N*P*Q,
// R*S*Cg] @ w[K, R*S*Cg]^T per group, where a column row is the output pixel's R*S runs of
// Cg contiguous input channels (copies of whole runs, no strided gathers) and the GEMM writes
// straight into y's memory. A tile is a run of output pixels.

// The epilogue over output pixels [m0, m0 + count) just written (given only where y holds
// the accumulation type: fprop_fuses_every_stage_in_float).
template <typename scalar_t>
void epilogue_pixels(const Epilogue& epilogue, at::Tensor& y, int64_t K, int64_t m0, int64_t count) {
  if constexpr (std::is_same_v<scalar_t, acc_type<scalar_t>>)
    apply_channels_last(EpilogueView<scalar_t>(epilogue), y.data_ptr<scalar_t>(), K, m0, count, 0, K);
}

// The same over output rows [p0, p0 + np) of images [n0, n0 + nb) of an NCHW y.
template <typename scalar_t>
void epilogue_rows(const ConvProblem& p, const Epilogue& epilogue, at::Tensor& y, int64_t n0,
                   int64_t nb, int64_t p0, int64_t np) {
  if constexpr (std::is_same_v<scalar_t, acc_type<scalar_t>>) {
    const EpilogueView<scalar_t> ep(epilogue);
    cpu::parallel_for(0, nb * p.K, 16, [&](int64_t b, int64_t e) {
      for (int64_t nk = b; nk < e; ++nk)
        apply_plane_run(ep, y.data_ptr<scalar_t>(), p.P * p.Q, p.K, n0 + nk / p.K, nk % p.K,
                        p0 * p.Q, np * p.Q);
    });
  }
}

template <typename scalar_t>
void fprop_channels_last(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w,
                         const Epilogue& epilogue, at::Tensor& y) {
  using col_t = column_type<scalar_t>;
  const at::ScalarType col_dtype = c10::CppTypeToScalarType<col_t>::value;
  const int64_t G = p.groups, Kg = p.K_per_group(), RSCg = p.R * p.S * p.C_per_group();
  const int64_t pixels = p.N * p.P * p.Q;
  // y's memory as [N*P*Q, K]; a stand-in of the column type when y's dtype differs.
  at::Tensor y_cols =
      y.scalar_type() == col_dtype
          ? y
          : at::empty(y.sizes(), y.options().dtype(col_dtype).memory_format(at::MemoryFormat::ChannelsLast));
  at::Tensor Y = y_cols.permute({0, 2, 3, 1}).view({pixels, p.K});
  // [G, R*S*Cg, Kg]: the filter as [K, R, S, Cg] rows (a column row's order), transposed once
  // for every tile's product; kept between calls for a frozen filter (common/filter_cache.h).
  const at::Tensor w_cols = derived_from_filter(
      c10::str("im2col channels_last ", c10::toString(col_dtype), " groups ", G), [&] {
        const at::Tensor w_rows = w.permute({0, 2, 3, 1}).to(col_dtype).contiguous();
        return transposed_operand(w_rows.view({G, Kg, RSCg}));
      });
  const bool fused = epilogue.stages() != 0;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (own_sgemm_active() && y_cols.is_same(y)) {
      // Tiles per thread, as for NCHW (fprop_nchw_thread_tiles): a task gathers a run of pixel
      // rows into its own L2-sized buffer and multiplies it into y's rows, epilogue included.
      const at::Tensor w_t = w_cols.contiguous();
      const float* wt = w_t.const_data_ptr<float>();
      float* yd = y.data_ptr<float>();
      const EpilogueView<float> ep(epilogue);
      // At least the product's 96-row block: each task reads all of the filters (9.4 MB for a
      // 512-channel 3x3 layer), and 24-row tiles read them four times as often as the
      // whole-batch product did.
      const int64_t fit = std::max<int64_t>(96, kThreadTileFloats / std::max<int64_t>(RSCg, 1) / 6 * 6);
      const int64_t chunks = (pixels + fit - 1) / fit;
      const int64_t rows = std::min(pixels, ((pixels + chunks - 1) / chunks + 5) / 6 * 6);
      cpu::parallel_for(0, chunks * G, 1, [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> buffer;
        if (buffer.size() < size_t(rows * RSCg)) buffer.resize(size_t(rows * RSCg));
        for (int64_t task = begin; task < end; ++task) {
          const int64_t g = task % G, m0 = task / G * rows, count = std::min(rows, pixels - m0);
          gather_pixel_rows<float, float>(p, xd, g, m0, count, RSCg, buffer.data());
          own_gemm_serial(count, Kg, RSCg, buffer.data(), RSCg, wt + g * RSCg * Kg, Kg,
                          yd + m0 * p.K + g * Kg, p.K, false);
          if (fused) apply_channels_last(ep, yd, p.K, m0, count, g * Kg, Kg);
        }
      });
      return;
    }
  }
  const int64_t tile = std::clamp<int64_t>(kColumnBudget / std::max<int64_t>(RSCg, 1), 1, pixels);
  const at::Tensor col_buffer = at::empty({tile * RSCg}, w_cols.options());
  for (int64_t m0 = 0; m0 < pixels; m0 += tile) {
    const int64_t count = std::min(tile, pixels - m0);
    at::Tensor col = col_buffer.narrow(0, 0, count * RSCg).view({count, RSCg});
    for (int64_t g = 0; g < G; ++g) {
      gather_pixel_rows<scalar_t, col_t>(p, xd, g, m0, count, RSCg, col.data_ptr<col_t>());
      at::Tensor out = Y.narrow(0, m0, count).narrow(1, g * Kg, Kg);
      cpu::mm_out(out, col, w_cols[g]);
    }
    if (fused) epilogue_pixels<scalar_t>(epilogue, y, p.K, m0, count);
  }
  if (!y_cols.is_same(y)) y.copy_(y_cols);
}

// ------------------------------------------------------------------------- NCHW, tiles per thread
//
// Where fastconv's own GEMM runs the float32 products, NCHW fprop goes tile by tile on each
// thread: a task unrolls the columns of a run of one image's output pixels into its own buffer,
// sized to stay in its core's L2, and multiplies them there straight into y, epilogue included.
// The whole-batch column matrix above (7.2 MB for a 128-channel 3x3 layer at 56x56) went out to
// the L3 and back, and its copy cost 0.35-1.3 ms beside a 1.1 ms product (bench/NOTES.md,
// "tiles per thread").


#if defined(__GNUC__) && defined(__x86_64__)
#define FASTCONV_IM2COL_AVX512 1
// dst[i] = src[i * step] for i < count. Runs are short (a 28-wide output row), so the copy is
// inline and masked rather than a call with a scalar tail; step 2 (stride 2) takes the even lanes
// of two masked loads, which never touch a float past the run's last.
FASTCONV_TARGET_AVX512F inline void copy_run_avx512(float* __restrict dst, const float* __restrict src,
                                                    int64_t step, int64_t count) {
  if (step == 1) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) _mm512_storeu_ps(dst + i, _mm512_loadu_ps(src + i));
    if (i < count) {
      const __mmask16 m = __mmask16((1u << (count - i)) - 1);
      _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
    }
  } else if (step == 2) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int64_t i = 0; i < count; i += 16) {
      const int64_t n = std::min<int64_t>(16, count - i), span = 2 * n - 1;  // floats read
      const __mmask16 lo_mask = span >= 16 ? __mmask16(0xffff) : __mmask16((1u << span) - 1);
      const __mmask16 hi_mask = span > 16 ? __mmask16((1u << (span - 16)) - 1) : __mmask16(0);
      const __m512 lo = _mm512_maskz_loadu_ps(lo_mask, src + 2 * i);
      const __m512 hi = _mm512_maskz_loadu_ps(hi_mask, src + 2 * i + 16);
      _mm512_mask_storeu_ps(dst + i, __mmask16((1u << n) - 1), _mm512_permutex2var_ps(lo, even, hi));
    }
  } else {
    for (int64_t i = 0; i < count; ++i) dst[i] = src[i * step];
  }
}
#define FASTCONV_IM2COL_TARGET FASTCONV_TARGET_AVX512F
#else
#define FASTCONV_IM2COL_AVX512 0
#define FASTCONV_IM2COL_TARGET
#endif

// col[(c, r, s), j - j0] for output pixels j in [j0, j1) of image n (j = op * Q + q), over group
// g's input channels; zero in the padding. The tile's output-row pieces are found once.
FASTCONV_IM2COL_TARGET void im2col_pixels(const ConvProblem& p, const Strided4<const float>& X,
                                          int64_t n, int64_t g, int64_t j0, int64_t j1, float* col) {
  struct Piece {
    int64_t op, qa, qb, at;  // output row op's columns [qa, qb), at tile column `at`
  };
  std::vector<Piece> pieces;
  for (int64_t j = j0; j < j1;) {
    const int64_t qa = j % p.Q, qb = std::min(p.Q, qa + (j1 - j));
    pieces.push_back({j / p.Q, qa, qb, j - j0});
    j += qb - qa;
  }
  const int64_t Cg = p.C_per_group(), RS = p.R * p.S, cols = j1 - j0;
  const int64_t step = p.stride_w * X.s3;
  for (int64_t row = 0; row < Cg * RS; ++row) {
    const int64_t c = g * Cg + row / RS, r = (row / p.S) % p.R, s = row % p.S;
    const int64_t offset = s * p.dilation_w - p.pad_left;
    const ColumnRange valid = valid_columns(offset, p.stride_w, p.W, p.Q);
    const float* plane = &X(n, c, 0, 0);
    float* col_row = col + row * cols;
    for (const Piece& piece : pieces) {
      const int64_t h = piece.op * p.stride_h - p.pad_top + r * p.dilation_h;
      float* run = col_row + piece.at;  // column qa of the piece
      const int64_t lo = std::clamp(valid.lo, piece.qa, piece.qb), hi = std::clamp(valid.hi, piece.qa, piece.qb);
      if (h < 0 || h >= p.H || lo >= hi) {
        std::fill(run, run + (piece.qb - piece.qa), 0.f);
        continue;
      }
      std::fill(run, run + (lo - piece.qa), 0.f);
      const float* src = plane + h * X.s2 + (lo * p.stride_w + offset) * X.s3;
#if FASTCONV_IM2COL_AVX512
      copy_run_avx512(run + (lo - piece.qa), src, step, hi - lo);
#else
      copy_row<float, float>(run + (lo - piece.qa), src, step, hi - lo);
#endif
      std::fill(run + (hi - piece.qa), run + (piece.qb - piece.qa), 0.f);
    }
  }
}

void fprop_nchw_thread_tiles(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w,
                             const Epilogue& epilogue, at::Tensor& y) {
  const int64_t G = p.groups, Kg = p.K_per_group(), CgRS = p.C_per_group() * p.R * p.S;
  const int64_t PQ = p.P * p.Q;
  const at::Tensor w_rows = w.to(at::kFloat).contiguous();  // [K, CgRS]; group g from row g * Kg
  const float* wd = w_rows.const_data_ptr<float>();
  float* yd = y.data_ptr<float>();
  const EpilogueView<float> ep(epilogue);
  const Strided4<const float> X(x);
  // Pixels per tile: what fits the budget, in whole vectors of 16, the image's runs evened out;
  // never under 64, the product's widest panel (16 columns ran at a quarter of its rate).
  const int64_t fit = std::max<int64_t>(64, kThreadTileFloats / std::max<int64_t>(CgRS, 1) / 16 * 16);
  const int64_t chunks = (PQ + fit - 1) / fit;
  const int64_t cols = std::min(PQ, ((PQ + chunks - 1) / chunks + 15) / 16 * 16);
  // Filter parts, where the images' tiles alone would leave threads idle (deep layers at small
  // batch); each part unrolls its tile again, a copy small beside its product.
  const int64_t threads = at::get_num_threads();
  int64_t parts = 1;
  while (p.N * G * chunks * parts < 2 * threads && Kg / (2 * parts) >= 48) parts *= 2;
  const int64_t part_rows = ((Kg + parts - 1) / parts + 5) / 6 * 6;
  const int64_t tasks = p.N * G * chunks * parts;
  cpu::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buffer;
    if (buffer.size() < size_t(CgRS * cols)) buffer.resize(size_t(CgRS * cols));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t part = task % parts, chunk = task / parts % chunks;
      const int64_t g = task / (parts * chunks) % G, n = task / (parts * chunks * G);
      const int64_t k0 = part * part_rows, k1 = std::min(Kg, k0 + part_rows);
      if (k0 >= k1) continue;
      const int64_t j0 = chunk * cols, j1 = std::min(PQ, j0 + cols);
      im2col_pixels(p, X, n, g, j0, j1, buffer.data());
      const int64_t k_first = g * Kg + k0;
      own_gemm_serial(k1 - k0, j1 - j0, CgRS, wd + k_first * CgRS, CgRS, buffer.data(), j1 - j0,
                      yd + (n * p.K + k_first) * PQ + j0, PQ, false);
      if (!ep.empty())
        for (int64_t k = k_first; k < g * Kg + k1; ++k) apply_plane_run(ep, yd, PQ, p.K, n, k, j0, j1 - j0);
    }
  });
}

template <typename scalar_t>
void fprop_impl(const ConvProblem& p, bool channels_last, const at::Tensor& x,
                const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  if (channels_last) {
    fprop_channels_last<scalar_t>(p, x, w, epilogue, y);
    return;
  }
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (own_sgemm_active() && y.is_contiguous()) {
      fprop_nchw_thread_tiles(p, x, w, epilogue, y);
      return;
    }
  }
  using col_t = column_type<scalar_t>;
  const auto tiles = make_tiles(p);
  const int64_t CRS = p.C * p.R * p.S, CgRS = p.C_per_group() * p.R * p.S;
  const at::Tensor w_mat = w.to(c10::CppTypeToScalarType<col_t>::value)
                               .contiguous()
                               .view({p.groups, p.K_per_group(), CgRS});
  // The GEMM writes a tile's [K, rows*Q] block of y in place (row stride P*Q) when it can.
  const bool y_in_place =
      p.groups == 1 && y.is_contiguous() && y.scalar_type() == w_mat.scalar_type();
  // fastconv's GEMM writes each image's [G, Kg, rows*Q] block of y in place, every group in one
  // batched product, whatever the tile's images and groups.
  const bool own_in_place = own_sgemm_active() && y.is_contiguous() &&
                            y.scalar_type() == at::kFloat && w_mat.scalar_type() == at::kFloat;
  const at::Tensor col_buffer = at::empty({CRS * max_cols(p, tiles)}, w_mat.options());
  const Strided4<const scalar_t> X(x);
  for (const auto& t : tiles) {
    const int64_t cols = t.cols(p);
    at::Tensor col = col_buffer.narrow(0, 0, CRS * cols).view({p.groups, CgRS, cols});
    im2col<scalar_t, col_t>(p, X, t, col.data_ptr<col_t>());
    if (own_in_place) {
      const int64_t run = t.np * p.Q;
      for (int64_t ni = 0; ni < t.nb; ++ni) {
        at::Tensor y_block = y[t.n0 + ni].view({p.groups, p.K_per_group(), p.P * p.Q}).narrow(2, t.p0 * p.Q, run);
        cpu::bmm_out(y_block, w_mat, col.narrow(2, ni * run, run));
      }
    } else if (y_in_place && t.nb == 1) {
      at::Tensor y_rows = y[t.n0].view({p.K, p.P * p.Q}).narrow(1, t.p0 * p.Q, cols);
      cpu::mm_out(y_rows, w_mat[0], col[0]);
    } else {
      y.narrow(0, t.n0, t.nb)
          .narrow(2, t.p0, t.np)
          .copy_(cpu::bmm(w_mat, col).view({p.K, t.nb, t.np, p.Q}).permute({1, 0, 2, 3}));
    }
    if (epilogue.stages() != 0) epilogue_rows<scalar_t>(p, epilogue, y, t.n0, t.nb, t.p0, t.np);
  }
}


template <typename scalar_t>
void dgrad_impl(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w,
                at::Tensor& dx) {
  using acc_t = acc_type<scalar_t>;
  const auto tiles = make_tiles(p);
  const at::Tensor w_t = weight_matrix(p, w).transpose(1, 2);
  const bool in_place = dx.is_contiguous() && dx.scalar_type() == acc_dtype(dx.scalar_type());
  at::Tensor dx_acc = in_place ? dx.zero_() : at::zeros(dx.sizes(), w_t.options());
  for (const auto& t : tiles) {
    const at::Tensor col = cpu::bmm(w_t, dy_tile_matrix(p, dy, t));
    col2im_add<acc_t>(p, col.data_ptr<acc_t>(), t, dx_acc.data_ptr<acc_t>());
  }
  if (!in_place) dx.copy_(dx_acc);
}

template <typename scalar_t>
void wgrad_impl(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy,
                at::Tensor& dw) {
  using acc_t = acc_type<scalar_t>;
  const auto tiles = make_tiles(p);
  const int64_t CgRS = p.C_per_group() * p.R * p.S;
  const auto acc_options = x.options().dtype(acc_dtype(x.scalar_type()));
  at::Tensor dw_acc = at::zeros({p.groups, p.K_per_group(), CgRS}, acc_options);
  const at::Tensor col_buffer = at::empty({p.C * p.R * p.S * max_cols(p, tiles)}, acc_options);
  const Strided4<const scalar_t> X(x);
  for (const auto& t : tiles) {
    at::Tensor col = col_buffer.narrow(0, 0, p.C * p.R * p.S * t.cols(p)).view({p.groups, CgRS, t.cols(p)});
    im2col<scalar_t, acc_t>(p, X, t, col.data_ptr<acc_t>());
    cpu::bmm_out(dw_acc, dy_tile_matrix(p, dy, t), col.transpose(1, 2), /*accumulate=*/true);
  }
  dw.copy_(dw_acc.view({p.K, p.C_per_group(), p.R, p.S}));
}

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "im2col_fprop", [&] {
    fprop_impl<scalar_t>(p, layouts.output == Layout::nhwc, x, w, epilogue, y);
  });
}

void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const Epilogue&, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "im2col_dgrad",
                                  [&] { dgrad_impl<scalar_t>(p, dy, w, dx); });
}

void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "im2col_wgrad",
                                  [&] { wgrad_impl<scalar_t>(p, x, dy, dw); });
}

bool can_implement(const ConvProblem&, const ConvRequest&) { return true; }

// fprop in the request's layout (channels-last has its own unrolling, above); dgrad and wgrad on
// NCHW planes, whose unrolling copies unit-step rows where channels-last operands made it gather
// every element C apart: they ran 1.5-2.5x their NCHW time, where converting x, dy and dx
// costs a few per cent (common/algorithms.h, LayoutCopy).
KernelLayouts layouts(const ConvProblem&, const ConvRequest& r) {
  const Layout l = r.direction == Direction::fprop ? r.layout : Layout::nchw;
  return {l, l};
}

}  // namespace

ConvAlgorithm im2col_gemm_algorithm() {
  ConvAlgorithm a{"im2col_gemm", &can_implement, &fprop, &dgrad, &wgrad, &layouts};
  a.fused_stages = &fprop_fuses_every_stage_in_float;
  return a;
}

}  // namespace fastconv::cpu
