// The Hopper family's epilogue: a consumer warpgroup's 64 x BN float accumulators, staged row by
// row in shared memory (the ring, free once both consumers' mainloops are done), then read back
// 8 channels at a time, the epilogue (bias, residual, activation) applied in float, rounded once
// and written to the NHWC output as one 16-byte store. Staging the floats rather than the rounded
// values keeps the epilogue out of the pass that holds all BN / 2 accumulators live: with the
// bias there, the 128 x 256 consumer spilled.
// Device code only.
#pragma once

#include "cuda/common/launch.cuh"
#include "cuda/hopper/config.h"
#include "cuda/hopper/mainloop.cuh"

#include <cstdint>

namespace fastconv::cuda::hopper {

// 16 bytes of the staging, one vector access.
struct alignas(16) Float4 {
  float v[4];
};
struct alignas(8) Float2 {
  float v[2];
};

template <class Cfg, typename T>
struct StagedEpilogue {
  // Named barriers: 1 for both consumer warpgroups (the ring becomes the staging area), 2 and 3
  // for each one's staging.
  static constexpr unsigned kConsumersBarrier = 1, kStagedBarrier = 2;

  FASTCONV_DEVICE static void store(const GatherGemm& p, const TileCoord& t, int consumer, int tid,
                                    const float (&acc)[Cfg::BN / 2], sptr<uint8_t> ring, const EpilogueArgs<T>& epilogue,
                                    gptr<T> y) {
    named_barrier_sync(kConsumersBarrier, 128 * Cfg::kConsumers);
    const sptr<uint8_t> staged = ring + consumer * 64 * Cfg::kStagedRowBytes;
    // The wgmma D fragment: thread tid of the warpgroup holds, for each n8 block j, rows
    // 16 * warp + lane / 4 and + 8, columns 8 j + 2 (lane % 4) and + 1.
    const int warp = tid / 32, lane = tid % 32;
#pragma unroll
    for (int i = 0; i < Cfg::BN / 2; i += 2) {
      const int row = 16 * warp + lane / 4 + 8 * ((i % 4) / 2);
      const int col = 8 * (i / 4) + 2 * (lane % 4);
      shared_as<Float2>(staged + row * Cfg::kStagedRowBytes + col * 4)[0] = Float2{{acc[i], acc[i + 1]}};
    }
    named_barrier_sync(kStagedBarrier + consumer, 128);
    const int64_t M = p.rows(), per_image = p.OH * p.OW;
    constexpr int kChunksPerRow = Cfg::BN / 8;
#pragma unroll 2
    for (int q = tid; q < 64 * kChunksPerRow; q += 128) {
      const int row = q / kChunksPerRow, cc = q % kChunksPerRow;
      const int64_t m = t.m_begin + 64 * consumer + row, n = t.n_begin + cc * 8;
      if (m >= M || n >= p.Kg) continue;
      const sptr<uint8_t> from = staged + row * Cfg::kStagedRowBytes + cc * 32;
      // A 16-byte load serves 8 lanes a wavefront; 8 chunks 32 bytes apart span 256 bytes, so
      // reading every low half first would hit each bank twice. The upper four lanes of each 8
      // read their high half first: the 8 first loads then cover all 32 banks once.
      const int first = (cc >> 2) & 1;
      const Float4 a = shared_as<const Float4>(from + 16 * first)[0];
      const Float4 b = shared_as<const Float4>(from + 16 * (1 - first))[0];
      const Float4 lo = first ? b : a, hi = first ? a : b;
      const float sums[8] = {lo.v[0], lo.v[1], lo.v[2], lo.v[3], hi.v[0], hi.v[1], hi.v[2], hi.v[3]};
      // Two outputs to a word, the lower channel in the low half (little-endian, as memory holds
      // them). All 8 channels are the group's: can_implement asks for 16-byte channel runs.
      const int64_t img = m / per_image, rest = m % per_image;
      const int64_t yh = (rest / p.OW) * p.out_stride_h + p.out_offset_h;
      const int64_t yw = (rest % p.OW) * p.out_stride_w + p.out_offset_w;
      const int64_t at = ((img * p.YH + yh) * p.YW + yw) * p.Ktot + t.g * p.Kg + n;
      const int64_t channel = t.g * p.Kg + n;
      uint32_t words[4];
#pragma unroll
      for (int c = 0; c < 8; c += 2) {
        const T even = static_cast<T>(epilogue(sums[c], channel + c, at + c));
        const T odd = static_cast<T>(epilogue(sums[c + 1], channel + c + 1, at + c + 1));
        words[c / 2] = uint32_t(even.x) | (uint32_t(odd.x) << 16);
      }
      store_global_16(y + at, words);
    }
  }
};

}  // namespace fastconv::cuda::hopper
