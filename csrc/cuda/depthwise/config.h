// The depthwise family's configurations (C/groups == 1, any channel multiplier K/groups).
// Host and device both read this header; every constant a kernel uses comes from here.
//
//   channels_last (nhwc): threads over channels, so a warp's lanes read and write 32
//     consecutive channels of one pixel (one coalesced row); fprop: one thread per output
//     channel at kPixelsPerThread consecutive output columns, reusing each filter tap.
//   NCHW: a block computes a tile of one (n, channel) plane; the input tile and its halo are
//     staged in shared memory (kSharedBytes), then each thread computes up to
//     kOutputsPerThread outputs from it. The launcher shrinks the tile (rows first) until the
//     staged input fits; the algorithm takes nhwc instead when not even one output does.
//   wgrad: one block per (channel chunk, filter tap), a fixed-order shared-memory tree over
//     the block's pixel rows: no atomics, the same bits on every run.
#pragma once

#include <cstdint>

namespace fastconv::cuda::depthwise {

struct NhwcConfig {
  static constexpr int kThreads = 256;
  static constexpr int kPixelsPerThread = 2;  // fprop: consecutive output columns per thread
  static_assert(kThreads % 32 == 0, "whole warps");
  static_assert(kPixelsPerThread >= 1 && kPixelsPerThread <= 8, "accumulators in registers");
};

struct NchwConfig {
  static constexpr int kThreads = 256;
  static constexpr int kTileRows = 16;  // the largest output tile: kTileRows x kTileCols
  static constexpr int kTileCols = 32;
  static constexpr int kOutputsPerThread = 2;
  static constexpr int kSharedBytes = 16 * 1024;  // the staged input tile, in scalar_t
  static_assert(kTileRows * kTileCols <= kThreads * kOutputsPerThread,
                "every output of the largest tile has a thread slot");
  static_assert(kTileCols % 32 == 0, "a warp's lanes take consecutive columns of one row");
  static_assert(kSharedBytes <= 48 * 1024, "static shared memory");
};

// Block shape of the wgrad kernel: kChannels lanes over channels, kPixels rows over the
// N*P*Q pixels, summed by a tree over the rows.
template <int Channels, int Pixels>
struct WgradConfig {
  static constexpr int kChannels = Channels, kPixels = Pixels;
  static constexpr int kThreads = Channels * Pixels;
  static_assert((Pixels & (Pixels - 1)) == 0, "the tree halves the rows");
  static_assert(kThreads <= 1024 && kThreads % 32 == 0, "whole warps, one block");
};
// channels_last: a warp reads 32 consecutive channels of a pixel.
using WgradNhwc = WgradConfig<32, 8>;
// NCHW: a warp reads 32 consecutive pixels of one channel's plane.
using WgradNchw = WgradConfig<1, 256>;

// An NCHW block's tile, chosen by the launcher: rows x cols outputs, staged from an input
// window of in_rows x in_cols elements.
struct PlaneTile {
  int rows, cols;
  int in_rows, in_cols;
};

}  // namespace fastconv::cuda::depthwise
