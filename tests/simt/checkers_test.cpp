// Each checker catches its planted bug (and the emulator never hangs on one); launches over
// the H100's limits fail with a clear message; correct uses of the same features stay silent.
#include "simt/simt.h"

#include "check.h"

#include <vector>

namespace simt = fastconv::simt;
using simt::Checker;
using simt::GlobalPtr;
using simt_test::check;

static std::string first_message(const simt::LaunchReport& r, Checker c) {
  for (const auto& e : r.errors)
    if (e.checker == c) return e.message;
  return "(none) " + r.summary();
}

// Missing __syncthreads between the shared write and the read of a neighbour's element.
void missing_barrier(GlobalPtr<int> out) {
  FASTCONV_SHARED(int, s, 64);
  const unsigned t = simt::thread_idx().x;
  s[t] = int(t);
  out[t] = s[(t + 1) % 64];  // BUG: no syncthreads before this read
}

// Warp-synchronous exchange: correct with syncwarp, a race without.
void warp_exchange(GlobalPtr<int> out, int with_syncwarp) {
  FASTCONV_SHARED(int, s, 32);
  const unsigned l = simt::lane_id();
  s[l] = int(l) * 3;
  if (with_syncwarp) simt::syncwarp();
  out[l] = s[l ^ 1];
}

void divergent_barrier(GlobalPtr<int> out) {
  const unsigned t = simt::thread_idx().x;
  if (t < 16) {
    simt::syncthreads();  // BUG: two different barriers
    out[t] = 1;
  } else {
    simt::syncthreads();
    out[t] = 2;
  }
}

void barrier_after_exit(GlobalPtr<int> out) {
  const unsigned t = simt::thread_idx().x;
  if (t >= 40) return;  // BUG: these threads never reach the barrier below
  simt::syncthreads();
  out[t] = 1;
}

void global_oob(GlobalPtr<const float> x, GlobalPtr<float> y, int n) {
  const int i = int(simt::thread_idx().x);
  y[i] = x[i + 1];  // BUG: reads x[n] in the last thread
  (void)n;
}

void shared_oob(GlobalPtr<int> out) {
  FASTCONV_SHARED(int, s, 32);
  const unsigned t = simt::thread_idx().x;
  s[t] = 1;  // BUG: 40 threads, 32 elements
  simt::syncthreads();
  out[t] = t < 32 ? int(s[t]) : 0;
}

void dynamic_oob(GlobalPtr<int> out) {
  FASTCONV_DYNAMIC_SHARED(float, d);
  const unsigned t = simt::thread_idx().x;
  d[t] = 1.f;  // BUG: the launch gave 16 floats of dynamic shared memory for 32 threads
  out[t] = 0;
}

void uninit_read(GlobalPtr<int> out) {
  FASTCONV_SHARED(int, s, 64);
  const unsigned t = simt::thread_idx().x;
  if (t < 32) s[t] = 5;
  simt::syncthreads();
  out[t] = s[t];  // BUG: elements 32..63 never written
}

void shfl_lane_not_in_mask(GlobalPtr<int> out) {
  const unsigned l = simt::lane_id();
  out[l] = simt::shfl_sync(0xfffffffeu, int(l), 0);  // BUG: lane 0 calls, but is not in the mask
}

void shfl_partial_warp(GlobalPtr<int> out) {
  const unsigned l = simt::lane_id();
  out[l] = simt::shfl_xor_sync(simt::full_mask, int(l), 1);  // BUG: the block has 16 threads
}

void shfl_after_exit(GlobalPtr<int> out) {
  const unsigned l = simt::lane_id();
  if (l >= 16) return;
  out[l] = simt::shfl_down_sync(simt::full_mask, int(l), 1);  // BUG: lanes 16..31 have exited
}

void shfl_vs_barrier(GlobalPtr<int> out) {
  const unsigned l = simt::lane_id();
  if (l < 16)
    out[l] = simt::shfl_down_sync(simt::full_mask, int(l), 1);  // BUG: half the warp is elsewhere
  else
    simt::syncthreads();
}

void shfl_reads_outside_mask(GlobalPtr<int> out) {
  const unsigned l = simt::lane_id();
  if (l < 16) out[l] = simt::shfl_down_sync(0x0000ffffu, int(l), 8, 32);  // BUG: lane 8 reads 16
}

void shared_atomics(GlobalPtr<int> out) {
  FASTCONV_SHARED(int, count, 1);
  if (simt::thread_idx().x == 0) count[0] = 0;
  simt::syncthreads();
  simt::atomic_add(count + 0, 1);
  simt::syncthreads();
  if (simt::thread_idx().x == 0) out[0] = count[0];
}

void throws(GlobalPtr<int>) {
  if (simt::thread_idx().x == 3) throw std::runtime_error("planted");
  simt::syncthreads();
}

void nothing() {}

int main() {
  simt::LaunchOptions fwd, rev, shuf;
  rev.schedule = simt::Schedule::reverse;
  shuf.schedule = simt::Schedule::shuffle;
  shuf.seed = 7;
  const simt::LaunchOptions opts[] = {fwd, rev, shuf};
  std::vector<int> out(128, 0);
  auto o = simt::global(out.data(), 128, "out");

  {  // racecheck
    std::vector<int> results[3];
    for (int s = 0; s < 3; ++s) {
      std::fill(out.begin(), out.end(), 0);
      auto r = simt::launch(missing_barrier, {1}, {64}, 0, opts[s], o);
      check(r.count(Checker::racecheck) > 0, "racecheck: missing syncthreads, schedule " + std::to_string(s),
            r.summary());
      results[s].assign(out.begin(), out.begin() + 64);
      if (s == 0) {
        bool fields = false;
        for (const auto& e : r.errors)
          if (e.checker == Checker::racecheck)
            fields = e.has_other && e.space == "shared" && e.offset >= 0 && e.offset < 256 &&
                     e.barrier == 0;
        check(fields, "racecheck: record names the other thread, space and offset");
        std::printf("   e.g. %s\n", first_message(r, Checker::racecheck).c_str());
      }
    }
    check(results[0] != results[1], "schedules: the race gives different results forward and reverse");
    auto good = simt::launch(warp_exchange, {1}, {32}, 0, fwd, o, 1);
    check(good.ok() && out[0] == 3 && out[1] == 0, "racecheck: syncwarp orders a warp's shared accesses",
          good.summary());
    auto bad = simt::launch(warp_exchange, {1}, {32}, 0, rev, o, 0);
    check(bad.count(Checker::racecheck) > 0, "racecheck: warp exchange without syncwarp", bad.summary());
  }
  {  // synccheck
    for (int s = 0; s < 3; ++s) {
      auto r = simt::launch(divergent_barrier, {2}, {64}, 0, opts[s], o);
      check(r.count(Checker::synccheck) == 2, "synccheck: barrier in a divergent branch (both blocks), schedule " +
                                                  std::to_string(s), r.summary());
    }
    simt::LaunchOptions two = shuf;
    two.threads = 2;
    auto many = simt::launch(divergent_barrier, {8}, {64}, 0, two, o);
    bool sorted = many.count(Checker::synccheck) == 8;
    for (size_t i = 0; i < many.errors.size(); ++i) sorted &= many.errors[i].block.x == i;
    check(sorted, "synccheck: 8 blocks on 2 OS threads, one record each, in block order", many.summary());
    auto r = simt::launch(divergent_barrier, {1}, {64}, 0, fwd, o);
    std::printf("   e.g. %s\n", first_message(r, Checker::synccheck).c_str());
    auto e = simt::launch(barrier_after_exit, {1}, {64}, 0, rev, o);
    check(e.count(Checker::synccheck) == 1 &&
              first_message(e, Checker::synccheck).find("exited") != std::string::npos,
          "synccheck: threads wait at a barrier others exited before", e.summary());
    std::printf("   e.g. %s\n", first_message(e, Checker::synccheck).c_str());
  }
  {  // memcheck, global
    std::vector<float> x(32, 1.f), y(32);
    auto r = simt::launch(global_oob, {1}, {32}, 0, fwd, simt::global<const float>(x.data(), 32, "x"),
                          simt::global(y.data(), 32, "y"), 32);
    bool rec = r.count(Checker::memcheck) == 1 && r.errors[0].space == "global" &&
               r.errors[0].offset == 32 * 4 && r.errors[0].thread.x == 31 &&
               r.errors[0].message.find("element 32 of buffer 'x'") != std::string::npos;
    check(rec && y[31] == 0.f, "memcheck: global read past the end (dropped, reads 0)", r.summary());
    std::printf("   e.g. %s\n", first_message(r, Checker::memcheck).c_str());
  }
  {  // memcheck, shared
    auto r = simt::launch(shared_oob, {1}, {40}, 0, fwd, o);
    check(r.count(Checker::memcheck) == 8 &&
              r.errors[0].message.find("element 32 of shared array 's'") != std::string::npos,
          "memcheck: shared index past the declared size", r.summary());
    std::printf("   e.g. %s\n", first_message(r, Checker::memcheck).c_str());
    auto d = simt::launch(dynamic_oob, {1}, {32}, 16 * sizeof(float), fwd, o);
    check(d.count(Checker::memcheck) == 16, "memcheck: dynamic shared past the launch's size", d.summary());
  }
  {  // initcheck
    auto r = simt::launch(uninit_read, {1}, {64}, 0, shuf, o);
    check(r.count(Checker::initcheck) == 32 && r.count(Checker::racecheck) == 0,
          "initcheck: shared elements never written", r.summary());
    std::printf("   e.g. %s\n", first_message(r, Checker::initcheck).c_str());
  }
  {  // collectives
    auto a = simt::launch(shfl_lane_not_in_mask, {1}, {32}, 0, fwd, o);
    check(a.count(Checker::collective) >= 1 &&
              first_message(a, Checker::collective).find("not in the mask") != std::string::npos,
          "collective: calling lane missing from the mask", a.summary());
    auto b = simt::launch(shfl_partial_warp, {1}, {16}, 0, rev, o);
    check(b.count(Checker::collective) >= 1 &&
              first_message(b, Checker::collective).find("do not exist") != std::string::npos,
          "collective: full mask in a partial warp", b.summary());
    std::printf("   e.g. %s\n", first_message(b, Checker::collective).c_str());
    for (int s = 0; s < 3; ++s) {
      auto c = simt::launch(shfl_after_exit, {1}, {32}, 0, opts[s], o);
      check(c.count(Checker::collective) >= 1 &&
                first_message(c, Checker::collective).find("exited") != std::string::npos,
            "collective: mask names exited lanes, schedule " + std::to_string(s), c.summary());
    }
    auto d = simt::launch(shfl_vs_barrier, {1}, {32}, 0, shuf, o);
    check(d.count(Checker::collective) >= 1, "collective: half the warp at syncthreads (no hang)", d.summary());
    std::printf("   e.g. %s\n", first_message(d, Checker::collective).c_str());
    auto e = simt::launch(shfl_reads_outside_mask, {1}, {32}, 0, fwd, o);
    check(e.count(Checker::collective) >= 1, "collective: shuffle source lane outside the mask", e.summary());
  }
  {  // correct uses stay silent
    auto a = simt::launch(shared_atomics, {2}, {200}, 0, shuf, o);
    check(a.ok() && out[0] == 200, "shared atomics: right count, no racecheck report", a.summary());
    auto t = simt::launch(throws, {1}, {8}, 0, fwd, o);
    check(t.count(Checker::exception) == 1, "a kernel exception is reported and its block aborted", t.summary());
  }
  {  // launch limits
    simt::LaunchOptions optin;
    optin.max_dynamic_shared_bytes = 227 * 1024;
    auto a = simt::launch(nothing, {1}, {1025}, 0, fwd);
    check(!a.launched && a.launch_error.find("1024") != std::string::npos, "limits: 1025 threads refused",
          a.launch_error);
    std::printf("   e.g. %s\n", a.launch_error.c_str());
    auto b = simt::launch(nothing, {1}, {32}, 228 * 1024, optin);
    check(!b.launched && b.launch_error.find("227 KiB") != std::string::npos,
          "limits: 228 KiB dynamic shared refused", b.launch_error);
    std::printf("   e.g. %s\n", b.launch_error.c_str());
    auto c = simt::launch(nothing, {1}, {32}, 49 * 1024, fwd);
    check(!c.launched && c.launch_error.find("opts in") != std::string::npos,
          "limits: 49 KiB dynamic shared refused without opt-in", c.launch_error);
    auto d = simt::launch(nothing, {1}, {32}, 227 * 1024, optin);
    check(d.ok(), "limits: 227 KiB dynamic shared accepted with opt-in", d.summary());
    simt::LaunchOptions bounds;
    bounds.max_threads_per_block = 256;
    auto e = simt::launch(nothing, {1}, {512}, 0, bounds);
    check(!e.launched && e.launch_error.find("launch bounds") != std::string::npos,
          "limits: block over __launch_bounds__ refused", e.launch_error);
    auto f = simt::launch(nothing, {1, 65536}, {32}, 0, fwd);
    check(!f.launched, "limits: grid.y 65536 refused", f.launch_error);
    auto g = simt::launch(nothing, {1}, {1, 1, 65}, 0, fwd);
    check(!g.launched, "limits: block.z 65 refused", g.launch_error);
  }
  return simt_test::finish();
}
