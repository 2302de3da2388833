// mma.sync, ldmatrix and cp.async against plain references. The lane maps used here are written
// from the PTX ISA's tables ("Matrix Fragments for mma.m16n8k16 with floating point type",
// "... mma.m16n8k8" (.tf32) and "ldmatrix"), in the ISA's own phrasing, and are themselves
// checked against entries read off the ISA's figures by hand; none of it comes from the
// emulator's code (csrc/simt/mma.h), so the two cannot share a misreading unnoticed.
#include "simt/simt.h"

#include "check.h"

#include <cmath>
#include <random>
#include <utility>
#include <vector>

namespace simt = fastconv::simt;
using simt::GlobalPtr;
using simt::SharedPtr;
using simt_test::check;
using RC = std::pair<int, int>;

// ---- lane maps, from the ISA text -----------------------------------------------------------
// groupID = laneid >> 2; threadID_in_group = laneid % 4.
// m16n8k16 .f16/.bf16, A (16 x 16), elements a0..a7:
//   row = groupID            for ai where 0 <= i < 2 || 4 <= i < 6
//         groupID + 8        otherwise
//   col = (threadID_in_group * 2) + (i & 0x1)        for ai where i < 4
//         (threadID_in_group * 2) + (i & 0x1) + 8    for ai where i >= 4
RC isa_a_k16(int lane, int i) {
  const int groupID = lane >> 2, tig = lane % 4;
  const int row = ((0 <= i && i < 2) || (4 <= i && i < 6)) ? groupID : groupID + 8;
  const int col = i < 4 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
  return {row, col};
}
// m16n8k16 B (16 x 8), elements b0..b3:
//   row = (threadID_in_group * 2) + (i & 0x1)        for bi where i < 2
//         (threadID_in_group * 2) + (i & 0x1) + 8    for bi where i >= 2
//   col = groupID
RC isa_b_k16(int lane, int i) {
  const int groupID = lane >> 2, tig = lane % 4;
  return {i < 2 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8, groupID};
}
// C / D (16 x 8) f32, elements c0..c3:
//   row = groupID for c0 and c1; groupID + 8 for c2 and c3
//   col = (threadID_in_group * 2) + (i & 0x1)
RC isa_c(int lane, int i) {
  const int groupID = lane >> 2, tig = lane % 4;
  return {i < 2 ? groupID : groupID + 8, tig * 2 + (i & 1)};
}
// m16n8k8 .tf32, A (16 x 8), a0..a3:
//   row = groupID for a0 and a2; groupID + 8 for a1 and a3
//   col = threadID_in_group for a0 and a1; threadID_in_group + 4 for a2 and a3
RC isa_a_tf32(int lane, int i) {
  const int groupID = lane >> 2, tig = lane % 4;
  return {(i == 0 || i == 2) ? groupID : groupID + 8, (i == 0 || i == 1) ? tig : tig + 4};
}
// m16n8k8 .tf32, B (8 x 8), b0..b1: row = threadID_in_group for b0, + 4 for b1; col = groupID
RC isa_b_tf32(int lane, int i) {
  const int groupID = lane >> 2, tig = lane % 4;
  return {i == 0 ? tig : tig + 4, groupID};
}

void check_maps_against_figures() {
  // Read off the ISA's figures for lanes 0, 5 and 31 (T0, T5, T31).
  const RC a_lane5[8] = {{1, 2}, {1, 3}, {9, 2}, {9, 3}, {1, 10}, {1, 11}, {9, 10}, {9, 11}};
  const RC a_lane31[8] = {{7, 6}, {7, 7}, {15, 6}, {15, 7}, {7, 14}, {7, 15}, {15, 14}, {15, 15}};
  const RC a_lane0[8] = {{0, 0}, {0, 1}, {8, 0}, {8, 1}, {0, 8}, {0, 9}, {8, 8}, {8, 9}};
  const RC b_lane5[4] = {{2, 1}, {3, 1}, {10, 1}, {11, 1}};
  const RC b_lane31[4] = {{6, 7}, {7, 7}, {14, 7}, {15, 7}};
  const RC c_lane5[4] = {{1, 2}, {1, 3}, {9, 2}, {9, 3}};
  const RC c_lane30[4] = {{7, 4}, {7, 5}, {15, 4}, {15, 5}};
  const RC atf_lane5[4] = {{1, 1}, {9, 1}, {1, 5}, {9, 5}};
  const RC btf_lane31[2] = {{3, 7}, {7, 7}};
  bool ok = true;
  for (int i = 0; i < 8; ++i)
    ok &= isa_a_k16(5, i) == a_lane5[i] && isa_a_k16(31, i) == a_lane31[i] && isa_a_k16(0, i) == a_lane0[i];
  for (int i = 0; i < 4; ++i)
    ok &= isa_b_k16(5, i) == b_lane5[i] && isa_b_k16(31, i) == b_lane31[i] && isa_c(5, i) == c_lane5[i] &&
          isa_c(30, i) == c_lane30[i] && isa_a_tf32(5, i) == atf_lane5[i];
  for (int i = 0; i < 2; ++i) ok &= isa_b_tf32(31, i) == btf_lane31[i];
  // Each map covers its matrix exactly once.
  auto covers = [](auto map, int elems, int rows, int cols) {
    std::vector<int> seen(rows * cols, 0);
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < elems; ++i) ++seen[map(l, i).first * cols + map(l, i).second];
    for (int s : seen)
      if (s != 1) return false;
    return true;
  };
  ok &= covers(isa_a_k16, 8, 16, 16) && covers(isa_b_k16, 4, 16, 8) && covers(isa_c, 4, 16, 8) &&
        covers(isa_a_tf32, 4, 16, 8) && covers(isa_b_tf32, 2, 8, 8);
  check(ok, "ISA lane maps agree with the figures' entries and cover each matrix once");
}

// ---- 16-bit encodings written here (exactly representable values only) ----------------------
uint16_t bf16_bits(float f) {  // exact for values with <= 8 significant bits
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}
uint16_t f16_bits(float f) {  // exact for normal values with <= 11 significant bits
  if (f == 0) return 0;
  uint16_t sign = f < 0 ? 0x8000 : 0;
  int e;
  const float m = std::frexp(std::fabs(f), &e);  // f = m * 2^e, m in [0.5, 1)
  const int exp = e - 1 + 15;
  const int mant = int((m * 2 - 1) * 1024);
  return uint16_t(sign | (exp << 10) | mant);
}

enum class Kind { bf16, f16, tf32 };

// One warp: each lane loads its fragments with the ISA maps, runs mma, stores D with the C map.
void mma_kernel(GlobalPtr<const float> A, GlobalPtr<const float> B, GlobalPtr<const float> C,
                GlobalPtr<float> D, int kind) {
  const int lane = int(simt::lane_id());
  const int K = kind == int(Kind::tf32) ? 8 : 16;
  uint32_t a[4] = {}, b[2] = {};
  float c[4], d[4];
  if (kind == int(Kind::tf32)) {
    for (int i = 0; i < 4; ++i) {
      const float v = A[isa_a_tf32(lane, i).first * K + isa_a_tf32(lane, i).second];
      std::memcpy(&a[i], &v, 4);
    }
    for (int i = 0; i < 2; ++i) {
      const float v = B[isa_b_tf32(lane, i).first * 8 + isa_b_tf32(lane, i).second];
      std::memcpy(&b[i], &v, 4);
    }
  } else {
    auto bits = [kind](float v) { return uint32_t(kind == int(Kind::bf16) ? bf16_bits(v) : f16_bits(v)); };
    for (int i = 0; i < 8; ++i)  // a0 in the low half of register 0, a1 in its high half, ...
      a[i / 2] |= bits(A[isa_a_k16(lane, i).first * K + isa_a_k16(lane, i).second]) << (16 * (i % 2));
    for (int i = 0; i < 4; ++i)
      b[i / 2] |= bits(B[isa_b_k16(lane, i).first * 8 + isa_b_k16(lane, i).second]) << (16 * (i % 2));
  }
  for (int i = 0; i < 4; ++i) c[i] = C[isa_c(lane, i).first * 8 + isa_c(lane, i).second];
  if (kind == int(Kind::bf16)) simt::mma_m16n8k16_bf16(d, a, b, c);
  if (kind == int(Kind::f16)) simt::mma_m16n8k16_f16(d, a, b, c);
  if (kind == int(Kind::tf32)) simt::mma_m16n8k8_tf32(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[isa_c(lane, i).first * 8 + isa_c(lane, i).second] = d[i];
}

void check_mma(Kind kind, const char* name) {
  const int K = kind == Kind::tf32 ? 8 : 16;
  std::mt19937 rng(42 + int(kind));
  std::uniform_int_distribution<int> small(-8, 8);
  std::vector<float> A(16 * K), B(K * 8), C(16 * 8), D(16 * 8, NAN);
  for (auto& v : A) v = float(small(rng)) * (kind == Kind::f16 ? 0.25f : 1.f);
  for (auto& v : B) v = float(small(rng)) * (kind == Kind::tf32 ? 0.5f : 1.f);
  for (auto& v : C) v = float(small(rng));
  auto r = simt::launch(mma_kernel, {1}, {32}, 0, {}, simt::global<const float>(A.data(), 16 * K, "A"),
                        simt::global<const float>(B.data(), K * 8, "B"),
                        simt::global<const float>(C.data(), 128, "C"), simt::global(D.data(), 128, "D"), int(kind));
  bool right = true;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double ref = C[m * 8 + n];
      for (int k = 0; k < K; ++k) ref += double(A[m * K + k]) * B[k * 8 + n];
      right &= D[m * 8 + n] == float(ref);
    }
  check(right && r.ok(), std::string("mma ") + name + ": D = A B + C through the ISA lane maps", r.summary());
}

// ---- ldmatrix -------------------------------------------------------------------------------
// A 16 x 16 tile of 16-bit codes code(r, c) = r * 16 + c + 0x100 in shared memory, row-major.
// Matrices for .x4: 0 = rows 0-7 / cols 0-7, 1 = rows 8-15 / cols 0-7, 2 = rows 0-7 / cols 8-15,
// 3 = rows 8-15 / cols 8-15; lane l addresses row l % 8 of matrix l / 8.
void ldmatrix_kernel(GlobalPtr<uint32_t> out, int num, int trans) {
  FASTCONV_SHARED(uint16_t, tile, 256);
  const int lane = int(simt::lane_id());
  for (int i = lane; i < 256; i += 32) tile[i] = uint16_t(i + 0x100);
  simt::syncwarp();
  const int m = lane / 8, row = (m % 2) * 8 + lane % 8, col = (m / 2) * 8;
  const SharedPtr<uint16_t> p = tile + row * 16 + col;
  uint32_t r[4] = {0, 0, 0, 0};
  if (num == 1) simt::ldmatrix_x1(r[0], p, trans != 0);
  if (num == 2) simt::ldmatrix_x2(r[0], r[1], p, trans != 0);
  if (num == 4) simt::ldmatrix_x4(r[0], r[1], r[2], r[3], p, trans != 0);
  for (int j = 0; j < 4; ++j) out[lane * 4 + j] = r[j];
}

uint32_t code(int r, int c) { return uint32_t(r * 16 + c + 0x100); }

void check_ldmatrix() {
  // ISA (ldmatrix, fragment layout of each 8x8 matrix): lane l holds row l / 4, elements
  // 2 (l % 4) and 2 (l % 4) + 1 (lower column in the low half); .trans holds column l / 4, rows
  // 2 (l % 4) and 2 (l % 4) + 1. Written out for lanes 0, 6 and 31 of each matrix:
  //   matrix origin (r0, c0): 0 -> (0, 0), 1 -> (8, 0), 2 -> (0, 8), 3 -> (8, 8)
  const int r0[4] = {0, 8, 0, 8}, c0[4] = {0, 0, 8, 8};
  struct Expect {
    int lane;
    int lo_r, lo_c, hi_r, hi_c;  // inside the 8x8 matrix
  };
  const Expect plain[] = {{0, 0, 0, 0, 1}, {6, 1, 4, 1, 5}, {31, 7, 6, 7, 7}};
  const Expect trans[] = {{0, 0, 0, 1, 0}, {6, 4, 1, 5, 1}, {31, 6, 7, 7, 7}};
  for (int num : {1, 2, 4})
    for (int t = 0; t < 2; ++t) {
      std::vector<uint32_t> out(128, 0xdeadbeef);
      auto r = simt::launch(ldmatrix_kernel, {1}, {32}, 0, {}, simt::global(out.data(), 128), num, t);
      bool right = r.ok();
      for (int j = 0; j < num; ++j)
        for (const Expect& e : t ? trans : plain) {
          const uint32_t want = code(r0[j] + e.lo_r, c0[j] + e.lo_c) | code(r0[j] + e.hi_r, c0[j] + e.hi_c) << 16;
          right &= out[e.lane * 4 + j] == want;
        }
      // and every lane, from the ISA sentence
      for (int l = 0; l < 32; ++l)
        for (int j = 0; j < num; ++j) {
          const int g = l / 4, q = l % 4;
          const uint32_t want = t ? code(r0[j] + 2 * q, c0[j] + g) | code(r0[j] + 2 * q + 1, c0[j] + g) << 16
                                  : code(r0[j] + g, c0[j] + 2 * q) | code(r0[j] + g, c0[j] + 2 * q + 1) << 16;
          right &= out[l * 4 + j] == want;
        }
      check(right, "ldmatrix .x" + std::to_string(num) + (t ? ".trans" : ""), r.summary());
    }
}

// ldmatrix.x4 (A, row-major 16x16) + ldmatrix.x2.trans (B, row-major 16x8 = k x n) + mma.bf16:
// the way a tensor-core kernel feeds mma from shared memory.
void pipeline_kernel(GlobalPtr<const uint16_t> A, GlobalPtr<const uint16_t> B, GlobalPtr<float> D) {
  FASTCONV_SHARED(uint16_t, sa, 16 * 16);
  FASTCONV_SHARED(uint16_t, sb, 16 * 8);
  const int lane = int(simt::lane_id());
  for (int i = lane; i < 256; i += 32) sa[i] = A[i];
  for (int i = lane; i < 128; i += 32) sb[i] = B[i];
  simt::syncwarp();
  uint32_t a[4], b[2];
  const int m = lane / 8;
  simt::ldmatrix_x4(a[0], a[1], a[2], a[3], sa + ((m % 2) * 8 + lane % 8) * 16 + (m / 2) * 8);
  simt::ldmatrix_x2_trans(b[0], b[1], sb + (lane % 16) * 8);
  float c[4] = {0, 0, 0, 0}, d[4];
  simt::mma_m16n8k16_bf16(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[isa_c(lane, i).first * 8 + isa_c(lane, i).second] = d[i];
}

void check_pipeline() {
  std::vector<uint16_t> A(256), B(128);
  std::vector<float> Af(256), Bf(128), D(128);
  for (int i = 0; i < 256; ++i) Af[i] = float((i * 7) % 11 - 5), A[i] = bf16_bits(Af[i]);
  for (int i = 0; i < 128; ++i) Bf[i] = float((i * 5) % 9 - 4) * 0.5f, B[i] = bf16_bits(Bf[i]);
  auto r = simt::launch(pipeline_kernel, {1}, {32}, 0, {}, simt::global<const uint16_t>(A.data(), 256),
                        simt::global<const uint16_t>(B.data(), 128), simt::global(D.data(), 128));
  bool right = r.ok();
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      float ref = 0;
      for (int k = 0; k < 16; ++k) ref += Af[m * 16 + k] * Bf[k * 8 + n];
      right &= D[m * 8 + n] == ref;
    }
  check(right, "ldmatrix.x4 + ldmatrix.x2.trans + mma.bf16 from shared memory", r.summary());
}

// ---- checkers on the tensor-core primitives ------------------------------------------------
void mma_partial(GlobalPtr<float> D) {
  uint32_t a[4] = {}, b[2] = {};
  float c[4] = {}, d[4];
  simt::mma_m16n8k16_bf16(d, a, b, c);
  D[simt::lane_id()] = d[0];
}
void mma_some_exit(GlobalPtr<float> D) {
  if (simt::lane_id() == 9) return;
  uint32_t a[4] = {}, b[2] = {};
  float c[4] = {}, d[4];
  simt::mma_m16n8k16_f16(d, a, b, c);
  D[simt::lane_id()] = d[0];
}
void ldmatrix_misaligned(GlobalPtr<uint32_t> out) {
  FASTCONV_SHARED(uint16_t, tile, 256);
  const int lane = int(simt::lane_id());
  for (int i = lane; i < 256; i += 32) tile[i] = 1;
  simt::syncwarp();
  uint32_t r;
  simt::ldmatrix_x1(r, tile + lane * 16 + (lane == 3 ? 4 : 0));  // lane 3: 8 bytes off
  out[lane] = r;
}
void ldmatrix_oob(GlobalPtr<uint32_t> out) {
  FASTCONV_SHARED(uint16_t, tile, 64);  // 8 rows of 8: x2 reads 16 rows
  const int lane = int(simt::lane_id());
  for (int i = lane; i < 64; i += 32) tile[i] = 1;
  simt::syncwarp();
  uint32_t r0, r1;
  simt::ldmatrix_x2(r0, r1, tile + lane * 8);
  out[lane] = r0 + r1;
}

// ---- cp.async -------------------------------------------------------------------------------
// Two-stage copy of a vector through shared memory, 16 bytes per thread per stage.
void cp_async_kernel(GlobalPtr<const float> x, GlobalPtr<float> y, int n, int wait) {
  FASTCONV_SHARED(float, buf, 2 * 128);
  const int t = int(simt::thread_idx().x);
  const int stages = n / 128;
  simt::cp_async(buf + t * 4, x + t * 4, 16);
  simt::cp_async_commit_group();
  for (int s = 0; s < stages; ++s) {
    if (s + 1 < stages) simt::cp_async(buf + ((s + 1) % 2) * 128 + t * 4, x + (s + 1) * 128 + t * 4, 16);
    simt::cp_async_commit_group();
    if (wait) simt::cp_async_wait_group(1);  // BUG when wait == 0: reads before the copy lands
    simt::syncthreads();
    for (int i = 0; i < 4; ++i) y[s * 128 + t * 4 + i] = float(buf[(s % 2) * 128 + t * 4 + i]) * 2.f;
    simt::syncthreads();
  }
  if (wait) simt::cp_async_wait_group(0);
}

void cp_async_zero_fill(GlobalPtr<const float> x, GlobalPtr<float> y) {
  FASTCONV_SHARED(float, buf, 8);
  const int t = int(simt::thread_idx().x);
  simt::cp_async(buf + t * 4, x + t * 4, 16, t == 0 ? 16 : 0);  // thread 1: all zeros, reads nothing
  simt::cp_async_wait_all();
  for (int i = 0; i < 4; ++i) y[t * 4 + i] = buf[t * 4 + i];
}

int main() {
  check(simt::bf16_to_float(0x3f80) == 1.f && simt::bf16_to_float(0xc0a0) == -5.f &&
            simt::float_to_bf16(1.f) == 0x3f80 && simt::float_to_bf16(1.00390625f) == 0x3f80 &&
            simt::float_to_bf16(1.01171875f) == 0x3f82,
        "bf16 conversions (round to nearest even)");
  check(simt::f16_to_float(0x3c00) == 1.f && simt::f16_to_float(0xc000) == -2.f &&
            simt::f16_to_float(0x0001) == std::ldexp(1.f, -24) && simt::f16_to_float(0x7bff) == 65504.f &&
            std::isinf(simt::f16_to_float(0x7c00)) && simt::float_to_f16(0.333251953125f) == 0x3555 &&
            simt::float_to_f16(65520.f) == 0x7c00 && simt::float_to_f16(std::ldexp(1.f, -24)) == 0x0001,
        "f16 conversions (normal, subnormal, infinity)");
  check(f16_bits(-1.25f) == 0xbd00 && f16_bits(0.25f) == 0x3400 && bf16_bits(-3.f) == 0xc040,
        "test's own encoders");
  check_maps_against_figures();
  check_mma(Kind::bf16, "m16n8k16 bf16");
  check_mma(Kind::f16, "m16n8k16 f16");
  check_mma(Kind::tf32, "m16n8k8 tf32");
  check_ldmatrix();
  check_pipeline();

  std::vector<float> D(64);
  std::vector<uint32_t> U(64);
  auto p = simt::launch(mma_partial, {1}, {16}, 0, {}, simt::global(D.data(), 64));
  check(p.count(simt::Checker::collective) >= 1, "mma in a partial warp is reported", p.summary());
  auto e = simt::launch(mma_some_exit, {1}, {32}, 0, {}, simt::global(D.data(), 64));
  check(e.count(simt::Checker::collective) >= 1 && e.errors[0].message.find("lane 9") != std::string::npos,
        "mma with an exited lane is reported", e.summary());
  auto m = simt::launch(ldmatrix_misaligned, {1}, {32}, 0, {}, simt::global(U.data(), 64));
  check(m.count(simt::Checker::memcheck) == 1 && m.errors[0].thread.x == 3, "ldmatrix misaligned row address",
        m.summary());
  auto o = simt::launch(ldmatrix_oob, {1}, {32}, 0, {}, simt::global(U.data(), 64));
  check(o.count(simt::Checker::memcheck) == 8, "ldmatrix rows past the shared array", o.summary());

  {
    const int n = 512;
    std::vector<float> x(n), y(n, -1.f);
    for (int i = 0; i < n; ++i) x[i] = float(i);
    for (auto sched : {simt::Schedule::forward, simt::Schedule::reverse, simt::Schedule::shuffle}) {
      simt::LaunchOptions opt;
      opt.schedule = sched;
      auto r = simt::launch(cp_async_kernel, {1}, {32}, 0, opt, simt::global<const float>(x.data(), n, "x"),
                            simt::global(y.data(), n, "y"), n, 1);
      bool right = r.ok();
      for (int i = 0; i < n; ++i) right &= y[i] == 2.f * float(i);
      check(right, "cp.async double buffering with wait_group(1), schedule " + std::to_string(int(sched)),
            r.summary());
    }
    auto bad = simt::launch(cp_async_kernel, {1}, {32}, 0, {}, simt::global<const float>(x.data(), n, "x"),
                            simt::global(y.data(), n, "y"), n, 0);
    check(bad.count(simt::Checker::initcheck) > 0 && bad.count(simt::Checker::synccheck) > 0,
          "cp.async without wait_group: uninitialised reads and copies never waited for", bad.summary());
    std::vector<float> z(8, -1.f);
    auto zf = simt::launch(cp_async_zero_fill, {1}, {2}, 0, {}, simt::global<const float>(x.data(), 4, "x4"),
                           simt::global(z.data(), 8));
    check(zf.ok() && z[0] == 0.f && z[3] == 3.f && z[4] == 0.f && z[7] == 0.f,
          "cp.async zero-fill (source size 0 past the buffer)", zf.summary());
  }
  return simt_test::finish();
}
