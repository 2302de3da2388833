// The CPU kernels, registered in csrc/cpu/register.cpp.
#pragma once

#include "common/algorithms.h"
#include "common/roi_ops.h"

#include <ATen/core/Tensor.h>


namespace fastconv::cpu {

// Convolution algorithms, in the order the CPU list tries them.
ConvAlgorithm depthwise_algorithm();    // groups == C: direct loops over contiguous planes
ConvAlgorithm gemm_1x1_algorithm();      // 1x1, stride 1, no padding: GEMM straight on x
ConvAlgorithm grouped_planes_algorithm(); // groups of <= 8 channels, stride 1: padded planes
ConvAlgorithm gemm_bf16dot_algorithm();  // bf16 fprop: VDPBF16PS micro-kernel, CPUs with AVX512-BF16
ConvAlgorithm winograd_4x4_algorithm();  // 3x3 stride 1: Winograd F(4x4, 3x3), GEMM per tile point
ConvAlgorithm winograd_2x2_algorithm();  // 3x3 stride 1: Winograd F(2x2, 3x3)
ConvAlgorithm direct_blocked_algorithm(); // few input channels (stems): register-blocked direct
ConvAlgorithm im2col_gemm_algorithm();  // tiled im2col / col2im around a batched GEMM
ConvAlgorithm direct_algorithm();       // loops over every tap: always correct, slow

// Whether this CPU runs AVX512-BF16 (and the environment variable FASTCONV_CPU_HIDE does not
// name avx512bf16, which tests use to see the fallback).
bool cpu_has_avx512bf16();
// Whether this CPU runs AVX-512F (and FASTCONV_CPU_HIDE does not name avx512f): fastconv's
// float32 GEMM (sgemm.h), the depthwise row kernel and the padded-plane kernel need it.
bool cpu_has_avx512f();
// Whether FASTCONV_CPU_HIDE names the feature, as a whole word of its comma- or space-separated
// list ("avx512f" is not hidden by "avx512fp16"). Read on every call, not cached, so that a test
// can hide a feature within one process and see the automatic choice fall back.
bool cpu_feature_hidden(const char* feature);

// RoI kernels (contracts in common/roi_ops.h).
RoiAlignForward roi_align_forward;
RoiAlignBackward roi_align_backward;
RoiPoolForward roi_pool_forward;
RoiPoolBackward roi_pool_backward;

}  // namespace fastconv::cpu
