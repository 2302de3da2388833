// The Hopper (sm_90a) implicit-GEMM family's tile configurations and shared-memory layouts.
// Host and device both read this header; every constant its kernels use comes from here.
//
// A CTA computes a BM x BN tile of the gather GEMM (gemm_params.h) with three warpgroups:
// warpgroup 0 produces (cp.async gathers A from the NHWC activation and B from the KRSC
// filter into a Stages-deep ring of 128-byte-swizzled tiles), warpgroups 1 and 2 consume (each
// wgmma m64nBNk16 over 64 of the tile's rows, accumulators in registers), handing stages over
// full/empty mbarriers (pipeline.cuh). The reduction goes 64 16-bit elements (one 128-byte
// swizzle row) a stage.
#pragma once

#include "common/macros.h"
#include "cuda/common/launch_shape.h"

#include <cstdint>

namespace fastconv::cuda::hopper {

template <int BN_, int Stages_>
struct TileConfig {
  static constexpr int BM = 128, BN = BN_, BK = 64;  // BK: 16-bit elements of k a stage
  static constexpr int Stages = Stages_;
  static constexpr int kConsumers = 2;                // consumer warpgroups, 64 rows each
  static constexpr int kThreads = 128 * (1 + kConsumers);
  // Registers per thread after setmaxnreg: the producer needs few (its row tables are in
  // shared memory), the consumers hold BN / 2 accumulators each.
  static constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  // The producer keeps this many stages of copies in flight before it fences and signals
  // the oldest (pipeline.cuh): the most the ring allows, the consumers holding one stage.
  static constexpr int kCopiesInFlight = Stages - 2;
  static constexpr KernelBounds kBounds{kThreads, 1};

  static constexpr int kATileBytes = BM * BK * 2, kBTileBytes = BN * BK * 2;
  static constexpr int kStageBytes = kATileBytes + kBTileBytes;
  // The epilogue stages each consumer's 64 x BN float accumulators in the ring once the
  // mainloop is done, rows padded by 32 bytes: a half-warp's 8-byte fragment writes (4 rows x 4
  // column pairs) then start 32 bytes apart per row and fall in distinct banks.
  static constexpr int kStagedRowBytes = BN * 4 + 32;
  static constexpr int kRingBytes = Stages * kStageBytes;
  // After the ring: the producer's row tables (an int4 per A row, an int per B row) and the
  // barriers; 1024 bytes of slack to align the ring to the swizzle pattern.
  static constexpr int kATableBytes = BM * 16, kBTableBytes = BN * 4;
  static constexpr int kBarrierBytes = 2 * Stages * 8;
  static constexpr int kSharedBytes = 1024 + kRingBytes + kATableBytes + kBTableBytes + kBarrierBytes;

  static_assert(BN == 64 || BN == 128 || BN == 256, "wgmma m64nNk16 with N a multiple of 64 here");
  static_assert(BK * 2 == 128, "one stage's k is one 128-byte swizzle row");
  static_assert(kConsumers * 64 == BM, "each consumer warpgroup takes 64 rows");
  static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= 65536, "the SM's register file");
  static_assert(kProducerRegs % 8 == 0 && kConsumerRegs % 8 == 0 && kProducerRegs >= 24 && kConsumerRegs <= 256,
                "setmaxnreg takes multiples of 8 in [24, 256]");
  static_assert(kConsumers * 64 * kStagedRowBytes <= kRingBytes, "the epilogue's staging fits in the ring");
  static_assert(kSharedBytes <= 227 * 1024, "dynamic shared memory per block on sm_90");
  static_assert((BM * BK / 8) % 128 == 0 && (BN * BK / 8) % 128 == 0, "every producer thread copies whole chunks");
};

// The large dense layers: 128 x 256, 4 stages (192 KiB).
using Tile128x256 = TileConfig<256, 4>;
// Fewer output channels, or too few 128 x 256 tiles to fill the SMs: 128 x 128, 5 stages (160 KiB).
using Tile128x128 = TileConfig<128, 5>;
// At most 64 output channels a group (VGG's first block, ResNet's 56x56 stage), which would
// leave half of a 128-wide tile empty: 128 x 64, 6 stages (144 KiB). Its stage carries half
// the FLOPs a byte of the 128 x 128 tile's, so the deeper ring hides more of L2's latency.
using Tile128x64 = TileConfig<64, 6>;

// A K-major tile of 16-bit elements in wgmma's 128-byte swizzle (the PTX ISA's canonical
// K-major layout with a 128-byte swizzle; cute's Layout_K_SW128_Atom): each row (m of A, n of B)
// is the stage's 64 k, 128 bytes; 8 rows form a 1024-byte pattern in which 16-byte chunk c of
// row r is stored as chunk c ^ (r % 8); patterns follow one another along the rows (the
// descriptor's stride byte offset, 1024). The tile starts 1024-byte aligned, so the XOR is
// that of the address's bits 4-6 with its bits 7-9, as the tensor cores apply it.
struct KMajorSwizzle128 {
  static constexpr int kRowBytes = 128, kPatternBytes = 1024;
  // The byte offset from the tile's start of 16-byte chunk `chunk` (k 8 * chunk ..) of `row`.
  FASTCONV_HD static uint32_t chunk_offset(int row, int chunk) {
    return uint32_t(row) * kRowBytes + (uint32_t(chunk ^ (row & 7)) << 4);
  }
  // The descriptor of the 16 k starting at 16 * k16 (0..3) of the tile at shared address
  // `tile`: the start advances 32 bytes a step inside the row (the swizzle follows the
  // address), the stride byte offset is the pattern, the leading byte offset is unused (1).
  FASTCONV_HD static uint64_t descriptor(uint32_t tile, int k16) {
    const uint32_t start = tile + uint32_t(k16) * 32;
    return uint64_t((start >> 4) & 0x3FFFu) | (uint64_t(1) << 16) | (uint64_t(kPatternBytes >> 4) << 32) |
           (uint64_t(1) << 62);
  }
};

}  // namespace fastconv::cuda::hopper
