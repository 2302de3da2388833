// One warp through every tensor-core and async-copy wrapper in cuda/common/primitives.h:
// cp.async stages a 16x16 bf16 A (row-major) and an 8x16 bf16 B^T (B stored n-major, the
// "col" operand) into shared memory, ldmatrix.x4 and .x2 load the fragments, mma.sync
// m16n8k16 multiplies, and each lane stores its four accumulators where the PTX ISA places
// them. Device code only; the launcher is tensor_core_check.cu. Under nvcc this checks that
// the inline PTX assembles and, on a GPU, that it computes; under emulation, that the kernel
// and the emulated fragment layouts agree on a whole GEMM tile.
#pragma once

#include "cuda/common/launch.cuh"

#include <cstdint>

namespace fastconv::cuda::selftest {

// a: [16][16] bf16 bits, bt: [8][16] bf16 bits, d: [16][8] float.
FASTCONV_GLOBAL void tensor_core_check_kernel(gptr<const uint16_t> a, gptr<const uint16_t> bt,
                                              gptr<float> d) {
  FASTCONV_SHARED(uint16_t, a_tile, 16 * 16);
  FASTCONV_SHARED(uint16_t, b_tile, 8 * 16);
  const unsigned lane = thread_index().x;
  // 16-byte chunks: 32 of A (two per row), 16 of B^T.
  cp_async(a_tile + lane * 8, a + lane * 8, 16);
  if (lane < 16) cp_async(b_tile + lane * 8, bt + lane * 8, 16);
  cp_async_commit_group();
  cp_async_wait_group<0>();
  sync_threads();
  uint32_t af[4], bf[2];
  // Lane l names row l % 16 of A at column 8 * (l / 16): matrices (rows 0-7 | 8-15) x
  // (k 0-7 | 8-15) in the order mma takes a0..a3.
  ldmatrix_x4(af[0], af[1], af[2], af[3], a_tile + (lane % 16) * 16 + (lane / 16) * 8);
  // Lanes 0-15 name row l % 8 of B^T at column 8 * (l / 8): b0 (k 0-7), b1 (k 8-15).
  ldmatrix_x2(bf[0], bf[1], b_tile + (lane % 8) * 16 + ((lane / 8) % 2) * 8);
  const float c[4] = {0.f, 0.f, 0.f, 0.f};
  float acc[4];
  mma_m16n8k16_bf16(acc, af, bf, c);
  const unsigned row = lane / 4, col = 2 * (lane % 4);
  d[row * 8 + col] = acc[0];
  d[row * 8 + col + 1] = acc[1];
  d[(row + 8) * 8 + col] = acc[2];
  d[(row + 8) * 8 + col + 1] = acc[3];
}

}  // namespace fastconv::cuda::selftest
