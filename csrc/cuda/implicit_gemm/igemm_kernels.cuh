// The implicit-GEMM kernels (device code only; launchers in igemm_launch.cuh): operands
// brought by cp.async into a Stages-deep shared-memory ring of swizzled tiles (config.h), then
// multiplied with float accumulators, either by tensor-core mma.sync m16n8k16 (m16n8k8 TF32 for
// float) from ldmatrix reads (Math::mma), or by exact float32 FFMA from 16-byte shared reads
// (Math::ffma).
//
// gather_gemm_kernel: GatherGemm (fprop, and dgrad by phases). mma: A and B tiles are stored
//   with the reduction contiguous (rows are m and n), read by ldmatrix without .trans. ffma:
//   both are stored k-major (rows are k), copied one float at a time, so that a lane reads four
//   consecutive m (or n) of one k in one 16-byte load.
// wgrad_kernel: WgradGemm. Its reduction runs over pixels, and both dy and x keep channels
//   contiguous, so both tiles are stored k-major: read by ldmatrix.trans, or by ffma as they are.
//
// kVec is the 2-byte units per cp.async (8: 16 bytes, 4: 8 bytes, 2: 4 bytes); the launcher
// picks it from the request's alignment, so a copy never straddles a channel run or an image edge.
#pragma once

#include "cuda/common/launch.cuh"
#include "cuda/implicit_gemm/config.h"
#include "cuda/implicit_gemm/gemm_params.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

namespace fastconv::cuda::igemm {

// One 16-byte-wide k step of the fragments: m16n8k16 for 2-byte types, m16n8k8 on TF32 for
// float (the same 16 bytes of k hold 8 floats; warp_mma has rounded each to TF32, see
// tf32_round in cuda/common/primitives.h).
template <typename T>
FASTCONV_DEVICE void mma_step(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const float c[4] = {acc[0], acc[1], acc[2], acc[3]};
  if constexpr (std::is_same_v<T, c10::BFloat16>)
    mma_m16n8k16_bf16(acc, a, b, c);
  else if constexpr (std::is_same_v<T, float>)
    mma_m16n8k8_tf32(acc, a, b, c);
  else
    mma_m16n8k16_f16(acc, a, b, c);
}

// A lane's accumulators, and where each lies in the CTA's BM x BN tile: row(i, ...) for
// i < kRows and col(j, ...) for j < kCols, with the value at(i, j).
template <class Cfg, Math = Cfg::kMath>
struct Accumulators;

// The mma C fragments: lane (g, t) = (lane / 4, lane % 4) holds rows g and g + 8, columns 2t
// and 2t + 1, of each 16 x 8 tile.
template <class Cfg>
struct Accumulators<Cfg, Math::mma> {
  static constexpr int kRows = 2 * Cfg::MI, kCols = 2 * Cfg::NI;
  float v[Cfg::MI][Cfg::NI][4];
  FASTCONV_DEVICE static int row(int i, int warp_m, int lane) {
    return warp_m * Cfg::WM + (i / 2) * 16 + lane / 4 + 8 * (i % 2);
  }
  FASTCONV_DEVICE static int col(int j, int warp_n, int lane) {
    return warp_n * Cfg::WN + (j / 2) * 8 + 2 * (lane % 4) + j % 2;
  }
  FASTCONV_DEVICE float at(int i, int j) const { return v[i / 2][j / 2][2 * (i % 2) + j % 2]; }
  FASTCONV_DEVICE float* begin() { return &v[0][0][0]; }
};

// ffma: lane (lm, ln) = (lane / kLanesN, lane % kLanesN) holds rows 4 lm + {0..3} and
// WM / 2 + 4 lm + {0..3}, columns 4 ln + {0..3}, of its warp's tile.
template <class Cfg>
struct Accumulators<Cfg, Math::ffma> {
  static constexpr int kRows = Cfg::kThreadM, kCols = Cfg::kThreadN;
  float v[kRows][kCols];
  FASTCONV_DEVICE static int row(int i, int warp_m, int lane) {
    return warp_m * Cfg::WM + (i / 4) * (Cfg::WM / 2) + (lane / Cfg::kLanesN) * 4 + i % 4;
  }
  FASTCONV_DEVICE static int col(int j, int warp_n, int lane) {
    return warp_n * Cfg::WN + (lane % Cfg::kLanesN) * 4 + j;
  }
  FASTCONV_DEVICE float at(int i, int j) const { return v[i][j]; }
  FASTCONV_DEVICE float* begin() { return &v[0][0]; }
};

// Four floats that move as one 16-byte shared-memory access (LDS.128).
struct alignas(16) Float4 {
  float x, y, z, w;
};

// ffma: one stage's slice (kSliceUnits / 2 floats of k) of the lane's 8 x 4 block, from k-major float tiles
// (rows of BM or BN floats, 2 * BM units, mn-swizzled). Per k the warp reads 4 + 4 distinct
// 16-byte A units (its two row blocks) and 8 B units, each a conflict-free broadcast, for 32
// FFMA per lane.
template <class Cfg>
FASTCONV_DEVICE void warp_ffma(sptr<uint16_t> a_tile, sptr<uint16_t> b_tile, int warp_m, int warp_n,
                               int lane, Accumulators<Cfg>& acc) {
  using Acc = Accumulators<Cfg>;
  const int m0 = Acc::row(0, warp_m, lane), m1 = Acc::row(4, warp_m, lane), n0 = Acc::col(0, warp_n, lane);
#pragma unroll 4
  for (int k = 0; k < Cfg::kSliceUnits / 2; ++k) {
    const Float4 lo = shared_as<const Float4>(a_tile + swizzle_mn_contiguous(k, 2 * m0, 2 * Cfg::BM))[0];
    const Float4 hi = shared_as<const Float4>(a_tile + swizzle_mn_contiguous(k, 2 * m1, 2 * Cfg::BM))[0];
    const Float4 bv = shared_as<const Float4>(b_tile + swizzle_mn_contiguous(k, 2 * n0, 2 * Cfg::BN))[0];
    const float a[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    const float b[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc.v[i][j] += a[i] * b[j];
  }
}

// One stage's slice of the warp's WM x WN sub-tile: kSliceUnits / 16 steps of MI x NI mma. Offsets count
// 2-byte units: a float tile is laid out as a 2-byte tile of twice the width, and ldmatrix
// hands each lane the same 4 bytes either way, which for float are the TF32 fragments.
// kAKMajor / kBKMajor: the tile stores rows of k (mn contiguous) rather than rows of m / n.
template <class Cfg, typename T, bool kAKMajor, bool kBKMajor>
FASTCONV_DEVICE void warp_mma(sptr<uint16_t> a_tile, sptr<uint16_t> b_tile, int warp_m, int warp_n,
                              int lane, float (&acc)[Cfg::MI][Cfg::NI][4]) {
  // float k-major tiles: the rows are k, 8 of them per m16n8k8 step, and each lane reads its
  // four A and two B TF32 values one 4-byte word at a time (ldmatrix.trans would split them).
  // Lane (g, t) = (lane / 4, lane % 4) holds a{0..3} = A[g | g+8][t | t+4], b{0,1} = B[t | t+4][g].
  constexpr bool kFloat = sizeof(T) == 4;
  const int g = lane / 4, t = lane % 4;
  auto word = [](sptr<uint16_t> tile, int row, int col, int width) -> uint32_t {
    const uint32_t v = shared_as<const uint32_t>(tile + swizzle_mn_contiguous(row, 2 * col, 2 * width))[0];
    return v;
  };
#pragma unroll
  for (int kk = 0; kk < Cfg::kSliceUnits; kk += 16) {
    const int k8 = (kk / 16) * 8;  // float k-major: this step's first row
    // All of the warp's A fragments, then B two n8 blocks at a time: 4 registers of B live
    // instead of 2 * NI, which keeps the 128 x 128 tile's 128 accumulators out of local memory.
    uint32_t af[Cfg::MI][4];
#pragma unroll
    for (int mi = 0; mi < Cfg::MI; ++mi) {
      const int m0 = warp_m * Cfg::WM + mi * 16;
      if constexpr (!kAKMajor) {
        // Matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15), in the order mma takes a0..a3.
        const int row = m0 + lane % 16, k = kk + (lane / 16) * 8;
        ldmatrix_x4(af[mi][0], af[mi][1], af[mi][2], af[mi][3], a_tile + swizzle_k_contiguous(row, k));
      } else if constexpr (kFloat) {
        af[mi][0] = word(a_tile, k8 + t, m0 + g, Cfg::BM);
        af[mi][1] = word(a_tile, k8 + t, m0 + g + 8, Cfg::BM);
        af[mi][2] = word(a_tile, k8 + t + 4, m0 + g, Cfg::BM);
        af[mi][3] = word(a_tile, k8 + t + 4, m0 + g + 8, Cfg::BM);
      } else {
        const int k = kk + lane % 8 + 8 * (lane / 16), col = m0 + 8 * ((lane / 8) % 2);
        ldmatrix_x4_trans(af[mi][0], af[mi][1], af[mi][2], af[mi][3],
                          a_tile + swizzle_mn_contiguous(k, col, Cfg::BM));
      }
      if constexpr (kFloat)
        for (uint32_t& r : af[mi]) r = tf32_round(r);
    }
#pragma unroll
    for (int ni = 0; ni < Cfg::NI; ni += 2) {
      const int n0 = warp_n * Cfg::WN + ni * 8;
      uint32_t bf[2][2];  // two n8 blocks at once: b[ni] (k 0-7, 8-15), then b[ni + 1]
      if constexpr (!kBKMajor) {
        const int row = n0 + lane % 8 + 8 * (lane / 16), k = kk + 8 * ((lane / 8) % 2);
        ldmatrix_x4(bf[0][0], bf[0][1], bf[1][0], bf[1][1], b_tile + swizzle_k_contiguous(row, k));
      } else if constexpr (kFloat) {
        bf[0][0] = word(b_tile, k8 + t, n0 + g, Cfg::BN);
        bf[0][1] = word(b_tile, k8 + t + 4, n0 + g, Cfg::BN);
        bf[1][0] = word(b_tile, k8 + t, n0 + 8 + g, Cfg::BN);
        bf[1][1] = word(b_tile, k8 + t + 4, n0 + 8 + g, Cfg::BN);
      } else {
        const int k = kk + lane % 8 + 8 * ((lane / 8) % 2), col = n0 + 8 * (lane / 16);
        ldmatrix_x4_trans(bf[0][0], bf[0][1], bf[1][0], bf[1][1],
                          b_tile + swizzle_mn_contiguous(k, col, Cfg::BN));
      }
      if constexpr (kFloat)
        for (auto& block : bf)
          for (uint32_t& r : block) r = tf32_round(r);
#pragma unroll
      for (int mi = 0; mi < Cfg::MI; ++mi) {
        mma_step<T>(acc[mi][ni], af[mi], bf[0]);
        mma_step<T>(acc[mi][ni + 1], af[mi], bf[1]);
      }
    }
  }
}

// The pipelined mainloop both kernels share: acc = the sum over k_tiles slices, each brought
// by load_stage(stage, slice) (its cp.async copies) into a ring of Cfg::Stages buffers and
// multiplied as soon as it lands, Stages - 1 slices ahead of the math.
template <class Cfg, typename T, bool kAKMajor, bool kBKMajor, typename LoadStage>
FASTCONV_DEVICE void mainloop(sptr<uint16_t> ring, int64_t k_tiles, LoadStage& load_stage,
                              int warp_m, int warp_n, int lane, Accumulators<Cfg>& acc) {
  constexpr int kStages = Cfg::Stages;
  static_assert(Cfg::kMath == Math::mma || (kAKMajor && kBKMajor), "ffma reads k-major tiles");
#pragma unroll
  for (int e = 0; e < Accumulators<Cfg>::kRows * Accumulators<Cfg>::kCols; ++e) acc.begin()[e] = 0.f;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit_group();  // empty groups too, so the wait count below stays exact
  }
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait_group<kStages - 2>();
    // Makes every thread's copies of slice kt visible, and frees the stage read at kt - 1.
    sync_threads();
    const int64_t next = kt + kStages - 1;
    if (next < k_tiles) load_stage(int(next % kStages), next);
    cp_async_commit_group();
    const sptr<uint16_t> a_tile = ring + int(kt % kStages) * Cfg::kStageElems;
    const sptr<uint16_t> b_tile = a_tile + Cfg::BM * Cfg::kSliceUnits;
    if constexpr (Cfg::kMath == Math::ffma)
      warp_ffma<Cfg>(a_tile, b_tile, warp_m, warp_n, lane, acc);
    else
      warp_mma<Cfg, T, kAKMajor, kBKMajor>(a_tile, b_tile, warp_m, warp_n, lane, acc.v);
  }
  cp_async_wait_all();
}

// The epilogue both kernels share: each of the lane's accumulators that lies inside the GEMM
// (m < m_limit, n < n_limit) goes to store(row, n, value), row = row_of(m) being worked out
// once per row of the lane's fragment.
template <class Cfg, typename RowOf, typename Store>
FASTCONV_DEVICE void store_accumulators(const Accumulators<Cfg>& acc, int warp_m, int warp_n, int lane,
                                        int64_t m_begin, int64_t n_begin, int64_t m_limit, int64_t n_limit,
                                        RowOf&& row_of, Store&& store) {
  using Acc = Accumulators<Cfg>;
#pragma unroll
  for (int i = 0; i < Acc::kRows; ++i) {
    const int64_t m = m_begin + Acc::row(i, warp_m, lane);
    if (m >= m_limit) continue;
    const int64_t row = row_of(m);
#pragma unroll
    for (int j = 0; j < Acc::kCols; ++j) {
      const int64_t n = n_begin + Acc::col(j, warp_n, lane);
      if (n >= n_limit) continue;
      store(row, n, acc.at(i, j));
    }
  }
}

template <class Cfg, typename T, int kVec>
FASTCONV_GLOBAL void FASTCONV_LAUNCH_BOUNDS(Cfg::kGatherBounds) gather_gemm_kernel(const GatherGemm p, gptr<const T> x, gptr<const T> w,
                                        const EpilogueArgs<T> epilogue, gptr<T> y) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, kSliceUnits = Cfg::kSliceUnits, kStages = Cfg::Stages;
  constexpr bool kFfma = Cfg::kMath == Math::ffma;
  // kSliceUnits and kVec count 2-byte units; a float element is two of them.
  constexpr int kUnits = int(sizeof(T)) / 2, kSliceElems = kSliceUnits / kUnits;
  static_assert(kUnits == 1 || kUnits == 2, "2-byte types, or float");
  static_assert(kFfma ? (kVec == 2 && kUnits == 2) : (kVec == 8 || kVec == 4),
                "mma: 16- or 8-byte copies along k; ffma: one float per copy");
  // Copy geometry: each thread copies kVec units at k column k_col (in elements) of rows
  // row0 + i * kRowStep, the same columns for the whole mainloop.
  //   mma: chunks of kVec units across the slice, k-contiguous tiles.
  //   ffma: a warp's lanes take 8 k columns x 4 rows (each row's 8 floats one 32-byte sector),
  //         stored k-major, where the swizzle puts the 32 lanes' words in 32 banks.
  constexpr int kChunksPerRow = kFfma ? kSliceElems : kSliceUnits / kVec;
  constexpr int kRowStep = Cfg::kThreads / kChunksPerRow;
  constexpr int kAIters = BM / kRowStep, kBIters = BN / kRowStep, kBytes = 2 * kVec;
  static_assert(Cfg::kThreads % kChunksPerRow == 0 && BM % kRowStep == 0 && BN % kRowStep == 0,
                "a thread keeps one chunk column of its rows for the whole mainloop");
  static_assert(!kFfma || (kSliceElems == 16 && Cfg::kThreads == 128), "ffma lane map: 16 k x 8 rows per pass");
  FASTCONV_SHARED(uint16_t, ring, kStages * Cfg::kStageElems);

  const int tid = int(thread_index().x), lane = tid % 32, warp = tid / 32;
  const int warp_m = warp % Cfg::kWarpsM, warp_n = warp / Cfg::kWarpsM;
  const int64_t m_begin = int64_t(block_index().x) * BM, n_begin = int64_t(block_index().y) * BN;
  const int64_t g = block_index().z;
  const int64_t M = p.rows(), reduction = p.reduction(), pixels_per_image = p.OH * p.OW;
  const int k_col = kFfma ? tid % 8 + 8 * (tid / 64) : (tid % kChunksPerRow) * (kVec / kUnits);
  const int row0 = kFfma ? (tid / 8) % 4 + 4 * ((tid / 32) % 2) : tid / kChunksPerRow;
  // Where row `row` of a tile `width` elements wide keeps this thread's copy.
  auto tile_offset = [&](int row, int width) {
    if constexpr (kFfma)
      return swizzle_mn_contiguous(k_col, 2 * row, 2 * width);
    else
      return swizzle_k_contiguous(row, k_col * kUnits);
  };

  // The image pixel each of this thread's A rows starts at, fixed for the whole mainloop, in
  // 32 bits (can_implement: N * H * W and the image coordinates fit; offsets into x take 64).
  // A row past M starts far above the image (kOutside), so that its bounds test fails without
  // a flag register of its own; likewise a filter row past Kg has b_row = -1.
  constexpr int kOutside = -(1 << 30);
  int a_pixel[kAIters], a_ih[kAIters], a_iw[kAIters];
#pragma unroll
  for (int i = 0; i < kAIters; ++i) {
    const int64_t m = m_begin + row0 + i * kRowStep;
    const int64_t mm = m < M ? m : 0, img = mm / pixels_per_image, rest = mm % pixels_per_image;
    a_pixel[i] = int(img * p.H * p.W);
    a_ih[i] = m < M ? int((rest / p.OW) * p.stride_h - p.pad_top) : kOutside;
    a_iw[i] = int((rest % p.OW) * p.stride_w - p.pad_left);
  }
  const int64_t a_channel = g * p.Cg;
  int b_row[kBIters];  // the filter has under 2^31 elements (can_implement)
#pragma unroll
  for (int j = 0; j < kBIters; ++j) {
    const int64_t n = n_begin + row0 + j * kRowStep;
    b_row[j] = n < p.Kg ? int((g * p.Kg + n) * reduction) : -1;
  }

  auto load_stage = [&](int stage, int64_t k_tile) {
    const sptr<uint16_t> a_tile = ring + stage * Cfg::kStageElems, b_tile = a_tile + BM * kSliceUnits;
    const int64_t k = k_tile * kSliceElems + k_col;
    const bool k_ok = k < reduction;
    const GatherGemm::Tap tap = k_ok ? p.tap(k) : GatherGemm::Tap{0, 0, 0};
    const int c = tap.c, r_off = tap.r_off, s_off = tap.s_off;
#pragma unroll
    for (int i = 0; i < kAIters; ++i) {
      const int ih = a_ih[i] + r_off, iw = a_iw[i] + s_off;
      const bool ok = k_ok && ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
      // A copy that reads nothing still names a valid address: the tensor's start.
      const gptr<const T> src =
          ok ? x + (int64_t(a_pixel[i] + ih * int(p.W) + iw) * p.Ctot + a_channel + c) : x;
      cp_async(a_tile + tile_offset(row0 + i * kRowStep, BM), src, kBytes, ok ? kBytes : 0);
    }
#pragma unroll
    for (int j = 0; j < kBIters; ++j) {
      const bool ok = b_row[j] >= 0 && k_ok;
      const gptr<const T> src = ok ? w + (int64_t(b_row[j]) + k) : w;
      cp_async(b_tile + tile_offset(row0 + j * kRowStep, BN), src, kBytes, ok ? kBytes : 0);
    }
  };

  using Acc = Accumulators<Cfg>;
  Acc acc;
  mainloop<Cfg, T, kFfma, kFfma>(ring, (reduction + kSliceElems - 1) / kSliceElems, load_stage,
                                 warp_m, warp_n, lane, acc);

  // Epilogue: bias, residual and activation in float, one rounding, straight to the NHWC
  // output.
  store_accumulators<Cfg>(
      acc, warp_m, warp_n, lane, m_begin, n_begin, M, p.Kg,
      [&](int64_t m) {
        const int64_t img = m / pixels_per_image, rest = m % pixels_per_image;
        const int64_t yh = (rest / p.OW) * p.out_stride_h + p.out_offset_h;
        const int64_t yw = (rest % p.OW) * p.out_stride_w + p.out_offset_w;
        return ((img * p.YH + yh) * p.YW + yw) * p.Ktot + g * p.Kg;
      },
      [&](int64_t y_row, int64_t n, float v) {
        y[y_row + n] = static_cast<T>(epilogue(v, g * p.Kg + n, y_row + n));
      });
}

template <class Cfg, typename T, int kVec>
FASTCONV_GLOBAL void FASTCONV_LAUNCH_BOUNDS(Cfg::kWgradBounds) wgrad_kernel(const WgradGemm p, gptr<const T> x, gptr<const T> dy,
                                  gptr<float> workspace, gptr<T> dw) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, kSliceUnits = Cfg::kSliceUnits, kStages = Cfg::Stages;
  // A float slice holds half the pixels of a 2-byte one in the same bytes: rows of BM (BN)
  // floats are 2 * BM (2 * BN) 2-byte units wide.
  constexpr int kUnits = int(sizeof(T)) / 2, kSliceRows = kSliceUnits / kUnits;
  constexpr int kAWidth = BM * kUnits, kBWidth = BN * kUnits;
  constexpr int kAChunks = kAWidth / kVec, kARowsPerPass = Cfg::kThreads / kAChunks;
  constexpr int kBChunks = kBWidth / kVec, kBRowsPerPass = Cfg::kThreads / kBChunks;
  constexpr int kAIters = kSliceRows / kARowsPerPass, kBIters = kSliceRows / kBRowsPerPass, kBytes = 2 * kVec;
  static_assert(kVec == 8 || kVec == 4 || (kVec == 2 && kUnits == 2), "16-, 8- or (float) 4-byte copies");
  static_assert(kUnits == 1 || kUnits == 2, "2-byte types, or float");
  static_assert(Cfg::kMath == Math::mma || kUnits == 2, "ffma takes float");
  static_assert(Cfg::kThreads % kAChunks == 0 && Cfg::kThreads % kBChunks == 0 &&
                    kSliceRows % kARowsPerPass == 0 && kSliceRows % kBRowsPerPass == 0,
                "a thread keeps one chunk column of its rows for the whole mainloop");
  FASTCONV_SHARED(uint16_t, ring, kStages * Cfg::kStageElems);

  const int tid = int(thread_index().x), lane = tid % 32, warp = tid / 32;
  const int warp_m = warp % Cfg::kWarpsM, warp_n = warp / Cfg::kWarpsM;
  const int64_t m_begin = int64_t(block_index().x) * BM, n_begin = int64_t(block_index().y) * BN;
  const int64_t g = block_index().z % p.groups, split = block_index().z / p.groups;
  const int64_t columns = p.columns(), pixels = p.pixels(), pixels_per_image = p.P * p.Q;
  const int64_t pixel_begin = split * p.pixels_per_split;
  const int64_t pixel_end = pixel_begin + p.pixels_per_split < pixels ? pixel_begin + p.pixels_per_split : pixels;

  // A (dy): this thread's chunk of filters, the same for every pixel.
  const int a_col = (tid % kAChunks) * kVec, a_row0 = tid / kAChunks;  // a_col in 2-byte units
  const int64_t a_filter = m_begin + a_col / kUnits;
  const bool a_col_ok = a_filter < p.Kg;
  const int64_t a_channel = g * p.Kg + (a_col_ok ? a_filter : 0);
  // B (x): this thread's chunk of (r, s, c) columns, the same for every pixel.
  const int b_col = (tid % kBChunks) * kVec, b_row0 = tid / kBChunks;
  const int64_t column = n_begin + b_col / kUnits;
  const bool b_col_ok = column < columns;
  const int64_t cc = b_col_ok ? column : 0, c = cc % p.Cg, rs = cc / p.Cg;
  const int64_t h_tap = (rs / p.S) * p.dil_h - p.pad_top, w_tap = (rs % p.S) * p.dil_w - p.pad_left;
  const int64_t b_channel = g * p.Cg + c;

  auto load_stage = [&](int stage, int64_t k_tile) {
    const sptr<uint16_t> a_tile = ring + stage * Cfg::kStageElems, b_tile = a_tile + kSliceUnits * BM;
    const int64_t first = pixel_begin + k_tile * kSliceRows;
#pragma unroll
    for (int i = 0; i < kAIters; ++i) {
      const int row = a_row0 + i * kARowsPerPass;
      const int64_t pixel = first + row;
      const bool ok = a_col_ok && pixel < pixel_end;
      const gptr<const T> src = ok ? dy + (pixel * p.Ktot + a_channel) : dy;
      cp_async(a_tile + swizzle_mn_contiguous(row, a_col, kAWidth), src, kBytes, ok ? kBytes : 0);
    }
#pragma unroll
    for (int j = 0; j < kBIters; ++j) {
      const int row = b_row0 + j * kBRowsPerPass;
      const int64_t pixel = first + row;
      bool ok = b_col_ok && pixel < pixel_end;
      int64_t offset = 0;
      if (ok) {
        const int64_t img = pixel / pixels_per_image, rest = pixel % pixels_per_image;
        const int64_t ih = (rest / p.Q) * p.stride_h + h_tap, iw = (rest % p.Q) * p.stride_w + w_tap;
        ok = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
        offset = ((img * p.H + ih) * p.W + iw) * p.Ctot + b_channel;
      }
      const gptr<const T> src = ok ? x + offset : x;
      cp_async(b_tile + swizzle_mn_contiguous(row, b_col, kBWidth), src, kBytes, ok ? kBytes : 0);
    }
  };

  using Acc = Accumulators<Cfg>;
  Acc acc;
  const int64_t k_tiles = pixel_end > pixel_begin ? (pixel_end - pixel_begin + kSliceRows - 1) / kSliceRows : 0;
  mainloop<Cfg, T, true, true>(ring, k_tiles, load_stage, warp_m, warp_n, lane, acc);

  // Partial sums of this split, [split][g*Kg + m][column], the layout of dw itself; with one
  // split, dw itself, rounded once.
  const int64_t split_base = split * p.groups * p.Kg * columns;
  const bool single = p.splits == 1;
  store_accumulators<Cfg>(
      acc, warp_m, warp_n, lane, m_begin, n_begin, p.Kg, columns,
      [&](int64_t m) { return split_base + (g * p.Kg + m) * columns; },
      [&](int64_t row, int64_t n, float v) {
        if (single)
          dw[row + n] = static_cast<T>(v);
        else
          workspace[row + n] = v;
      });
}

// dw[i] = the splits' partial sums added in split order: the same bits on every run.
template <typename T>
FASTCONV_GLOBAL void reduce_splits_kernel(gptr<const float> workspace, int64_t splits, int64_t count,
                                          gptr<T> dw) {
  FASTCONV_GRID_STRIDE_LOOP(i, count) {
    float sum = 0.f;
    for (int64_t s = 0; s < splits; ++s) {
      const float v = workspace[s * count + i];
      sum += v;
    }
    dw[i] = static_cast<T>(sum);
  }
}

}  // namespace fastconv::cuda::igemm
