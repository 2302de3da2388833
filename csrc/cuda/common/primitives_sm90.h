// The Hopper (sm_90a) constructs a kernel of cuda/hopper/ uses, beside those of primitives.h:
// mbarriers, cp.async's arrive on one, named barriers, the async-proxy fence, register
// reallocation between warpgroups, and wgmma with its shared-memory descriptors. Under nvcc
// each is inline PTX, which assembles only for sm_90a (the family's units are built for it
// alone, setup.py); under FASTCONV_SIMT each is the emulator's (csrc/simt/hopper.h, wgmma.h).
//
//   mbarrier_init(bar, count), mbarrier_arrive(bar), mbarrier_arrive_expect_tx(bar, bytes),
//   mbarrier_try_wait_parity(bar, parity), mbarrier_wait_parity(bar, parity)
//                                       mbarrier.{init,arrive,arrive.expect_tx,try_wait.parity}
//   cp_async_mbarrier_arrive_noinc(bar) cp.async.mbarrier.arrive.noinc
//   named_barrier_sync(id, n), named_barrier_arrive(id, n)   bar.sync / bar.arrive id, n
//   fence_proxy_async()                 fence.proxy.async.shared::cta
//   setmaxnreg_inc<N>(), setmaxnreg_dec<N>()   setmaxnreg.{inc,dec}.sync.aligned.u32 N
//   wgmma_fence(), wgmma_commit_group(), wgmma_wait_group<N>()
//   wgmma_m64nNk16<T, N>(acc, desc_a, desc_b, accumulate)   wgmma.mma_async m64nNk16 f32 += T*T,
//                                       A and B from shared memory through their descriptors
//
// An mbarrier is a uint64_t in shared memory (sptr<uint64_t>). Inline PTX that reads or writes
// memory declares a "memory" clobber, as in primitives.h.
#pragma once

#include "cuda/common/primitives.h"

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <type_traits>

#if defined(FASTCONV_SIMT)

#include "simt/wgmma.h"

namespace fastconv::cuda {

using simt::cp_async_mbarrier_arrive_noinc;
using simt::fence_proxy_async;
using simt::mbarrier_arrive;
using simt::mbarrier_arrive_expect_tx;
using simt::mbarrier_init;
using simt::mbarrier_try_wait_parity;
using simt::mbarrier_wait_parity;
using simt::named_barrier_arrive;
using simt::named_barrier_sync;
using simt::wgmma_commit_group;
using simt::wgmma_fence;
template <int N>
void wgmma_wait_group() {
  simt::wgmma_wait_group(N);
}
template <unsigned N>
void setmaxnreg_inc() {
  simt::setmaxnreg(N);
}
template <unsigned N>
void setmaxnreg_dec() {
  simt::setmaxnreg(N);
}
// The window offset that a shared-memory descriptor's start address encodes.
template <typename T>
uint32_t shared_address(sptr<T> p) {
  return uint32_t(p.window_offset());
}
template <typename T, int N>
void wgmma_m64nNk16(float (&acc)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  static_assert(std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>, "wgmma takes bf16 or fp16 here");
  simt::wgmma_m64nNk16<N>(acc, desc_a, desc_b, accumulate,
                          std::is_same_v<T, c10::Half> ? simt::WgmmaType::f16 : simt::WgmmaType::bf16);
}

}  // namespace fastconv::cuda

#else  // nvcc, sm_90a

namespace fastconv::cuda {

template <typename T>
__device__ __forceinline__ uint32_t shared_address(T* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ uint64_t mbarrier_arrive(uint64_t* bar) {
  uint64_t state;
  asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1];\n" : "=l"(state) : "r"(shared_address(bar)) : "memory");
  return state;
}
__device__ __forceinline__ uint64_t mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  uint64_t state;
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 %0, [%1], %2;\n"
               : "=l"(state) : "r"(shared_address(bar)), "r"(bytes) : "memory");
  return state;
}
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done) : "r"(shared_address(bar)), "r"(parity) : "memory");
  return done != 0;
}
__device__ __forceinline__ void mbarrier_wait_parity(uint64_t* bar, uint32_t parity) {
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
}
__device__ __forceinline__ void cp_async_mbarrier_arrive_noinc(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(shared_address(bar)) : "memory");
}
__device__ __forceinline__ void named_barrier_sync(unsigned id, unsigned count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(unsigned id, unsigned count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
template <unsigned N>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <unsigned N>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_group() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

}  // namespace fastconv::cuda

#include "cuda/common/wgmma_sm90.inc"

#endif
