// The float32 matrix products of the GEMM-based CPU algorithms (gemm_1x1, im2col_gemm,
// Winograd's per-point products). ATen sends them to MKL, and MKL picks its code by CPU vendor:
// on AMD's AVX-512 CPUs it runs its AVX2 kernel, measured at 105 GFLOP/s on one Zen 5 core
// whose FMA units do 272 (bench/NOTES.md, "float32 GEMM on AVX-512"). oneDNN's convolutions
// there run their own AVX-512 code. So where the CPU is AMD's and has AVX-512F, fastconv runs
// its own register-blocked AVX-512 kernel (sgemm.cpp); elsewhere, and for every other dtype,
// these are ATen's products, as before.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace fastconv::cpu {

// Which kernel the float32 products below run: "auto" (fastconv's where the rule above picks
// it), "own" (fastconv's wherever the CPU has AVX-512F) or "aten". From FASTCONV_CPU_SGEMM at
// load, or set_sgemm_mode (tests, A/B measurements).
void set_sgemm_mode(const std::string& mode);
std::string sgemm_mode();
// Whether this CPU can run fastconv's kernel at all (AVX-512F).
bool sgemm_supported();
// Whether float32 products run on fastconv's kernel now.
bool own_sgemm_active();
// How many products fastconv's kernel has run in this process (for tests).
int64_t own_sgemm_products();

// c = a · b, or c += a · b when `accumulate`; a [M, K], b [K, N], c [M, N], of any strides
// (c's columns must not overlap). The drop-ins for at::mm_out and Tensor::addmm_.
void mm_out(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, bool accumulate = false);
// The batched ones, a [B, M, K], b [B, K, N], c [B, M, N]: at::bmm and baddbmm_ (beta 1).
void bmm_out(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, bool accumulate = false);
at::Tensor bmm(const at::Tensor& a, const at::Tensor& b);
// m [B, R, C] as a contiguous [B, C, R] (float32: in 8 x 8 register blocks where the CPU has
// AVX-512F; otherwise ATen's copy).
at::Tensor transposed_copy(const at::Tensor& m);
// dst = src for 4-D float32 tensors of the same sizes, one contiguous NCHW and the other
// contiguous channels_last, by the blocked transpose above (per image, [C, HW] <-> [HW, C]).
// False, copying nothing, for anything else (another dtype, other strides, a tensor contiguous
// in both layouts, a CPU without AVX-512F): the caller copies.
bool layout_copy(const at::Tensor& src, at::Tensor& dst);
// m [B, R, C] as the [B, C, R] B operand of the products above (a filter the products read
// transposed): where fastconv's kernel runs them, the transposed copy, made once so that no
// product copies it again (its kernel reads B by rows); otherwise the transposed view, which
// ATen's GEMM reads as it is.
at::Tensor transposed_operand(const at::Tensor& m);

// c[M, N] (+)= a[M, K] · b[K, N] on the calling thread, for kernels that share their own tiles
// out to the threads (im2col's fprop builds each tile's columns and multiplies them while they
// are in its core's L2). Row-major operands whose rows lie lda, ldb and ldc apart; float32, on a
// CPU with AVX-512F (sgemm_supported()). Counts as one product (own_sgemm_products).
void own_gemm_serial(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                     int64_t ldb, float* c, int64_t ldc, bool accumulate);

// fastconv's kernel itself, whatever the mode (for tests): float32 only, refused with a clear
// error on a CPU without AVX-512F.
void own_mm_out(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, bool accumulate);

}  // namespace fastconv::cpu
