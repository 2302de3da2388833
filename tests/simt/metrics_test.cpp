// Memory-traffic metrics from the address traces: global sectors per request, distinct sectors,
// shared-memory bank conflicts (convention: extra wavefronts, see simt/runtime.h).
#include "simt/simt.h"

#include "check.h"

#include <vector>

namespace simt = fastconv::simt;
using simt::GlobalPtr;
using simt_test::check;

void strided_load(GlobalPtr<const float> x, GlobalPtr<float> y, int stride) {
  const unsigned l = simt::thread_idx().x;
  y[l] = x[int64_t(l) * stride];
}

void vec4_load(GlobalPtr<const float> x, GlobalPtr<float> y) {
  const unsigned l = simt::thread_idx().x;
  struct F4 {
    float v[4];
  };
  const F4 q = simt::global_cast<const F4>(x)[l];
  y[l] = q.v[0] + q.v[3];
}

void same_address(GlobalPtr<const float> x, GlobalPtr<float> y) {
  y[simt::thread_idx().x] = x[5];  // all lanes read one element: one sector
}

void shared_pattern(GlobalPtr<float> y, int stride) {
  FASTCONV_SHARED(float, s, 32 * 33);
  const unsigned l = simt::thread_idx().x;
  for (int i = int(l); i < 32 * 33; i += 32) s[i] = float(i);  // conflict-free stores
  simt::syncthreads();
  y[l] = s[int64_t(l) * stride];
}

void shared_broadcast(GlobalPtr<float> y) {
  FASTCONV_SHARED(float, s, 32);
  const unsigned l = simt::thread_idx().x;
  s[l] = 1.f;
  simt::syncthreads();
  y[l] = s[7];  // one word: broadcast
}

void shared_double(GlobalPtr<double> y) {
  FASTCONV_SHARED(double, s, 32);
  const unsigned l = simt::thread_idx().x;
  s[l] = 1.0;  // 64-bit accesses: two half-warp phases, no conflict
  simt::syncthreads();
  y[l] = s[l];
}

// Odd lanes skip one store (a divergent branch) before the barrier; after it, every lane reads
// s[lane]. The reads are one conflict-free request: the skipped store must not pair odd lanes'
// reads with even lanes' stores.
void shared_divergent_then_barrier(GlobalPtr<float> y) {
  FASTCONV_SHARED(float, s, 64);
  const unsigned l = simt::thread_idx().x;
  s[l] = 1.f;
  if (l % 2 == 0) s[33 + l] = 2.f;  // banks 1, 3, ..: where odd lanes read next
  simt::syncthreads();
  y[l] = s[l];
}

int main() {
  simt::LaunchOptions opt;
  std::vector<float> x(32 * 33), y(32);
  auto X = simt::global<const float>(x.data(), int64_t(x.size()), "x");
  auto Y = simt::global(y.data(), 32, "y");
  {
    auto r = simt::launch(strided_load, {1}, {32}, 0, opt, X, Y, 1);
    const auto& m = r.metrics;
    check(r.ok() && m.global_load_requests == 1 && m.global_load_sectors == 4,
          "coalesced float load of 32 elements: 4 sectors per request",
          std::to_string(m.global_load_sectors) + " sectors / " + std::to_string(m.global_load_requests));
    check(m.global_store_requests == 1 && m.global_store_sectors == 4, "coalesced store: 4 sectors");
    check(m.global_distinct_sectors == 8 && m.global_bytes_requested == 256,
          "distinct sectors over the launch (4 loaded + 4 stored)", std::to_string(m.global_distinct_sectors));
  }
  {
    auto r = simt::launch(strided_load, {1}, {32}, 0, opt, X, Y, 32);
    check(r.ok() && r.metrics.global_load_sectors == 32 && r.metrics.sectors_per_load_request() == 32.0,
          "stride-32 float load: 32 sectors per request", std::to_string(r.metrics.global_load_sectors));
  }
  {
    auto r = simt::launch(vec4_load, {1}, {32}, 0, opt, X, Y);
    check(r.ok() && r.metrics.global_load_sectors == 16, "16-byte loads of 512 consecutive bytes: 16 sectors",
          std::to_string(r.metrics.global_load_sectors));
  }
  {
    auto r = simt::launch(same_address, {1}, {32}, 0, opt, X, Y);
    check(r.ok() && r.metrics.global_load_sectors == 1, "one address for all lanes: 1 sector");
  }
  {
    auto r = simt::launch(shared_pattern, {1}, {32}, 0, opt, Y, 1);
    const auto& m = r.metrics;
    // 33 conflict-free store requests + 1 load request
    check(r.ok() && m.shared_requests == 34 && m.shared_bank_conflicts == 0,
          "shared s[lane]: 0 bank conflicts", std::to_string(m.shared_bank_conflicts));
  }
  {
    auto r = simt::launch(shared_pattern, {1}, {32}, 0, opt, Y, 32);
    const auto& m = r.metrics;
    check(r.ok() && m.shared_bank_conflicts == 31 && m.shared_wavefronts == 33 + 32,
          "shared s[lane * 32]: 31 extra wavefronts (32 accesses to one bank)",
          std::to_string(m.shared_bank_conflicts));
  }
  {
    auto r = simt::launch(shared_pattern, {1}, {32}, 0, opt, Y, 2);
    check(r.ok() && r.metrics.shared_bank_conflicts == 1, "shared s[lane * 2]: 2-way, 1 extra wavefront",
          std::to_string(r.metrics.shared_bank_conflicts));
  }
  {
    auto r = simt::launch(shared_pattern, {1}, {32}, 0, opt, Y, 33);
    check(r.ok() && r.metrics.shared_bank_conflicts == 0, "shared s[lane * 33] (padded): 0 conflicts",
          std::to_string(r.metrics.shared_bank_conflicts));
  }
  {
    auto r = simt::launch(shared_broadcast, {1}, {32}, 0, opt, Y);
    check(r.ok() && r.metrics.shared_bank_conflicts == 0, "shared broadcast of one word: 0 conflicts");
  }
  {
    std::vector<double> yd(32);
    auto r = simt::launch(shared_double, {1}, {32}, 0, opt, simt::global(yd.data(), 32));
    check(r.ok() && r.metrics.shared_bank_conflicts == 0 && r.metrics.shared_wavefronts == 4,
          "shared double s[lane]: 2 phases each way, 0 conflicts",
          std::to_string(r.metrics.shared_wavefronts));
  }
  {
    auto r = simt::launch(shared_divergent_then_barrier, {1}, {32}, 0, opt, Y);
    const auto& m = r.metrics;
    // stores: s[l], then the even lanes' s[33 + l]; loads: s[l]. Paired by index alone, odd
    // lanes' loads would meet even lanes' second stores in the same banks.
    check(r.ok() && m.shared_requests == 3 && m.shared_bank_conflicts == 0,
          "a divergent store before a barrier leaves the requests after it aligned",
          std::to_string(m.shared_requests) + " requests, " + std::to_string(m.shared_bank_conflicts) + " conflicts");
  }
  {
    simt::LaunchOptions off;
    off.metrics = false;
    auto r = simt::launch(strided_load, {1}, {32}, 0, off, X, Y, 1);
    check(r.ok() && r.metrics.global_load_requests == 0, "metrics can be switched off");
  }
  return simt_test::finish();
}
