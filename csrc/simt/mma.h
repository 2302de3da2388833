// fastconv::simt tensor-core primitives: mma.sync (m16n8k16 bf16/f16 -> f32, m16n8k8 tf32 -> f32)
// and ldmatrix.m8n8 .x1/.x2/.x4 (.trans), as warp collectives of all 32 lanes.
//
// Each lane passes its own registers, laid out as the PTX ISA's "Matrix Fragments for mma"
// and ldmatrix sections state (groupID = lane >> 2, threadID_in_group = lane % 4):
//   m16n8k16 .bf16/.f16  A 16x16 row-major: 4 x b32 = a0..a7 (two halves per register, a0 low)
//                          row = groupID for a0,a1,a4,a5, groupID + 8 for a2,a3,a6,a7
//                          col = 2 * threadID_in_group + (i & 1), plus 8 for a4..a7
//                        B 16x8 col-major: 2 x b32 = b0..b3
//                          row = 2 * threadID_in_group + (i & 1), plus 8 for b2,b3; col = groupID
//                        C/D 16x8 f32: c0..c3
//                          row = groupID for c0,c1, groupID + 8 for c2,c3
//                          col = 2 * threadID_in_group + (i & 1)
//   m16n8k8 .tf32        A 16x8: a0..a3 (one per b32): row = groupID for a0,a2, groupID + 8 for
//                          a1,a3; col = threadID_in_group for a0,a1, + 4 for a2,a3
//                        B 8x8: b0,b1: row = threadID_in_group, + 4 for b1; col = groupID
//                        C/D as above.
//   ldmatrix .xN         lanes 8j..8j+7 give the addresses of rows 0..7 of matrix j (16 bytes
//                        each, 16-byte aligned); lane l receives in register j the two 16-bit
//                        elements (row l/4, cols 2(l%4), 2(l%4)+1) of matrix j, the lower column
//                        in the low half; with .trans, (rows 2(l%4), 2(l%4)+1, col l/4).
// Arithmetic: inputs are exact in float; each product is exact; D = C + sum over k in
// increasing k order, rounded to float at each addition (the hardware's internal order and
// rounding may differ in the last bits). tf32 inputs keep their top 19 bits (the low 13 mantissa
// bits are ignored, as the tensor core does).
#pragma once

#include "simt/memory.h"
#include "simt/warp.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fastconv::simt {

// Bit-pattern conversions of the 16-bit float formats.
inline float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    float f = std::ldexp(float(mant), -24);  // zero or subnormal
    std::memcpy(&u, &f, 4);
    u |= sign;
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_f16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: infinity
  if (a < 0x38800000u) {                                   // below 2^-14: subnormal or zero
    const float m = std::ldexp(std::fabs(f), 24);          // in units of 2^-24
    return uint16_t(sign | uint16_t(std::nearbyint(m)));
  }
  const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
  return uint16_t(sign | uint16_t((r - (112u << 23)) >> 13));
}
inline float tf32_to_float(uint32_t bits) {
  bits &= 0xffffe000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace detail {

enum MmaVariant : int { mma_bf16_k16 = 1, mma_f16_k16 = 2, mma_tf32_k8 = 3 };

struct MmaArgs {
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
  float* d;
};

inline void resolve_mma(Runner& r, unsigned w, uint32_t) {
  const int v = r.lane(w, 0).coll.variant;
  const int K = v == mma_tf32_k8 ? 8 : 16;
  float A[16][16] = {}, B[16][8] = {}, C[16][8];
  for (unsigned lane = 0; lane < 32; ++lane) {
    const auto& io = *static_cast<const MmaArgs*>(r.lane(w, lane).coll.in_ptr);
    const unsigned g = lane >> 2, q = lane % 4;
    if (v == mma_tf32_k8) {
      for (unsigned i = 0; i < 4; ++i)
        A[g + (i & 1u) * 8][q + (i >> 1) * 4] = tf32_to_float(io.a[i]);
      for (unsigned i = 0; i < 2; ++i) B[q + i * 4][g] = tf32_to_float(io.b[i]);
    } else {
      auto half = [v](uint32_t reg, unsigned hi) {
        const uint16_t h = uint16_t(reg >> (16 * hi));
        return v == mma_bf16_k16 ? bf16_to_float(h) : f16_to_float(h);
      };
      for (unsigned i = 0; i < 8; ++i) {
        const unsigned row = g + ((i >> 1) & 1u) * 8, col = 2 * q + (i & 1u) + (i >> 2) * 8;
        A[row][col] = half(io.a[i / 2], i & 1u);
      }
      for (unsigned i = 0; i < 4; ++i) B[2 * q + (i & 1u) + (i >> 1) * 8][g] = half(io.b[i / 2], i & 1u);
    }
    for (unsigned i = 0; i < 4; ++i) C[g + (i >> 1) * 8][2 * q + (i & 1u)] = io.c[i];
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    const auto& io = *static_cast<const MmaArgs*>(r.lane(w, lane).coll.in_ptr);
    const unsigned g = lane >> 2, q = lane % 4;
    for (unsigned i = 0; i < 4; ++i) {
      const unsigned row = g + (i >> 1) * 8, col = 2 * q + (i & 1u);
      float acc = C[row][col];
      for (int k = 0; k < K; ++k) acc += A[row][k] * B[k][col];
      io.d[i] = acc;
    }
  }
}

inline void mma(int variant, float (&d)[4], const uint32_t* a, const uint32_t* b,
                const float (&c)[4]) {
  MmaArgs io{a, b, c, d};
  Coll co;
  co.kind = CollKind::mma;
  co.mask = full_mask;
  co.variant = variant;
  co.in_ptr = &io;
  warp_arrive(co, resolve_mma);
}

struct LdmatrixArgs {
  uint8_t row[16];
  bool valid;
  uint32_t* dst;
};

inline void resolve_ldmatrix(Runner& r, unsigned w, uint32_t) {
  const int v = r.lane(w, 0).coll.variant;
  const unsigned num = unsigned(v & 7);
  const bool trans = (v & 8) != 0;
  auto elem = [&](unsigned j, unsigned row, unsigned col) -> uint32_t {
    const auto& src = *static_cast<const LdmatrixArgs*>(r.lane(w, 8 * j + row).coll.in_ptr);
    if (!src.valid) return 0;
    return uint32_t(src.row[2 * col]) | uint32_t(src.row[2 * col + 1]) << 8;
  };
  for (unsigned lane = 0; lane < 32; ++lane) {
    auto& io = *static_cast<LdmatrixArgs*>(const_cast<void*>(r.lane(w, lane).coll.in_ptr));
    const unsigned g = lane >> 2, q = lane % 4;
    for (unsigned j = 0; j < num; ++j) {
      const uint32_t lo = trans ? elem(j, 2 * q, g) : elem(j, g, 2 * q);
      const uint32_t hi = trans ? elem(j, 2 * q + 1, g) : elem(j, g, 2 * q + 1);
      io.dst[j] = lo | hi << 16;
    }
  }
}

inline void ldmatrix(unsigned num, bool trans, uint32_t* dst, int64_t off, int64_t lo, int64_t hi,
                     int array) {
  Runner& r = runner();
  const unsigned lane = r.cur->tid % 32;
  LdmatrixArgs io{};
  io.dst = dst;
  if (lane < 8 * num) {  // this lane gives a row address
    if (off % 16 != 0) {
      r.error(Checker::memcheck, "ldmatrix: lane " + std::to_string(lane) +
                                     " gives a row address at shared byte " + std::to_string(off) +
                                     ", not 16-byte aligned; the row reads as zeros",
              "shared", off);
    } else if (shared_access(off, 16, lo, hi, array, false, false, 2)) {
      std::memcpy(io.row, r.arena.data() + off, 16);
      io.valid = true;
    }
  }
  Coll co;
  co.kind = CollKind::ldmatrix;
  co.mask = full_mask;
  co.variant = int(num) | (trans ? 8 : 0);
  co.in_ptr = &io;
  warp_arrive(co, resolve_ldmatrix);
}

}  // namespace detail

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                              const float (&c)[4]) {
  detail::mma(detail::mma_bf16_k16, d, a, b, c);
}
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 d, a, b, c
inline void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                             const float (&c)[4]) {
  detail::mma(detail::mma_f16_k16, d, a, b, c);
}
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 d, a, b, c
inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                             const float (&c)[4]) {
  detail::mma(detail::mma_tf32_k8, d, a, b, c);
}

// ldmatrix.sync.aligned.m8n8.x{1,2,4}{,.trans}.shared.b16; `row` is this lane's row address
// (lanes 0..8N-1 give one each; the others' are ignored).
template <typename T>
void ldmatrix_x1(uint32_t& r0, SharedPtr<T> row, bool trans = false) {
  uint32_t d[1];
  const auto p = shared_cast<const uint8_t>(row);
  detail::ldmatrix(1, trans, d, p.window_offset(), p.lo_bound(), p.hi_bound(), p.array_id());
  r0 = d[0];
}
template <typename T>
void ldmatrix_x2(uint32_t& r0, uint32_t& r1, SharedPtr<T> row, bool trans = false) {
  uint32_t d[2];
  const auto p = shared_cast<const uint8_t>(row);
  detail::ldmatrix(2, trans, d, p.window_offset(), p.lo_bound(), p.hi_bound(), p.array_id());
  r0 = d[0];
  r1 = d[1];
}
template <typename T>
void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, SharedPtr<T> row,
                 bool trans = false) {
  uint32_t d[4];
  const auto p = shared_cast<const uint8_t>(row);
  detail::ldmatrix(4, trans, d, p.window_offset(), p.lo_bound(), p.hi_bound(), p.array_id());
  r0 = d[0];
  r1 = d[1];
  r2 = d[2];
  r3 = d[3];
}
template <typename T>
void ldmatrix_x1_trans(uint32_t& r0, SharedPtr<T> row) {
  ldmatrix_x1(r0, row, true);
}
template <typename T>
void ldmatrix_x2_trans(uint32_t& r0, uint32_t& r1, SharedPtr<T> row) {
  ldmatrix_x2(r0, r1, row, true);
}
template <typename T>
void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, SharedPtr<T> row) {
  ldmatrix_x4(r0, r1, r2, r3, row, true);
}

}  // namespace fastconv::simt
