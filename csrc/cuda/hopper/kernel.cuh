// The Hopper gather-GEMM kernel: assigns each warpgroup its role and nothing else (the roles'
// work is in mainloop.cuh and epilogue.cuh, the ring in pipeline.cuh). Device code only; the
// launcher is launch.cuh.
//
// Shared memory (dynamic, the ring aligned to the 1024-byte swizzle pattern):
//   [ring: Stages x (A 128 x 64 | B BN x 64), 128-byte swizzled] [A row table] [B row table]
//   [full barriers] [empty barriers]
#pragma once

#include "cuda/hopper/epilogue.cuh"
#include "cuda/hopper/mainloop.cuh"
#include "cuda/hopper/tile_scheduler.h"

namespace fastconv::cuda::hopper {

enum class Role { producer, consumer };

FASTCONV_DEVICE Role role_of(int warpgroup) { return warpgroup == 0 ? Role::producer : Role::consumer; }

template <class Cfg, typename T>
FASTCONV_GLOBAL void FASTCONV_LAUNCH_BOUNDS(Cfg::kBounds)
    gather_gemm_kernel(const GatherGemm p, gptr<const T> x, gptr<const T> w, const EpilogueArgs<T> epilogue, gptr<T> y) {
#if defined(FASTCONV_SIMT) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
  FASTCONV_DYNAMIC_SHARED(uint8_t, smem);
  // The ring starts at the first 1024-byte boundary of the window.
  const uint32_t base = shared_address(smem);
  const sptr<uint8_t> ring = smem + int((1024 - base % 1024) % 1024);
  const sptr<ARow> a_rows = shared_as<ARow>(ring + Cfg::kRingBytes);
  const sptr<int32_t> b_rows = shared_as<int32_t>(ring + Cfg::kRingBytes + Cfg::kATableBytes);
  const sptr<uint64_t> barriers = shared_as<uint64_t>(ring + Cfg::kRingBytes + Cfg::kATableBytes + Cfg::kBTableBytes);
  const MbarrierRing<Cfg::Stages> ring_barriers{barriers, barriers + Cfg::Stages};

  const int tid = int(thread_index().x), warpgroup = tid / 128, wg_tid = tid % 128;
  const TileCoord t = TileScheduler::tile<Cfg>();
  const int64_t k_tiles = (p.reduction() + Cfg::BK - 1) / Cfg::BK;
  // Every producer thread arrives on a full barrier once a stage, every consumer thread on an empty one.
  if (tid == 0) ring_barriers.init(128, 128 * Cfg::kConsumers);
  sync_threads();

  if (role_of(warpgroup) == Role::producer) {
    setmaxnreg_dec<Cfg::kProducerRegs>();
    Producer<Cfg, T>::tables(p, t, wg_tid, a_rows, b_rows);
    named_barrier_sync(4, 128);  // the tables, before any thread reads another's rows
    CpAsyncProducer<Cfg::Stages, Cfg::kCopiesInFlight> producer{ring_barriers, {}, {}};
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      producer.acquire();
      const sptr<uint8_t> stage = ring + producer.issue.index * Cfg::kStageBytes;
      Producer<Cfg, T>::load(p, t, wg_tid, kt, stage, stage + Cfg::kATileBytes, a_rows, b_rows, x, w);
      producer.issued();
    }
    producer.drain();
  } else {
    setmaxnreg_inc<Cfg::kConsumerRegs>();
    const int consumer = warpgroup - 1;
    float acc[Cfg::BN / 2];
#pragma unroll
    for (int i = 0; i < Cfg::BN / 2; ++i) acc[i] = 0.f;
    Consumer<Cfg, T>::mma(ring_barriers, k_tiles, shared_address(ring), consumer, acc);
    StagedEpilogue<Cfg, T>::store(p, t, consumer, wg_tid, acc, ring, epilogue, y);
  }
#endif
}

}  // namespace fastconv::cuda::hopper
