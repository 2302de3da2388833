// The build carries no -march flag (a wheel must run on any x86-64), so the few loops that
// are worth wide vectors are compiled once per instruction-set level and picked at load time.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTCONV_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTCONV_VECTOR_CLONES
#endif

// One function built for AVX512-BF16 only (VDPBF16PS), for callers that check the CPU first
// (cpu_has_avx512bf16 in cpu/kernels.h): x86-64-v4 does not include BF16.
#if defined(__GNUC__) && defined(__x86_64__)
#define FASTCONV_TARGET_AVX512BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#else
#define FASTCONV_TARGET_AVX512BF16
#endif

// One function built for AVX-512F alone, for callers that check the CPU first
// (cpu_has_avx512f in cpu/kernels.h): the float32 GEMM, the depthwise and padded-plane kernels.
#if defined(__GNUC__) && defined(__x86_64__)
#define FASTCONV_TARGET_AVX512F __attribute__((target("avx512f")))
#else
#define FASTCONV_TARGET_AVX512F
#endif
