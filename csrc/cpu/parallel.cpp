#include "cpu/parallel.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace fastconv::cpu {
namespace {

constexpr int64_t kMs = 1000 * 1000;
constexpr int64_t kFirstHold = 20 * kMs;
constexpr int64_t kLongestHold = 320 * kMs;
// A thread descheduled for another process's costs the caller a scheduler slice: 3-6 ms with two
// processes of two threads on two cores (bench/NOTES.md). A thread woken from its futex takes
// tens of microseconds, and the last chunk of a balanced region at most a sixteenth of it. A
// lone process on a VM also loses a worker to the host now and then, for up to a millisecond or
// so: at a 0.5 ms threshold that sent lone runs serial for 20 ms at a time (up to 15 of 24
// regions of a layer). So a wait counts when it passes 2 ms and a quarter of the region; the
// load rule, not this one, carries steady oversubscription.
constexpr int64_t kContendedWait = 2 * kMs;

std::atomic<int64_t> serial_until{0};
std::atomic<int64_t> hold{kFirstHold};
std::atomic<int64_t> team_regions{0}, contended_regions{0}, serial_regions{0}, oversubscribed_readings{0};

// A reading costs three system calls (a few microseconds): once a millisecond is nothing
// beside the regions it decides, and recent enough to follow another process's start and end.
constexpr int64_t kLoadInterval = kMs;
std::atomic<int64_t> load_read_at{0};
std::atomic<int64_t> last_runnable{-1};
std::atomic<bool> last_oversubscribed{false};

// The fourth field of /proc/loadavg, "runnable/total": the threads running or waiting for a
// CPU at this moment, the reader included. -1 where the file is missing or unexpected.
int64_t read_runnable_threads() {
  const int fd = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[160];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char* p = buf;
  for (int field = 0; field < 3; ++field) {
    while (*p && *p != ' ') ++p;
    while (*p == ' ') ++p;
  }
  if (*p < '0' || *p > '9') return -1;
  int64_t runnable = 0;
  for (; *p >= '0' && *p <= '9'; ++p) runnable = 10 * runnable + (*p - '0');
  return *p == '/' ? runnable : -1;
}

// The whole machine's CPUs rather than this process's affinity: /proc/loadavg counts the
// runnable threads of the whole machine (of the host, inside a container).
int64_t online_cpus() {
  static const int64_t cpus = std::max<long>(::sysconf(_SC_NPROCESSORS_ONLN), 1);
  return cpus;
}

// Two readings in a row must find the machine oversubscribed before the team stands down
// (machine_oversubscribed says why one is not enough).
constexpr int kReadingsToStandDown = 2;
std::atomic<int> over_in_a_row{0};

bool oversubscribed_now() {
  const int64_t now = now_ns();
  int64_t read_at = load_read_at.load(std::memory_order_relaxed);
  if (now - read_at >= kLoadInterval &&
      load_read_at.compare_exchange_strong(read_at, now, std::memory_order_relaxed)) {
    const int64_t runnable = read_runnable_threads();
    const bool serial = last_oversubscribed.load(std::memory_order_relaxed);
    const bool over = machine_oversubscribed(runnable, online_cpus(), at::get_num_threads(), serial);
    const int in_a_row = over ? over_in_a_row.load(std::memory_order_relaxed) + 1 : 0;
    over_in_a_row.store(in_a_row, std::memory_order_relaxed);
    last_runnable.store(runnable, std::memory_order_relaxed);
    last_oversubscribed.store(serial ? over : in_a_row >= kReadingsToStandDown, std::memory_order_relaxed);
    if (over) oversubscribed_readings.fetch_add(1, std::memory_order_relaxed);
  }
  return last_oversubscribed.load(std::memory_order_relaxed);
}

// MKL's per-thread thread count, found at run time: torch links MKL on x86 builds and
// exports its entry points, other builds do not have them. The C entry point is
// MKL_Set_Num_Threads_Local (mkl_service.h's mkl_set_num_threads_local is a macro for it); the
// lower-case symbol of that name is the Fortran one, which takes a pointer.
using SetLocalThreads = int (*)(int);
SetLocalThreads mkl_set_local_threads() {
  static const SetLocalThreads fn =
      reinterpret_cast<SetLocalThreads>(dlsym(RTLD_DEFAULT, "MKL_Set_Num_Threads_Local"));
  return fn;
}

std::atomic<bool> aten_team{[] {
  const char* v = std::getenv("FASTCONV_CPU_TEAM");
  return v != nullptr && std::string(v) == "aten";
}()};

thread_local bool serial_scope = false;

}  // namespace

bool team_is_aten() { return aten_team.load(std::memory_order_relaxed); }

void use_aten_team(bool aten) { aten_team.store(aten); }

bool machine_oversubscribed(int64_t runnable, int64_t cpus, int64_t team_threads, bool serial_now) {
  if (runnable < 0) return false;
  // Running serially, this process's other threads sleep: the team comes back only where the
  // others leave room for it. Otherwise both processes would see room while both run serially.
  // A team of as many threads as CPUs reads cpus alone, and cpus + 1 whenever a kernel thread
  // passes (measured alone on 2 CPUs: one reading in twenty to fifty, often twice in a row), so
  // standing down takes more than that; on a big machine an eighth of its CPUs more.
  const int64_t passing = std::max<int64_t>(1, cpus / 8);
  return serial_now ? runnable + team_threads - 1 > cpus : runnable > cpus + passing;
}

std::vector<int64_t> machine_load() {
  oversubscribed_now();
  return {last_runnable.load(), online_cpus()};
}

bool team_contended() {
  return now_ns() < serial_until.load(std::memory_order_relaxed) || oversubscribed_now();
}

bool region_was_contended(int64_t region_ns, int64_t caller_wait_ns) {
  return caller_wait_ns > kContendedWait && 4 * caller_wait_ns > region_ns;
}

void record_team_region(int64_t region_ns, int64_t caller_wait_ns) {
  team_regions.fetch_add(1, std::memory_order_relaxed);
  if (!region_was_contended(region_ns, caller_wait_ns)) {
    hold.store(kFirstHold, std::memory_order_relaxed);
    return;
  }
  contended_regions.fetch_add(1, std::memory_order_relaxed);
  const int64_t h = hold.load(std::memory_order_relaxed);
  serial_until.store(now_ns() + h, std::memory_order_relaxed);
  hold.store(std::min(2 * h, kLongestHold), std::memory_order_relaxed);
}

void record_serial_region() { serial_regions.fetch_add(1, std::memory_order_relaxed); }

std::vector<int64_t> team_state() {
  const int64_t left = serial_until.load() - now_ns();
  return {team_regions.load(), contended_regions.load(), serial_regions.load(),
          std::max<int64_t>(left, 0) / kMs, oversubscribed_readings.load()};
}

void hold_serial(int64_t ms) { serial_until.store(now_ns() + ms * kMs); }

bool TeamScope::serial_here() { return serial_scope; }

TeamScope::TeamScope() {
  if (serial_scope || at::in_parallel_region() || team_is_aten() || at::get_num_threads() <= 1 ||
      !team_contended())
    return;
  serial_ = true;
  serial_scope = true;
  omp_threads_ = omp_get_max_threads();
  omp_set_num_threads(1);
  if (const SetLocalThreads set = mkl_set_local_threads()) {
    mkl_previous_ = set(1);
    mkl_set_ = true;
  }
}

TeamScope::~TeamScope() {
  if (!serial_) return;
  if (mkl_set_) mkl_set_local_threads()(mkl_previous_);
  omp_set_num_threads(omp_threads_);
  serial_scope = false;
}

}  // namespace fastconv::cpu
