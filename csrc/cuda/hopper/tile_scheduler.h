// Which tile a block of the Hopper family computes: one tile a block, m fastest, then n, the
// group outermost (blockIdx.z), so that a wave's blocks share B tiles of one group. Device code
// only.
#pragma once

#include "cuda/common/primitives.h"
#include "cuda/hopper/mainloop.cuh"

namespace fastconv::cuda::hopper {

struct TileScheduler {
  template <class Cfg>
  FASTCONV_DEVICE static TileCoord tile() {
    const Dim3 b = block_index();
    return {int64_t(b.x) * Cfg::BM, int64_t(b.y) * Cfg::BN, int64_t(b.z)};
  }
  // The grid for a gather GEMM of `groups` groups (host side).
  template <class Cfg>
  static Dim3 grid(const GatherGemm& p, int64_t groups) {
    return Dim3(unsigned((p.rows() + Cfg::BM - 1) / Cfg::BM), unsigned((p.Kg + Cfg::BN - 1) / Cfg::BN),
                unsigned(groups));
  }
};

}  // namespace fastconv::cuda::hopper
