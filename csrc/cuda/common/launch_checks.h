// The host side of launch_kernel in the CUDA build (cuda/common/primitives.h), compiled once in
// launch_checks.cpp rather than in every kernel's translation unit. Host C++ only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace fastconv::cuda {

// Dynamic shared memory past the default 48 KiB: cudaFuncSetAttribute, once per kernel and
// device; a device that refuses the size raises an error naming the kernel.
void opt_in_dynamic_shared(const char* name, const void* kernel, size_t shared_bytes);
// After a launch: its error, if any, raised naming the kernel and its shape. With
// FASTCONV_SYNC_LAUNCHES=1 it also waits for the kernel, so that a fault while it runs (an
// illegal address) is reported with its name rather than at a later call.
void check_launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream);

}  // namespace fastconv::cuda
