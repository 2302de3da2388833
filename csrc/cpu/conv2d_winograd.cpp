// Winograd minimal filtering F(m×m, 3×3) for 3×3 stride-1 convolutions on the CPU, for
// m = 2 (winograd_2x2) and m = 4 (winograd_4x4). With alpha = m + 2, each m×m output tile is
//   A^T [ (G g G^T) ⊙ (B^T d B) ] A
// for the alpha×alpha input tile d and the 3×3 filter g. Summed over input channels, the
// elementwise products become alpha² independent GEMMs, one per tile coordinate xi:
//   M[xi][K, tiles] = U[xi][K, C] @ V[xi][C, tiles]
// with U the transformed filters and V the transformed input tiles, so the GEMM stage does
// alpha² / (9 m²) of the direct multiply-adds: 0.44 for m = 2, 0.25 for m = 4. Tiles go in
// chunks of tile rows, so V and M stay within a fixed budget whatever the batch. A group is a
// block of rows of each point's GEMM.
//
// Layouts: NCHW runs the transforms with tiles in the vector lanes; channels-last runs them
// with channels in the lanes, on V [alpha², tiles, C] and M = V @ U^T, so tiles are read and
// written as channel runs. A dilated layer is, residue by residue of its output, an
// undilated convolution on a sub-grid, and its tiles are taken on those sub-grids.
//
// dgrad of a stride-1 convolution is itself a 3×3 stride-1 convolution of dy, with the filter
// flipped and its channel axes swapped, at padding 2 dilation - pad; the same code runs it.
// wgrad sums G^T [ (A dy A^T) ⊙ (B^T d B) ] G over tiles, again one GEMM per tile point. Half
// types are transformed and multiplied in float and rounded once at the end.
//
// The transforms mix every element of an input tile into every output of the tile, so an inf
// or NaN would spread to outputs whose 3×3 window does not hold it. The algorithm therefore
// declares needs_finite_operands, and the dispatcher passes operands holding one to the next
// algorithm of the list.
#include "common/acc_type.h"
#include "common/filter_cache.h"
#include "common/strided.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/sgemm.h"
#include "cpu/vector_clones.h"
#include "cpu/winograd_transforms.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace fastconv::cpu {

namespace {

using namespace winograd;

// Tiles transformed together: the vector dimension of the transforms.
constexpr int64_t kLanes = 32;

// Elements of V and M together for one chunk of tiles: as many as x and y hold together, or
// U if that is more, within [kTileBudgetMin, kTileBudgetMax] (1 and 8 MiB in float). A small
// layer's buffers stay in proportion to its tensors; a layer with large filters needs few
// chunks, as each chunk reads all of U again.
constexpr int64_t kTileBudgetMin = int64_t(1) << 18;
constexpr int64_t kTileBudgetMax = int64_t(2) << 20;

// The 2-D form of a 1-D transform Op (in values to out values) for up to kLanes lanes:
// d [in][in][kLanes] -> t [out][in][kLanes] -> r [out][out][kLanes].
template <int m, int in, int out, typename Op, typename T>
FASTCONV_VECTOR_CLONES void transform_2d(const T* __restrict d, T* __restrict t,
                                         T* __restrict r, int64_t count) {
  for (int j = 0; j < in; ++j)
    for (int64_t l = 0; l < count; ++l) {
      T x[in], y[out];
      for (int i = 0; i < in; ++i) x[i] = d[(i * in + j) * kLanes + l];
      Op::template apply<m>(x, y);
      for (int i = 0; i < out; ++i) t[(i * in + j) * kLanes + l] = y[i];
    }
  for (int i = 0; i < out; ++i)
    for (int64_t l = 0; l < count; ++l) {
      T x[in], y[out];
      for (int j = 0; j < in; ++j) x[j] = t[(i * in + j) * kLanes + l];
      Op::template apply<m>(x, y);
      for (int j = 0; j < out; ++j) r[(i * out + j) * kLanes + l] = y[j];
    }
}

// transform_2d, with the result's rows copied out to dst[xi * stride + lane]. Stores straight
// to rows a runtime stride apart would keep the transform's loops scalar.
template <int m, int in, int out, typename Op, typename T>
void transform_to_rows(const T* d, T* t, T* r, int64_t count, T* dst, int64_t stride) {
  transform_2d<m, in, out, Op>(d, t, r, count);
  for (int xi = 0; xi < out * out; ++xi)
    std::copy(r + xi * kLanes, r + xi * kLanes + count, dst + xi * stride);
}

// A^T M A for `count` tiles whose alpha² points lie at src[xi * stride + lane]: copied into d
// ([alpha][alpha][kLanes]), t is [m][alpha][kLanes] scratch, o [m][m][kLanes] the result.
template <int m, typename T>
void transform_from_rows(const T* src, int64_t stride, int64_t count, T* d, T* t, T* o) {
  constexpr int a = m + 2;
  for (int xi = 0; xi < a * a; ++xi)
    std::copy(src + xi * stride, src + xi * stride + count, d + xi * kLanes);
  transform_2d<m, a, m, OutputOp>(d, t, o, count);
}

// One 3×3 stride-1 convolution as this file runs it: output (p, q) of channel k sums the
// taps x[c][p - top + r dh][q - left + s dw] (zero outside the input) times filter
// (k, c, r, s). With dilation, the outputs of one residue (p mod dh, q mod dw) read only
// inputs a multiple of the dilation apart: an undilated convolution on that sub-grid. Tiles
// are m x m on a sub-grid (their outputs dh rows and dw columns apart) and go by tile rows:
// tile row tr = ((n * dh + rho) * dw + sigma) * tiles_h + th holds tiles_w tiles side by side.
struct Geometry {
  int64_t N, C, H, W;  // input
  int64_t K, P, Q;     // output
  int64_t G;           // groups
  int64_t top, left;   // may be negative (a dgrad whose padding exceeds 2 dh or 2 dw)
  int64_t dh, dw;      // dilation
  int64_t tiles_h(int m) const { return ((P + dh - 1) / dh + m - 1) / m; }
  int64_t tiles_w(int m) const { return ((Q + dw - 1) / dw + m - 1) / m; }
  int64_t tile_rows(int m) const { return N * dh * dw * tiles_h(m); }
};

// Image and first output of a tile row; its tile tw starts at column q + tw * m * dw.
struct TileRow {
  int64_t n, p, q;
};

inline TileRow tile_row(const Geometry& g, int m, int64_t tr) {
  const int64_t th = g.tiles_h(m);
  const int64_t sub = tr / th, rho_sigma = sub % (g.dh * g.dw);
  return {sub / (g.dh * g.dw), rho_sigma / g.dw + tr % th * m * g.dh, rho_sigma % g.dw};
}

// G g G^T for up to kLanes filters at once, vectorised across them: taps [9][kLanes] (tap
// r * 3 + s), rows [alpha][3][kLanes] scratch, u [alpha²][kLanes].
template <int m, typename acc_t>
FASTCONV_VECTOR_CLONES void transform_filter_block(const acc_t* __restrict taps,
                                                   acc_t* __restrict rows, acc_t* __restrict u,
                                                   int64_t count) {
  constexpr int a = m + 2;
  for (int s = 0; s < 3; ++s)
    for (int64_t l = 0; l < count; ++l) {
      const acc_t col[3] = {taps[s * kLanes + l], taps[(3 + s) * kLanes + l],
                            taps[(6 + s) * kLanes + l]};
      acc_t out[a];
      filter_1d<m>(col, out);
      for (int i = 0; i < a; ++i) rows[(i * 3 + s) * kLanes + l] = out[i];
    }
  for (int i = 0; i < a; ++i)
    for (int64_t l = 0; l < count; ++l) {
      const acc_t row[3] = {rows[(i * 3) * kLanes + l], rows[(i * 3 + 1) * kLanes + l],
                            rows[(i * 3 + 2) * kLanes + l]};
      acc_t out[a];
      filter_1d<m>(row, out);
      for (int j = 0; j < a; ++j) u[(i * a + j) * kLanes + l] = out[j];
    }
}

// U [alpha², K, C/G] in acc_t: G g G^T of every filter. tap(k, c, r, s) reads the
// geometry's filter (c within k's group).
template <int m, typename acc_t, typename Tap>
at::Tensor transform_filters(const Geometry& g, const Tap& tap, const at::TensorOptions& opts) {
  constexpr int a = m + 2;
  const int64_t Cg = g.C / g.G, plane = g.K * Cg;
  at::Tensor U = at::empty({a * a, g.K, Cg}, opts);
  acc_t* u = U.data_ptr<acc_t>();
  cpu::parallel_for(0, g.K, 1, [&](int64_t k0, int64_t k1) {
    std::vector<acc_t> scratch((9 + 3 * a + a * a) * kLanes);
    acc_t* taps = scratch.data();
    acc_t* rows = taps + 9 * kLanes;
    acc_t* out = rows + 3 * a * kLanes;
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t c0 = 0; c0 < Cg; c0 += kLanes) {
        const int64_t count = std::min(kLanes, Cg - c0);
        // Filter by filter: a contiguous weight's nine taps lie side by side.
        for (int64_t l = 0; l < count; ++l)
          for (int r = 0; r < 3; ++r)
            for (int s = 0; s < 3; ++s) taps[(r * 3 + s) * kLanes + l] = acc_t(tap(k, c0 + l, r, s));
        transform_filter_block<m>(taps, rows, out, count);
        for (int xi = 0; xi < a * a; ++xi)
          std::copy(out + xi * kLanes, out + xi * kLanes + count, u + xi * plane + k * Cg + c0);
      }
  });
  return U;
}

// The filters as run_winograd multiplies them: U [alpha², K, C/G] for NCHW planes, U^T
// [alpha², C/G, K] for channels-last. Kept between calls for a frozen filter
// (common/filter_cache.h): the transform is 0.25-0.4 ms of a 256 x 256 layer's 1.1 ms.
template <int m, typename acc_t, typename Tap>
at::Tensor filter_operand(const char* direction, const Geometry& g, bool nhwc, const Tap& tap,
                          const at::TensorOptions& opts) {
  const std::string key = c10::str("winograd F(", m, "x", m, ") ", direction,
                                   nhwc ? " channels_last " : " nchw ",
                                   c10::toString(opts.dtype()), " groups ", g.G);
  return derived_from_filter(key, [&] {
    const at::Tensor U = transform_filters<m, acc_t>(g, tap, opts);
    return nhwc ? transposed_operand(U) : U;
  });
}

// d[i][j][lane] for the `count` tiles of one run, tiles side by side along a row of an
// H x W plane: window rows h0 + i sh and columns w0 + (lane * m + j) sw for i, j < win, zero
// outside. win is alpha for input tiles, m for output-gradient tiles; the steps are the
// dilation.
template <int m, int win, typename scalar_t, typename acc_t>
FASTCONV_VECTOR_CLONES void gather_run(int64_t H, int64_t W, const scalar_t* __restrict plane,
                                       int64_t h0, int64_t w0, int64_t sh, int64_t sw,
                                       int64_t count, acc_t* __restrict d) {
  acc_t row[kLanes * m + 2];
  const int64_t span = count * m + (win - m);
  // Columns u in [lo, hi) of the window lie inside the plane.
  const int64_t lo = std::clamp<int64_t>((-w0 + sw - 1) / sw, 0, span);
  const int64_t hi = std::clamp<int64_t>((W - w0 + sw - 1) / sw, lo, span);
  for (int i = 0; i < win; ++i) {
    const int64_t h = h0 + i * sh;
    if (h < 0 || h >= H) {
      for (int j = 0; j < win; ++j)
        for (int64_t l = 0; l < count; ++l) d[(i * win + j) * kLanes + l] = acc_t(0);
      continue;
    }
    const scalar_t* src = plane + h * W + w0;
    for (int64_t u = 0; u < lo; ++u) row[u] = acc_t(0);
    if (sw == 1) {
      for (int64_t u = lo; u < hi; ++u) row[u] = acc_t(src[u]);
    } else {
      for (int64_t u = lo; u < hi; ++u) row[u] = acc_t(src[u * sw]);
    }
    for (int64_t u = hi; u < span; ++u) row[u] = acc_t(0);
    for (int j = 0; j < win; ++j)
      for (int64_t l = 0; l < count; ++l) d[(i * win + j) * kLanes + l] = row[l * m + j];
  }
}

// The same window at one tile of a channels-last image ([H, W, C]), channels c0 + lane.
template <int win, typename scalar_t, typename acc_t>
void gather_tile_nhwc(int64_t H, int64_t W, int64_t C, const scalar_t* image, int64_t h0,
                      int64_t w0, int64_t sh, int64_t sw, int64_t c0, int64_t count, acc_t* d) {
  for (int i = 0; i < win; ++i)
    for (int j = 0; j < win; ++j) {
      acc_t* dst = d + (i * win + j) * kLanes;
      const int64_t h = h0 + i * sh, w = w0 + j * sw;
      if (h < 0 || h >= H || w < 0 || w >= W) {
        std::fill(dst, dst + count, acc_t(0));
        continue;
      }
      const scalar_t* src = image + (h * W + w) * C + c0;
      for (int64_t l = 0; l < count; ++l) dst[l] = acc_t(src[l]);
    }
}

// y rows p0 + i dh, columns q0 + (lane * m + j) dw of output plane (n, k), from
// o[i][j][lane], inside y only, through the epilogue.
template <int m, typename scalar_t, typename acc_t>
FASTCONV_VECTOR_CLONES void scatter_run(const Geometry& g, const acc_t* __restrict o, int64_t p0,
                                        int64_t q0, int64_t count, int64_t n, int64_t k,
                                        const EpilogueView<scalar_t>& ep, scalar_t* __restrict y) {
  acc_t row[kLanes * m];
  const int64_t cols = std::clamp<int64_t>((g.Q - q0 + g.dw - 1) / g.dw, 0, count * m);
  for (int i = 0; i < m && p0 + i * g.dh < g.P; ++i) {
    for (int j = 0; j < m; ++j)
      for (int64_t l = 0; l < count; ++l) row[l * m + j] = o[(i * m + j) * kLanes + l];
    const int64_t first = ((n * g.K + k) * g.P + p0 + i * g.dh) * g.Q + q0;
    scalar_t* dst = y + first;
    if (ep.empty()) {
      if (g.dw == 1) {
        for (int64_t u = 0; u < cols; ++u) dst[u] = scalar_t(row[u]);
      } else {
        for (int64_t u = 0; u < cols; ++u) dst[u * g.dw] = scalar_t(row[u]);
      }
    } else {
      for (int64_t u = 0; u < cols; ++u) dst[u * g.dw] = scalar_t(ep(row[u], k, first + u * g.dw));
    }
  }
}

// A chunk: tile rows [row0, row0 + rows), each cut into runs of at most kLanes tiles. Its
// tiles are numbered row by row, so a run's tiles are consecutive columns of V and M.
struct Chunk {
  int64_t row0, rows, tiles_w, runs_per_row;
  int64_t tiles() const { return rows * tiles_w; }
  int64_t runs() const { return rows * runs_per_row; }
};

// Input transforms of runs [b, e) (task = c * runs + run) into v ([alpha², C, tiles]).
template <int m, typename scalar_t, typename acc_t>
void input_tasks(const Geometry& g, const Chunk& ch, const scalar_t* x, int64_t b, int64_t e,
                 acc_t* v) {
  constexpr int a = m + 2;
  const int64_t tiles = ch.tiles();
  std::vector<acc_t> scratch(3 * a * a * kLanes);
  acc_t* d = scratch.data();
  acc_t* t = d + a * a * kLanes;
  acc_t* r = t + a * a * kLanes;
  for (int64_t task = b; task < e; ++task) {
    const int64_t c = task / ch.runs(), run = task % ch.runs();
    const int64_t row = run / ch.runs_per_row, tw0 = run % ch.runs_per_row * kLanes;
    const int64_t count = std::min(kLanes, ch.tiles_w - tw0);
    const TileRow o = tile_row(g, m, ch.row0 + row);
    const scalar_t* plane = x + (o.n * g.C + c) * g.H * g.W;
    gather_run<m, a>(g.H, g.W, plane, o.p - g.top, o.q + tw0 * m * g.dw - g.left, g.dh, g.dw,
                     count, d);
    transform_to_rows<m, a, a, InputOp>(d, t, r, count, v + c * tiles + row * ch.tiles_w + tw0,
                                        g.C * tiles);
  }
}

// Output transforms of runs [b, e) (task = k * runs + run) from mv ([alpha², K, tiles]).
template <int m, typename scalar_t, typename acc_t>
void output_tasks(const Geometry& g, const Chunk& ch, const acc_t* mv, int64_t b, int64_t e,
                  const EpilogueView<scalar_t>& ep, scalar_t* y) {
  constexpr int a = m + 2;
  const int64_t tiles = ch.tiles();
  std::vector<acc_t> scratch((a * a + m * a + m * m) * kLanes);
  acc_t* d = scratch.data();
  acc_t* s = d + a * a * kLanes;
  acc_t* o = s + m * a * kLanes;
  for (int64_t task = b; task < e; ++task) {
    const int64_t k = task / ch.runs(), run = task % ch.runs();
    const int64_t row = run / ch.runs_per_row, tw0 = run % ch.runs_per_row * kLanes;
    const int64_t count = std::min(kLanes, ch.tiles_w - tw0);
    const TileRow t = tile_row(g, m, ch.row0 + row);
    transform_from_rows<m>(mv + k * tiles + row * ch.tiles_w + tw0, g.K * tiles, count, d, s, o);
    scatter_run<m>(g, o, t.p, t.q + tw0 * m * g.dw, count, t.n, k, ep, y);
  }
}

// Tile rows per chunk, so that V and M of a chunk stay within the budget; u_elements is the
// size of U (or of wgrad's dU), which every chunk reads again.
int64_t rows_per_chunk(const Geometry& g, int m, int64_t u_elements) {
  const int64_t a = m + 2;
  const int64_t per_row = a * a * (g.C + g.K) * g.tiles_w(m);
  const int64_t budget = std::clamp(std::max(g.N * (g.C * g.H * g.W + g.K * g.P * g.Q), u_elements),
                                    kTileBudgetMin, kTileBudgetMax);
  return std::clamp<int64_t>(budget / per_row, 1, g.tile_rows(m));
}

// V and M for chunks of `rows` tile rows.
std::pair<at::Tensor, at::Tensor> tile_buffers(const Geometry& g, int m, int64_t rows,
                                               const at::TensorOptions& opts) {
  const int64_t a = m + 2, tiles = rows * g.tiles_w(m);
  return {at::empty({a * a * g.C * tiles}, opts), at::empty({a * a * g.K * tiles}, opts)};
}

// V and M of a chunk of `tiles` tiles as one matrix per tile point: [alpha², C, tiles] and
// [alpha², K, tiles] (NCHW), or [alpha², tiles, C] and [alpha², tiles, K] (channels-last).
std::pair<at::Tensor, at::Tensor> point_matrices(const Geometry& g, int m, const at::Tensor& v_buf,
                                                 const at::Tensor& m_buf, int64_t tiles,
                                                 bool nhwc) {
  const int64_t a = m + 2;
  const auto matrices = [&](const at::Tensor& buf, int64_t channels) {
    const at::Tensor used = buf.narrow(0, 0, a * a * channels * tiles);
    return nhwc ? used.view({a * a, tiles, channels}) : used.view({a * a, channels, tiles});
  };
  return {matrices(v_buf, g.C), matrices(m_buf, g.K)};
}

// The channels-last form: lanes are channels instead of tiles. V is [alpha², tiles, C] and
// M [alpha², tiles, K], so each point's GEMM is M = V @ U^T, and tiles are read from and
// written to y as whole channel runs.
template <int m, typename scalar_t, typename acc_t>
void input_tasks_nhwc(const Geometry& g, const Chunk& ch, const scalar_t* x, int64_t b,
                      int64_t e, acc_t* v) {
  constexpr int a = m + 2;
  const int64_t tiles = ch.tiles(), runs = (g.C + kLanes - 1) / kLanes;
  std::vector<acc_t> scratch(3 * a * a * kLanes);
  acc_t* d = scratch.data();
  acc_t* t = d + a * a * kLanes;
  acc_t* r = t + a * a * kLanes;
  for (int64_t task = b; task < e; ++task) {
    const int64_t tile = task / runs, c0 = task % runs * kLanes;
    const int64_t count = std::min(kLanes, g.C - c0);
    const TileRow o = tile_row(g, m, ch.row0 + tile / ch.tiles_w);
    gather_tile_nhwc<a>(g.H, g.W, g.C, x + o.n * g.H * g.W * g.C, o.p - g.top,
                        o.q + tile % ch.tiles_w * m * g.dw - g.left, g.dh, g.dw, c0, count, d);
    transform_to_rows<m, a, a, InputOp>(d, t, r, count, v + tile * g.C + c0, tiles * g.C);
  }
}

template <int m, typename scalar_t, typename acc_t>
void output_tasks_nhwc(const Geometry& g, const Chunk& ch, const acc_t* mv, int64_t b,
                       int64_t e, const EpilogueView<scalar_t>& ep, scalar_t* y) {
  constexpr int a = m + 2;
  const int64_t tiles = ch.tiles(), runs = (g.K + kLanes - 1) / kLanes;
  std::vector<acc_t> scratch((a * a + m * a + m * m) * kLanes);
  acc_t* d = scratch.data();
  acc_t* s = d + a * a * kLanes;
  acc_t* o = s + m * a * kLanes;
  for (int64_t task = b; task < e; ++task) {
    const int64_t tile = task / runs, k0 = task % runs * kLanes;
    const int64_t count = std::min(kLanes, g.K - k0);
    const TileRow t = tile_row(g, m, ch.row0 + tile / ch.tiles_w);
    const int64_t p0 = t.p, q0 = t.q + tile % ch.tiles_w * m * g.dw;
    transform_from_rows<m>(mv + tile * g.K + k0, tiles * g.K, count, d, s, o);
    for (int i = 0; i < m && p0 + i * g.dh < g.P; ++i)
      for (int j = 0; j < m && q0 + j * g.dw < g.Q; ++j) {
        const acc_t* src = o + (i * m + j) * kLanes;
        const int64_t first = ((t.n * g.P + p0 + i * g.dh) * g.Q + q0 + j * g.dw) * g.K + k0;
        scalar_t* dst = y + first;
        if (ep.empty()) {
          for (int64_t l = 0; l < count; ++l) dst[l] = scalar_t(src[l]);
        } else {
          for (int64_t l = 0; l < count; ++l) dst[l] = scalar_t(ep(src[l], k0 + l, first + l));
        }
      }
  }
}

// y from x, both contiguous [N, C, H, W] planes or both channels-last, and the filters as
// filter_operand gives them for that layout.
template <int m, typename scalar_t>
void run_winograd(const Geometry& g, const scalar_t* x, const at::Tensor& filters, scalar_t* y,
                  bool nhwc, const EpilogueView<scalar_t>& ep) {
  using acc_t = acc_type<scalar_t>;
  constexpr int a = m + 2;
  const int64_t tile_rows = g.tile_rows(m), tiles_w = g.tiles_w(m);
  const int64_t chunk_rows = rows_per_chunk(g, m, filters.numel());
  at::Tensor v_buf, m_buf;
  std::tie(v_buf, m_buf) = tile_buffers(g, m, chunk_rows, filters.options());
  const int64_t Cg = g.C / g.G, Kg = g.K / g.G;
  const int64_t c_runs = (g.C + kLanes - 1) / kLanes, k_runs = (g.K + kLanes - 1) / kLanes;
  // fastconv's own GEMM on raw pointers where it runs (a contiguous filter operand: a view, as
  // ATen's path takes it, is not).
  const bool raw_products = std::is_same_v<acc_t, float> && own_sgemm_active() && filters.is_contiguous();
  const acc_t* filter_data = filters.const_data_ptr<acc_t>();
  for (int64_t row0 = 0; row0 < tile_rows; row0 += chunk_rows) {
    const Chunk ch{row0, std::min(chunk_rows, tile_rows - row0), tiles_w,
                   nhwc ? 1 : (tiles_w + kLanes - 1) / kLanes};
    const int64_t tiles = ch.tiles();
    acc_t* v = v_buf.data_ptr<acc_t>();
    cpu::parallel_for(0, nhwc ? tiles * c_runs : g.C * ch.runs(), 1, [&](int64_t b, int64_t e) {
      if (nhwc) {
        input_tasks_nhwc<m>(g, ch, x, b, e, v);
      } else {
        input_tasks<m>(g, ch, x, b, e, v);
      }
    });
    // One single-threaded GEMM per tile point and group, the threads sharing them out: the
    // GEMMs are small, and a threaded GEMM each would synchronise alpha² G times per chunk.
    // NCHW: M[xi][K, tiles] = U[xi] @ V[xi][C, tiles]; channels-last: M[xi][tiles, K] =
    // V[xi][tiles, C] @ U[xi]^T.
    at::Tensor V, M;
    std::tie(V, M) = point_matrices(g, m, v_buf, m_buf, tiles, nhwc);
    acc_t* mp = m_buf.data_ptr<acc_t>();
    cpu::parallel_for(0, a * a * g.G, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t xi = i / g.G, grp = i % g.G;
        if constexpr (std::is_same_v<acc_t, float>) {
          // Straight from the buffers: the tensor views of the general path cost 5-10 us per
          // point, 0.1-0.2 ms of a layer's 36 points x chunks.
          if (raw_products) {
            const float* u = filter_data + xi * g.K * Cg;  // [K, Cg] or, channels-last, [Cg, K]
            const float* vi = v + xi * g.C * tiles;
            float* mi = mp + xi * g.K * tiles;
            if (nhwc) {
              own_gemm_serial(tiles, Kg, Cg, vi + grp * Cg, g.C, u + grp * Kg, g.K, mi + grp * Kg,
                              g.K, false);
            } else {
              own_gemm_serial(Kg, tiles, Cg, u + grp * Kg * Cg, Cg, vi + grp * Cg * tiles, tiles,
                              mi + grp * Kg * tiles, tiles, false);
            }
            continue;
          }
        }
        if (nhwc) {
          at::Tensor Mi = M[xi].narrow(1, grp * Kg, Kg);
          cpu::mm_out(Mi, V[xi].narrow(1, grp * Cg, Cg), filters[xi].narrow(1, grp * Kg, Kg));
        } else {
          at::Tensor Mi = M[xi].narrow(0, grp * Kg, Kg);
          cpu::mm_out(Mi, filters[xi].narrow(0, grp * Kg, Kg), V[xi].narrow(0, grp * Cg, Cg));
        }
      }
    });
    const acc_t* mv = m_buf.data_ptr<acc_t>();
    cpu::parallel_for(0, nhwc ? tiles * k_runs : g.K * ch.runs(), 1, [&](int64_t b, int64_t e) {
      if (nhwc) {
        output_tasks_nhwc<m>(g, ch, mv, b, e, ep, y);
      } else {
        output_tasks<m>(g, ch, mv, b, e, ep, y);
      }
    });
  }
}


// wgrad: dU[xi] = sum over tiles of (A dy A^T)[xi] (B^T d B)[xi]^T, one GEMM per point and
// group and chunk, accumulated in acc_t; then dw = G^T dU G per filter. V and Mdy are laid
// out as in the forward pass of the same layout, so the input transform is the forward's.
template <int m, typename scalar_t>
at::Tensor winograd_wgrad(const Geometry& g, const scalar_t* x, const scalar_t* dy, bool nhwc,
                          const at::TensorOptions& acc_opts) {
  using acc_t = acc_type<scalar_t>;
  constexpr int a = m + 2;
  const int64_t Cg = g.C / g.G, Kg = g.K / g.G;
  at::Tensor dU = at::zeros({a * a, g.K, Cg}, acc_opts);
  const int64_t tile_rows = g.tile_rows(m), tiles_w = g.tiles_w(m);
  const int64_t chunk_rows = rows_per_chunk(g, m, dU.numel());
  at::Tensor v_buf, m_buf;
  std::tie(v_buf, m_buf) = tile_buffers(g, m, chunk_rows, acc_opts);
  const int64_t k_runs = (g.K + kLanes - 1) / kLanes;
  for (int64_t row0 = 0; row0 < tile_rows; row0 += chunk_rows) {
    const Chunk ch{row0, std::min(chunk_rows, tile_rows - row0), tiles_w,
                   nhwc ? 1 : (tiles_w + kLanes - 1) / kLanes};
    const int64_t tiles = ch.tiles();
    acc_t* v = v_buf.data_ptr<acc_t>();
    acc_t* mv = m_buf.data_ptr<acc_t>();
    if (nhwc) {
      cpu::parallel_for(0, tiles * ((g.C + kLanes - 1) / kLanes), 1, [&](int64_t b, int64_t e) {
        input_tasks_nhwc<m>(g, ch, x, b, e, v);
      });
    } else {
      cpu::parallel_for(0, g.C * ch.runs(), 1, [&](int64_t b, int64_t e) {
        input_tasks<m>(g, ch, x, b, e, v);
      });
    }
    // A dy A^T of each tile: [alpha², K, tiles] (NCHW) or [alpha², tiles, K] (channels-last).
    const int64_t tasks = nhwc ? tiles * k_runs : g.K * ch.runs();
    cpu::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
      std::vector<acc_t> scratch((m * m + a * m + a * a) * kLanes);
      acc_t* d = scratch.data();
      acc_t* t = d + m * m * kLanes;
      acc_t* r = t + a * m * kLanes;
      for (int64_t task = b; task < e; ++task) {
        int64_t count, first, stride;
        if (nhwc) {
          const int64_t tile = task / k_runs, k0 = task % k_runs * kLanes;
          const TileRow o = tile_row(g, m, ch.row0 + tile / tiles_w);
          count = std::min(kLanes, g.K - k0);
          gather_tile_nhwc<m>(g.P, g.Q, g.K, dy + o.n * g.P * g.Q * g.K, o.p,
                              o.q + tile % tiles_w * m * g.dw, g.dh, g.dw, k0, count, d);
          first = tile * g.K + k0;
          stride = tiles * g.K;
        } else {
          const int64_t k = task / ch.runs(), run = task % ch.runs();
          const int64_t row = run / ch.runs_per_row, tw0 = run % ch.runs_per_row * kLanes;
          const TileRow o = tile_row(g, m, ch.row0 + row);
          count = std::min(kLanes, tiles_w - tw0);
          gather_run<m, m>(g.P, g.Q, dy + (o.n * g.K + k) * g.P * g.Q, o.p, o.q + tw0 * m * g.dw,
                           g.dh, g.dw, count, d);
          first = k * tiles + row * tiles_w + tw0;
          stride = g.K * tiles;
        }
        transform_to_rows<m, m, a, GradOp>(d, t, r, count, mv + first, stride);
      }
    });
    at::Tensor V, M;
    std::tie(V, M) = point_matrices(g, m, v_buf, m_buf, tiles, nhwc);
    cpu::parallel_for(0, a * a * g.G, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t xi = i / g.G, grp = i % g.G;
        at::Tensor dUi = dU[xi].narrow(0, grp * Kg, Kg);
        if (nhwc) {
          cpu::mm_out(dUi, M[xi].narrow(1, grp * Kg, Kg).t(), V[xi].narrow(1, grp * Cg, Cg), /*accumulate=*/true);
        } else {
          cpu::mm_out(dUi, M[xi].narrow(0, grp * Kg, Kg), V[xi].narrow(0, grp * Cg, Cg).t(), /*accumulate=*/true);
        }
      }
    });
  }
  // dw [K, Cg, 3, 3] = G^T dU G, vectorised across input channels.
  at::Tensor dw = at::empty({g.K, Cg, 3, 3}, acc_opts);
  const acc_t* du = dU.data_ptr<acc_t>();
  acc_t* out = dw.data_ptr<acc_t>();
  const int64_t plane = g.K * Cg;
  cpu::parallel_for(0, g.K, 1, [&](int64_t k0, int64_t k1) {
    std::vector<acc_t> scratch((a * a + 3 * a + 9) * kLanes);
    acc_t* d = scratch.data();
    acc_t* t = d + a * a * kLanes;
    acc_t* r = t + 3 * a * kLanes;
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t c0 = 0; c0 < Cg; c0 += kLanes) {
        const int64_t count = std::min(kLanes, Cg - c0);
        for (int xi = 0; xi < a * a; ++xi)
          std::copy(du + xi * plane + k * Cg + c0, du + xi * plane + k * Cg + c0 + count, d + xi * kLanes);
        transform_2d<m, a, 3, FilterGradOp>(d, t, r, count);
        for (int64_t l = 0; l < count; ++l)
          for (int rs = 0; rs < 9; ++rs) out[(k * Cg + c0 + l) * 9 + rs] = r[rs * kLanes + l];
      }
  });
  return dw;
}

template <int m>
void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "winograd_fprop", [&] {
    using acc_t = acc_type<scalar_t>;
    const Geometry g{p.N, p.C, p.H, p.W, p.K, p.P, p.Q, p.groups, p.pad_top, p.pad_left,
                     p.dilation_h, p.dilation_w};
    const Strided4<const scalar_t> W(w);
    const bool nhwc = layouts.output == Layout::nhwc;
    const at::Tensor filters = filter_operand<m, acc_t>(
        "fprop", g, nhwc, [&](int64_t k, int64_t c, int r, int s) { return double(W(k, c, r, s)); },
        x.options().dtype(acc_dtype(x.scalar_type())));
    run_winograd<m>(g, x.const_data_ptr<scalar_t>(), filters, y.data_ptr<scalar_t>(), nhwc,
                    EpilogueView<scalar_t>(epilogue));
  });
}

// dx is the 3×3 convolution of dy (K channels in) with w[k][c] flipped, C channels out.
template <int m>
void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const Epilogue&, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "winograd_dgrad", [&] {
    using acc_t = acc_type<scalar_t>;
    const Geometry g{p.N, p.K, p.P, p.Q, p.C, p.H, p.W, p.groups, 2 * p.dilation_h - p.pad_top,
                     2 * p.dilation_w - p.pad_left, p.dilation_h, p.dilation_w};
    const Strided4<const scalar_t> W(w);
    const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
    // Output channel c (group c / Cg) takes input channel kg of its group from filter
    // w[group * Kg + kg][c % Cg], flipped in both axes.
    const bool nhwc = layouts.output == Layout::nhwc;
    const at::Tensor filters = filter_operand<m, acc_t>(
        "dgrad", g, nhwc,
        [&](int64_t c, int64_t kg, int r, int s) {
          const int64_t k = c / Cg * Kg + kg;
          return double(W(k, c % Cg, 2 - r, 2 - s));
        },
        dy.options().dtype(acc_dtype(dy.scalar_type())));
    run_winograd<m>(g, dy.const_data_ptr<scalar_t>(), filters, dx.data_ptr<scalar_t>(), nhwc,
                    EpilogueView<scalar_t>());
  });
}

template <int m>
void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "winograd_wgrad", [&] {
    const Geometry g{p.N, p.C, p.H, p.W, p.K, p.P, p.Q, p.groups, p.pad_top, p.pad_left,
                     p.dilation_h, p.dilation_w};
    dw.copy_(winograd_wgrad<m>(g, x.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(),
                               layouts.inputs == Layout::nhwc,
                               x.options().dtype(acc_dtype(x.scalar_type()))));
  });
}

bool can_implement(const ConvProblem& p, const ConvRequest&) {
  return p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1;
}

// The automatic choice. Each call transforms every filter (alpha² K C/G values written), so
// the tiles must be many enough to repay it, and each group's GEMMs wide enough to run well.
// Thresholds from the seed suite on the 2-core EPYC (bench/NOTES.md). fprop and wgrad tile
// the output, dgrad the input.
template <int m>
bool preferred(const ConvProblem& p, const ConvRequest& r) {
  if (!(r.dtype == at::kFloat || r.dtype == at::kDouble)) return false;
  const bool tiles_output = r.direction != Direction::dgrad;
  const int64_t rows = tiles_output ? p.P : p.H, cols = tiles_output ? p.Q : p.W;
  const int64_t dh = p.dilation_h, dw = p.dilation_w;
  const int64_t tiles = p.N * dh * dw * (((rows + dh - 1) / dh + m - 1) / m) *
                        (((cols + dw - 1) / dw + m - 1) / m);
  const int64_t min_tiles = m == 4 ? 256 : 64;
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  if (r.direction == Direction::fprop) {
    // fprop transforms all Cg input channels of every tile to save multiplies for Kg outputs:
    // with under 64 outputs (DenseNet's 128 -> 32 growth layers) on small images the transforms
    // cost more than the multiplies saved. im2col ran 2x faster at 28x28 and 14x14 at batch 2,
    // Winograd 15-30% faster at 56x56 and at batch 8 (Zen 5, bench/NOTES.md, "tiles per thread").
    if (Kg < 64 && p.N * p.P * p.Q < 4096) return false;
    // Few tiles with a partial one in every row and column (AlexNet's 13x13 layers: 98 tiles of
    // 2x2) ran 1.1-1.6x slower than im2col, where 14x14's whole tiles ran 10% faster.
    if ((p.P % m != 0 || p.Q % m != 0) && tiles < 256) return false;
  }
  return Cg >= 16 && Kg >= 16 && Cg * Kg >= 2048 && tiles >= min_tiles;
}

template <int m>
ConvAlgorithm winograd_algorithm(const char* name) {
  ConvAlgorithm a{name, &can_implement, &fprop<m>, &dgrad<m>, &wgrad<m>};
  a.needs_finite_operands = true;
  a.preferred = &preferred<m>;
  a.fused_stages = &fprop_fuses_every_stage;  // in the output transform
  return a;
}

}  // namespace

ConvAlgorithm winograd_2x2_algorithm() { return winograd_algorithm<2>("winograd_2x2"); }
ConvAlgorithm winograd_4x4_algorithm() { return winograd_algorithm<4>("winograd_4x4"); }

}  // namespace fastconv::cpu
