// The Hopper mainloop (the collective): the producer warpgroup's loads and the consumer
// warpgroups' wgmma, both over one MbarrierRing. Device code only.
//
// GEMM names (gemm_params.h GatherGemm): row m of A is an output pixel (img, oh, ow), column k
// = (r, s, c) with c fastest, gathered from the NHWC x; row n of B is filter g * Kg + n, KRSC;
// both K-major in shared memory (KMajorSwizzle128), 16-byte chunks of 8 consecutive c.
#pragma once

#include "cuda/hopper/config.h"
#include "cuda/hopper/pipeline.cuh"
#include "cuda/implicit_gemm/gemm_params.h"

#include <cstdint>

namespace fastconv::cuda::hopper {

using igemm::GatherGemm;

// Where a block's tile lies: rows m_begin.., columns n_begin.. of group g.
struct TileCoord {
  int64_t m_begin, n_begin, g;
};

// What the producer knows of an A row for the whole mainloop: the first pixel of its image
// and the top-left input coordinate of its window (a row past M: far above the image).
struct alignas(16) ARow {
  int32_t pixel, ih, iw, unused;
};

template <class Cfg, typename T>
struct Producer {
  static constexpr int kChunksPerRow = Cfg::BK / 8;                 // 16-byte chunks of a row
  static constexpr int kRowStep = 128 / kChunksPerRow;              // rows apart a thread's chunks are
  static constexpr int kARows = Cfg::BM / kRowStep, kBRows = Cfg::BN / kRowStep;
  static constexpr int32_t kOutside = -(1 << 30);

  // The tables, one entry per A and B row, by the producer's 128 threads (then a named
  // barrier among them).
  FASTCONV_DEVICE static void tables(const GatherGemm& p, const TileCoord& t, int tid, sptr<ARow> a_rows,
                                     sptr<int32_t> b_rows) {
    const int64_t M = p.rows(), per_image = p.OH * p.OW;
    for (int row = tid; row < Cfg::BM; row += 128) {
      const int64_t m = t.m_begin + row;
      const int64_t mm = m < M ? m : 0, img = mm / per_image, rest = mm % per_image;
      ARow e;
      e.pixel = int32_t(img * p.H * p.W);
      e.ih = m < M ? int32_t((rest / p.OW) * p.stride_h - p.pad_top) : kOutside;
      e.iw = int32_t((rest % p.OW) * p.stride_w - p.pad_left);
      e.unused = 0;
      a_rows[row] = e;
    }
    for (int row = tid; row < Cfg::BN; row += 128) {
      const int64_t n = t.n_begin + row;
      const int32_t v = n < p.Kg ? int32_t((t.g * p.Kg + n) * p.reduction()) : -1;
      b_rows[row] = v;
    }
  }

  // One stage: this thread's chunks of A and B for k_tile, zero-filled outside the image or
  // past the reduction.
  FASTCONV_DEVICE static void load(const GatherGemm& p, const TileCoord& t, int tid, int64_t k_tile,
                                   sptr<uint8_t> a_tile, sptr<uint8_t> b_tile, sptr<const ARow> a_rows,
                                   sptr<const int32_t> b_rows, gptr<const T> x, gptr<const T> w) {
    const int chunk = tid % kChunksPerRow, row0 = tid / kChunksPerRow;
    const int64_t k = k_tile * Cfg::BK + chunk * 8, reduction = p.reduction();
    const bool k_ok = k < reduction;
    const GatherGemm::Tap tap = k_ok ? p.tap(k) : GatherGemm::Tap{0, 0, 0};
    const int c = tap.c, r_off = tap.r_off, s_off = tap.s_off;
    const int64_t a_channel = t.g * p.Cg + c;
#pragma unroll
    for (int i = 0; i < kARows; ++i) {
      const int row = row0 + i * kRowStep;
      const ARow e = a_rows[row];
      const int ih = e.ih + r_off, iw = e.iw + s_off;
      const bool ok = k_ok && ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
      // A copy that reads nothing still names a valid address: the tensor's start.
      const gptr<const T> src = ok ? x + (int64_t(e.pixel + ih * int(p.W) + iw) * p.Ctot + a_channel) : x;
      cp_async(a_tile + KMajorSwizzle128::chunk_offset(row, chunk), src, 16, ok ? 16 : 0);
    }
#pragma unroll
    for (int j = 0; j < kBRows; ++j) {
      const int row = row0 + j * kRowStep;
      const int32_t b = b_rows[row];
      const bool ok = b >= 0 && k_ok;
      const gptr<const T> src = ok ? w + (int64_t(b) + k) : w;
      cp_async(b_tile + KMajorSwizzle128::chunk_offset(row, chunk), src, 16, ok ? 16 : 0);
    }
  }
};

// A consumer warpgroup's part: its 64 rows of the tile, every stage's 64 k in four wgmma
// m64nBNk16, one group a stage with one group left in flight, the stage released once the
// group that read it has completed.
template <class Cfg, typename T>
struct Consumer {
  FASTCONV_DEVICE static void mma(MbarrierRing<Cfg::Stages> ring, int64_t k_tiles, uint32_t ring_address,
                                  int consumer, float (&acc)[Cfg::BN / 2]) {
    PipelineState s, previous;
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      ring.consumer_wait(s);
      const uint32_t a_tile = ring_address + uint32_t(s.index) * Cfg::kStageBytes + uint32_t(consumer) * 64 * 128;
      const uint32_t b_tile = ring_address + uint32_t(s.index) * Cfg::kStageBytes + Cfg::kATileBytes;
      wgmma_fence();
#pragma unroll
      for (int k16 = 0; k16 < Cfg::BK / 16; ++k16)
        wgmma_m64nNk16<T, Cfg::BN>(acc, KMajorSwizzle128::descriptor(a_tile, k16),
                                   KMajorSwizzle128::descriptor(b_tile, k16), kt > 0 || k16 > 0);
      wgmma_commit_group();
      // The group before this one has completed: its stage is free.
      wgmma_wait_group<1>();
      if (kt > 0) ring.consumer_release(previous);
      previous = s;
      s.template advance<Cfg::Stages>();
    }
    wgmma_wait_group<0>();
    if (k_tiles > 0) ring.consumer_release(previous);
  }
};

}  // namespace fastconv::cuda::hopper
