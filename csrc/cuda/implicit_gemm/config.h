// The implicit-GEMM family's tile configurations and shared-memory layouts. Host and device
// both read this header; every constant a kernel uses comes from a config checked here.
//
// A CTA computes a BM x BN tile of C with 4 warps in a 2 x 2 grid, each warp a WM x WN
// sub-tile, over slices of the reduction (kSliceUnits 2-byte units each) that cp.async brings into a Stages-deep ring
// of shared-memory buffers. The warp's products are m16n8k16 tensor-core tiles (Math::mma), or
// exact float32 FFMA with each lane an 8 x 4 block of C (Math::ffma).
#pragma once

#include "common/macros.h"
#include "cuda/common/launch_shape.h"

#include <cstdint>

namespace fastconv::cuda::igemm {

enum class Math { mma, ffma };

// kMinAlignment_: the narrowest copy the configuration is built for (16, 8 or 4 bytes); 8-byte
// copies double a thread's copies per stage, which the 128 x 128 tile has no registers for.
template <int BM_, int BN_, int Stages_, int kMinAlignment_, Math kMath_ = Math::mma>
struct TileConfig {
  static constexpr int BM = BM_, BN = BN_, Stages = Stages_;
  // The reduction per stage, in 2-byte units (shared memory is laid out in them whatever the
  // dtype): 32 k of bf16 or fp16, 16 of float.
  static constexpr int kSliceUnits = 32;
  static constexpr int kMinAlignment = kMinAlignment_;
  static constexpr Math kMath = kMath_;
  static constexpr int kWarpsM = 2, kWarpsN = 2, kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int WM = BM / kWarpsM, WN = BN / kWarpsN;
  static constexpr int MI = WM / 16, NI = WN / 8;  // mma tiles per warp
  // ffma: lanes in a 4 x 8 grid, each two 4-row blocks WM / 2 apart by one 4-column block, so
  // that the lanes' 16-byte shared reads of a k row cover whole 64- and 128-byte spans.
  static constexpr int kLanesM = 4, kLanesN = 8, kThreadM = 8, kThreadN = 4;
  // The CTAs per SM that each kernel's registers must allow (__launch_bounds__); 1 leaves it
  // to the compiler. ffma hides latency by warps rather than by wide tensor-core steps: 4 CTAs
  // (128 registers), which it fits without spilling. The 64 x 64 gather GEMM fits 5 (96);
  // its wgrad, with more addressing per copy, spills there and is left alone.
  static constexpr int kGatherMinBlocks = kMath == Math::ffma ? 4 : BM == 64 ? 5 : 1;
  static constexpr int kWgradMinBlocks = kMath == Math::ffma ? 4 : 1;
  static constexpr KernelBounds kGatherBounds{kThreads, kGatherMinBlocks};
  static constexpr KernelBounds kWgradBounds{kThreads, kWgradMinBlocks};
  // 2-byte units of one stage's A and B tiles, and of the whole ring.
  static constexpr int kStageElems = (BM + BN) * kSliceUnits;
  static constexpr int kSharedBytes = Stages * kStageElems * 2;

  static_assert(kMath == Math::ffma || (BM % (16 * kWarpsM) == 0 && BN % (16 * kWarpsN) == 0),
                "each warp takes whole 16-row A and 16-column B ldmatrix.x4 loads");
  static_assert(kMath == Math::mma || (WM == kLanesM * kThreadM && WN == kLanesN * kThreadN),
                "ffma: the lanes' blocks cover the warp's tile once");
  static_assert(kMath == Math::mma || kMinAlignment == 4, "ffma copies one float at a time");
  static_assert(BM >= 64 && BN >= 64,
                "the k-major (wgrad) layout swizzles over 8 units of 16 bytes per row");
  static_assert(kMinAlignment == 16 || kMinAlignment == 8 || kMinAlignment == 4, "16-, 8- or 4-byte copies");
  static_assert(Stages >= 2 && Stages <= 4, "the ring needs one stage loading beside one in use");
  static_assert(kSharedBytes <= 48 * 1024,
                "static shared memory: raise it with a dynamic allocation first");
  static_assert((BM * kSliceUnits / 8) % kThreads == 0 && (BN * kSliceUnits / 8) % kThreads == 0,
                "every thread issues the same number of 16-byte copies per stage");
};

// Large layers (many 128 x 128 tiles per SM): 128 x 128 per CTA, 48 KiB of shared memory.
using Tile128x128 = TileConfig<128, 128, 3, 16>;
// Small M or N (late ResNet stages, few output channels, batch 1): 64 x 64 per CTA, 4 stages.
using Tile64x64 = TileConfig<64, 64, 4, 8>;
// Exact float32 (TF32 not allowed): FFMA on the 64 x 64 tile, 16 floats of k per stage.
using TileFfma64x64 = TileConfig<64, 64, 4, 4, Math::ffma>;

// float wgrad reads its k-major TF32 fragments one word at a time, 6 more live registers a
// fragment pair than ldmatrix: the 128 x 128 tile's accumulators leave no room for them
// (255 registers and a stack frame), so float wgrad is built for the 64 x 64 tile only.
template <class Cfg>
constexpr bool kTf32Wgrad = Cfg::BM <= 64;

// Shared-memory offsets, in 2-byte elements, with 16-byte units XOR-swizzled so that the
// eight rows an ldmatrix phase reads, and the rows a quarter-warp's 16-byte cp.async stores
// write, fall in distinct bank groups.
//
// k-contiguous tiles (rows are m or n, kSliceUnits = 32 two-byte elements = 4 units = 64 bytes per row): two
// rows share a 128-byte line, so the unit is XORed with (row / 2) % 4.
FASTCONV_HD int swizzle_k_contiguous(int row, int k) {
  return row * 32 + ((((k >> 3) ^ (row >> 1)) & 3) << 3) + (k & 7);
}
// mn-contiguous tiles (rows are k, `width` >= 64 elements per row): each row spans at least
// one 128-byte line, so the unit is XORed with row % 8.
FASTCONV_HD int swizzle_mn_contiguous(int row, int col, int width) {
  return row * width + ((((col >> 3) ^ row) & 7) | ((col >> 3) & ~7)) * 8 + (col & 7);
}

}  // namespace fastconv::cuda::igemm
