// The Hopper family's stage ring (csrc/cuda/hopper/pipeline.cuh) on its own: a cp.async
// producer warpgroup (CpAsyncProducer) fills 128-byte-swizzled stages (KMajorSwizzle128) and a
// consumer warpgroup reads them with wgmma, as the family's mainloop does, over a small GEMM
// (D = sum over k-tiles of A_t B_t^T, 64 x 8, k 64 a tile) whose result is checked against the
// host's. Clean under every schedule and ring shape; the two ways to break the hand-off are
// reported: a producer that refills a stage before its empty barrier's phase has flipped, and
// a consumer that releases a stage before the wgmma reading it has completed.
#include "cuda/hopper/config.h"
#include "cuda/hopper/pipeline.cuh"

#include "check.h"

#include <random>
#include <string>
#include <vector>

namespace simt = fastconv::simt;
namespace cuda = fastconv::cuda;
namespace hopper = fastconv::cuda::hopper;
using simt::Checker;
using simt_test::check;

enum class Bug { none, refill_before_empty, release_before_wait };

constexpr int kM = 64, kN = 8, kBK = 64, kTiles = 7;
constexpr int kATile = kM * kBK * 2, kBTile = kN * kBK * 2, kStage = kATile + kBTile;

// A and B: [kTiles][rows][64] bf16 bits, row-major in k. The producer's thread t copies chunk
// t % 8 of rows t / 8, + 16, ... (as the family's Producer::load does), 16 bytes each.
template <int Stages, int InFlight, Bug bug>
void ring_gemm(cuda::gptr<const c10::BFloat16> a, cuda::gptr<const c10::BFloat16> b, cuda::gptr<float> d) {
  FASTCONV_DYNAMIC_SHARED(uint8_t, smem);
  const uint32_t base = cuda::shared_address(smem);
  const cuda::sptr<uint8_t> ring = smem + int((1024 - base % 1024) % 1024);
  const cuda::sptr<uint64_t> barriers = cuda::shared_as<uint64_t>(ring + Stages * kStage);
  const hopper::MbarrierRing<Stages> bars{barriers, barriers + Stages};
  const int tid = int(cuda::thread_index().x), wg_tid = tid % 128;
  if (tid == 0) bars.init(128, 128);
  cuda::sync_threads();
  if (tid < 128) {
    hopper::CpAsyncProducer<Stages, InFlight> producer{bars, {}, {}};
    const int chunk = wg_tid % 8, row0 = wg_tid / 8;
    for (int kt = 0; kt < kTiles; ++kt) {
      if (bug != Bug::refill_before_empty) producer.acquire();
      const cuda::sptr<uint8_t> stage = ring + producer.issue.index * kStage;
      for (int row = row0; row < kM; row += 16)
        cuda::cp_async(stage + hopper::KMajorSwizzle128::chunk_offset(row, chunk),
                       a + (int64_t(kt) * kM + row) * kBK + chunk * 8, 16);
      for (int row = row0; row < kN; row += 16)
        cuda::cp_async(stage + kATile + hopper::KMajorSwizzle128::chunk_offset(row, chunk),
                       b + (int64_t(kt) * kN + row) * kBK + chunk * 8, 16);
      producer.issued();
    }
    producer.drain();
  } else {
    float acc[kN / 2] = {0.f, 0.f, 0.f, 0.f};
    hopper::PipelineState s, previous;
    for (int kt = 0; kt < kTiles; ++kt) {
      bars.consumer_wait(s);
      const uint32_t a_tile = cuda::shared_address(ring) + uint32_t(s.index) * kStage;
      cuda::wgmma_fence();
      for (int k16 = 0; k16 < kBK / 16; ++k16)
        cuda::wgmma_m64nNk16<c10::BFloat16, kN>(acc, hopper::KMajorSwizzle128::descriptor(a_tile, k16),
                                                 hopper::KMajorSwizzle128::descriptor(a_tile + kATile, k16),
                                                 kt > 0 || k16 > 0);
      cuda::wgmma_commit_group();
      if (bug == Bug::release_before_wait) {
        bars.consumer_release(s);  // BUG: the group reading the stage may still be in flight
        cuda::wgmma_wait_group<0>();
      } else {
        cuda::wgmma_wait_group<1>();
        if (kt > 0) bars.consumer_release(previous);
      }
      previous = s;
      s.template advance<Stages>();
    }
    cuda::wgmma_wait_group<0>();
    if (bug != Bug::release_before_wait) bars.consumer_release(previous);
    // The D fragment, as the family's epilogue reads it.
    const int warp = wg_tid / 32, lane = wg_tid % 32;
    for (int i = 0; i < kN / 2; ++i) {
      const int row = 16 * warp + lane / 4 + 8 * ((i % 4) / 2), col = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
      d[row * kN + col] = acc[i];
    }
  }
}

struct Data {
  std::vector<c10::BFloat16> a, b;
  std::vector<float> want;
};

static Data make_data() {
  Data x{std::vector<c10::BFloat16>(size_t(kTiles) * kM * kBK), std::vector<c10::BFloat16>(size_t(kTiles) * kN * kBK),
         std::vector<float>(kM * kN, 0.f)};
  std::mt19937 g(5);
  std::uniform_int_distribution<int> u(-8, 8);
  std::vector<float> af(x.a.size()), bf(x.b.size());
  for (size_t i = 0; i < af.size(); ++i) x.a[i] = c10::BFloat16(af[i] = float(u(g)) / 4.f);  // exact sums
  for (size_t i = 0; i < bf.size(); ++i) x.b[i] = c10::BFloat16(bf[i] = float(u(g)) / 4.f);
  for (int t = 0; t < kTiles; ++t)
    for (int m = 0; m < kM; ++m)
      for (int n = 0; n < kN; ++n)
        for (int k = 0; k < kBK; ++k)
          x.want[m * kN + n] += af[(size_t(t) * kM + m) * kBK + k] * bf[(size_t(t) * kN + n) * kBK + k];
  return x;
}

template <int Stages, int InFlight, Bug bug>
static simt::LaunchReport run(const Data& x, simt::Schedule schedule, bool* right) {
  std::vector<float> d(kM * kN, -1.f);
  simt::LaunchOptions opt;
  opt.schedule = schedule;
  opt.seed = 7;
  const size_t shared = 1024 + size_t(Stages) * kStage + 2 * Stages * 8;
  auto r = simt::launch(ring_gemm<Stages, InFlight, bug>, {1}, {256}, shared, opt,
                        simt::global<const c10::BFloat16>(x.a.data(), int64_t(x.a.size()), "a"),
                        simt::global<const c10::BFloat16>(x.b.data(), int64_t(x.b.size()), "b"),
                        simt::global(d.data(), int64_t(d.size()), "d"));
  *right = d == x.want;
  return r;
}

int main() {
  const Data x = make_data();
  const simt::Schedule schedules[] = {simt::Schedule::forward, simt::Schedule::reverse, simt::Schedule::shuffle};
  const char* names[] = {"forward", "reverse", "shuffle"};
  for (int i = 0; i < 3; ++i) {
    const std::string tag = std::string(" [") + names[i] + "]";
    bool right = false;
    // The family's shapes (4 stages, 2 in flight; 5 and 3), and the ring's edges: every copy
    // waited for before its commit (InFlight 0), and two stages.
    auto r42 = run<4, 2, Bug::none>(x, schedules[i], &right);
    check(r42.ok() && right, "hopper ring: 4 stages, 2 in flight, wgmma consumer, clean and right" + tag, r42.summary());
    auto r53 = run<5, 3, Bug::none>(x, schedules[i], &right);
    check(r53.ok() && right, "hopper ring: 5 stages, 3 in flight, clean and right" + tag, r53.summary());
    auto r30 = run<3, 0, Bug::none>(x, schedules[i], &right);
    check(r30.ok() && right, "hopper ring: 3 stages, none in flight, clean and right" + tag, r30.summary());
    auto r20 = run<2, 0, Bug::none>(x, schedules[i], &right);
    check(r20.ok() && right, "hopper ring: 2 stages, none in flight, clean and right" + tag, r20.summary());
    auto early = run<3, 1, Bug::refill_before_empty>(x, schedules[i], &right);
    check(early.count(Checker::racecheck) > 0,
          "hopper ring: a refill before the empty barrier's phase flipped is reported" + tag, early.summary());
    auto released = run<3, 1, Bug::release_before_wait>(x, schedules[i], &right);
    check(released.count(Checker::racecheck) > 0,
          "hopper ring: a stage released before its wgmma completed is reported" + tag, released.summary());
  }
  return simt_test::finish();
}
