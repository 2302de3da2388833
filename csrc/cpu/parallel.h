// The CPU kernels' parallel loop. at::parallel_for hands each thread of the OpenMP team one
// fixed share, so a share whose thread the scheduler has taken off its core waits for it, and
// libgomp's waiting threads spin (about 10 ms after each region on this project's machines)
// on the cores the late thread needs. On a machine with more runnable threads than cores
// (two processes of two threads on two cores, say) every region then costs a scheduler tick.
//
// fastconv::cpu::parallel_for shares [begin, end) out in chunks that threads claim as they
// come, so a running thread takes the work of a late one. Two rules then put a whole operator
// call on the calling thread alone, the ATen operators it calls (GEMM, copies) included
// (TeamScope, held by every CPU operator of register.cpp):
// - the machine's runnable threads (Linux's /proc/loadavg, read at most once a millisecond)
//   outnumber its CPUs: a team would wait on threads that have no core to run on;
// - the caller waited at a region's end far beyond a chunk's length for the others: a thread
//   of the team was kept off its core. Then for 20 ms, doubling while it keeps happening up
//   to 320 ms, and one region tries the team again.
// Measured on 2 cores (bench/NOTES.md): with two processes sharing them, a 3x3 ResNet layer
// took 6.0 ms a call at one thread each and 32 ms in torch at two threads each (4.5 ms alone),
// because every region waited out a scheduler slice.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

namespace fastconv::cpu {

// Whether ATen's own loop runs instead (FASTCONV_CPU_TEAM=aten in the environment, or
// use_aten_team): fixed shares, no contention rules. For measuring this loop against it.
bool team_is_aten();
void use_aten_team(bool aten);
// Whether the kernels run on the calling thread alone now: the machine is oversubscribed, a
// team's thread was lately kept off its core, or a test asked for it.
bool team_contended();
// The machine's runnable threads and its online CPUs, from the last reading (refreshed when
// older than a millisecond); runnable is -1 where /proc/loadavg cannot be read.
std::vector<int64_t> machine_load();
// Whether a reading of that many runnable threads (the reader included) on that many CPUs
// counts as oversubscribed for a team of team_threads, with this process running serially
// now or not (the rule, for tests). The team stands down after two such readings in a row.
bool machine_oversubscribed(int64_t runnable, int64_t cpus, int64_t team_threads, bool serial_now);
// Records one team region: how long it took, and how long the caller then waited for the
// others; a contended one sends the kernels serial for a while.
void record_team_region(int64_t region_ns, int64_t caller_wait_ns);
// Counts a region run on the calling thread because the team was contended.
void record_serial_region();
// Whether a region of that length with that wait counts as contended (the rule, for tests).
bool region_was_contended(int64_t region_ns, int64_t caller_wait_ns);

// For tests and the benchmark: [team regions, contended team regions, regions run serially
// (for either rule), milliseconds of serial running left, load readings that found the
// machine oversubscribed].
std::vector<int64_t> team_state();
// For tests: run serially for the next `ms` milliseconds, as after a contended region.
void hold_serial(int64_t ms);

// Held for one operator call on the CPU. Where the team is contended when the call starts, the
// whole call runs on the calling thread: OpenMP's thread count for this thread (which ATen's
// loops and MKL read) is 1 until the scope ends, and MKL's per-thread setting too where torch
// has MKL. Only our own loops going serial is not enough: ATen's copies and fills inside the
// call would still wake the team, whose threads then spin on the cores the other processes need.
class TeamScope {
 public:
  TeamScope();
  ~TeamScope();
  TeamScope(const TeamScope&) = delete;
  TeamScope& operator=(const TeamScope&) = delete;
  // Whether the calling thread is inside a scope that went serial.
  static bool serial_here();

 private:
  bool serial_ = false;
  int omp_threads_ = 0;
  int mkl_previous_ = 0;
  bool mkl_set_ = false;
};

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Chunks per thread: enough that a thread arriving late finds work left to share, few enough
// that claiming one (an atomic add) costs nothing beside it.
constexpr int64_t kChunksPerThread = 8;

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t n = end - begin;
  if (n <= grain || at::in_parallel_region() || team_is_aten()) {
    at::parallel_for(begin, end, grain, f);  // inline (or ATen's team), with its thread-id and guard
    return;
  }
  // Inside an operator whose scope went serial get_num_threads() is 1; a kernel called outside
  // one, or a scope that started on the team, still asks the rules for each region.
  const int64_t threads = at::get_num_threads();
  const bool serial = TeamScope::serial_here() || (threads > 1 && team_contended());
  if (serial || threads <= 1) {
    if (serial) record_serial_region();
    at::parallel_for(begin, end, n, f);  // a grain of n runs f inline, with ATen's guards
    return;
  }
  const int64_t wanted = std::min((n + grain - 1) / grain, threads * kChunksPerThread);
  const int64_t chunk = (n + wanted - 1) / wanted;
  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t team = std::min(threads, chunks);
  std::atomic<int64_t> next{0};
  int64_t caller_done = 0;
  const int64_t start = now_ns();
  at::parallel_for(0, team, 1, [&](int64_t member, int64_t member_end) {
    for (; member < member_end; ++member) {
      for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < chunks;
           i = next.fetch_add(1, std::memory_order_relaxed)) {
        const int64_t b = begin + i * chunk;
        f(b, std::min(end, b + chunk));
      }
      if (member == 0) caller_done = now_ns();
    }
  });
  const int64_t stop = now_ns();
  record_team_region(stop - start, caller_done ? stop - caller_done : 0);
}

}  // namespace fastconv::cpu
