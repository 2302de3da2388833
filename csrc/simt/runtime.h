// fastconv::simt -- the host-side emulation of the CUDA execution model (header-only, C++20,
// standard library + POSIX ucontext; no CUDA, no ATen).
//
// Execution model
//   * A launch is a grid of blocks. Each block runs on one OS thread; blocks are spread over a
//     small pool of OS threads (LaunchOptions::threads, 1 = deterministic block order).
//   * The threads of a block are fibers (makecontext/swapcontext), one stack each
//     (LaunchOptions::stack_bytes, guard page below it), stacks reused from block to block.
//   * A fiber runs until it reaches a synchronisation point (syncthreads, a warp collective) or
//     returns. The block scheduler resumes the runnable fibers in the order chosen by
//     LaunchOptions::schedule (forward, reverse, or a seeded shuffle redrawn every round), so
//     results that depend on the order between two barriers differ between schedules.
//   * warp = 32 consecutive linear thread ids (x fastest, then y, then z); the last warp of a
//     block whose size is not a multiple of 32 is partial.
//
// Checkers (each produces structured Error records in the LaunchReport):
//   racecheck  two different threads of a block touch the same shared byte, at least one writes,
//              with no syncthreads between them (and, for lanes of one warp, no warp collective
//              or syncwarp that both took part in after the first access).
//   synccheck  threads of a block wait at different syncthreads call sites, or some threads wait
//              at a barrier while others have exited. The block is then aborted (its fibers are
//              unwound by an exception), so the emulator never hangs.
//   memcheck   a GlobalPtr access outside its buffer; a SharedPtr access outside the shared array
//              it was derived from (stricter than the hardware, which only knows the window).
//              The access is dropped (reads return T{}) and the thread continues.
//   initcheck  a read of a shared byte that no thread of the block has written.
//   collective a warp collective called by a lane not in its mask, with a mask naming lanes that
//              do not exist (partial warp) or have exited, lanes that disagree on the mask or the
//              operation, a shuffle reading a lane outside the mask, or a mask whose lanes never
//              arrive. The block is aborted.
//   memcheck and synccheck/collective cannot be switched off (they keep the emulator safe);
//   racecheck, initcheck and metrics can.
//
// Metrics (see Metrics below for the exact definitions).
#pragma once

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <source_location>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

namespace fastconv::simt {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr Dim3() = default;
  constexpr Dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr uint64_t size() const { return uint64_t(x) * y * z; }
  friend constexpr bool operator==(const Dim3&, const Dim3&) = default;
};

inline std::string to_string(Dim3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

// H100 / H200 (sm_90) limits that a launch is checked against.
namespace limits {
constexpr unsigned max_threads_per_block = 1024;
constexpr unsigned max_block_x = 1024, max_block_y = 1024, max_block_z = 64;
constexpr uint64_t max_grid_x = 2147483647ull;
constexpr unsigned max_grid_y = 65535, max_grid_z = 65535;
constexpr size_t static_shared_bytes = 48 * 1024;          // static __shared__ per block
constexpr size_t default_dynamic_shared_bytes = 48 * 1024;  // without the opt-in attribute
constexpr size_t max_shared_bytes_optin = 227 * 1024;       // static + dynamic, with opt-in
constexpr unsigned warp_size = 32;
}  // namespace limits

enum class Schedule { forward, reverse, shuffle };
enum class Checker { launch, racecheck, synccheck, memcheck, initcheck, collective, exception };

inline const char* to_string(Checker c) {
  switch (c) {
    case Checker::launch: return "launch";
    case Checker::racecheck: return "racecheck";
    case Checker::synccheck: return "synccheck";
    case Checker::memcheck: return "memcheck";
    case Checker::initcheck: return "initcheck";
    case Checker::collective: return "collective";
    case Checker::exception: return "exception";
  }
  return "?";
}

struct LaunchOptions {
  Schedule schedule = Schedule::forward;
  uint64_t seed = 0;              // for Schedule::shuffle
  int threads = 1;                // OS threads running blocks; 0 = std::thread::hardware_concurrency
  bool racecheck = true;
  bool initcheck = true;
  bool metrics = true;
  size_t stack_bytes = 64 * 1024;  // per CUDA thread
  // cudaFuncAttributeMaxDynamicSharedMemorySize: 48 KiB unless the kernel opts in, at most 227 KiB.
  size_t max_dynamic_shared_bytes = limits::default_dynamic_shared_bytes;
  // __launch_bounds__(max_threads_per_block): a launch with a larger block fails, as on the GPU.
  unsigned max_threads_per_block = limits::max_threads_per_block;
  size_t max_errors = 64;  // records kept per checker; LaunchReport::error_count counts them all
};

struct Error {
  Checker checker = Checker::launch;
  Dim3 block{0, 0, 0};
  Dim3 thread{0, 0, 0};        // the thread whose action was found wrong
  bool has_other = false;      // racecheck: the other thread of the pair
  Dim3 other{0, 0, 0};
  std::string space;           // "shared", "global" or ""
  int64_t offset = -1;         // byte offset in the shared window / in the global buffer
  unsigned barrier = 0;        // syncthreads the block had completed when it happened
  std::string message;         // names the kernel-level facts: array, element, lanes, mask
};

// Metric definitions.
//   A *warp-wide request* is the i-th global load (or i-th global store, or i-th shared access)
//   of each lane of one warp, for i = 0, 1, ...: lanes that follow the same path issue their
//   accesses in the same order, so the i-th ones belong to the same instruction. (Divergent lanes
//   that make different numbers of accesses are matched approximately.)
//   sectors: the distinct 32-byte sectors one request touches, summed over requests. Sector
//   boundaries are counted from the start of each GlobalPtr buffer, as if it were 256-byte
//   aligned like a cudaMalloc allocation.
//   distinct sectors: the 32-byte sectors touched at least once over the whole launch.
//   shared wavefronts: a request is split into phases of 32 lanes (accesses up to 4 bytes),
//   16 lanes (8 bytes) or 8 lanes (16 bytes); a phase costs the largest number of distinct 4-byte
//   words any one of the 32 banks holds (the same word read by many lanes is a broadcast and
//   counts once). bank conflicts = wavefronts - phases, i.e. the extra wavefronts: s[lane] of
//   floats -> 0, s[lane * 32] -> 31.
struct Metrics {
  uint64_t global_load_requests = 0, global_load_sectors = 0;
  uint64_t global_store_requests = 0, global_store_sectors = 0;
  uint64_t global_bytes_requested = 0;  // bytes loaded + stored by all threads
  uint64_t global_distinct_sectors = 0;
  uint64_t shared_requests = 0, shared_wavefronts = 0, shared_bank_conflicts = 0;

  double sectors_per_load_request() const {
    return global_load_requests ? double(global_load_sectors) / global_load_requests : 0.0;
  }
  double sectors_per_store_request() const {
    return global_store_requests ? double(global_store_sectors) / global_store_requests : 0.0;
  }
  double conflicts_per_shared_request() const {
    return shared_requests ? double(shared_bank_conflicts) / shared_requests : 0.0;
  }
};

struct LaunchReport {
  bool launched = false;
  std::string launch_error;  // why the launch was refused (launched == false)
  std::vector<Error> errors;
  uint64_t error_count = 0;  // including records dropped past LaunchOptions::max_errors
  Metrics metrics;

  bool ok() const { return launched && error_count == 0; }
  size_t count(Checker c) const {
    return size_t(std::count_if(errors.begin(), errors.end(),
                                [c](const Error& e) { return e.checker == c; }));
  }
  std::string summary() const {
    std::ostringstream os;
    if (!launched) os << "launch failed: " << launch_error << "\n";
    os << error_count << " error(s)\n";
    for (const Error& e : errors) os << "  [" << to_string(e.checker) << "] " << e.message << "\n";
    return os.str();
  }
};

namespace detail {

struct Abort {};  // thrown inside a fiber to unwind it when its block is aborted

// mbarrier: waiting in mbarrier_wait_parity; named_barrier: in bar.sync with an id other than 0;
// warpgroup: in a warpgroup-wide instruction (wgmma), until the warpgroup's 128 threads arrive.
enum class TState : uint8_t { ready, barrier, collective, exited, mbarrier, named_barrier, warpgroup };

enum class CollKind : uint8_t { shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all, syncwarp,
                                mma, ldmatrix };

inline const char* coll_name(CollKind k) {
  switch (k) {
    case CollKind::shfl_idx: return "shfl_sync";
    case CollKind::shfl_up: return "shfl_up_sync";
    case CollKind::shfl_down: return "shfl_down_sync";
    case CollKind::shfl_xor: return "shfl_xor_sync";
    case CollKind::ballot: return "ballot_sync";
    case CollKind::any: return "any_sync";
    case CollKind::all: return "all_sync";
    case CollKind::syncwarp: return "syncwarp";
    case CollKind::mma: return "mma_sync";
    case CollKind::ldmatrix: return "ldmatrix";
  }
  return "?";
}

// One lane's part in a pending warp collective.
struct Coll {
  CollKind kind = CollKind::syncwarp;
  uint32_t mask = 0;
  uint64_t in = 0, out = 0;  // value bits (shuffles), predicate (vote)
  int param = 0;             // source lane / delta / lane mask
  int width = 32;
  int variant = 0;           // mma/ldmatrix shape code
  const void* in_ptr = nullptr;  // fragments (mma, ldmatrix)
  void* out_ptr = nullptr;
};

struct Access {
  uint64_t key;   // global: sector key of the first byte; shared: byte offset
  uint32_t bytes;
  uint32_t first_byte;  // global: offset of the first byte inside its first sector
  uint32_t epoch = 0;   // shared: the block's barriers passed before it
};

// A cp.async copy issued but not yet completed: the source bytes (read at issue) and where they go.
struct AsyncCopy {
  int64_t off, lo, hi;
  int array;
  uint32_t bytes;
  uint8_t data[16];
};

struct Thread {
  ucontext_t ctx;
  void* stack = nullptr;
  unsigned tid = 0;
  Dim3 idx;
  TState state = TState::ready;
  bool started = false;
  bool abort = false;
  const char* bar_file = nullptr;
  unsigned bar_line = 0;
  int bar_pred = 0;
  int bar_result = 0;
  Coll coll;
  unsigned n_decl = 0;  // shared_array declarations made so far
  std::vector<Access> gload, gstore, shared;  // traces for the metrics
  std::vector<AsyncCopy> async_open;          // cp.async issued since the last commit_group
  std::vector<std::vector<AsyncCopy>> async_groups;  // committed groups, oldest first
  // Happens-before beyond syncthreads (mbarriers, named barriers, warpgroups): this thread's
  // clock, which it advances at every release, and, once the block uses such a hand-off
  // (Runner::vc_active), its vector clock: vc[j] is the latest clock of thread j whose
  // accesses are ordered before this thread's next ones.
  uint32_t clock = 1;
  std::vector<uint32_t> vc;
  uint32_t proxy_fences = 0;  // fence.proxy.async executed so far
  int64_t wait_key = -1;      // the mbarrier (window offset) or named barrier waited on
  uint32_t wait_parity = 0;
  void* wg_op = nullptr;      // the warpgroup instruction this thread waits in
};

// What racecheck remembers about one shared byte: the last writer and up to two readers since.
constexpr uint16_t kNone = 0xFFFF;
struct Rec {
  uint16_t tid = kNone;
  uint32_t epoch = 0;
  uint32_t wgen = 0;  // the warp's collective generation at the time of the access
  uint32_t clk = 0;   // the thread's clock at the access
};
struct ByteShadow {
  Rec w, r1, r2;
  bool init = false;
  // The last write came through the generic proxy (a store, a cp.async), which the async proxy
  // (wgmma reading shared memory) sees only after the writer's fence.proxy.async: w_fences is
  // the writer's count of those fences at the write.
  bool w_generic = false;
  uint32_t w_fences = 0;
  // wgmma instructions in flight that read this byte: it must not be written until they are
  // retired (wgmma.wait_group in every thread of their warpgroup).
  uint16_t async_reads = 0;
  // The thread whose cp.async into this byte is issued but not yet complete: the byte is
  // being written from the issue to the wait_group that completes it, so any access in
  // between, by any thread, is a hazard.
  uint16_t async_tid = kNone;
};

struct SharedDecl {
  int64_t offset;
  size_t bytes, elem_size;
  int64_t count;
  std::string name;
};

struct LaunchState;

// Runs one block at a time on one OS thread; owns the fibers' stacks and the shared arena.
class Runner {
 public:
  explicit Runner(size_t stack_bytes) : stack_bytes_(stack_bytes) {}
  ~Runner() {
    for (Thread& t : threads_)
      if (t.stack) munmap(static_cast<char*>(t.stack) - page(), stack_bytes_ + page());
  }
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  size_t stack_bytes() const { return stack_bytes_; }
  void run_block(LaunchState& L, Dim3 block_idx);

  // --- state visible to the device-side API ---
  LaunchState* L = nullptr;
  Dim3 block_idx;
  Thread* cur = nullptr;
  std::vector<Thread> threads_;
  unsigned nthreads = 0;
  unsigned epoch = 0;  // syncthreads completed by this block
  bool aborting = false;
  std::vector<std::byte> arena;  // shared memory window: [dynamic | static arrays...]
  int64_t arena_used = 0;
  int64_t arena_hw = 0;  // the most of the window any block on this runner has used
  int64_t dynamic_bytes = 0;
  std::vector<SharedDecl> decls;
  std::vector<ByteShadow> shadow;
  std::vector<uint32_t> warp_gen;  // per warp: collectives completed
  std::vector<uint32_t> joint;     // per warp 32x32: generation of the last collective i and j shared
  // Vector clocks, switched on by the block's first mbarrier, named barrier or warpgroup
  // instruction (a block without them pays nothing): racecheck then orders two accesses of
  // one barrier epoch through the hand-offs between them.
  bool vc_active = false;
  void activate_vc();
  // A release by t (arrive, bar.arrive): its accesses so far are published in `into` (joined),
  // and its later ones carry a later clock.
  void release(Thread& t, std::vector<uint32_t>& into);
  // An acquire by t of what `from` published.
  void acquire(Thread& t, const std::vector<uint32_t>& from);
  // The Hopper synchronisation state of the block (simt/hopper.h), reset with it.
  std::shared_ptr<void> hopper;

  // results of this runner, merged into the report at the end of the launch
  std::vector<Error> errors;
  uint64_t error_count = 0;
  uint64_t kept[8] = {};  // records per checker
  Metrics metrics;
  std::unordered_set<uint64_t> sectors;

  void error(Checker c, std::string msg, std::string space = "", int64_t offset = -1,
             const Thread* other = nullptr);
  void request_abort() { aborting = true; }
  [[noreturn]] void abort_self() {
    aborting = true;
    throw Abort{};
  }
  void switch_to_scheduler();
  unsigned warp_lanes(unsigned warp) const {
    return std::min<unsigned>(32, nthreads - warp * 32);
  }
  Thread& lane(unsigned warp, unsigned l) { return threads_[warp * 32 + l]; }

 private:
  static size_t page() { return size_t(sysconf(_SC_PAGESIZE)); }
  void prepare(unsigned n);
  void start_block(LaunchState& L, Dim3 block_idx);
  void run_round(const std::vector<unsigned>& order);
  void abort_block();
  bool collective_deadlock();
  bool sleeping_deadlock();
  bool complete_barrier();
  void resume(Thread& t);
  void metrics_for_block();
  static void fiber_entry();

  size_t stack_bytes_;
  ucontext_t sched_;
};

inline thread_local Runner* tl_runner = nullptr;

inline Runner& runner() {
  Runner* r = tl_runner;
  if (!r) throw std::logic_error("fastconv::simt: device function called outside a launch");
  return *r;
}

struct LaunchState {
  Dim3 grid, block;
  size_t dynamic_shared = 0;
  LaunchOptions opt;
  std::function<void()> body;  // runs the kernel with its arguments in the current thread
  std::mutex mu;
};

inline std::string thread_str(const Thread& t) { return "thread " + to_string(t.idx); }

inline void Runner::error(Checker c, std::string msg, std::string space, int64_t offset,
                          const Thread* other) {
  ++error_count;
  if (kept[size_t(c)]++ >= L->opt.max_errors) return;
  Error e;
  e.checker = c;
  e.block = block_idx;
  if (cur) e.thread = cur->idx;
  if (other) {
    e.has_other = true;
    e.other = other->idx;
  }
  e.space = std::move(space);
  e.offset = offset;
  e.barrier = epoch;
  e.message = std::string(to_string(c)) + ": block " + to_string(block_idx) +
              (cur ? ", " + thread_str(*cur) : std::string()) + ": " + msg;
  errors.push_back(std::move(e));
}

inline void Runner::prepare(unsigned n) {
  if (threads_.size() < n) {
    size_t old = threads_.size();
    std::vector<Thread> grown(n);
    for (size_t i = 0; i < old; ++i) grown[i].stack = threads_[i].stack;
    for (size_t i = 0; i < old; ++i) threads_[i].stack = nullptr;
    threads_.swap(grown);
  }
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = threads_[i];
    if (!t.stack) {
      void* m = mmap(nullptr, stack_bytes_ + page(), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) throw std::runtime_error("fastconv::simt: cannot map a fiber stack");
      mprotect(m, page(), PROT_NONE);  // guard page: an overflow faults instead of corrupting
      t.stack = static_cast<char*>(m) + page();
    }
  }
}

inline void Runner::fiber_entry() {
  Runner& r = *tl_runner;
  Thread& t = *r.cur;
  try {
    r.L->body();
    size_t pending = t.async_open.size();
    for (const auto& g : t.async_groups) pending += g.size();
    if (pending)
      r.error(Checker::synccheck, "exits with " + std::to_string(pending) +
                                      " cp.async copy(ies) never waited for (cp_async_wait_group)");
  } catch (const Abort&) {
  } catch (const std::exception& e) {
    r.error(Checker::exception, std::string("kernel threw: ") + e.what());
    r.aborting = true;
  } catch (...) {
    r.error(Checker::exception, "kernel threw a non-std exception");
    r.aborting = true;
  }
  t.state = TState::exited;
  swapcontext(&t.ctx, &r.sched_);
  __builtin_unreachable();
}

inline void Runner::switch_to_scheduler() {
  Thread& t = *cur;
  swapcontext(&t.ctx, &sched_);
  // resumed by the scheduler
  if (t.abort) throw Abort{};
}

inline void Runner::resume(Thread& t) {
  cur = &t;
  if (!t.started) {
    t.started = true;
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack;
    t.ctx.uc_stack.ss_size = stack_bytes_;
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, &Runner::fiber_entry, 0);
  }
  swapcontext(&sched_, &t.ctx);
  cur = nullptr;
}

// A block's run: its state reset (start_block), then rounds in which every ready fiber runs
// to its next synchronisation point (run_round); when none is ready, the block is quiescent and
// either a warp collective can never complete (collective_deadlock), or every live thread waits
// at a barrier, which completes or is reported (complete_barrier). A finding that leaves the
// block unable to go on aborts it (abort_block): its fibers are unwound, never left hanging.
inline void Runner::run_block(LaunchState& LS, Dim3 bidx) {
  start_block(LS, bidx);
  std::vector<unsigned> order(nthreads);
  std::iota(order.begin(), order.end(), 0u);
  if (LS.opt.schedule == Schedule::reverse) std::reverse(order.begin(), order.end());
  std::mt19937_64 rng(LS.opt.seed * 0x9E3779B97F4A7C15ull + bidx.x + 65536ull * bidx.y +
                      (uint64_t(bidx.z) << 32));
  for (;;) {
    if (LS.opt.schedule == Schedule::shuffle) std::shuffle(order.begin(), order.end(), rng);
    run_round(order);
    if (aborting) {
      abort_block();
      break;
    }
    bool any_ready = false, all_exited = true;
    for (unsigned i = 0; i < nthreads; ++i) {
      any_ready |= threads_[i].state == TState::ready;
      all_exited &= threads_[i].state == TState::exited;
    }
    if (all_exited) break;
    if (any_ready) continue;
    // Quiescent: every live thread waits at a barrier or a warp collective.
    if (collective_deadlock() || sleeping_deadlock() || !complete_barrier()) aborting = true;
  }
  if (LS.opt.metrics) metrics_for_block();
  arena_hw = std::max(arena_hw, arena_used);
  tl_runner = nullptr;
}

inline void Runner::start_block(LaunchState& LS, Dim3 bidx) {
  L = &LS;
  tl_runner = this;
  block_idx = bidx;
  const Dim3 bd = LS.block;
  nthreads = unsigned(bd.size());
  prepare(nthreads);
  epoch = 0;
  aborting = false;
  decls.clear();
  dynamic_bytes = int64_t(LS.dynamic_shared);
  // the shared window: dynamic part first, static arrays appended as they are declared
  const size_t window = limits::max_shared_bytes_optin;
  if (arena.size() < window) arena.resize(window);
  arena_used = (dynamic_bytes + 15) / 16 * 16;
  // Garbage in, as on the GPU: shared memory starts with a fill pattern, not zeros. Only the part
  // of the window used so far by this runner needs resetting (the rest is still pristine).
  arena_hw = std::max(arena_hw, arena_used);
  std::memset(arena.data(), 0xCD, size_t(arena_hw));
  if (LS.opt.racecheck || LS.opt.initcheck) {
    if (shadow.size() < window) shadow.resize(window);
    std::fill(shadow.begin(), shadow.begin() + arena_hw, ByteShadow{});
  }
  const unsigned nwarps = (nthreads + 31) / 32;
  warp_gen.assign(nwarps, 0);
  if (LS.opt.racecheck) joint.assign(size_t(nwarps) * 1024, 0);
  for (unsigned i = 0; i < nthreads; ++i) {
    Thread& t = threads_[i];
    t.tid = i;
    t.idx = Dim3(i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y));
    t.state = TState::ready;
    t.started = false;
    t.abort = false;
    t.n_decl = 0;
    t.gload.clear();
    t.gstore.clear();
    t.shared.clear();
    t.async_open.clear();
    t.async_groups.clear();
    t.clock = 1;
    t.vc.clear();
    t.proxy_fences = 0;
    t.wait_key = -1;
    t.wg_op = nullptr;
  }
  vc_active = false;
  hopper.reset();
}

inline void Runner::activate_vc() {
  if (vc_active) return;
  vc_active = true;
  for (unsigned i = 0; i < nthreads; ++i) {
    threads_[i].vc.assign(nthreads, 0);
    threads_[i].vc[i] = threads_[i].clock;
  }
}

inline void Runner::release(Thread& t, std::vector<uint32_t>& into) {
  activate_vc();
  if (into.size() < nthreads) into.resize(nthreads, 0);
  for (unsigned i = 0; i < nthreads; ++i) into[i] = std::max(into[i], t.vc[i]);
  t.vc[t.tid] = ++t.clock;
}

inline void Runner::acquire(Thread& t, const std::vector<uint32_t>& from) {
  activate_vc();
  for (size_t i = 0; i < from.size() && i < nthreads; ++i) t.vc[i] = std::max(t.vc[i], from[i]);
}

inline void Runner::run_round(const std::vector<unsigned>& order) {
  for (unsigned i : order) {
    if (aborting) break;
    if (threads_[i].state == TState::ready) resume(threads_[i]);
  }
}

inline void Runner::abort_block() {
  for (unsigned i = 0; i < nthreads; ++i) {
    Thread& t = threads_[i];
    if (t.state == TState::exited) continue;
    if (!t.started) {
      t.state = TState::exited;
      continue;
    }
    t.abort = true;
    resume(t);  // throws Abort inside the fiber, which unwinds and exits
  }
}

// Reports (one record per warp) a warp collective whose lanes can never all arrive, naming the
// lanes that keep it waiting; true when there is one.
inline bool Runner::collective_deadlock() {
  const unsigned nwarps = (nthreads + 31) / 32;
  bool stuck = false;
  for (unsigned w = 0; w < nwarps; ++w) {
    for (unsigned l = 0; l < warp_lanes(w); ++l) {
      Thread& t = lane(w, l);
      if (t.state != TState::collective) continue;
      // the lanes that keep it waiting, as runs of lanes with the same reason
      std::string missing, run_reason;
      int run_start = -1, run_end = -1;
      auto flush = [&] {
        if (run_start < 0) return;
        missing += run_start == run_end ? " lane " + std::to_string(run_start)
                                        : " lanes " + std::to_string(run_start) + ".." +
                                              std::to_string(run_end);
        missing += " (" + run_reason + ");";
        run_start = -1;
      };
      for (unsigned m = 0; m < 32; ++m) {
        if (!(t.coll.mask >> m & 1u) || m >= warp_lanes(w)) continue;
        const Thread& o = lane(w, m);
        if (o.state == TState::collective && o.coll.mask == t.coll.mask &&
            o.coll.kind == t.coll.kind && o.coll.variant == t.coll.variant)
          continue;
        const std::string reason =
            o.state == TState::exited    ? "exited"
            : o.state == TState::barrier ? "waiting at syncthreads"
                                         : std::string("waiting in ") + coll_name(o.coll.kind);
        if (run_start >= 0 && (reason != run_reason || int(m) != run_end + 1)) flush();
        if (run_start < 0) run_start = int(m), run_reason = reason;
        run_end = int(m);
      }
      flush();
      cur = &t;
      char buf[16];
      std::snprintf(buf, sizeof buf, "0x%08x", t.coll.mask);
      error(Checker::collective, std::string(coll_name(t.coll.kind)) + " in warp " +
                                     std::to_string(w) + " with mask " + buf +
                                     " can never complete:" + missing);
      cur = nullptr;
      stuck = true;
      break;  // one record per warp
    }
  }
  return stuck;
}

// Threads asleep on an mbarrier, a named barrier or a warpgroup instruction when nothing is left
// to run: nothing will wake them (the emulator completes copies synchronously), so each is
// reported (the first few) and true returned.
inline bool Runner::sleeping_deadlock() {
  int reported = 0;
  for (unsigned i = 0; i < nthreads; ++i) {
    Thread& t = threads_[i];
    std::string what;
    if (t.state == TState::mbarrier)
      what = "waits on the mbarrier at shared byte " + std::to_string(t.wait_key) + " for its phase of parity " +
             std::to_string(t.wait_parity) + ", which cannot complete";
    else if (t.state == TState::named_barrier)
      what = "waits at named barrier " + std::to_string(t.wait_key) + ", which not enough threads reach";
    else if (t.state == TState::warpgroup)
      what = "waits in a warpgroup instruction that the rest of its warpgroup (threads " +
             std::to_string(t.tid / 128 * 128) + ".." + std::to_string(t.tid / 128 * 128 + 127) + ") never reaches";
    else
      continue;
    if (reported++ < 4) {
      cur = &t;
      error(Checker::synccheck, what + " (deadlock)");
      cur = nullptr;
    }
  }
  return reported > 0;
}

// Every live thread waits at a barrier: it completes when they all wait at the same call site
// and none has exited; otherwise the divergence is reported and false returned.
inline bool Runner::complete_barrier() {
  std::vector<unsigned> waiting, exited;
  for (unsigned i = 0; i < nthreads; ++i)
    (threads_[i].state == TState::exited ? exited : waiting).push_back(i);
  const Thread& first = threads_[waiting.front()];
  bool bad = false;
  for (unsigned i : waiting) {
    const Thread& t = threads_[i];
    if (t.bar_line != first.bar_line || std::strcmp(t.bar_file, first.bar_file) != 0) {
      cur = &threads_[i];
      error(Checker::synccheck,
            "waits at the syncthreads at " + std::string(t.bar_file) + ":" +
                std::to_string(t.bar_line) + " while " + thread_str(first) +
                " waits at the one at " + first.bar_file + ":" + std::to_string(first.bar_line) +
                " (barrier " + std::to_string(epoch) + "): divergent barrier",
            "", -1, &first);
      cur = nullptr;
      bad = true;
      break;
    }
  }
  if (!exited.empty()) {
    cur = &threads_[waiting.front()];
    error(Checker::synccheck,
          std::to_string(waiting.size()) + " thread(s) wait at the syncthreads at " +
              first.bar_file + ":" + std::to_string(first.bar_line) + " (barrier " +
              std::to_string(epoch) + ") while " + std::to_string(exited.size()) +
              " thread(s) have exited, e.g. " + thread_str(threads_[exited.front()]),
          "", -1, &threads_[exited.front()]);
    cur = nullptr;
    bad = true;
  }
  if (bad) return false;
  int count = 0;
  for (unsigned i : waiting) count += threads_[i].bar_pred != 0;
  ++epoch;
  for (unsigned i : waiting) {
    threads_[i].bar_result = count;
    threads_[i].state = TState::ready;
  }
  return true;
}

inline void Runner::metrics_for_block() {
  const unsigned nwarps = (nthreads + 31) / 32;
  std::vector<uint64_t> keys;
  auto global_requests = [&](std::vector<Access> Thread::*trace, uint64_t& requests,
                             uint64_t& nsectors) {
    for (unsigned w = 0; w < nwarps; ++w) {
      size_t longest = 0;
      for (unsigned l = 0; l < warp_lanes(w); ++l)
        longest = std::max(longest, (lane(w, l).*trace).size());
      for (size_t i = 0; i < longest; ++i) {
        keys.clear();
        for (unsigned l = 0; l < warp_lanes(w); ++l) {
          const auto& tr = lane(w, l).*trace;
          if (i >= tr.size()) continue;
          const Access& a = tr[i];
          const uint64_t n = (a.first_byte + a.bytes + 31) / 32;
          for (uint64_t s = 0; s < n; ++s) keys.push_back(a.key + 32 * s);
          metrics.global_bytes_requested += a.bytes;
        }
        std::sort(keys.begin(), keys.end());
        keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
        ++requests;
        nsectors += keys.size();
        sectors.insert(keys.begin(), keys.end());
      }
    }
  };
  global_requests(&Thread::gload, metrics.global_load_requests, metrics.global_load_sectors);
  global_requests(&Thread::gstore, metrics.global_store_requests, metrics.global_store_sectors);

  // shared memory: bank conflicts per warp-wide request. A lane's j-th access between two
  // barriers meets the other lanes' j-th access of the same interval: a lane that skipped
  // accesses (a divergent branch) cannot shift its partners in the intervals after it.
  std::vector<std::pair<unsigned, uint64_t>> bank_words;  // (bank, word)
  std::vector<size_t> next(32), take(32);
  for (unsigned w = 0; w < nwarps; ++w) {
    const unsigned lanes = warp_lanes(w);
    std::fill(next.begin(), next.end(), 0);
    while (true) {
      // The request: each lane's next access in the earliest interval any lane still has.
      uint32_t epoch = UINT32_MAX;
      for (unsigned l = 0; l < lanes; ++l)
        if (next[l] < lane(w, l).shared.size()) epoch = std::min(epoch, lane(w, l).shared[next[l]].epoch);
      if (epoch == UINT32_MAX) break;
      uint32_t width = 4;
      for (unsigned l = 0; l < lanes; ++l) {
        const auto& tr = lane(w, l).shared;
        take[l] = next[l] < tr.size() && tr[next[l]].epoch == epoch ? next[l] : SIZE_MAX;
        if (take[l] != SIZE_MAX) width = std::max(width, tr[take[l]].bytes);
      }
      const unsigned lanes_per_phase = width <= 4 ? 32 : width <= 8 ? 16 : 8;
      uint64_t wavefronts = 0, phases = 0;
      for (unsigned p0 = 0; p0 < 32; p0 += lanes_per_phase) {
        bank_words.clear();
        for (unsigned l = p0; l < p0 + lanes_per_phase && l < lanes; ++l) {
          if (take[l] == SIZE_MAX) continue;
          const Access& a = lane(w, l).shared[take[l]];
          for (uint64_t word = a.key / 4; word <= (a.key + a.bytes - 1) / 4; ++word)
            bank_words.emplace_back(unsigned(word % 32), word);
        }
        if (bank_words.empty()) continue;
        std::sort(bank_words.begin(), bank_words.end());
        bank_words.erase(std::unique(bank_words.begin(), bank_words.end()), bank_words.end());
        uint64_t worst = 0, run = 0;
        for (size_t k = 0; k < bank_words.size(); ++k) {
          run = (k > 0 && bank_words[k].first == bank_words[k - 1].first) ? run + 1 : 1;
          worst = std::max(worst, run);
        }
        wavefronts += worst;
        ++phases;
      }
      for (unsigned l = 0; l < lanes; ++l)
        if (take[l] != SIZE_MAX) ++next[l];
      ++metrics.shared_requests;
      metrics.shared_wavefronts += wavefronts;
      metrics.shared_bank_conflicts += wavefronts - phases;
    }
  }
}

// A pool of runners, reused from launch to launch (stacks and arenas stay mapped).
inline std::mutex& pool_mutex() {
  static std::mutex m;
  return m;
}
inline std::vector<std::unique_ptr<Runner>>& pool() {
  static std::vector<std::unique_ptr<Runner>> p;
  return p;
}
inline std::unique_ptr<Runner> take_runner(size_t stack_bytes) {
  std::lock_guard<std::mutex> g(pool_mutex());
  auto& p = pool();
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i]->stack_bytes() == stack_bytes) {
      auto r = std::move(p[i]);
      p.erase(p.begin() + int64_t(i));
      return r;
    }
  }
  return std::make_unique<Runner>(stack_bytes);
}
inline void give_runner(std::unique_ptr<Runner> r) {
  r->errors.clear();
  r->error_count = 0;
  std::fill(std::begin(r->kept), std::end(r->kept), 0);
  r->metrics = Metrics{};
  r->sectors.clear();
  std::lock_guard<std::mutex> g(pool_mutex());
  if (pool().size() < 8) pool().push_back(std::move(r));
}

inline std::string check_launch(Dim3 grid, Dim3 block, size_t dyn, const LaunchOptions& o) {
  auto s = [](uint64_t v) { return std::to_string(v); };
  if (grid.size() == 0 || block.size() == 0)
    return "grid " + to_string(grid) + " / block " + to_string(block) + " has a zero dimension";
  if (block.size() > limits::max_threads_per_block)
    return "block " + to_string(block) + " has " + s(block.size()) +
           " threads, more than the 1024 threads per block a GPU allows";
  if (block.x > limits::max_block_x || block.y > limits::max_block_y || block.z > limits::max_block_z)
    return "block " + to_string(block) + " exceeds the block dimension limits (1024, 1024, 64)";
  if (block.size() > o.max_threads_per_block)
    return "block " + to_string(block) + " has " + s(block.size()) +
           " threads, more than the kernel's launch bounds (" + s(o.max_threads_per_block) + ")";
  if (grid.x > limits::max_grid_x || grid.y > limits::max_grid_y || grid.z > limits::max_grid_z)
    return "grid " + to_string(grid) + " exceeds the grid limits (2^31-1, 65535, 65535)";
  if (o.max_dynamic_shared_bytes > limits::max_shared_bytes_optin)
    return "max_dynamic_shared_bytes " + s(o.max_dynamic_shared_bytes) +
           " is over the 227 KiB (232448 bytes) opt-in maximum";
  if (dyn > o.max_dynamic_shared_bytes) {
    if (dyn > limits::max_shared_bytes_optin)
      return "dynamic shared memory of " + s(dyn) +
             " bytes is over the 227 KiB (232448 bytes) per-block maximum";
    return "dynamic shared memory of " + s(dyn) + " bytes is over the kernel's limit of " +
           s(o.max_dynamic_shared_bytes) +
           " bytes (48 KiB unless it opts in with cudaFuncAttributeMaxDynamicSharedMemorySize)";
  }
  if (o.stack_bytes < 16 * 1024) return "stack_bytes must be at least 16 KiB";
  return "";
}

}  // namespace detail

// Runs kernel(args...) on every thread of grid x block. The kernel is any callable; it reaches
// its indices, shared memory and collectives through the functions of this namespace.
template <typename Kernel, typename... Args>
LaunchReport launch(Kernel&& kernel, Dim3 grid, Dim3 block, size_t dynamic_shared_bytes,
                    const LaunchOptions& options, Args&&... args) {
  LaunchReport rep;
  rep.launch_error = detail::check_launch(grid, block, dynamic_shared_bytes, options);
  if (!rep.launch_error.empty()) {
    rep.launched = false;
    Error e;
    e.checker = Checker::launch;
    e.message = "launch: " + rep.launch_error;
    rep.errors.push_back(e);
    rep.error_count = 1;
    return rep;
  }
  rep.launched = true;
  detail::LaunchState LS;
  LS.grid = grid;
  LS.block = block;
  LS.dynamic_shared = dynamic_shared_bytes;
  LS.opt = options;
  auto argt = std::make_tuple(std::forward<Args>(args)...);
  LS.body = [&kernel, &argt]() { std::apply([&](auto&... a) { kernel(a...); }, argt); };

  const uint64_t nblocks = grid.size();
  unsigned nworkers = options.threads > 0 ? unsigned(options.threads)
                                          : std::max(1u, std::thread::hardware_concurrency());
  nworkers = unsigned(std::min<uint64_t>(nworkers, nblocks));
  std::atomic<uint64_t> next{0};
  std::vector<std::unique_ptr<detail::Runner>> runners;
  for (unsigned i = 0; i < nworkers; ++i) runners.push_back(detail::take_runner(options.stack_bytes));
  auto work = [&](detail::Runner& r) {
    for (;;) {
      const uint64_t b = next.fetch_add(1);
      if (b >= nblocks) break;
      const Dim3 bidx(unsigned(b % grid.x), unsigned((b / grid.x) % grid.y),
                      unsigned(b / (uint64_t(grid.x) * grid.y)));
      r.run_block(LS, bidx);
    }
  };
  if (nworkers == 1) {
    work(*runners[0]);
  } else {
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < nworkers; ++i) pool.emplace_back(work, std::ref(*runners[i]));
    for (auto& t : pool) t.join();
  }
  std::unordered_set<uint64_t> sectors;
  for (auto& r : runners) {
    rep.error_count += r->error_count;
    for (auto& e : r->errors) rep.errors.push_back(std::move(e));
    Metrics& m = rep.metrics;
    const Metrics& x = r->metrics;
    m.global_load_requests += x.global_load_requests;
    m.global_load_sectors += x.global_load_sectors;
    m.global_store_requests += x.global_store_requests;
    m.global_store_sectors += x.global_store_sectors;
    m.global_bytes_requested += x.global_bytes_requested;
    m.shared_requests += x.shared_requests;
    m.shared_wavefronts += x.shared_wavefronts;
    m.shared_bank_conflicts += x.shared_bank_conflicts;
    if (sectors.empty())
      sectors.swap(r->sectors);
    else
      sectors.insert(r->sectors.begin(), r->sectors.end());
    detail::give_runner(std::move(r));
  }
  rep.metrics.global_distinct_sectors = sectors.size();
  auto key = [](const Error& e) {
    return std::make_tuple(e.block.z, e.block.y, e.block.x, int(e.checker));
  };
  std::stable_sort(rep.errors.begin(), rep.errors.end(),
                   [&](const Error& a, const Error& b) { return key(a) < key(b); });
  uint64_t kept[8] = {};
  std::erase_if(rep.errors,
                [&](const Error& e) { return kept[size_t(e.checker)]++ >= options.max_errors; });
  return rep;
}

// ---------------------------------------------------------------------------------------------
// Device-side API: indices and the block barrier.

inline Dim3 thread_idx() { return detail::runner().cur->idx; }
inline Dim3 block_idx() { return detail::runner().block_idx; }
inline Dim3 block_dim() { return detail::runner().L->block; }
inline Dim3 grid_dim() { return detail::runner().L->grid; }
inline unsigned linear_thread_id() { return detail::runner().cur->tid; }
inline unsigned lane_id() { return detail::runner().cur->tid % 32; }
inline unsigned warp_id() { return detail::runner().cur->tid / 32; }
constexpr unsigned warp_size() { return 32; }

namespace detail {
inline int barrier(int pred, std::source_location loc) {
  Runner& r = runner();
  Thread& t = *r.cur;
  t.state = TState::barrier;
  t.bar_file = loc.file_name();
  t.bar_line = loc.line();
  t.bar_pred = pred;
  r.switch_to_scheduler();
  return t.bar_result;
}
}  // namespace detail

// __syncthreads(): every live thread of the block must reach the same call site.
inline void syncthreads(std::source_location loc = std::source_location::current()) {
  detail::barrier(0, loc);
}
// __syncthreads_count / _and / _or
inline int syncthreads_count(int pred, std::source_location loc = std::source_location::current()) {
  return detail::barrier(pred != 0, loc);
}
inline int syncthreads_and(int pred, std::source_location loc = std::source_location::current()) {
  return detail::barrier(pred != 0, loc) == int(block_dim().size());
}
inline int syncthreads_or(int pred, std::source_location loc = std::source_location::current()) {
  return detail::barrier(pred != 0, loc) != 0;
}

}  // namespace fastconv::simt
