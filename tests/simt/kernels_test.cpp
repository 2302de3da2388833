// Correct kernels give the right answer, with zero checker reports, under every schedule.
#include "simt/simt.h"

#include "check.h"

#include <cmath>
#include <vector>

namespace simt = fastconv::simt;
using simt::GlobalPtr;
using simt::SharedPtr;
using simt_test::check;

// Block sum with a shared-memory tree and __syncthreads.
void block_reduce(GlobalPtr<const float> x, GlobalPtr<float> out, int n) {
  FASTCONV_SHARED(float, partial, 256);
  const unsigned t = simt::thread_idx().x;
  const int64_t i = int64_t(simt::block_idx().x) * simt::block_dim().x + t;
  partial[t] = i < n ? float(x[i]) : 0.f;
  simt::syncthreads();
  for (unsigned s = simt::block_dim().x / 2; s > 0; s >>= 1) {
    if (t < s) partial[t] += partial[t + s];
    simt::syncthreads();
  }
  if (t == 0) out[simt::block_idx().x] = partial[0];
}

// Warp sums by shuffles; lane 0 of each warp adds its warp's sum atomically.
void warp_reduce(GlobalPtr<const int> x, GlobalPtr<int> total, GlobalPtr<int> allreduce, int n) {
  const int64_t i = int64_t(simt::block_idx().x) * simt::block_dim().x + simt::thread_idx().x;
  const int v = i < n ? int(x[i]) : 0;
  int down = v, butterfly = v;
  for (int o = 16; o > 0; o >>= 1) {
    down += simt::shfl_down_sync(simt::full_mask, down, o);
    butterfly += simt::shfl_xor_sync(simt::full_mask, butterfly, o);
  }
  if (simt::lane_id() == 0) simt::atomic_add(total, down);
  if (i < n) allreduce[i] = butterfly;  // every lane holds its warp's sum
}

// Other collectives: inclusive scan with shfl_up, broadcast within width-8 segments, votes.
void collectives(GlobalPtr<int> scan, GlobalPtr<int> seg, GlobalPtr<unsigned> votes) {
  const unsigned lane = simt::lane_id();
  int s = int(lane) + 1;
  for (int o = 1; o < 32; o <<= 1) {
    const int up = simt::shfl_up_sync(simt::full_mask, s, o);
    if (int(lane) >= o) s += up;
  }
  scan[simt::thread_idx().x] = s;
  seg[simt::thread_idx().x] = simt::shfl_sync(simt::full_mask, int(lane) * 10, 3, 8);
  const unsigned b = simt::ballot_sync(simt::full_mask, lane % 3 == 0);
  const int any = simt::any_sync(simt::full_mask, lane == 7);
  const int all = simt::all_sync(simt::full_mask, lane < 32);
  const int none = simt::any_sync(simt::full_mask, 0);
  // half-warp collectives with their own masks, on both halves at once
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  const int h = simt::shfl_xor_sync(half, int(lane), 1);
  simt::syncwarp();
  if (simt::thread_idx().x == 0) {
    votes[0] = b;
    votes[1] = unsigned(any);
    votes[2] = unsigned(all);
    votes[3] = unsigned(none);
  }
  votes[4 + lane] = unsigned(h);
}

void vector_add(GlobalPtr<const float> a, GlobalPtr<const float> b, GlobalPtr<float> c, int64_t n) {
  for (int64_t i = int64_t(simt::block_idx().x) * simt::block_dim().x + simt::thread_idx().x; i < n;
       i += int64_t(simt::block_dim().x) * simt::grid_dim().x)
    c[i] = a[i] + b[i];
}

// out[c][r] = in[r][c] through a padded 32 x 33 tile; block (32, 8).
void transpose(GlobalPtr<const float> in, GlobalPtr<float> out, int rows, int cols) {
  FASTCONV_SHARED(float, tile, 32 * 33);
  const int bx = int(simt::block_idx().x) * 32, by = int(simt::block_idx().y) * 32;
  const int tx = int(simt::thread_idx().x), ty = int(simt::thread_idx().y);
  for (int j = ty; j < 32; j += 8) {
    const int r = by + j, c = bx + tx;
    if (r < rows && c < cols) tile[j * 33 + tx] = in[int64_t(r) * cols + c];
  }
  simt::syncthreads();
  for (int j = ty; j < 32; j += 8) {
    const int r = bx + j, c = by + tx;  // out is cols x rows
    if (r < cols && c < rows) out[int64_t(r) * rows + c] = tile[tx * 33 + j];
  }
}

// Dynamic shared memory and __syncthreads_count: counts the odd values of a block.
void dynamic_count(GlobalPtr<const int> x, GlobalPtr<int> out) {
  FASTCONV_DYNAMIC_SHARED(int, buf);
  const unsigned t = simt::thread_idx().x;
  buf[t] = x[simt::block_idx().x * simt::block_dim().x + t];
  simt::syncthreads();
  const int odd = simt::syncthreads_count(int(buf[(t + 1) % simt::block_dim().x]) & 1);
  if (t == 0) out[simt::block_idx().x] = odd;
}

// __syncthreads_and / _or, global atomics from several blocks on several OS threads.
void votes_and_atomics(GlobalPtr<int> flags, GlobalPtr<float> sum, GlobalPtr<int> maxv) {
  const unsigned t = simt::thread_idx().x;
  const int all_small = simt::syncthreads_and(t < 1000);
  const int any_five = simt::syncthreads_or(t == 5);
  const int none = simt::syncthreads_or(0);
  if (t == 0) flags[simt::block_idx().x] = all_small * 4 + any_five * 2 + none;
  simt::atomic_add(&sum[0], 0.5f);
  simt::atomic_max(maxv + 0, int(simt::block_idx().x * 1000 + t));
}

// A kernel with a large local array needs a larger fiber stack (LaunchOptions::stack_bytes).
void big_stack(GlobalPtr<int> out) {
  volatile int local[40000];  // 160 KB
  for (int i = 0; i < 40000; ++i) local[i] = i;
  simt::syncthreads();
  out[simt::thread_idx().x] = local[39999];
}

// 3-D blocks and grids: linear thread id = x + y * bx + z * bx * by; warp = linear / 32.
void indices(GlobalPtr<unsigned> out) {
  const auto t = simt::thread_idx(), b = simt::block_idx(), bd = simt::block_dim(), gd = simt::grid_dim();
  const unsigned lin = t.x + t.y * bd.x + t.z * bd.x * bd.y;
  const unsigned blk = b.x + b.y * gd.x + b.z * gd.x * gd.y;
  const unsigned i = blk * unsigned(bd.size()) + lin;
  out[i] = (blk << 20) | (simt::warp_id() << 10) | (simt::lane_id() << 5) | (lin == simt::linear_thread_id());
}

int main() {
  {
    std::vector<unsigned> out(12 * 64, 0);
    simt::LaunchOptions opt;
    opt.schedule = simt::Schedule::shuffle;
    auto rep = simt::launch(indices, {2, 3, 2}, {8, 4, 2}, 0, opt, simt::global(out.data(), 12 * 64));
    bool right = rep.ok();
    for (unsigned i = 0; i < 12 * 64; ++i) {
      const unsigned lin = i % 64;
      right &= out[i] == (((i / 64) << 20) | ((lin / 32) << 10) | ((lin % 32) << 5) | 1u);
    }
    check(right, "3-D grid and block indices, warp and lane ids", rep.summary());
  }
  {
    simt::LaunchOptions opt;
    opt.threads = 2;
    opt.schedule = simt::Schedule::shuffle;
    std::vector<int> flags(16, -1);
    float sum = 0;
    int maxv = -1;
    auto rep = simt::launch(votes_and_atomics, {16}, {64}, 0, opt, simt::global(flags.data(), 16),
                            simt::global(&sum, 1), simt::global(&maxv, 1));
    bool right = sum == 16 * 64 * 0.5f && maxv == 15 * 1000 + 63;
    for (int f : flags) right &= f == 6;
    check(right && rep.ok(), "syncthreads_and/or; global atomics across blocks on 2 OS threads", rep.summary());
    std::vector<int> out(32);
    simt::LaunchOptions big;
    big.stack_bytes = 256 * 1024;
    auto b = simt::launch(big_stack, {2}, {32}, 0, big, simt::global(out.data(), 32));
    check(b.ok() && out[0] == 39999 && out[31] == 39999, "stack_bytes: 160 KB of locals on a 256 KiB stack",
          b.summary());
  }

  const simt::Schedule schedules[] = {simt::Schedule::forward, simt::Schedule::reverse,
                                      simt::Schedule::shuffle};
  const char* names[] = {"forward", "reverse", "shuffle"};
  for (int si = 0; si < 3; ++si) {
    simt::LaunchOptions opt;
    opt.schedule = schedules[si];
    opt.seed = 1234;
    opt.threads = si == 2 ? 2 : 1;
    const std::string sfx = std::string(" [") + names[si] + "]";

    {  // block reduction
      const int n = 1000, blocks = 4;
      std::vector<float> x(n), out(blocks, -1.f);
      for (int i = 0; i < n; ++i) x[i] = float((i * 7) % 13);
      auto rep = simt::launch(block_reduce, {blocks}, {256}, 0, opt, simt::global<const float>(x.data(), n, "x"),
                              simt::global(out.data(), blocks, "out"), n);
      bool right = true;
      for (int b = 0; b < blocks; ++b) {
        float ref = 0;
        for (int i = b * 256; i < std::min(n, (b + 1) * 256); ++i) ref += x[i];
        right &= out[b] == ref;
      }
      check(right, "block_reduce result" + sfx);
      check(rep.ok(), "block_reduce no reports" + sfx, rep.summary());
    }
    {  // warp-shuffle reduction
      const int n = 300;
      std::vector<int> x(n), all(n, 0);
      int total = 0, ref = 0;
      for (int i = 0; i < n; ++i) ref += x[i] = (i * 31) % 17 - 5;
      auto rep = simt::launch(warp_reduce, {3}, {128}, 0, opt, simt::global<const int>(x.data(), n, "x"),
                              simt::global(&total, 1, "total"), simt::global(all.data(), n, "all"), n);
      bool right = total == ref;
      for (int i = 0; i < n; ++i) {
        int w = 0;
        for (int j = i / 32 * 32; j < std::min(n, i / 32 * 32 + 32); ++j) w += x[j];
        right &= all[i] == w;
      }
      check(right, "warp_reduce result" + sfx);
      check(rep.ok(), "warp_reduce no reports" + sfx, rep.summary());
    }
    {  // scan, segmented broadcast, votes
      std::vector<int> scan(32), seg(32);
      std::vector<unsigned> votes(36);
      auto rep = simt::launch(collectives, {1}, {32}, 0, opt, simt::global(scan.data(), 32),
                              simt::global(seg.data(), 32), simt::global(votes.data(), 36));
      bool right = votes[0] == 0x49249249u && votes[1] == 1 && votes[2] == 1 && votes[3] == 0;
      for (int l = 0; l < 32; ++l) {
        right &= scan[l] == (l + 1) * (l + 2) / 2;
        right &= seg[l] == (l / 8 * 8 + 3) * 10;
        right &= votes[4 + l] == unsigned(l ^ 1);
      }
      check(right, "shfl_up scan, shfl width 8, ballot/any/all, half-warp masks" + sfx);
      check(rep.ok(), "collectives no reports" + sfx, rep.summary());
    }
    {  // grid-stride vector add
      const int64_t n = 1000;
      std::vector<float> a(n), b(n), c(n, -1.f);
      for (int64_t i = 0; i < n; ++i) a[i] = float(i), b[i] = float(2 * i + 1);
      auto rep = simt::launch(vector_add, {3}, {64}, 0, opt, simt::global<const float>(a.data(), n, "a"),
                              simt::global<const float>(b.data(), n, "b"), simt::global(c.data(), n, "c"), n);
      bool right = true;
      for (int64_t i = 0; i < n; ++i) right &= c[i] == float(3 * i + 1);
      check(right, "vector_add result" + sfx);
      check(rep.ok(), "vector_add no reports" + sfx, rep.summary());
    }
    {  // shared-memory transpose
      const int rows = 70, cols = 45;
      std::vector<float> in(rows * cols), out(rows * cols, -1.f);
      for (int i = 0; i < rows * cols; ++i) in[i] = float(i);
      auto rep = simt::launch(transpose, {(cols + 31) / 32, (rows + 31) / 32}, {32, 8}, 0, opt,
                              simt::global<const float>(in.data(), rows * cols, "in"),
                              simt::global(out.data(), rows * cols, "out"), rows, cols);
      bool right = true;
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) right &= out[c * rows + r] == in[r * cols + c];
      check(right, "transpose result" + sfx);
      check(rep.ok(), "transpose no reports" + sfx, rep.summary());
    }
    {  // dynamic shared memory + syncthreads_count
      std::vector<int> x(2 * 96), out(2, -1);
      int ref[2] = {0, 0};
      for (int i = 0; i < 2 * 96; ++i) ref[i / 96] += (x[i] = i * i % 7) & 1;
      auto rep = simt::launch(dynamic_count, {2}, {96}, 96 * sizeof(int), opt,
                              simt::global<const int>(x.data(), 2 * 96, "x"), simt::global(out.data(), 2, "out"));
      check(out[0] == ref[0] && out[1] == ref[1], "dynamic shared + syncthreads_count" + sfx);
      check(rep.ok(), "dynamic_count no reports" + sfx, rep.summary());
    }
  }
  return simt_test::finish();
}
