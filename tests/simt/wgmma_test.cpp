// wgmma under the emulator (simt/wgmma.h), against layouts written out here from the PTX ISA's
// own text and figures, independently of the emulator's code (a misreading shared by both would
// make every emulated test pass while the tensor cores compute garbage):
//   - the matrix descriptor's fields and bit positions ("Matrix Descriptor Format");
//   - the canonical K-major layouts: no swizzle (8 x 16-byte core matrices, LBO along k, SBO
//     along m/n) and the 128-, 64- and 32-byte swizzles (rows of 128/64/32 bytes, the 16-byte
//     chunks of an address XORed with its bits 7.., cute's Swizzle<3,4,3>, <2,4,3>, <1,4,3>);
//   - the m64nNk16 D fragment (the "WGMMA .m64nNk16 register fragment layout for accumulator
//     matrix D" figure: warp w of the warpgroup holds rows 16w..16w+15; lane l's d[4j..4j+3]
//     are (16w + l/4, 8j + 2(l%4)), (.., +1), (16w + 8 + l/4, 8j + 2(l%4)), (.., +1)).
// Then whole products through shared memory, chained k16 steps, the results' arrival at
// wait_group, and the hazards: a missing fence.proxy.async, a stage released before its wgmma
// completed, setmaxnreg out of range.
#include "simt/simt.h"

#include "check.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace simt = fastconv::simt;
using simt::Checker;
using simt::GlobalPtr;
using simt_test::check;

// ---- the ISA's layouts, written out independently ------------------------------------------

// Descriptor from its fields (bytes for the address and offsets; 14 bits each of value >> 4).
static uint64_t iso_descriptor(uint32_t start, uint32_t lbo, uint32_t sbo, uint32_t base_offset, uint32_t swizzle) {
  return uint64_t(start >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32) | (uint64_t(base_offset) << 49) |
         (uint64_t(swizzle) << 62);
}

// Byte of element (row, k) (16-bit elements) of a K-major tile at a pattern-aligned start.
// 128-byte swizzle: a row is 64 k (128 bytes), 8 rows a 1024-byte pattern, chunk c of row r at
// chunk c ^ (r % 8); patterns `sbo` apart.
static int64_t iso_sw128(uint32_t start, uint32_t sbo, int row, int k) {
  return start + (row / 8) * int64_t(sbo) + (row % 8) * 128 + (((k / 8) ^ (row % 8)) * 16) + (k % 8) * 2;
}
// 64-byte swizzle: a row is 32 k (64 bytes); the address's bits 4-5 XOR its bits 7-8, and
// address bits 7-8 of row r (r % 8 rows of 64 bytes) are (r / 2) % 4.
static int64_t iso_sw64(uint32_t start, uint32_t sbo, int row, int k) {
  return start + (row / 8) * int64_t(sbo) + (row % 8) * 64 + (((k / 8) ^ ((row / 2) % 4)) * 16) + (k % 8) * 2;
}
// 32-byte swizzle: a row is 16 k; bit 4 XOR bit 7: chunk c of row r at c ^ ((r / 4) % 2).
static int64_t iso_sw32(uint32_t start, uint32_t sbo, int row, int k) {
  return start + (row / 8) * int64_t(sbo) + (row % 8) * 32 + (((k / 8) ^ ((row / 4) % 2)) * 16) + (k % 8) * 2;
}
// No swizzle: core matrices of 8 rows x 8 k (16 bytes a row, 128 bytes), `lbo` apart along k,
// `sbo` apart along m/n.
static int64_t iso_interleave(uint32_t start, uint32_t lbo, uint32_t sbo, int row, int k) {
  return start + (row / 8) * int64_t(sbo) + (k / 8) * int64_t(lbo) + (row % 8) * 16 + (k % 8) * 2;
}

// The D fragment: (row, col) of register i of thread t (0..127) of the warpgroup.
static void iso_d_fragment(int t, int i, int* row, int* col) {
  const int warp = t / 32, lane = t % 32;
  *row = 16 * warp + lane / 4 + 8 * ((i / 2) % 2);
  *col = 8 * (i / 4) + 2 * (lane % 4) + (i % 2);
}

// ---- kernels -------------------------------------------------------------------------------

// One warpgroup: A (64 x 16 k16-steps) and B (N x K) are already in dynamic shared memory at
// `a_start` / `b_start` in the layout their descriptors name; four chained k16 wgmma (k = 64)
// or one (k = 16), then each thread writes its registers to d[t][i].
template <int N>
void product_kernel(GlobalPtr<float> d, uint64_t a0, uint64_t b0, int k16_steps, uint32_t a_step, uint32_t b_step,
                    GlobalPtr<const uint16_t> image, int bytes) {
  FASTCONV_DYNAMIC_SHARED(uint16_t, smem);
  const int t = int(simt::thread_idx().x);
  for (int e = t; e < bytes / 2; e += 128) smem[e] = uint16_t(image[e]);
  simt::fence_proxy_async();
  simt::syncthreads();
  float acc[N / 2];
  for (int i = 0; i < N / 2; ++i) acc[i] = -7.f;
  simt::wgmma_fence();
  for (int s = 0; s < k16_steps; ++s)
    simt::wgmma_m64nNk16<N>(acc, a0 + uint64_t((s * a_step) >> 4), b0 + uint64_t((s * b_step) >> 4), s > 0,
                            simt::WgmmaType::bf16);
  simt::wgmma_commit_group();
  // Before the wait the registers still hold what they held (the hardware's are undefined).
  d[t * (N / 2)] = acc[0];
  simt::wgmma_wait_group(0);
  for (int i = 0; i < N / 2; ++i) d[128 * (N / 2) + t * (N / 2) + i] = acc[i];
}

static uint16_t bf16(float f) { return simt::float_to_bf16(f); }

struct Operand {
  int rows, k;
  std::vector<float> v;  // bf16-exact values, [rows][k]
};

static Operand random_operand(int rows, int k, std::mt19937& g) {
  Operand o{rows, k, std::vector<float>(size_t(rows) * k)};
  std::uniform_int_distribution<int> u(-8, 8);
  for (float& x : o.v) x = float(u(g)) / 4.f;  // exact in bf16, and exact sums
  return o;
}

// Runs the product for a layout: `place` gives the byte of (row, k) of A (which = 0) or B (1).
template <int N, typename Place>
static bool run_product(const std::string& name, Place place, uint64_t da, uint64_t db, uint32_t a_step,
                        uint32_t b_step, int k_total, int bytes) {
  std::mt19937 g(11 + N + k_total);
  const Operand A = random_operand(64, k_total, g), B = random_operand(N, k_total, g);
  std::vector<uint16_t> image(size_t(bytes) / 2, bf16(0.f));
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < k_total; ++k) image[size_t(place(0, m, k)) / 2] = bf16(A.v[size_t(m) * k_total + k]);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < k_total; ++k) image[size_t(place(1, n, k)) / 2] = bf16(B.v[size_t(n) * k_total + k]);
  std::vector<float> d(size_t(2) * 128 * (N / 2), 0.f);
  auto r = simt::launch(product_kernel<N>, {1}, {128}, size_t(bytes), {}, simt::global(d.data(), int64_t(d.size()), "d"),
                        da, db, k_total / 16, a_step, b_step,
                        simt::global<const uint16_t>(image.data(), int64_t(image.size()), "image"), bytes);
  bool right = r.ok(), untouched = true;
  for (int t = 0; t < 128; ++t) {
    untouched &= d[size_t(t) * (N / 2)] == -7.f;
    for (int i = 0; i < N / 2; ++i) {
      int row, col;
      iso_d_fragment(t, i, &row, &col);
      double want = 0;
      for (int k = 0; k < k_total; ++k) want += double(A.v[size_t(row) * k_total + k]) * B.v[size_t(col) * k_total + k];
      right &= d[size_t(128) * (N / 2) + size_t(t) * (N / 2) + i] == float(want);
    }
  }
  check(right, name, r.summary());
  return right && untouched;
}

// A thread stores a tile of A with plain stores and, with `fence`, fences them before the
// wgmma that reads it (after a syncthreads).
template <bool fence>
void fence_kernel(GlobalPtr<float> d) {
  FASTCONV_DYNAMIC_SHARED(uint16_t, smem);
  const int t = int(simt::thread_idx().x);
  for (int e = t; e < 64 * 64 + 8 * 64; e += 128) smem[e] = bf16(1.f);
  if (fence) simt::fence_proxy_async();
  simt::syncthreads();
  float acc[4] = {0, 0, 0, 0};
  const uint64_t da = iso_descriptor(0, 16, 1024, 0, 1), db = iso_descriptor(8192, 16, 1024, 0, 1);
  simt::wgmma_m64nNk16<8>(acc, da, db, false, simt::WgmmaType::bf16);
  simt::wgmma_commit_group();
  simt::wgmma_wait_group(0);
  d[t] = acc[0];
}

// Two warpgroups: warpgroup 0 (the producer) fills the B tile and hands it over full; warpgroup
// 1 waits, wgmmas on it, and releases it on empty; then the producer overwrites the tile. The
// bug: the consumer releases the stage before its wgmma has completed.
template <bool release_early>
void release_kernel(GlobalPtr<float> d) {
  FASTCONV_DYNAMIC_SHARED(uint16_t, smem);
  FASTCONV_SHARED(uint64_t, full, 1);
  FASTCONV_SHARED(uint64_t, empty, 1);
  const int t = int(simt::thread_idx().x);
  if (t == 0) {
    simt::mbarrier_init(full, 128);
    simt::mbarrier_init(empty, 128);
  }
  simt::syncthreads();
  if (t < 128) {
    for (int round = 0; round < 2; ++round) {
      simt::mbarrier_wait_parity(empty, uint32_t(round & 1) ^ 1u);
      for (int e = t; e < 64 * 64 + 8 * 64; e += 128) smem[e] = bf16(float(round + 1));
      simt::fence_proxy_async();
      simt::mbarrier_arrive(full);
    }
  } else {
    float acc[4] = {0, 0, 0, 0};
    const uint64_t da = iso_descriptor(0, 16, 1024, 0, 1), db = iso_descriptor(8192, 16, 1024, 0, 1);
    for (int round = 0; round < 2; ++round) {
      simt::mbarrier_wait_parity(full, uint32_t(round & 1));
      simt::wgmma_fence();
      simt::wgmma_m64nNk16<8>(acc, da, db, round > 0, simt::WgmmaType::bf16);
      simt::wgmma_commit_group();
      if (release_early) simt::mbarrier_arrive(empty);  // BUG: the wgmma may still be reading
      simt::wgmma_wait_group(0);
      if (!release_early) simt::mbarrier_arrive(empty);
    }
    d[t - 128] = acc[0];
  }
}

void bad_setmaxnreg(GlobalPtr<float>) { simt::setmaxnreg(20); }

static bool reports(const simt::LaunchReport& r, Checker c, const std::string& words) {
  for (const auto& e : r.errors)
    if (e.checker == c && e.message.find(words) != std::string::npos) return true;
  return false;
}

int main() {
  // Descriptor fields: start address bits 0-13, LBO 16-29, SBO 32-45, base offset 49-51, swizzle 62-63.
  {
    const uint64_t d = 0x4000004000010040ull;  // start 0x40 << 4, LBO 1 << 4, SBO 0x40 << 4, 128-byte swizzle
    const simt::SmemDescriptor s = simt::decode_descriptor(d);
    check(s.start == 0x400 && s.lbo == 16 && s.sbo == 1024 && s.base_offset == 0 && s.swizzle == 1 &&
              iso_descriptor(0x400, 16, 1024, 0, 1) == d,
          "descriptor: fields and bit positions (PTX ISA matrix descriptor format)");
    const simt::SmemDescriptor s2 = simt::decode_descriptor(iso_descriptor(0x3fff0, 0x3fff0, 0x3fff0, 5, 3));
    check(s2.start == 0x3fff0 && s2.lbo == 0x3fff0 && s2.sbo == 0x3fff0 && s2.base_offset == 5 && s2.swizzle == 3,
          "descriptor: each field's full 14 (3, 2) bits");
  }
  // The 128-byte swizzle, element by element, as the ISA's figure places them (bf16, a 64 x 64
  // tile at a 1024-aligned start): by hand, chunk c of row r lands at chunk c ^ (r % 8).
  {
    struct Entry { int row, k; int64_t byte; };
    const Entry hand[] = {{0, 0, 0}, {0, 8, 16}, {1, 0, 144}, {1, 8, 128}, {7, 56, 896},
                          {8, 0, 1024}, {9, 16, 1200}, {63, 63, 8078}, {2, 1, 2 * 128 + 2 * 16 + 2}};
    bool ok = true;
    const simt::SmemDescriptor d = simt::decode_descriptor(iso_descriptor(0, 16, 1024, 0, 1));
    for (const Entry& e : hand)
      ok &= iso_sw128(0, 1024, e.row, e.k) == e.byte && simt::kmajor_address(d, e.row, e.k, 2) == e.byte;
    // A k16 step inside the row: the start moves by 32 bytes; the swizzle follows the address.
    const simt::SmemDescriptor d2 = simt::decode_descriptor(iso_descriptor(32, 16, 1024, 0, 1));
    for (int r = 0; r < 16; ++r)
      for (int k = 0; k < 16; ++k) ok &= simt::kmajor_address(d2, r, k, 2) == iso_sw128(0, 1024, r, k + 16);
    check(ok, "layout: K-major 128-byte swizzle, by hand and for a k16 step inside the row");
  }
  {
    bool ok = true;
    const simt::SmemDescriptor d64 = simt::decode_descriptor(iso_descriptor(0, 16, 512, 0, 2));
    const simt::SmemDescriptor d32 = simt::decode_descriptor(iso_descriptor(0, 16, 256, 0, 3));
    const simt::SmemDescriptor dn = simt::decode_descriptor(iso_descriptor(0, 128, 256, 0, 0));
    for (int r = 0; r < 64; ++r)
      for (int k = 0; k < 16; ++k) {
        ok &= simt::kmajor_address(d64, r, k, 2) == iso_sw64(0, 512, r, k);
        ok &= simt::kmajor_address(d32, r, k, 2) == iso_sw32(0, 256, r, k);
        ok &= simt::kmajor_address(dn, r, k, 2) == iso_interleave(0, 128, 256, r, k);
      }
    check(ok, "layout: K-major 64- and 32-byte swizzles and interleaved core matrices");
  }
  // The D fragment's first entries, as the ISA's figure draws them.
  {
    int row, col;
    bool ok = true;
    const int want[][4] = {{0, 0, 0, 0}, {0, 1, 0, 1}, {0, 2, 8, 0}, {0, 3, 8, 1}, {1, 0, 0, 2},
                           {4, 0, 1, 0}, {32, 0, 16, 0}, {127, 3, 63, 7}, {5, 4, 1, 10}};
    for (const auto& w : want) {
      iso_d_fragment(w[0], w[1], &row, &col);
      ok &= row == w[2] && col == w[3];
    }
    check(ok, "fragment: m64nNk16 D, thread and register to row and column (the ISA's figure)");
  }
  // Whole products through shared memory.
  const uint32_t b_start = 8192;  // after A's 64 rows x 128 bytes
  run_product<8>("wgmma m64n8k16, 128-byte swizzle, one step",
                 [&](int which, int row, int k) { return iso_sw128(which ? b_start : 0, 1024, row, k); },
                 iso_descriptor(0, 16, 1024, 0, 1), iso_descriptor(b_start, 16, 1024, 0, 1), 32, 32, 16, 8192 + 1024);
  const bool chained = run_product<128>(
      "wgmma m64n128k16 x 4 chained (k = 64), 128-byte swizzle, D fragment",
      [&](int which, int row, int k) { return iso_sw128(which ? b_start : 0, 1024, row, k); },
      iso_descriptor(0, 16, 1024, 0, 1), iso_descriptor(b_start, 16, 1024, 0, 1), 32, 32, 64, 8192 + 16384);
  check(chained, "wgmma: the registers keep their values until wait_group, then hold D");
  run_product<256>("wgmma m64n256k16 x 4 chained, 128-byte swizzle",
                   [&](int which, int row, int k) { return iso_sw128(which ? b_start : 0, 1024, row, k); },
                   iso_descriptor(0, 16, 1024, 0, 1), iso_descriptor(b_start, 16, 1024, 0, 1), 32, 32, 64,
                   8192 + 32768);
  run_product<64>("wgmma m64n64k16, interleaved core matrices (LBO along k, SBO along m/n)",
                  [&](int which, int row, int k) { return iso_interleave(which ? 4096 : 0, 128, 256, row, k); },
                  iso_descriptor(0, 128, 256, 0, 0), iso_descriptor(4096, 128, 256, 0, 0), 256, 256, 16, 4096 + 2048);
  run_product<64>("wgmma m64n64k16, 64-byte swizzle",
                  [&](int which, int row, int k) { return iso_sw64(which ? 4096 : 0, 512, row, k); },
                  iso_descriptor(0, 16, 512, 0, 2), iso_descriptor(4096, 16, 512, 0, 2), 32, 32, 16, 4096 + 4096);
  // Hazards.
  std::vector<float> d(256, 0.f);
  auto unfenced = simt::launch(fence_kernel<false>, {1}, {128}, 12288, {}, simt::global(d.data(), 256, "d"));
  check(reports(unfenced, Checker::racecheck, "no fence.proxy.async"),
        "fence.proxy.async: a generic-proxy write read by wgmma without it is reported", unfenced.summary());
  auto fenced = simt::launch(fence_kernel<true>, {1}, {128}, 12288, {}, simt::global(d.data(), 256, "d"));
  check(fenced.ok() && d[0] == 16.f, "fence.proxy.async: with it, clean", fenced.summary());
  auto good = simt::launch(release_kernel<false>, {1}, {256}, 12288, {}, simt::global(d.data(), 256, "d"));
  check(good.ok() && d[0] == 16.f + 64.f, "wgmma ring: releasing a stage after wait_group is clean", good.summary());
  auto early = simt::launch(release_kernel<true>, {1}, {256}, 12288, {}, simt::global(d.data(), 256, "d"));
  check(reports(early, Checker::racecheck, "while a wgmma reading it is in flight") ||
            reports(early, Checker::racecheck, "(write-after-read)"),
        "wgmma ring: a stage released before its wgmma completed is reported", early.summary());
  auto reg = simt::launch(bad_setmaxnreg, {1}, {128}, 0, {}, simt::global(d.data(), 256, "d"));
  check(reports(reg, Checker::launch, "setmaxnreg"), "setmaxnreg: a count outside 24..256 or not a multiple of 8",
        reg.summary());
  return simt_test::finish();
}
