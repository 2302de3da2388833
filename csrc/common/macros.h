// Marks helpers that both the CPU kernels (g++) and the CUDA kernels (nvcc) call.
#pragma once

#if defined(__CUDACC__)
#define FASTCONV_HD __host__ __device__ __forceinline__
#else
#define FASTCONV_HD inline
#endif
