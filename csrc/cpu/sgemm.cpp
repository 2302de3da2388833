// fastconv's float32 GEMM on AVX-512F (why it exists: sgemm.h).
//
// C[M, N] (+)= A[M, K] · B[K, N]. A micro-kernel keeps a 6 × 64 block of C in 24 zmm
// accumulators; for each k it loads one 64-float row of B (4 vectors) and broadcasts 6 values of
// A, 24 FMAs for 10 loads, which Zen 4/5's two FMA pipes and its load ports both sustain.
// A is read in place through its two strides (row-major, or a transpose whose 6 rows are then
// adjacent floats); B is read in place when its rows are contiguous and otherwise copied into
// row-major form once per call (the transposed filters of the channels-last and wgrad
// products: small beside the product). C's rows must be contiguous.
//
// Blocking, for Zen's 48 KiB L1 and 1 MiB L2: a task owns a block of C of up to 96 rows × 256
// columns and runs the whole reduction over it in slices of 128. One slice of a 64-column
// panel of B (32 KiB) stays in L1 while the block's 16 row panels stream their 6 × 128 values
// of A past it; the slice of the 256 columns (128 KiB) stays in L2 for the next panel.
// Tasks are shared out by cpu::parallel_for; inside another parallel region (Winograd's
// per-point products) the whole product runs on the calling thread.
#include "cpu/sgemm.h"

#include "common/checks.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/vector_clones.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FASTCONV_HAVE_SGEMM 1
#else
#define FASTCONV_HAVE_SGEMM 0
#endif

namespace fastconv::cpu {
namespace {

enum class Mode { automatic, own, aten };

Mode parse_mode(const std::string& s) {
  if (s == "auto" || s.empty()) return Mode::automatic;
  if (s == "own") return Mode::own;
  if (s == "aten") return Mode::aten;
  FASTCONV_CHECK_VALUE(false, "sgemm mode: expected 'auto', 'own' or 'aten', got '", s, "'");
  return Mode::automatic;
}

std::atomic<Mode> mode{[] {
  const char* v = std::getenv("FASTCONV_CPU_SGEMM");
  if (v == nullptr) return Mode::automatic;
  const std::string s(v);
  return s == "own" ? Mode::own : s == "aten" ? Mode::aten : Mode::automatic;
}()};

bool cpu_is_amd() {
#if FASTCONV_HAVE_SGEMM
  static const bool amd = __builtin_cpu_is("amd");
  return amd;
#else
  return false;
#endif
}

#if FASTCONV_HAVE_SGEMM

constexpr int kRows = 6;
constexpr int kVectors = 4;
constexpr int64_t kPanel = 16 * kVectors;
constexpr int64_t kBlockRows = 16 * kRows;
constexpr int64_t kBlockCols = 4 * kPanel;
constexpr int64_t kSlice = 128;

// C[rows, cols] (+)= A[rows, kc] · B[kc, cols], rows <= 6, cols <= 16·V. Rows past `rows` read
// A's last row again and are not stored, so a short panel needs no padding; columns past
// `cols` are masked off in every load and store.
template <int V>
FASTCONV_TARGET_AVX512F void micro_kernel(int64_t kc, const float* __restrict a, int64_t a_rs,
                                          int64_t a_ks, int rows, const float* __restrict b,
                                          int64_t ldb, float* __restrict c, int64_t ldc,
                                          int64_t cols, bool load) {
  int64_t row_offset[kRows];
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) row_offset[i] = std::min(i, rows - 1) * a_rs;
  __mmask16 mask[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const int64_t left = cols - 16 * v;
    mask[v] = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
  }
  __m512 acc[kRows][V];
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v)
      acc[i][v] = load && i < rows ? _mm512_maskz_loadu_ps(mask[v], c + i * ldc + 16 * v)
                                   : _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k, a += a_ks, b += ldb) {
    __m512 bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) bv[v] = _mm512_maskz_loadu_ps(mask[v], b + 16 * v);
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
      const __m512 av = _mm512_set1_ps(a[row_offset[i]]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
    if (i >= rows) break;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, mask[v], acc[i][v]);
  }
}

using MicroKernel = void (*)(int64_t, const float*, int64_t, int64_t, int, const float*, int64_t,
                             float*, int64_t, int64_t, bool);

MicroKernel pick(int64_t cols) {
  switch ((cols + 15) / 16) {
    case 1: return &micro_kernel<1>;
    case 2: return &micro_kernel<2>;
    case 3: return &micro_kernel<3>;
    default: return &micro_kernel<4>;
  }
}

// One product's operands: element (i, k) of A at a[i·a_rs + k·a_ks], (k, j) of B at
// b[k·ldb + j], (i, j) of C at c[i·ldc + j]; batch member t adds t times the batch strides.
struct Product {
  int64_t batch, M, N, K;
  const float* a;
  int64_t a_bs, a_rs, a_ks;
  const float* b;
  int64_t b_bs, ldb;
  float* c;
  int64_t c_bs, ldc;
  bool accumulate;
};

void run_block(const Product& g, int64_t t, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const float* a = g.a + t * g.a_bs;
  const float* b = g.b + t * g.b_bs;
  float* c = g.c + t * g.c_bs;
  for (int64_t k0 = 0; k0 < g.K; k0 += kSlice) {
    const int64_t kc = std::min(kSlice, g.K - k0);
    const bool load = g.accumulate || k0 > 0;
    for (int64_t jp = j0; jp < j1; jp += kPanel) {
      const int64_t cols = std::min(kPanel, j1 - jp);
      const MicroKernel kernel = pick(cols);
      for (int64_t ip = i0; ip < i1; ip += kRows) {
        const int rows = int(std::min<int64_t>(kRows, i1 - ip));
        kernel(kc, a + ip * g.a_rs + k0 * g.a_ks, g.a_rs, g.a_ks, rows, b + k0 * g.ldb + jp, g.ldb,
               c + ip * g.ldc + jp, g.ldc, cols, load);
      }
    }
  }
}

void run(const Product& g) {
  // Blocks shrink (to 64 columns, then to 24 rows) until every thread has two of them.
  const int64_t want = 2 * at::get_num_threads();
  int64_t block_rows = kBlockRows, block_cols = kBlockCols;
  auto tasks = [&] {
    return g.batch * ((g.M + block_rows - 1) / block_rows) * ((g.N + block_cols - 1) / block_cols);
  };
  while (tasks() < want && block_cols > kPanel && g.N > kPanel) block_cols /= 2;
  while (tasks() < want && block_rows > 4 * kRows && g.M > 4 * kRows) block_rows /= 2;
  // Then evened out, so that no block is a sliver (98 rows as 96 + 2 streamed all of B twice
  // for two rows' work).
  auto even = [](int64_t n, int64_t block, int64_t unit) {
    const int64_t blocks = (n + block - 1) / block;
    return std::min(block, ((n + blocks - 1) / blocks + unit - 1) / unit * unit);
  };
  block_rows = even(g.M, block_rows, kRows);
  block_cols = even(g.N, block_cols, 16);
  const int64_t row_blocks = (g.M + block_rows - 1) / block_rows;
  const int64_t col_blocks = (g.N + block_cols - 1) / block_cols;
  cpu::parallel_for(0, tasks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / (row_blocks * col_blocks), rest = task % (row_blocks * col_blocks);
      const int64_t i0 = (rest / col_blocks) * block_rows, j0 = (rest % col_blocks) * block_cols;
      run_block(g, t, i0, std::min(g.M, i0 + block_rows), j0, std::min(g.N, j0 + block_cols));
    }
  });
}

// dst[j, i] = src[i, j] for i < rows, j < cols (both row-major): 8 x 8 blocks transposed in
// registers, the edges element by element. ATen's copy of a transposed view took 1.3 ms for a
// 2048 x 512 filter on Zen 5, more than the product it fed.
FASTCONV_TARGET_AVX512F void transpose_block8(const float* src, int64_t src_ld, float* dst,
                                              int64_t dst_ld) {
  __m256 r[8], t[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_ld);
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 2
  for (int h = 0; h < 8; h += 4) {
    r[h + 0] = _mm256_shuffle_ps(t[h + 0], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 1] = _mm256_shuffle_ps(t[h + 0], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * dst_ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * dst_ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// Tiles of 64 x 64 (16 KiB each way, in L1), 8 x 8 blocks within.
constexpr int64_t kTransposeTile = 64;
int64_t transpose_tiles(int64_t rows, int64_t cols) {
  return ((rows + kTransposeTile - 1) / kTransposeTile) * ((cols + kTransposeTile - 1) / kTransposeTile);
}

// Tile `tile` (row-major over the tile grid) of dst [cols, rows] = src [rows, cols]^T.
void transpose_tile(const float* src, int64_t rows, int64_t cols, int64_t src_ld, float* dst,
                    int64_t dst_ld, int64_t tile) {
  const int64_t col_tiles = (cols + kTransposeTile - 1) / kTransposeTile;
  const int64_t r0 = (tile / col_tiles) * kTransposeTile, r1 = std::min(rows, r0 + kTransposeTile);
  const int64_t c0 = (tile % col_tiles) * kTransposeTile, c1 = std::min(cols, c0 + kTransposeTile);
  const int64_t r8 = r0 + (r1 - r0) / 8 * 8, c8 = c0 + (c1 - c0) / 8 * 8;
  for (int64_t j = c0; j < c8; j += 8)
    for (int64_t i = r0; i < r8; i += 8)
      transpose_block8(src + i * src_ld + j, src_ld, dst + j * dst_ld + i, dst_ld);
  for (int64_t j = c0; j < c1; ++j)  // the edges: rows past r8 of every column, columns past c8
    for (int64_t i = j < c8 ? r8 : r0; i < r1; ++i) dst[j * dst_ld + i] = src[i * src_ld + j];
}

// `batch` transposes of [rows, cols] matrices `src_step` and `dst_step` apart, their tiles
// shared out among threads in one region (a region per matrix cost more than the copy for a
// filter's 64 small planes).
void transpose_batch(const float* src, int64_t batch, int64_t src_step, int64_t rows, int64_t cols,
                     int64_t src_ld, float* dst, int64_t dst_step, int64_t dst_ld) {
  const int64_t tiles = transpose_tiles(rows, cols);
  // About 64K elements a task: fewer run on the calling thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / (kTransposeTile * kTransposeTile));
  cpu::parallel_for(0, batch * tiles, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / tiles;
      transpose_tile(src + b * src_step, rows, cols, src_ld, dst + b * dst_step, dst_ld, i % tiles);
    }
  });
}
#endif  // FASTCONV_HAVE_SGEMM

// The copy of a B whose rows are not contiguous, row-major [batch][K][N]; kept per thread
// across calls, so that a layer's every product reuses the pages.
std::vector<float>& row_major_buffer() {
  thread_local std::vector<float> buffer;
  return buffer;
}

std::atomic<int64_t> products{0};

// Shapes and strides of c (+)= a · b over a batch (3-D views; 2-D ones come with a batch of 1).
void own_product(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  products.fetch_add(1, std::memory_order_relaxed);
  const int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) c.zero_();
    return;
  }
#if FASTCONV_HAVE_SGEMM
  const float* bp = b.const_data_ptr<float>();
  int64_t b_bs = b.stride(0), ldb = b.stride(1);
  if (b.stride(2) != 1 && N > 1) {
    std::vector<float>& buffer = row_major_buffer();
    buffer.resize(size_t(batch * K * N));
    float* dst = buffer.data();
    const int64_t s0 = b.stride(0), s1 = b.stride(1), s2 = b.stride(2);
    if (s1 == 1) {  // B^T is row-major: a transpose
      transpose_batch(bp, batch, s0, N, K, s2, dst, K * N, N);
    } else {
      cpu::parallel_for(0, batch * K, 16, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const float* src = bp + (row / K) * s0 + (row % K) * s1;
          float* out = dst + row * N;
          for (int64_t j = 0; j < N; ++j) out[j] = src[j * s2];
        }
      });
    }
    bp = dst;
    b_bs = K * N;
    ldb = N;
  }
  const Product g{batch, M, N, K, a.const_data_ptr<float>(), a.stride(0), a.stride(1), a.stride(2),
                  bp, b_bs, ldb, c.data_ptr<float>(), c.stride(0), c.stride(1), accumulate};
  run(g);
#else
  FASTCONV_CHECK_VALUE(false, "fastconv's sgemm needs an x86-64 build");
#endif
}

}  // namespace

void own_gemm_serial(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                     int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  FASTCONV_CHECK_VALUE(sgemm_supported(), "fastconv's sgemm needs a CPU with AVX-512F");
  products.fetch_add(1, std::memory_order_relaxed);
  if (M <= 0 || N <= 0) return;
#if FASTCONV_HAVE_SGEMM
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(c + i * ldc, c + i * ldc + N, 0.f);
    return;
  }
  const Product g{1, M, N, K, a, 0, lda, 1, b, 0, ldb, c, 0, ldc, accumulate};
  for (int64_t i0 = 0; i0 < M; i0 += kBlockRows)
    for (int64_t j0 = 0; j0 < N; j0 += kBlockCols)
      run_block(g, 0, i0, std::min(M, i0 + kBlockRows), j0, std::min(N, j0 + kBlockCols));
#else
  FASTCONV_CHECK_VALUE(false, "fastconv's sgemm needs an x86-64 build");
#endif
}

namespace {

bool own_applies(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b) {
  return own_sgemm_active() && a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
         c.scalar_type() == at::kFloat && (c.stride(-1) == 1 || c.size(-1) <= 1);
}

void check_operands(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b, int64_t dims) {
  FASTCONV_CHECK_VALUE(a.dim() == dims && b.dim() == dims && c.dim() == dims, "sgemm: expected ",
                       dims, "-D a, b and c, got ", a.sizes(), ", ", b.sizes(), ", ", c.sizes());
  const int64_t m = dims - 2;
  FASTCONV_CHECK_VALUE(a.size(m + 1) == b.size(m) && c.size(m) == a.size(m) &&
                           c.size(m + 1) == b.size(m + 1) && (dims == 2 || (a.size(0) == b.size(0) &&
                                                                            c.size(0) == a.size(0))),
                       "sgemm: shapes do not chain: a ", a.sizes(), ", b ", b.sizes(), ", c ",
                       c.sizes());
}

}  // namespace

int64_t own_sgemm_products() { return products.load(); }

void set_sgemm_mode(const std::string& m) { mode.store(parse_mode(m)); }

std::string sgemm_mode() {
  switch (mode.load()) {
    case Mode::own: return "own";
    case Mode::aten: return "aten";
    default: return "auto";
  }
}

bool cpu_feature_hidden(const char* feature) {
  const char* hide = std::getenv("FASTCONV_CPU_HIDE");
  if (hide == nullptr) return false;
  const size_t n = std::strlen(feature);
  auto separator = [](char c) { return c == '\0' || c == ',' || c == ' '; };
  for (const char* at = std::strstr(hide, feature); at != nullptr; at = std::strstr(at + 1, feature))
    if ((at == hide || separator(at[-1])) && separator(at[n])) return true;
  return false;
}

bool cpu_has_avx512f() {
#if FASTCONV_HAVE_SGEMM
  static const bool has = __builtin_cpu_supports("avx512f");
  return has && !cpu_feature_hidden("avx512f");
#else
  return false;
#endif
}

bool sgemm_supported() { return cpu_has_avx512f(); }

bool own_sgemm_active() {
  switch (mode.load(std::memory_order_relaxed)) {
    case Mode::aten: return false;
    case Mode::own: return sgemm_supported();
    default: return sgemm_supported() && cpu_is_amd();
  }
}

void own_mm_out(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  FASTCONV_CHECK_VALUE(sgemm_supported(), "fastconv's sgemm needs a CPU with AVX-512F");
  const int64_t dims = a.dim();
  FASTCONV_CHECK_VALUE(dims == 2 || dims == 3, "sgemm: expected 2-D or 3-D operands, got a ",
                       a.sizes());
  check_operands(c, a, b, dims);
  FASTCONV_CHECK_TYPE(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat &&
                          c.scalar_type() == at::kFloat,
                      "sgemm: expected float32 a, b and c");
  FASTCONV_CHECK_VALUE(c.stride(-1) == 1 || c.size(-1) <= 1, "sgemm: c's rows must be contiguous");
  if (dims == 2) {
    at::Tensor c3 = c.unsqueeze(0);
    own_product(c3, a.unsqueeze(0), b.unsqueeze(0), accumulate);
  } else {
    own_product(c, a, b, accumulate);
  }
}

void mm_out(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  if (own_applies(c, a, b)) {
    own_mm_out(c, a, b, accumulate);
  } else if (accumulate) {
    c.addmm_(a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

void bmm_out(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  if (own_applies(c, a, b)) {
    own_mm_out(c, a, b, accumulate);
  } else if (accumulate) {
    c.baddbmm_(a, b);
  } else {
    at::bmm_out(c, a, b);
  }
}

at::Tensor transposed_copy(const at::Tensor& m) {
  const bool fast = sgemm_supported() && m.scalar_type() == at::kFloat && m.dim() == 3 &&
                    (m.stride(2) == 1 || m.size(2) <= 1);
  if (!fast) return m.transpose(1, 2).contiguous();
#if FASTCONV_HAVE_SGEMM
  const int64_t B = m.size(0), R = m.size(1), C = m.size(2);
  at::Tensor out = at::empty({B, C, R}, m.options());
  const float* src = m.const_data_ptr<float>();
  float* dst = out.data_ptr<float>();
  transpose_batch(src, B, m.stride(0), R, C, m.stride(1), dst, R * C, R);
  return out;
#else
  return m.transpose(1, 2).contiguous();
#endif
}

bool layout_copy(const at::Tensor& src, at::Tensor& dst) {
#if FASTCONV_HAVE_SGEMM
  if (!sgemm_supported() || !src.device().is_cpu() || !dst.device().is_cpu() || src.dim() != 4 ||
      src.scalar_type() != at::kFloat || dst.scalar_type() != at::kFloat || src.sizes() != dst.sizes())
    return false;
  const int64_t N = src.size(0), C = src.size(1), HW = src.size(2) * src.size(3);
  if (C <= 1 || HW <= 1 || src.is_same(dst)) return false;  // then contiguous in both layouts
  constexpr auto kLast = at::MemoryFormat::ChannelsLast;
  const float* s = src.const_data_ptr<float>();
  float* d = dst.data_ptr<float>();
  if (src.is_contiguous() && dst.is_contiguous(kLast)) {
    transpose_batch(s, N, C * HW, C, HW, HW, d, HW * C, C);
    return true;
  }
  if (src.is_contiguous(kLast) && dst.is_contiguous()) {
    transpose_batch(s, N, HW * C, HW, C, C, d, C * HW, HW);
    return true;
  }
#endif
  return false;
}

at::Tensor transposed_operand(const at::Tensor& m) {
  return own_sgemm_active() && m.scalar_type() == at::kFloat ? transposed_copy(m) : m.transpose(1, 2);
}

at::Tensor bmm(const at::Tensor& a, const at::Tensor& b) {
  if (!(own_sgemm_active() && a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat))
    return at::bmm(a, b);
  at::Tensor c = at::empty({a.size(0), a.size(1), b.size(2)}, a.options());
  own_mm_out(c, a, b, false);
  return c;
}

}  // namespace fastconv::cpu
