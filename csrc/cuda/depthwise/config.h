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

#include "common/macros.h"
#include "cuda/common/launch_shape.h"

#include <cstdint>

namespace fastconv::cuda::depthwise {

// fprop and dgrad CTAs each SM must hold (__launch_bounds__): memory-bound kernels hide HBM
// latency with warps in flight; 3 blocks of 256 threads is 24 warps, at most 85 registers.
constexpr int kMinBlocksPerSM = 3;

struct NhwcConfig {
  static constexpr int kThreads = cuda::kThreads;
  static constexpr int kPixelsPerThread = 2;  // fprop: consecutive output columns per thread
  static_assert(kThreads % 32 == 0, "whole warps");
  static_assert(kPixelsPerThread >= 1 && kPixelsPerThread <= 8, "accumulators in registers");
};

struct NchwConfig {
  static constexpr int kThreads = cuda::kThreads;
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
// window of in_rows x in_cols elements, in_stride apart in shared memory. in_stride is in_cols
// where a tile row spans whole warps (cols a multiple of 32); on narrower tiles, where a
// warp's lanes span several output rows, it is the first stride >= in_cols congruent to
// cols x (column step) modulo 32, so the lanes' reads fall in 32 distinct banks as if the
// rows were packed (28-wide planes: stride 60 for a 30-column window).
struct PlaneTile {
  int rows, cols;
  int in_rows, in_cols;
  int in_stride;
};

// The tiles of an [N][planes][rows][cols] output, one per block item b: tile column fastest,
// then tile row, plane, image.
struct PlaneTiles {
  int64_t planes, tiles_rows, tiles_cols;
  FASTCONV_HD PlaneTiles(const PlaneTile& tile, int64_t planes_, int64_t rows, int64_t cols)
      : planes(planes_), tiles_rows((rows + tile.rows - 1) / tile.rows),
        tiles_cols((cols + tile.cols - 1) / tile.cols) {}
  FASTCONV_HD int64_t count(int64_t N) const { return N * planes * tiles_rows * tiles_cols; }
  // b -> (first row, first column, plane, image) of its tile.
  FASTCONV_HD void item(int64_t b, const PlaneTile& tile, int64_t& row0, int64_t& col0,
                            int64_t& plane, int64_t& n) const {
    col0 = (b % tiles_cols) * tile.cols;
    row0 = ((b / tiles_cols) % tiles_rows) * tile.rows;
    plane = (b / (tiles_cols * tiles_rows)) % planes;
    n = b / (tiles_cols * tiles_rows * planes);
  }
};

}  // namespace fastconv::cuda::depthwise
