// fastconv::simt Hopper (sm_90) synchronisation: mbarriers (init, arrive, expect_tx, phases and
// their parities, try_wait / wait), cp.async.mbarrier.arrive.noinc, named barriers (bar.sync /
// bar.arrive with an id), fence.proxy.async, and setmaxnreg. wgmma is in simt/wgmma.h.
//
// Ordering: every hand-off here is a release by the arriving thread and an acquire by the one
// that waits (or, for a named barrier, by every participant), in the threads' vector clocks
// (Runner::vc_active), so racecheck orders the accesses of one syncthreads epoch through them:
// a producer's writes before its arrive on a full barrier are ordered before the consumer's
// reads after its wait on it, and nothing else is.
//
// mbarrier (PTX ISA, "Parallel Synchronization and Communication Instructions: mbarrier"): an
// 8-byte object in shared memory. init(count) sets the expected arrivals; a phase completes when
// its pending arrivals reach zero and its transaction count is zero, and the next phase starts
// with count pending again. try_wait.parity(p) is true once the phase of parity p has completed:
// on a fresh barrier (phase 0 under way) parity 1 counts as complete, which is why a producer
// waits on an empty barrier with parity 1 first. The emulated state lives beside the arena, keyed
// by the object's window offset; the object's bytes are not otherwise touched.
//
// Errors: an mbarrier used before its init (or by a thread the init is not ordered before), a
// count of 0 or over 2^20 - 1, a transaction count below zero, a misaligned object (memcheck);
// threads that wait on an mbarrier or a named barrier that nothing will complete (synccheck:
// the block is aborted rather than hung); a named barrier id outside 1..15, or threads that give
// one id different counts.
#pragma once

#include "simt/async.h"

#include <map>
#include <unordered_map>

namespace fastconv::simt {

namespace detail {

struct MBarrierState {
  Rec init_rec;
  uint32_t count = 0, pending = 0;
  int64_t tx = 0;
  uint64_t completed = 0;                 // phases completed; the current phase's parity is completed & 1
  std::vector<uint32_t> accum;            // the arrivals' clocks in the current phase
  std::vector<uint32_t> published[2];     // what the last completed phase of each parity released
};

struct NamedBarrierState {
  unsigned expected = 0, arrived = 0;
  std::vector<uint32_t> accum;
};

struct WarpgroupOps;  // simt/wgmma.h

struct HopperState {
  std::unordered_map<int64_t, MBarrierState> mbarriers;
  NamedBarrierState named[16];
  std::shared_ptr<WarpgroupOps> wgmma;
};

inline HopperState& hopper_state(Runner& r) {
  if (!r.hopper) r.hopper = std::make_shared<HopperState>();
  return *static_cast<HopperState*>(r.hopper.get());
}

// The barrier behind `bar`, checked: aligned, initialised, and initialised before this access.
inline MBarrierState* mbarrier_at(Runner& r, SharedPtr<uint64_t> bar, const char* op) {
  const int64_t off = bar.window_offset();
  if (off % 8 != 0 || off < bar.lo_bound() || off + 8 > bar.hi_bound()) {
    r.error(Checker::memcheck, std::string(op) + ": mbarrier at shared byte " + std::to_string(off) +
                                   (off % 8 != 0 ? " is not 8-byte aligned" : " is outside its array"),
            "shared", off);
    return nullptr;
  }
  HopperState& h = hopper_state(r);
  auto it = h.mbarriers.find(off);
  if (it == h.mbarriers.end()) {
    r.error(Checker::synccheck, std::string(op) + ": the mbarrier at shared byte " + std::to_string(off) +
                                    " has not been initialised (mbarrier_init)", "shared", off);
    return nullptr;
  }
  Thread& t = *r.cur;
  if (!ordered_before(r, it->second.init_rec, t)) {
    r.error(Checker::racecheck, std::string(op) + ": the mbarrier at shared byte " + std::to_string(off) +
                                    " was initialised by " + thread_str(r.threads_[it->second.init_rec.tid]) +
                                    " with no barrier between the init and this use", "shared", off);
  }
  return &it->second;
}

inline void wake_mbarrier_waiters(Runner& r, int64_t off) {
  for (unsigned i = 0; i < r.nthreads; ++i) {
    Thread& t = r.threads_[i];
    if (t.state == TState::mbarrier && t.wait_key == off) t.state = TState::ready;
  }
}

inline void mbarrier_try_complete(Runner& r, int64_t off, MBarrierState& b) {
  if (b.pending != 0 || b.tx != 0) return;
  const int parity = int(b.completed & 1u);
  b.published[parity] = b.accum;
  b.accum.assign(r.nthreads, 0);
  ++b.completed;
  b.pending = b.count;
  wake_mbarrier_waiters(r, off);
}

inline void mbarrier_arrive_on(Runner& r, int64_t off, MBarrierState& b, Thread& t, const char* op) {
  if (b.pending == 0) {
    r.error(Checker::synccheck, std::string(op) + ": more arrivals on the mbarrier at shared byte " +
                                    std::to_string(off) + " than its count (" + std::to_string(b.count) + ")");
    return;
  }
  r.release(t, b.accum);
  --b.pending;
  mbarrier_try_complete(r, off, b);
}

}  // namespace detail

// mbarrier.init.shared.b64 [bar], count
inline void mbarrier_init(SharedPtr<uint64_t> bar, uint32_t count) {
  detail::Runner& r = detail::runner();
  const int64_t off = bar.window_offset();
  if (off % 8 != 0 || off < bar.lo_bound() || off + 8 > bar.hi_bound()) {
    r.error(Checker::memcheck, "mbarrier_init: mbarrier at shared byte " + std::to_string(off) +
                                   " is misaligned or outside its array", "shared", off);
    return;
  }
  if (count == 0 || count > (1u << 20) - 1) {
    r.error(Checker::synccheck, "mbarrier_init: count " + std::to_string(count) + " is outside 1..2^20-1");
    return;
  }
  r.activate_vc();
  detail::Thread& t = *r.cur;
  detail::MBarrierState b;
  b.init_rec = detail::Rec{uint16_t(t.tid), r.epoch, r.warp_gen[t.tid / 32], t.clock};
  b.count = b.pending = count;
  b.accum.assign(r.nthreads, 0);
  detail::hopper_state(r).mbarriers[off] = std::move(b);
}

// mbarrier.arrive.shared.b64: returns the state token (the phase it arrived in).
inline uint64_t mbarrier_arrive(SharedPtr<uint64_t> bar) {
  detail::Runner& r = detail::runner();
  detail::MBarrierState* b = detail::mbarrier_at(r, bar, "mbarrier_arrive");
  if (!b) return 0;
  const uint64_t token = b->completed;
  detail::mbarrier_arrive_on(r, bar.window_offset(), *b, *r.cur, "mbarrier_arrive");
  return token;
}

// mbarrier.expect_tx: the current phase also waits for `bytes` of transactions.
inline void mbarrier_expect_tx(SharedPtr<uint64_t> bar, uint32_t bytes) {
  detail::Runner& r = detail::runner();
  if (detail::MBarrierState* b = detail::mbarrier_at(r, bar, "mbarrier_expect_tx")) b->tx += bytes;
}

// mbarrier.arrive.expect_tx: expect_tx, then arrive.
inline uint64_t mbarrier_arrive_expect_tx(SharedPtr<uint64_t> bar, uint32_t bytes) {
  mbarrier_expect_tx(bar, bytes);
  return mbarrier_arrive(bar);
}

// The transactions of an async copy completing on the barrier (complete_tx).
inline void mbarrier_complete_tx(SharedPtr<uint64_t> bar, uint32_t bytes) {
  detail::Runner& r = detail::runner();
  detail::MBarrierState* b = detail::mbarrier_at(r, bar, "complete_tx");
  if (!b) return;
  b->tx -= bytes;
  if (b->tx < 0) {
    r.error(Checker::synccheck, "complete_tx: " + std::to_string(bytes) + " bytes completed on the mbarrier at "
                                    "shared byte " + std::to_string(bar.window_offset()) +
                                    " take its transaction count below zero (expect_tx too small)");
    b->tx = 0;
  }
  detail::mbarrier_try_complete(r, bar.window_offset(), *b);
}

// mbarrier.try_wait.parity: whether the phase of that parity has completed (then this thread
// acquires what its arrivals released).
inline bool mbarrier_try_wait_parity(SharedPtr<uint64_t> bar, uint32_t parity) {
  detail::Runner& r = detail::runner();
  detail::MBarrierState* b = detail::mbarrier_at(r, bar, "mbarrier_try_wait_parity");
  if (!b) return true;
  if ((b->completed & 1u) == (parity & 1u)) return false;  // that parity's phase is the one under way
  r.acquire(*r.cur, b->published[parity & 1u]);
  return true;
}

// try_wait in a loop: the thread sleeps until the phase of that parity completes.
inline void mbarrier_wait_parity(SharedPtr<uint64_t> bar, uint32_t parity) {
  detail::Runner& r = detail::runner();
  while (!mbarrier_try_wait_parity(bar, parity)) {
    detail::Thread& t = *r.cur;
    t.state = detail::TState::mbarrier;
    t.wait_key = bar.window_offset();
    t.wait_parity = parity;
    r.switch_to_scheduler();
  }
  r.cur->wait_key = -1;
}

// cp.async.mbarrier.arrive.noinc.shared.b64 [bar]: an arrive on the barrier once every cp.async
// this thread has issued so far has completed; .noinc: the barrier's count must include these
// arrivals. Emulated: the copies complete now (their bytes land, as this thread's writes), then
// the thread arrives.
inline void cp_async_mbarrier_arrive_noinc(SharedPtr<uint64_t> bar) {
  detail::Runner& r = detail::runner();
  detail::Thread& t = *r.cur;
  cp_async_commit_group();
  while (!t.async_groups.empty()) {
    detail::complete_async(t.async_groups.front());
    t.async_groups.erase(t.async_groups.begin());
  }
  detail::MBarrierState* b = detail::mbarrier_at(r, bar, "cp_async_mbarrier_arrive_noinc");
  if (b) detail::mbarrier_arrive_on(r, bar.window_offset(), *b, t, "cp_async_mbarrier_arrive_noinc");
}

// fence.proxy.async.shared::cta: this thread's generic-proxy writes so far (stores, cp.async)
// become visible to the async proxy (wgmma reading shared memory through descriptors).
inline void fence_proxy_async() { detail::runner().cur->proxy_fences++; }

// setmaxnreg.{inc,dec}.sync.aligned.u32 N: register reallocation between warpgroups; nothing
// to emulate, but N must be a multiple of 8 in [24, 256].
inline void setmaxnreg(unsigned n) {
  if (n % 8 != 0 || n < 24 || n > 256) {
    detail::Runner& r = detail::runner();
    r.error(Checker::launch, "setmaxnreg: " + std::to_string(n) + " is not a multiple of 8 in [24, 256]");
  }
}

namespace detail {

inline NamedBarrierState& named_barrier_at(Runner& r, unsigned id, unsigned count, const char* op) {
  HopperState& h = hopper_state(r);
  if (id == 0 || id > 15) {
    r.error(Checker::synccheck, std::string(op) + ": barrier id " + std::to_string(id) +
                                    " (0 is syncthreads'; named barriers are 1..15)");
    r.abort_self();
  }
  if (count == 0 || count % 32 != 0 || count > r.nthreads) {
    r.error(Checker::synccheck, std::string(op) + ": thread count " + std::to_string(count) +
                                    " is not a multiple of 32 up to the block's " + std::to_string(r.nthreads));
    r.abort_self();
  }
  NamedBarrierState& b = h.named[id];
  if (b.arrived == 0) b.expected = count;
  if (b.expected != count) {
    r.error(Checker::synccheck, std::string(op) + ": barrier " + std::to_string(id) + " with count " +
                                    std::to_string(count) + " while other threads give it " +
                                    std::to_string(b.expected));
    r.abort_self();
  }
  return b;
}

// One arrival; when it is the last, every thread waiting at the barrier acquires what all the
// arrivals released and goes on.
inline bool named_barrier_arrival(Runner& r, unsigned id, NamedBarrierState& b, Thread& t) {
  r.release(t, b.accum);
  if (++b.arrived < b.expected) return false;
  for (unsigned i = 0; i < r.nthreads; ++i) {
    Thread& o = r.threads_[i];
    if (o.state == TState::named_barrier && o.wait_key == int64_t(id)) {
      r.acquire(o, b.accum);
      o.state = TState::ready;
      o.wait_key = -1;
    }
  }
  r.acquire(t, b.accum);
  b.arrived = 0;
  b.accum.assign(r.nthreads, 0);
  return true;
}

}  // namespace detail

// bar.sync id, count: waits until `count` threads (whole warps) have arrived at barrier `id`.
inline void named_barrier_sync(unsigned id, unsigned count) {
  detail::Runner& r = detail::runner();
  detail::Thread& t = *r.cur;
  detail::NamedBarrierState& b = detail::named_barrier_at(r, id, count, "named_barrier_sync");
  if (detail::named_barrier_arrival(r, id, b, t)) return;
  t.state = detail::TState::named_barrier;
  t.wait_key = int64_t(id);
  r.switch_to_scheduler();
}

// bar.arrive id, count: arrives without waiting (a producer signalling its consumers).
inline void named_barrier_arrive(unsigned id, unsigned count) {
  detail::Runner& r = detail::runner();
  detail::NamedBarrierState& b = detail::named_barrier_at(r, id, count, "named_barrier_arrive");
  detail::named_barrier_arrival(r, id, b, *r.cur);
}

}  // namespace fastconv::simt
