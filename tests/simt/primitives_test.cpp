// The kernels' wrappers (csrc/cuda/common/primitives.h, emulation side) keep what the emulator
// sees: a barrier is told apart by its caller's line, a kernel's launch bounds refuse a larger
// block, and TF32 rounding is cvt.rna.tf32.f32's. Built against torch's headers (primitives.h
// includes c10's error macros), linked against nothing of torch's.
#include "cuda/common/primitives.h"

#include "check.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace simt = fastconv::simt;
namespace cuda = fastconv::cuda;
using simt::Checker;
using simt_test::check;

// Half the block waits at one barrier, half at another: a deadlock on the GPU.
void divergent_through_wrapper(simt::GlobalPtr<int> out) {
  const unsigned t = cuda::thread_index().x;
  if (t < 16) {
    cuda::sync_threads();  // BUG: two different barriers
    out[t] = 1;
  } else {
    cuda::sync_threads();
    out[t] = 2;
  }
}

// The same barrier reached by every thread: clean.
void uniform_through_wrapper(simt::GlobalPtr<int> out) {
  const unsigned t = cuda::thread_index().x;
  out[t] = 1;
  cuda::sync_threads();
  out[t] = 2;
}

static float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// One m16n8k8 TF32 product whose only nonzero terms are a[0][k] * b[k][0] = x * 1, through
// tf32_round as the implicit GEMM's fragments go: d[0][0] is x rounded to TF32.
void tf32_product(simt::GlobalPtr<const uint32_t> x, simt::GlobalPtr<float> d) {
  const unsigned lane = cuda::thread_index().x, g = lane / 4, q = lane % 4;
  // Lane (g, q) holds a0 = A[g][q] and b0 = B[q][g] (PTX ISA, m16n8k8 .tf32 fragments).
  const uint32_t one = bits(1.f);
  uint32_t a[4] = {g == 0 && q == 0 ? uint32_t(x[0]) : 0u, 0u, 0u, 0u};
  uint32_t b[2] = {g == 0 && q == 0 ? one : 0u, 0u};
  for (uint32_t& r : a) r = cuda::tf32_round(r);
  for (uint32_t& r : b) r = cuda::tf32_round(r);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  const float c[4] = {0.f, 0.f, 0.f, 0.f};
  cuda::mma_m16n8k8_tf32(acc, a, b, c);
  if (lane == 0) d[0] = acc[0];  // C[0][0]: lane 0's c0
}

static float tf32_through_mma(uint32_t x) {
  float d = -1.f;
  auto r = simt::launch(tf32_product, {1}, {32}, 0, {}, simt::global<const uint32_t>(&x, 1, "x"),
                        simt::global(&d, 1, "d"));
  return r.ok() ? d : std::nanf("");
}

int main() {
  std::vector<int> out(32, 0);
  auto bad = simt::launch(divergent_through_wrapper, {1}, {32}, 0, {}, simt::global(out.data(), 32, "out"));
  bool divergent = false;
  for (const auto& e : bad.errors)
    divergent |= e.checker == Checker::synccheck && e.message.find("divergent barrier") != std::string::npos &&
                 e.message.find("primitives_test.cpp") != std::string::npos;
  check(divergent, "synccheck: a divergent barrier through sync_threads() names the kernel's lines", bad.summary());
  auto good = simt::launch(uniform_through_wrapper, {1}, {32}, 0, {}, simt::global(out.data(), 32, "out"));
  check(good.ok(), "synccheck: one barrier through sync_threads() is clean", good.summary());

  // The bound a launch passes is the one the emulator holds a block to.
  simt::LaunchOptions bounded;
  bounded.max_threads_per_block = 128;
  auto over = simt::launch(uniform_through_wrapper, {1}, {256}, 0, bounded, simt::global(out.data(), 32, "out"));
  check(!over.launched && over.launch_error.find("launch bounds (128)") != std::string::npos,
        "limits: a block over the kernel's launch bounds is refused", over.summary());

  // Hand-computed TF32 cases: tf32 keeps 10 mantissa bits, so at 1 its unit is 2^-10.
  const float unit = std::ldexp(1.f, -10);
  const uint32_t above_half = bits(1.f) | (1u << 12) | (1u << 10);  // 1 + 2^-11 + 2^-13
  const uint32_t tie = bits(1.f) | (1u << 12);                      // 1 + 2^-11: half a unit
  const uint32_t below_half = bits(1.f) | (1u << 11);               // 1 + 2^-12
  check(tf32_through_mma(above_half) == 1.f + unit && tf32_through_mma(tie) == 1.f + unit &&
            tf32_through_mma(below_half) == 1.f && tf32_through_mma(bits(-1.f) | (1u << 12)) == -(1.f + unit),
        "tf32: round to nearest, ties away from zero (cvt.rna.tf32.f32), through mma");
  check(simt::tf32_to_float(above_half) == 1.f, "tf32: the tensor core alone truncates (ignores the low 13 bits)");
  const uint32_t inf = 0x7f800000u, qnan = 0x7fc00000u, max_finite = 0x7f7fffffu;
  check(tf32_through_mma(inf) == INFINITY && std::isnan(tf32_through_mma(qnan)) &&
            tf32_through_mma(max_finite) == INFINITY,
        "tf32: infinity and NaN pass, the largest float rounds up to infinity");
  check(cuda::tf32_round(inf) == inf && cuda::tf32_round(qnan) == qnan && cuda::tf32_round(0xffffffffu) == 0xffffffffu,
        "tf32: tf32_round leaves Inf and every NaN (all-ones too) as they are");
  (void)from_bits;
  return simt_test::finish();
}
