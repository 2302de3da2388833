// fastconv::simt wgmma (sm_90a): wgmma.mma_async.sync.aligned m64nNk16 .f32 .bf16/.f16 with A
// and B read from shared memory through 64-bit matrix descriptors, both K-major; wgmma.fence,
// wgmma.commit_group and wgmma.wait_group. A warpgroup is 4 consecutive warps (128 threads
// whose first warp's index is a multiple of 4).
//
// Descriptors (PTX ISA, "Matrix Descriptor Format"): bits 0-13 the start address >> 4, 16-29
// the leading-dimension byte offset >> 4, 32-45 the stride-dimension byte offset >> 4, 49-51
// the matrix base offset, 62-63 the swizzle: 0 none (interleaved core matrices), 1 128-byte,
// 2 64-byte, 3 32-byte. A K-major operand is rows (m of A, n of B) of k: core matrices of 8 rows
// x 16 bytes; without swizzling, a core matrix's rows are 16 bytes apart, core matrices
// adjacent in k are LBO apart and those adjacent in m/n are SBO apart. With an S-byte swizzle
// (S = 32, 64, 128), a row is S bytes of k, 8 rows one S x 8 pattern whose 16-byte chunks are
// permuted: chunk c of row r is stored at chunk c ^ (r % 8) restricted to the pattern's
// chunks (the address's bits 4.. XORed with bits 7..), patterns SBO apart along m/n; the k
// slice of one instruction (16 elements, 32 bytes) lies inside one row, so LBO is not used.
//
// Emulation: when the warpgroup's 128 threads have all issued the same wgmma, the product of
// the 64 x 16 A and the 16 x N B is taken from shared memory at once (exact products summed in
// increasing k, rounded to float at each step, as mma.h does) and each thread's part of D (the
// PTX ISA's fragment: thread t holds rows 16 (t / 32) + (t % 32) / 4 (+ 8), columns 8 j +
// 2 (t % 4) (+ 1)) is kept aside. The thread's registers receive it at the wgmma.wait_group
// that completes its group: read before then, they still hold the old values, which the
// tests' results expose. A wgmma issued before the last one of its group was waited for chains
// on it (D of one is C of the next), as the hardware accumulates in issue order.
//
// Racecheck: the shared memory a wgmma reads counts as read from its issue until the first of
// its warpgroup's threads has waited for it (retired): a write to those bytes in between is
// reported, and at retirement the read is recorded again, as that thread's, so that a later
// write must be ordered after the wait (a consumer that releases a stage before its wgmma has
// completed is caught). Its reads must also follow the bytes' writers: ordered after them, and,
// for generic-proxy writes (stores, cp.async), after the writer's fence.proxy.async.
#pragma once

#include "simt/hopper.h"
#include "simt/mma.h"

#include <deque>

namespace fastconv::simt {

struct SmemDescriptor {
  uint32_t start = 0, lbo = 0, sbo = 0, base_offset = 0, swizzle = 0;  // bytes; swizzle 0/1/2/3
};

inline SmemDescriptor decode_descriptor(uint64_t d) {
  SmemDescriptor s;
  s.start = uint32_t(d & 0x3FFFu) << 4;
  s.lbo = uint32_t((d >> 16) & 0x3FFFu) << 4;
  s.sbo = uint32_t((d >> 32) & 0x3FFFu) << 4;
  s.base_offset = uint32_t((d >> 49) & 0x7u);
  s.swizzle = uint32_t(d >> 62);
  return s;
}

// The bytes of one swizzle row: 128, 64, 32 for swizzles 1, 2, 3; 16 (one core-matrix row) unswizzled.
inline uint32_t swizzle_row_bytes(uint32_t swizzle) {
  return swizzle == 1 ? 128 : swizzle == 2 ? 64 : swizzle == 3 ? 32 : 16;
}

// The window byte offset of element (row, k) of a K-major operand of `elem` bytes.
inline int64_t kmajor_address(const SmemDescriptor& d, int row, int k, int elem) {
  const int64_t kb = int64_t(k) * elem;
  if (d.swizzle == 0)
    return int64_t(d.start) + (row / 8) * int64_t(d.sbo) + (kb / 16) * int64_t(d.lbo) + (row % 8) * 16 + kb % 16;
  const uint32_t row_bytes = swizzle_row_bytes(d.swizzle);
  const int64_t linear = int64_t(d.start) + (row / 8) * int64_t(d.sbo) + (row % 8) * row_bytes + kb;
  // The chunk bits (4 .. 4 + log2(row_bytes / 16)) XOR the row-in-pattern bits (7 ..), as the
  // hardware does on the address (the pattern repeating every 8 rows).
  const int64_t chunks = row_bytes / 16;
  return linear ^ (((linear >> 7) & (chunks - 1)) << 4);
}

namespace detail {

struct WgmmaOp {
  std::vector<std::pair<int64_t, int>> ranges;  // the shared bytes it reads
  std::vector<std::vector<float>> d;             // per thread of the warpgroup: its part of D
  bool retired = false;
};

struct WgmmaEntry {
  std::shared_ptr<WgmmaOp> op;
  float* acc;
  int count;
};

struct WgmmaArrival {
  int n = 0, type = 0;
  uint64_t desc_a = 0, desc_b = 0;
  bool accumulate = false;
  float* acc = nullptr;
};

struct WarpgroupOps {
  std::vector<std::vector<WgmmaEntry>> open;                 // per thread: issued since its last commit
  std::vector<std::deque<std::vector<WgmmaEntry>>> groups;   // per thread: committed, oldest first
};

inline WarpgroupOps& wgmma_state(Runner& r) {
  HopperState& h = hopper_state(r);
  if (!h.wgmma) {
    h.wgmma = std::make_shared<WarpgroupOps>();
    h.wgmma->open.resize(r.nthreads);
    h.wgmma->groups.resize(r.nthreads);
  }
  return *h.wgmma;
}

// The latest value this thread's accumulators will hold: its last unwaited wgmma on them, or
// the registers themselves.
inline const float* accumulator_base(WarpgroupOps& w, unsigned tid, float* acc) {
  for (auto it = w.open[tid].rbegin(); it != w.open[tid].rend(); ++it)
    if (it->acc == acc) return it->op->d[tid % 128].data();
  for (auto g = w.groups[tid].rbegin(); g != w.groups[tid].rend(); ++g)
    for (auto it = g->rbegin(); it != g->rend(); ++it)
      if (it->acc == acc) return it->op->d[tid % 128].data();
  return acc;
}

inline float element_value(Runner& r, int64_t off, int type) {
  uint16_t bits;
  std::memcpy(&bits, r.arena.data() + off, 2);
  return type == 0 ? bf16_to_float(bits) : f16_to_float(bits);
}

// The warpgroup's 128 arrivals agree: compute D, and hand each thread its part.
inline void resolve_wgmma(Runner& r, unsigned first) {
  const WgmmaArrival& a0 = *static_cast<WgmmaArrival*>(r.threads_[first].wg_op);
  for (unsigned i = first; i < first + 128; ++i) {
    const WgmmaArrival& a = *static_cast<WgmmaArrival*>(r.threads_[i].wg_op);
    if (a.n != a0.n || a.type != a0.type || a.desc_a != a0.desc_a || a.desc_b != a0.desc_b ||
        a.accumulate != a0.accumulate) {
      Thread* saved = r.cur;
      r.cur = &r.threads_[i];
      r.error(Checker::collective, "wgmma: the warpgroup's threads " + std::to_string(first) + ".." +
                                       std::to_string(first + 127) + " disagree on its shape, descriptors or "
                                       "scale-d (thread " + std::to_string(i) + ")");
      r.cur = saved;
      r.aborting = true;
      return;
    }
  }
  const int N = a0.n, elem = 2;
  const SmemDescriptor da = decode_descriptor(a0.desc_a), db = decode_descriptor(a0.desc_b);
  auto op = std::make_shared<WgmmaOp>();
  const int64_t window = int64_t(limits::max_shared_bytes_optin);
  std::vector<float> A(64 * 16), B(size_t(N) * 16);
  auto fetch = [&](const SmemDescriptor& d, int row, int k, float* dst) {
    const int64_t off = kmajor_address(d, row, k, elem);
    if (off < 0 || off + elem > window || off + elem > r.arena_used) {
      r.error(Checker::memcheck, "wgmma: the descriptor addresses shared byte " + std::to_string(off) +
                                     ", outside the block's shared memory (" + std::to_string(r.arena_used) + " bytes)",
              "shared", off);
      *dst = 0;
      return;
    }
    op->ranges.emplace_back(off, elem);
    *dst = element_value(r, off, a0.type);
  };
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) fetch(da, m, k, &A[m * 16 + k]);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < 16; ++k) fetch(db, n, k, &B[n * 16 + k]);
  // The reads, checked against their writers now (as the first thread's), and pending until
  // the wgmma retires.
  Thread& t0 = r.threads_[first];
  for (auto [off, n] : op->ranges) {
    async_proxy_read(r, t0, off, size_t(n), "wgmma");
    for (int b = 0; b < n; ++b) r.shadow[size_t(off + b)].async_reads++;
  }
  WarpgroupOps& w = wgmma_state(r);
  op->d.resize(128);
  for (unsigned t = 0; t < 128; ++t) {
    const WgmmaArrival& a = *static_cast<WgmmaArrival*>(r.threads_[first + t].wg_op);
    const float* base = accumulator_base(w, first + t, a.acc);
    std::vector<float>& out = op->d[t];
    out.assign(base, base + N / 2);
    const unsigned warp = t / 32, lane = t % 32;
    for (int i = 0; i < N / 2; ++i) {
      const int row = int(16 * warp + lane / 4 + 8 * ((i % 4) / 2));
      const int col = 8 * (i / 4) + 2 * int(lane % 4) + i % 2;
      float sum = a.accumulate ? out[i] : 0.f;
      for (int k = 0; k < 16; ++k) sum += A[row * 16 + k] * B[col * 16 + k];
      out[i] = sum;
    }
    w.open[first + t].push_back({op, a.acc, N / 2});
  }
}

// Retires a wgmma: its shared reads end, recorded once more as thread t's at this moment.
inline void retire_wgmma(Runner& r, Thread& t, WgmmaOp& op) {
  if (op.retired) return;
  op.retired = true;
  for (auto [off, n] : op.ranges) {
    for (int b = 0; b < n; ++b) {
      uint16_t& c = r.shadow[size_t(off + b)].async_reads;
      if (c) --c;
    }
    async_proxy_read(r, t, off, size_t(n), "wgmma");
  }
}

}  // namespace detail

// wgmma.fence.sync.aligned: orders the registers' earlier writes before the wgmma that reads
// them; nothing to emulate (the emulator reads the registers when the warpgroup issues).
inline void wgmma_fence() {}

enum class WgmmaType { bf16 = 0, f16 = 1 };

// wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16} acc, desc_a, desc_b, scale-d, 1, 1, 0, 0
template <int N>
void wgmma_m64nNk16(float (&acc)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate, WgmmaType type) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 up to 256");
  detail::Runner& r = detail::runner();
  detail::Thread& t = *r.cur;
  if (r.nthreads % 128 != 0) {
    r.error(Checker::collective, "wgmma: the block's " + std::to_string(r.nthreads) +
                                     " threads are not whole warpgroups of 128");
    r.abort_self();
  }
  r.activate_vc();
  detail::WgmmaArrival arrival{N, int(type), desc_a, desc_b, accumulate, acc};
  t.wg_op = &arrival;
  const unsigned first = t.tid / 128 * 128;
  bool all = true;
  for (unsigned i = first; i < first + 128; ++i)
    if (i != t.tid && r.threads_[i].state != detail::TState::warpgroup) all = false;
  if (!all) {
    t.state = detail::TState::warpgroup;
    r.switch_to_scheduler();
    t.wg_op = nullptr;
    return;
  }
  detail::resolve_wgmma(r, first);
  for (unsigned i = first; i < first + 128; ++i) {
    if (i != t.tid) r.threads_[i].state = detail::TState::ready;
  }
  t.wg_op = nullptr;
  if (r.aborting) throw detail::Abort{};
}

// wgmma.commit_group.sync.aligned: this thread's wgmmas since its last commit form a group.
inline void wgmma_commit_group() {
  detail::Runner& r = detail::runner();
  detail::WarpgroupOps& w = detail::wgmma_state(r);
  const unsigned tid = r.cur->tid;
  w.groups[tid].push_back(std::move(w.open[tid]));
  w.open[tid].clear();
}

// wgmma.wait_group.sync.aligned n: until at most n of this thread's groups are pending; the
// completed ones' results land in its registers.
inline void wgmma_wait_group(int n) {
  detail::Runner& r = detail::runner();
  detail::Thread& t = *r.cur;
  detail::WarpgroupOps& w = detail::wgmma_state(r);
  auto& groups = w.groups[t.tid];
  while (groups.size() > size_t(std::max(n, 0))) {
    for (detail::WgmmaEntry& e : groups.front()) {
      std::memcpy(e.acc, e.op->d[t.tid % 128].data(), size_t(e.count) * sizeof(float));
      detail::retire_wgmma(r, t, *e.op);
    }
    groups.pop_front();
  }
}

}  // namespace fastconv::simt
