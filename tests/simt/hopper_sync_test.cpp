// Hopper synchronisation under the emulator (simt/hopper.h): mbarrier phases, parities and
// transaction counts against the PTX ISA's rules, a producer/consumer stage ring handed off by
// full and empty mbarriers (clean under every schedule, with no syncthreads in its loop), and the
// hazards the ring exists to prevent, each planted and reported: a producer that refills a stage
// before its empty barrier's phase has flipped, a consumer that reads before waiting on the full
// barrier, and waits that can never complete. Named barriers likewise.
#include "simt/simt.h"

#include "check.h"

#include <string>
#include <vector>

namespace simt = fastconv::simt;
using simt::Checker;
using simt::GlobalPtr;
using simt_test::check;

static bool reports(const simt::LaunchReport& r, Checker c, const std::string& words) {
  for (const auto& e : r.errors)
    if (e.checker == c && e.message.find(words) != std::string::npos) return true;
  return false;
}

// The phase and parity rules, from one thread. Writes what it saw to out.
void phases(GlobalPtr<int> out) {
  FASTCONV_SHARED(uint64_t, bar, 1);
  int i = 0;
  simt::mbarrier_init(bar, 2);
  // A fresh barrier is in phase 0: parity 1 counts as complete, parity 0 does not.
  out[i++] = simt::mbarrier_try_wait_parity(bar, 1);
  out[i++] = simt::mbarrier_try_wait_parity(bar, 0);
  simt::mbarrier_arrive(bar);
  out[i++] = simt::mbarrier_try_wait_parity(bar, 0);  // one of two arrivals: still under way
  simt::mbarrier_arrive(bar);
  out[i++] = simt::mbarrier_try_wait_parity(bar, 0);  // phase 0 complete
  out[i++] = simt::mbarrier_try_wait_parity(bar, 1);  // phase 1 under way
  // Phase 1 also waits for 64 bytes of transactions.
  simt::mbarrier_arrive_expect_tx(bar, 64);
  simt::mbarrier_arrive(bar);
  out[i++] = simt::mbarrier_try_wait_parity(bar, 1);  // arrivals done, 64 bytes outstanding
  simt::mbarrier_complete_tx(bar, 48);
  out[i++] = simt::mbarrier_try_wait_parity(bar, 1);
  simt::mbarrier_complete_tx(bar, 16);
  out[i++] = simt::mbarrier_try_wait_parity(bar, 1);  // complete
  out[i++] = simt::mbarrier_try_wait_parity(bar, 0);  // phase 2 (parity 0) under way
}

constexpr int kStages = 2, kTile = 64, kTiles = 6;

enum class Ring { correct, refill_before_empty, read_before_full };

// Warp 0 produces (cp.async a tile into stage s, then cp.async.mbarrier.arrive on full[s]),
// warps 1-2 consume (wait full[s], read the tile, arrive on empty[s]). One syncthreads, after
// the barriers' init; none in the loop.
template <Ring ring>
void ring_kernel(GlobalPtr<const float> x, GlobalPtr<float> y) {
  FASTCONV_SHARED(float, tiles, kStages * kTile);
  FASTCONV_SHARED(uint64_t, full, kStages);
  FASTCONV_SHARED(uint64_t, empty, kStages);
  const int t = int(simt::thread_idx().x), warp = t / 32, lane = t % 32;
  if (t == 0)
    for (int s = 0; s < kStages; ++s) {
      simt::mbarrier_init(full + s, 32);   // the producer warp's 32 cp.async arrivals
      simt::mbarrier_init(empty + s, 64);  // the two consumer warps' arrivals
    }
  simt::syncthreads();
  if (warp == 0) {
    for (int k = 0; k < kTiles; ++k) {
      const int s = k % kStages;
      const uint32_t phase = uint32_t(k / kStages) & 1u;
      if (ring != Ring::refill_before_empty) simt::mbarrier_wait_parity(empty + s, phase ^ 1u);
      for (int e = lane; e < kTile; e += 32) simt::cp_async(tiles + s * kTile + e, x + k * kTile + e, 4);
      simt::cp_async_mbarrier_arrive_noinc(full + s);
    }
  } else {
    const int c = t - 32;  // 0..63: consumer thread c sums element 63 - c of every tile
    float acc = 0.f;
    for (int k = 0; k < kTiles; ++k) {
      const int s = k % kStages;
      const uint32_t phase = uint32_t(k / kStages) & 1u;
      if (ring != Ring::read_before_full) simt::mbarrier_wait_parity(full + s, phase);
      acc += float(tiles[s * kTile + (kTile - 1 - c)]);
      simt::mbarrier_arrive(empty + s);
    }
    y[c] = acc;
  }
}

template <Ring ring>
simt::LaunchReport run_ring(simt::Schedule schedule, bool* right) {
  std::vector<float> x(kTiles * kTile), y(kTile, -1.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i) % 13 - 6);
  simt::LaunchOptions opt;
  opt.schedule = schedule;
  opt.seed = 3;
  auto r = simt::launch(ring_kernel<ring>, {1}, {96}, 0, opt,
                        simt::global<const float>(x.data(), int64_t(x.size()), "x"), simt::global(y.data(), kTile, "y"));
  *right = true;
  for (int c = 0; c < kTile; ++c) {
    float want = 0.f;
    for (int k = 0; k < kTiles; ++k) want += x[k * kTile + kTile - 1 - c];
    *right &= y[c] == want;
  }
  return r;
}

// Never completes: one arrival of two.
void wait_forever(GlobalPtr<int> out) {
  FASTCONV_SHARED(uint64_t, bar, 1);
  if (simt::thread_idx().x == 0) simt::mbarrier_init(bar, 2);
  simt::syncthreads();
  if (simt::thread_idx().x == 0) simt::mbarrier_arrive(bar);
  simt::mbarrier_wait_parity(bar, 0);  // BUG: 32 threads wait for a phase that needs two arrivals
  out[simt::thread_idx().x] = 1;
}

// A use of a barrier that no syncthreads orders after its init by another thread.
void use_before_init_visible(GlobalPtr<int> out) {
  FASTCONV_SHARED(uint64_t, bar, 1);
  if (simt::thread_idx().x == 0) simt::mbarrier_init(bar, 32);
  if (simt::thread_idx().x == 1) simt::mbarrier_arrive(bar);  // BUG: no barrier after the init
  out[simt::thread_idx().x] = 0;
}

// Warp 0 writes, then bar.arrive(1, 64); warp 1 bar.sync(1, 64), then reads: ordered. Without the
// named barrier, a race.
template <bool named>
void named_handoff(GlobalPtr<int> out) {
  FASTCONV_SHARED(int, s, 32);
  const int t = int(simt::thread_idx().x);
  if (t < 32) {
    s[t] = t * 7;
    if (named) simt::named_barrier_arrive(1, 64);
  } else {
    if (named) simt::named_barrier_sync(1, 64);
    out[t - 32] = s[63 - t];
  }
}

int main() {
  std::vector<int> seen(16, -1);
  auto p = simt::launch(phases, {1}, {1}, 0, {}, simt::global(seen.data(), 16, "seen"));
  const std::vector<int> want = {1, 0, 0, 1, 0, 0, 0, 1, 0};
  check(p.ok() && std::vector<int>(seen.begin(), seen.begin() + 9) == want,
        "mbarrier: phases, parities and the transaction count (PTX ISA rules)", p.summary());

  const simt::Schedule schedules[] = {simt::Schedule::forward, simt::Schedule::reverse, simt::Schedule::shuffle};
  const char* names[] = {"forward", "reverse", "shuffle"};
  for (int i = 0; i < 3; ++i) {
    bool right = false;
    auto r = run_ring<Ring::correct>(schedules[i], &right);
    check(r.ok() && right, std::string("mbarrier ring: full/empty hand-offs are clean [") + names[i] + "]",
          r.summary());
    auto early = run_ring<Ring::refill_before_empty>(schedules[i], &right);
    // Reported as the refill's write-after-read where the consumers read first, or as their
    // read of a tile that a refill overwrote with no hand-off where the producer runs ahead.
    check(early.count(Checker::racecheck) > 0,
          std::string("mbarrier ring: a refill before the empty barrier's phase flipped is reported [") + names[i] + "]",
          early.summary());
    auto blind = run_ring<Ring::read_before_full>(schedules[i], &right);
    check(blind.count(Checker::racecheck) > 0 || blind.count(Checker::initcheck) > 0,
          std::string("mbarrier ring: a read before waiting on the full barrier is reported [") + names[i] + "]",
          blind.summary());
  }
  std::vector<int> out(64, 0);
  auto hang = simt::launch(wait_forever, {1}, {32}, 0, {}, simt::global(out.data(), 64, "out"));
  check(reports(hang, Checker::synccheck, "cannot complete (deadlock)"),
        "mbarrier: a wait that can never complete is reported, not hung", hang.summary());
  auto early_use = simt::launch(use_before_init_visible, {1}, {32}, 0, {}, simt::global(out.data(), 64, "out"));
  check(reports(early_use, Checker::racecheck, "was initialised by thread"),
        "mbarrier: a use not ordered after the init is reported", early_use.summary());
  auto handed = simt::launch(named_handoff<true>, {1}, {64}, 0, {}, simt::global(out.data(), 64, "out"));
  bool right = handed.ok();
  for (int t = 32; t < 64; ++t) right &= out[t - 32] == (63 - t) * 7;
  check(right, "named barrier: bar.arrive / bar.sync order a hand-off", handed.summary());
  auto unhanded = simt::launch(named_handoff<false>, {1}, {64}, 0, {}, simt::global(out.data(), 64, "out"));
  check(unhanded.count(Checker::racecheck) > 0 || unhanded.count(Checker::initcheck) > 0,
        "named barrier: the same hand-off without it is reported", unhanded.summary());
  return simt_test::finish();
}
