// Everything a CUDA kernel of fastconv uses that is not plain C++, in one place, so that each
// kernel source compiles twice: with nvcc for the GPU, and with the host compiler against the
// emulation layer (csrc/simt/, FASTCONV_SIMT=1) for the tests. Under nvcc each name is the real
// CUDA construct; under FASTCONV_SIMT it is the emulator's, which checks every access.
//
//   FASTCONV_GLOBAL / FASTCONV_DEVICE   __global__ / __device__ __forceinline__
//   gptr<T>                             a pointer into global memory (T*; emulated: with bounds)
//   thread_index(), block_index(),      threadIdx, blockIdx, blockDim, gridDim
//   block_size(), grid_size()
//   sync_threads()                      __syncthreads()
//   FASTCONV_SHARED(T, name, n)         __shared__ T name[n]
//   FASTCONV_DYNAMIC_SHARED(T, name)    extern __shared__ T name[] (the launch's shared_bytes)
//   sptr<T>                             a pointer into shared memory (T*; emulated: with bounds)
//   shared_as<U>(p), global_as<U>(p)    reinterpret_cast<U*>(p) of a shared (global) pointer
//                                       (emulated: the same bounds, seen as U)
//   store_global_16(p, words)           st.global.v4.b32: 4 32-bit words to a 16-byte-aligned p
//                                       in one store (a struct or uint4 copy became four)
//   atomic_add(p, v)                    atomicAdd(p, v)
//   shfl_sync, shfl_up_sync,            __shfl_sync, __shfl_up_sync, __shfl_down_sync,
//   shfl_down_sync, shfl_xor_sync,      __shfl_xor_sync, __ballot_sync, __any_sync,
//   ballot_sync, any_sync, all_sync,    __all_sync, __syncwarp
//   sync_warp(mask)
//   mma_m16n8k16_bf16 / _f16,           mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}
//   mma_m16n8k8_tf32                    mma.sync.aligned.m16n8k8.row.col.f32.tf32 (inline PTX)
//   ldmatrix_x1 / _x2 / _x4 (+ _trans)  ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16
//   cp_async(dst, src, bytes[, src_bytes]),
//   cp_async_commit_group(),            cp.async.{ca,cg}.shared.global, commit_group,
//   cp_async_wait_group<N>(),           wait_group N, wait_all
//   cp_async_wait_all()
//   tf32_round(bits)                    float32 bits rounded to TF32 for mma (see below)
//   FASTCONV_LAUNCH_BOUNDS(bounds)      __launch_bounds__ from a KernelBounds (launch_shape.h)
//   launch_kernel(name, kernel, [bounds,] grid, block, shared_bytes, args...)
//                                       kernel<<<grid, block, shared_bytes, stream>>>(args...):
//                                       dynamic shared memory past 48 KiB opted into, and the
//                                       launch checked, any failure an error naming the kernel;
//                                       emulated: the same limits (the kernel's bounds, the
//                                       opt-in), every checker on, any finding an error naming
//                                       the kernel.
//
// Inline PTX that reads or writes memory declares a "memory" clobber, so that nvcc keeps
// ordinary loads and stores on their side of it (a shared read after cp.async.wait_group, say).
//
// Rules for kernel code (so both builds agree): read an element into a typed variable
// (`T v = p[i]`, not `auto`), and reach global memory only through gptr<T> or Strided4.
#pragma once

#include "cuda/common/launch_shape.h"

#include <cstdint>

// TF32 (mma m16n8k8 .tf32): the tensor cores use the top 19 bits of each 32-bit operand and
// ignore the low 13 mantissa bits, which truncates float32 towards zero. The kernels round
// instead, as cvt.rna.tf32.f32 does (to nearest, ties away from zero): half a TF32 unit added
// to the bits of a finite value, the rest left to the tensor cores' truncation, so Inf and NaN
// pass unchanged. Two instructions per fragment register (a compare and a predicated add);
// it halves the largest error and removes truncation's bias towards zero.
namespace fastconv::cuda {
constexpr uint32_t kTf32HalfUnit = 1u << 12;
}

#if defined(FASTCONV_SIMT)

#include "simt/simt.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <cstring>
#include <source_location>
#include <string>

#define FASTCONV_GLOBAL
#define FASTCONV_DEVICE inline
// The emulator sees no attributes: it takes the bound from the launch (launch_kernel below).
#define FASTCONV_LAUNCH_BOUNDS(bounds)

namespace fastconv::cuda {

template <typename T>
using gptr = simt::GlobalPtr<T>;
template <typename T>
using sptr = simt::SharedPtr<T>;
using Dim3 = simt::Dim3;

using std::isfinite;

inline Dim3 thread_index() { return simt::thread_idx(); }
inline Dim3 block_index() { return simt::block_idx(); }
inline Dim3 block_size() { return simt::block_dim(); }
inline Dim3 grid_size() { return simt::grid_dim(); }
// The caller's line, not this one: synccheck tells barriers apart by where they are called.
inline void sync_threads(std::source_location loc = std::source_location::current()) {
  simt::syncthreads(loc);
}
template <typename U, typename T>
sptr<U> shared_as(sptr<T> p) {
  return simt::shared_cast<U>(p);
}
template <typename U, typename T>
gptr<U> global_as(gptr<T> p) {
  return simt::global_cast<U>(p);
}
struct alignas(16) Words16 {
  uint32_t w[4];
};
template <typename T>
void store_global_16(gptr<T> p, const uint32_t (&words)[4]) {
  global_as<Words16>(p)[0] = Words16{{words[0], words[1], words[2], words[3]}};
}

using simt::atomic_add;
using simt::all_sync;
using simt::any_sync;
using simt::ballot_sync;
using simt::shfl_down_sync;
using simt::shfl_sync;
using simt::shfl_up_sync;
using simt::shfl_xor_sync;
inline void sync_warp(unsigned mask = 0xffffffffu) { simt::syncwarp(mask); }

using simt::ldmatrix_x1;
using simt::ldmatrix_x1_trans;
using simt::ldmatrix_x2;
using simt::ldmatrix_x2_trans;
using simt::ldmatrix_x4;
using simt::ldmatrix_x4_trans;
using simt::mma_m16n8k16_bf16;
using simt::mma_m16n8k16_f16;
using simt::mma_m16n8k8_tf32;

inline uint32_t tf32_round(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return std::isfinite(f) ? bits + kTf32HalfUnit : bits;
}

using simt::cp_async;
using simt::cp_async_commit_group;
using simt::cp_async_wait_all;
template <int N>
void cp_async_wait_group() {
  simt::cp_async_wait_group(N);
}

// The scheduling order, seed and OS threads of emulated launches (fastconv.testing).
simt::LaunchOptions& emulation_options();
// Keeps the launch's traffic figures when the metrics report asked for them.
void record_launch(const char* name, Dim3 grid, Dim3 block, const simt::LaunchReport& report);

template <typename Kernel, typename... Args>
void launch_kernel(const char* name, Kernel kernel, KernelBounds bounds, Dim3 grid, Dim3 block,
                   size_t shared_bytes, Args&&... args) {
  simt::LaunchOptions options = emulation_options();
  options.max_threads_per_block = unsigned(bounds.max_threads);
  // As on the GPU (below): past the default 48 KiB, the launch opts in, up to the device's limit.
  if (shared_bytes > options.max_dynamic_shared_bytes && shared_bytes <= simt::limits::max_shared_bytes_optin)
    options.max_dynamic_shared_bytes = shared_bytes;
  const simt::LaunchReport report =
      simt::launch(kernel, grid, block, shared_bytes, options, std::forward<Args>(args)...);
  TORCH_CHECK(report.ok(), "fastconv: the emulated CUDA kernel ", name, " (grid ", simt::to_string(grid),
              ", block ", simt::to_string(block), ", ", shared_bytes, " bytes of dynamic shared memory) failed: ",
              report.summary());
  record_launch(name, grid, block, report);
}
template <typename Kernel, typename... Args>
void launch_kernel(const char* name, Kernel kernel, Dim3 grid, Dim3 block, size_t shared_bytes,
                   Args&&... args) {
  launch_kernel(name, kernel, kNoLaunchBounds, grid, block, shared_bytes, std::forward<Args>(args)...);
}

// A global-memory view of a tensor's storage, from its data pointer to the storage's end.
template <typename T, typename Tensor>
gptr<T> global_view(const Tensor& t, const char* name) {
  T* data = static_cast<T*>(const_cast<void*>(t.const_data_ptr()));
  const int64_t bytes = int64_t(t.storage().nbytes()) - int64_t(t.storage_offset()) * int64_t(t.element_size());
  return simt::global<T>(data, bytes / int64_t(sizeof(T)), name);
}

}  // namespace fastconv::cuda

#else  // nvcc

#include "cuda/common/launch_checks.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#define FASTCONV_GLOBAL __global__
#define FASTCONV_DEVICE __device__ __forceinline__
// At most bounds.max_threads per block, and registers capped so that bounds.min_blocks CTAs
// of that size fit on one SM.
#define FASTCONV_LAUNCH_BOUNDS(bounds) __launch_bounds__((bounds).max_threads, (bounds).min_blocks)
#define FASTCONV_SHARED(T, name, count) __shared__ T name[count]
// One extern array for every kernel (its type must agree across a translation unit), seen as T.
#define FASTCONV_DYNAMIC_SHARED(T, name)                                      \
  extern __shared__ __align__(128) unsigned char fastconv_dynamic_shared[]; \
  T* name = reinterpret_cast<T*>(fastconv_dynamic_shared)

namespace fastconv::cuda {

template <typename T>
using gptr = T*;
template <typename T>
using sptr = T*;
using Dim3 = dim3;

template <typename U, typename T>
__device__ __forceinline__ U* shared_as(T* p) {
  return reinterpret_cast<U*>(p);
}
template <typename U, typename T>
__device__ __forceinline__ U* global_as(T* p) {
  return reinterpret_cast<U*>(p);
}
// Inline PTX: through a uint4, NVVM still emitted four st.global.u32.
template <typename T>
__device__ __forceinline__ void store_global_16(T* p, const uint32_t (&words)[4]) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(words[0]), "r"(words[1]), "r"(words[2]),
               "r"(words[3])
               : "memory");
}

__device__ __forceinline__ dim3 thread_index() { return threadIdx; }
__device__ __forceinline__ dim3 block_index() { return blockIdx; }
__device__ __forceinline__ dim3 block_size() { return blockDim; }
__device__ __forceinline__ dim3 grid_size() { return gridDim; }
__device__ __forceinline__ void sync_threads() { __syncthreads(); }

template <typename T, typename V>
__device__ __forceinline__ T atomic_add(T* p, V v) {
  return atomicAdd(p, T(v));
}

template <typename T>
__device__ __forceinline__ T shfl_sync(unsigned mask, T v, int lane, int width = 32) {
  return __shfl_sync(mask, v, lane, width);
}
template <typename T>
__device__ __forceinline__ T shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return __shfl_up_sync(mask, v, delta, width);
}
template <typename T>
__device__ __forceinline__ T shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return __shfl_down_sync(mask, v, delta, width);
}
template <typename T>
__device__ __forceinline__ T shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return __shfl_xor_sync(mask, v, lane_mask, width);
}
__device__ __forceinline__ unsigned ballot_sync(unsigned mask, int p) { return __ballot_sync(mask, p); }
__device__ __forceinline__ int any_sync(unsigned mask, int p) { return __any_sync(mask, p); }
__device__ __forceinline__ int all_sync(unsigned mask, int p) { return __all_sync(mask, p); }
__device__ __forceinline__ void sync_warp(unsigned mask = 0xffffffffu) { __syncwarp(mask); }

// The one place where inline PTX appears. Fragments as the PTX ISA lays them out per lane:
// a: 4 registers of 2 halves (m16n8k16) or 4 tf32 values (m16n8k8), b: 2, c and d: 4 floats.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                  const uint32_t (&b)[2], const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2], const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2], const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}

// row: this lane's row address in shared memory (lanes 0..8N-1 give one each).
template <typename T>
__device__ __forceinline__ void ldmatrix_x1(uint32_t& r0, T* row, bool trans = false) {
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r0) : "r"(a) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r0) : "r"(a) : "memory");
}
template <typename T>
__device__ __forceinline__ void ldmatrix_x2(uint32_t& r0, uint32_t& r1, T* row, bool trans = false) {
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r0), "=r"(r1) : "r"(a) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r0), "=r"(r1) : "r"(a) : "memory");
}
template <typename T>
__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                            T* row, bool trans = false) {
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a) : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a) : "memory");
}
template <typename T>
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t& r0, T* row) { ldmatrix_x1(r0, row, true); }
template <typename T>
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t& r0, uint32_t& r1, T* row) {
  ldmatrix_x2(r0, r1, row, true);
}
template <typename T>
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                                  uint32_t& r3, T* row) {
  ldmatrix_x4(r0, r1, r2, r3, row, true);
}

// bytes: 4, 8 or 16; src_bytes < bytes zero-fills the rest (src_bytes < 0: all of it read).
template <typename D, typename S>
__device__ __forceinline__ void cp_async(D* dst, const S* src, int bytes, int src_bytes = -1) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const int n = src_bytes < 0 ? bytes : src_bytes;
  if (bytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
  else if (bytes == 8)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit_group() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// See tf32_round's note at the top: the tensor cores truncate what this leaves below TF32.
__device__ __forceinline__ uint32_t tf32_round(uint32_t bits) {
  return isfinite(__uint_as_float(bits)) ? bits + kTf32HalfUnit : bits;
}

template <typename... KernelArgs, typename... Args>
void launch_kernel(const char* name, void (*kernel)(KernelArgs...), KernelBounds, dim3 grid,
                   dim3 block, size_t shared_bytes, Args&&... args) {
  if (shared_bytes > 48 * 1024) opt_in_dynamic_shared(name, reinterpret_cast<const void*>(kernel), shared_bytes);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  check_launch(name, grid, block, shared_bytes, stream);
}
template <typename... KernelArgs, typename... Args>
void launch_kernel(const char* name, void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                   size_t shared_bytes, Args&&... args) {
  launch_kernel(name, kernel, kNoLaunchBounds, grid, block, shared_bytes, std::forward<Args>(args)...);
}

template <typename T, typename Tensor>
gptr<T> global_view(const Tensor& t, const char*) {
  return static_cast<T*>(const_cast<void*>(t.const_data_ptr()));
}

}  // namespace fastconv::cuda

#endif
