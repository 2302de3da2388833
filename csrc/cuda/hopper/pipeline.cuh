// The stage ring every Hopper mainloop hands its tiles over: a full and an empty mbarrier per
// stage, and a {index, phase} state that walks the ring (as CUTLASS's sm90 pipelines do). The
// producer acquires a stage (waits for its empty barrier's phase), fills it, and commits it
// (its arrivals on the full barrier); the consumer waits on the full barrier, reads, and
// releases the stage (arrives on the empty barrier). Parities: phase p of a stage's barrier
// completes once per lap of the ring; the consumer waits for full with the lap's parity, the
// producer for empty with the other one, so that on the first lap (no release yet) it does not
// wait at all. Device code only.
#pragma once

#include "cuda/common/primitives_sm90.h"

#include <cstdint>

namespace fastconv::cuda::hopper {

struct PipelineState {
  int index = 0;
  uint32_t phase = 0;

  template <int Stages>
  FASTCONV_DEVICE void advance() {
    if (++index == Stages) {
      index = 0;
      phase ^= 1u;
    }
  }
};

template <int Stages>
struct MbarrierRing {
  sptr<uint64_t> full, empty;  // Stages barriers each

  // One thread, before a syncthreads: each full barrier expects `producers` arrivals a phase,
  // each empty barrier `consumers`.
  FASTCONV_DEVICE void init(uint32_t producers, uint32_t consumers) const {
    for (int s = 0; s < Stages; ++s) {
      mbarrier_init(full + s, producers);
      mbarrier_init(empty + s, consumers);
    }
  }
  FASTCONV_DEVICE void producer_acquire(const PipelineState& s) const { mbarrier_wait_parity(empty + s.index, s.phase ^ 1u); }
  // The stage's copies have landed and been fenced for the async proxy (CpAsyncProducer).
  FASTCONV_DEVICE void producer_commit(const PipelineState& s) const { mbarrier_arrive(full + s.index); }
  FASTCONV_DEVICE void consumer_wait(const PipelineState& s) const { mbarrier_wait_parity(full + s.index, s.phase); }
  FASTCONV_DEVICE void consumer_release(const PipelineState& s) const { mbarrier_arrive(empty + s.index); }
};

// A cp.async producer's side of the ring. cp.async writes shared memory through the generic
// proxy, which wgmma (the async proxy) sees only after a fence.proxy.async by the writer once
// the writes have landed; so a stage is committed only when its copies are known complete:
// InFlight stages of copies stay in flight, and each step waits for the oldest (wait_group),
// fences, and commits it. The consumers release a stage one behind (the wgmma group that read
// it completes while the next one runs), so the producer may hold at most Stages - 2 stages
// uncommitted: to refill stage i it needs stage i - Stages released, which needs stage
// i - Stages + 1 consumed, which needs that stage committed, which happens only once
// InFlight more stages have been issued. One more in flight deadlocks the ring
// (tests/simt/hopper_pipeline_test.cpp found it so).
template <int Stages, int InFlight>
struct CpAsyncProducer {
  static_assert(InFlight >= 0 && InFlight <= Stages - 2,
                "the consumers hold one stage and the producer InFlight: more than Stages - 2 deadlocks");
  MbarrierRing<Stages> ring;
  PipelineState issue, commit;

  FASTCONV_DEVICE void acquire() const { ring.producer_acquire(issue); }
  // After this step's copies: the oldest stage whose copies have landed goes to the consumers.
  FASTCONV_DEVICE void issued() {
    cp_async_commit_group();
    issue.template advance<Stages>();
    cp_async_wait_group<InFlight>();
    if (lag() > InFlight) commit_oldest();
  }
  // After the last step: every stage still in flight.
  FASTCONV_DEVICE void drain() {
    cp_async_wait_group<0>();
    while (lag() > 0) commit_oldest();
  }

 private:
  FASTCONV_DEVICE int lag() const {
    const int d = issue.index - commit.index + (issue.phase != commit.phase ? Stages : 0);
    return d;
  }
  FASTCONV_DEVICE void commit_oldest() {
    fence_proxy_async();
    ring.producer_commit(commit);
    commit.template advance<Stages>();
  }
};

}  // namespace fastconv::cuda::hopper
