// The stage ring of a cp.async pipeline, as the implicit GEMM's mainloop runs it, under
// racecheck: the mainloop's own order is clean under every schedule, and the two ways to break
// it are reported. Both break the same rule: a stage may be refilled only after a barrier that
// every thread reading it has passed since its last read. The second (a prefetch hoisted above
// the barrier) leaves a barrier between the copy's issue and its completion, so a checker that
// saw the copy's write only at its completion would miss it.
#include "simt/simt.h"

#include "check.h"

#include <string>
#include <vector>

namespace simt = fastconv::simt;
using simt::Checker;
using simt::GlobalPtr;
using simt_test::check;

enum class Order {
  mainloop,          // wait_group, syncthreads, refill the stage read last iteration, compute
  no_barrier,        // the same without the syncthreads
  prefetch_hoisted,  // wait_group, refill, syncthreads, compute: the refill races the last reads
};

constexpr int kStages = 3, kThreads = 64;

// y[t] = sum over tiles of x[tile][63 - t]: each thread reads the element another thread
// copied, as ldmatrix reads rows that other lanes brought in.
template <Order order>
void ring_kernel(GlobalPtr<const float> x, GlobalPtr<float> y, int tiles) {
  FASTCONV_SHARED(float, ring, kStages * kThreads);
  const int t = int(simt::thread_idx().x);
  auto load = [&](int stage, int tile) { simt::cp_async(ring + stage * kThreads + t, x + tile * kThreads + t, 4); };
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < tiles) load(s, s);
    simt::cp_async_commit_group();
  }
  float acc = 0.f;
  for (int kt = 0; kt < tiles; ++kt) {
    const int next = kt + kStages - 1;
    simt::cp_async_wait_group(kStages - 2);
    if (order == Order::mainloop) simt::syncthreads();
    if (next < tiles) load(next % kStages, next);
    simt::cp_async_commit_group();
    if (order == Order::prefetch_hoisted) simt::syncthreads();
    acc += float(ring[(kt % kStages) * kThreads + (kThreads - 1 - t)]);
  }
  simt::cp_async_wait_group(0);
  y[t] = acc;
}

// A thread that reads the stage its own copy is still filling.
void read_own_pending(GlobalPtr<const float> x, GlobalPtr<float> y) {
  FASTCONV_SHARED(float, buf, 32);
  const int t = int(simt::thread_idx().x);
  buf[t] = 0.f;
  simt::cp_async(buf + t, x + t, 4);
  simt::cp_async_commit_group();
  y[t] = buf[t];  // BUG: before the wait_group
  simt::cp_async_wait_all();
}

// Two threads' copies into the same bytes, both in flight.
void two_copies_in_flight(GlobalPtr<const float> x, GlobalPtr<float> y) {
  FASTCONV_SHARED(float, buf, 32);
  const int t = int(simt::thread_idx().x);
  simt::cp_async(buf + t / 2, x + t, 4);  // BUG: threads 2i and 2i+1 write buf[i]
  simt::syncthreads();                     // both copies are issued before either completes
  simt::cp_async_wait_all();
  simt::syncthreads();
  y[t] = buf[t / 2];
}

template <Order order>
simt::LaunchReport run_ring(simt::Schedule schedule, bool* right) {
  const int tiles = 7;
  std::vector<float> x(tiles * kThreads), y(kThreads, -1.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 97) - 40.f;
  simt::LaunchOptions opt;
  opt.schedule = schedule;
  opt.seed = 5;
  auto r = simt::launch(ring_kernel<order>, {1}, {kThreads}, 0, opt,
                        simt::global<const float>(x.data(), int64_t(x.size()), "x"),
                        simt::global(y.data(), kThreads, "y"), tiles);
  *right = true;
  for (int t = 0; t < kThreads; ++t) {
    float want = 0.f;
    for (int k = 0; k < tiles; ++k) want += x[k * kThreads + kThreads - 1 - t];
    *right &= y[t] == want;
  }
  return r;
}

// Whether racecheck reported a hazard whose message holds `words`.
static bool reports(const simt::LaunchReport& r, const std::string& words) {
  for (const auto& e : r.errors)
    if (e.checker == Checker::racecheck && e.message.find(words) != std::string::npos) return true;
  return false;
}

int main() {
  const simt::Schedule schedules[] = {simt::Schedule::forward, simt::Schedule::reverse, simt::Schedule::shuffle};
  const char* names[] = {"forward", "reverse", "shuffle"};
  for (int i = 0; i < 3; ++i) {
    bool right = false;
    auto r = run_ring<Order::mainloop>(schedules[i], &right);
    check(r.ok() && right, std::string("ring: the mainloop's order is clean [") + names[i] + "]", r.summary());
  }
  for (int i = 0; i < 3; ++i) {
    bool right = false;
    auto r = run_ring<Order::no_barrier>(schedules[i], &right);
    check(reports(r, "cp.async"),
          std::string("ring: the barrier removed is reported [") + names[i] + "]", r.summary());
  }
  for (int i = 0; i < 3; ++i) {
    bool right = false;
    auto r = run_ring<Order::prefetch_hoisted>(schedules[i], &right);
    // The results may well be right (the emulator lands each copy at its wait): only the
    // ordering is wrong, and that is what must be caught.
    check(reports(r, "cp.async"),
          std::string("ring: a prefetch hoisted above the barrier is reported [") + names[i] + "]", r.summary());
  }
  std::vector<float> x(64), y(64);
  for (int i = 0; i < 64; ++i) x[i] = float(i);
  auto own = simt::launch(read_own_pending, {1}, {32}, 0, {}, simt::global<const float>(x.data(), 64, "x"),
                          simt::global(y.data(), 64, "y"));
  check(reports(own, "the destination of a cp.async that this thread issued and has not completed"),
        "cp.async: a read of its own destination before the wait is reported", own.summary());
  auto two = simt::launch(two_copies_in_flight, {1}, {32}, 0, {}, simt::global<const float>(x.data(), 64, "x"),
                          simt::global(y.data(), 64, "y"));
  check(reports(two, "is still the destination of a pending cp.async"),
        "cp.async: two copies in flight into the same bytes are reported", two.summary());
  return simt_test::finish();
}
