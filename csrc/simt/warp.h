// fastconv::simt warp collectives: __shfl*_sync, __ballot_sync, __any_sync, __all_sync,
// __syncwarp. Each is a rendezvous of the lanes named in its mask: a lane waits until every lane
// of the mask has arrived at a collective of the same kind with the same mask, then all of them
// get their results at once (so the values exchanged are those of one instant, as on the GPU).
//
// Errors (Checker::collective; the block is aborted): the calling lane is not in the mask; the
// mask names lanes that do not exist (partial last warp) or that have exited; a lane of the mask
// waits in another collective or with another mask; a mask's lanes never all arrive (e.g. some
// wait at syncthreads); a shuffle whose source lane is in the segment but not in the mask (the
// value is undefined on the GPU); a width that is not a power of two in [1, 32].
#pragma once

#include "simt/runtime.h"

#include <bit>
#include <cstdio>
#include <type_traits>

namespace fastconv::simt {

constexpr unsigned full_mask = 0xffffffffu;

namespace detail {

inline std::string hex_mask(uint32_t m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

using Resolver = void (*)(Runner&, unsigned warp, uint32_t mask);

inline void resolve_builtin(Runner& r, unsigned w, uint32_t mask) {
  const unsigned first = unsigned(std::countr_zero(mask));
  const Coll& c0 = r.lane(w, first).coll;
  switch (c0.kind) {
    case CollKind::ballot:
    case CollKind::any:
    case CollKind::all: {
      uint32_t bits = 0;
      for (unsigned l = 0; l < 32; ++l)
        if ((mask >> l & 1u) && r.lane(w, l).coll.in) bits |= 1u << l;
      const uint64_t out = c0.kind == CollKind::ballot ? bits
                           : c0.kind == CollKind::any  ? uint64_t(bits != 0)
                                                       : uint64_t(bits == mask);
      for (unsigned l = 0; l < 32; ++l)
        if (mask >> l & 1u) r.lane(w, l).coll.out = out;
      break;
    }
    case CollKind::shfl_idx:
    case CollKind::shfl_up:
    case CollKind::shfl_down:
    case CollKind::shfl_xor: {
      uint64_t out[32];
      for (unsigned i = 0; i < 32; ++i) {
        if (!(mask >> i & 1u)) continue;
        Thread& t = r.lane(w, i);
        const int width = t.coll.width, p = t.coll.param;
        const int seg = int(i) / width * width;
        int src = int(i);
        switch (t.coll.kind) {
          case CollKind::shfl_idx: src = seg + ((p % width) + width) % width; break;
          case CollKind::shfl_up: src = (int(i) - seg >= p) ? int(i) - p : int(i); break;
          case CollKind::shfl_down: src = (int(i) - seg + p < width) ? int(i) + p : int(i); break;
          default: src = (int(i) ^ p); src = (src >= seg + width || src < 0) ? int(i) : src; break;
        }
        if (!(mask >> src & 1u)) {
          Thread* saved = r.cur;
          r.cur = &t;
          r.error(Checker::collective,
                  std::string(coll_name(t.coll.kind)) + " in warp " + std::to_string(w) +
                      ": lane " + std::to_string(i) + " reads lane " + std::to_string(src) +
                      ", which is not in the mask " + hex_mask(mask) + " (undefined value)");
          r.cur = saved;
          src = int(i);
        }
        out[i] = r.lane(w, unsigned(src)).coll.in;
      }
      for (unsigned i = 0; i < 32; ++i)
        if (mask >> i & 1u) r.lane(w, i).coll.out = out[i];
      break;
    }
    case CollKind::syncwarp: break;
    default: break;
  }
}

// Arrives at a collective; returns once it has been resolved (the lane's coll.out is set).
inline void warp_arrive(Coll c, Resolver resolve = resolve_builtin) {
  Runner& r = runner();
  Thread& t = *r.cur;
  const unsigned w = t.tid / 32, me = t.tid % 32, nl = r.warp_lanes(w);
  const uint32_t mask = c.mask;
  const std::string what = std::string(coll_name(c.kind)) + " (warp " + std::to_string(w) +
                           ", lane " + std::to_string(me) + ", mask " + hex_mask(mask) + ")";
  if (!(mask >> me & 1u)) {
    r.error(Checker::collective, what + ": the calling lane is not in the mask");
    r.abort_self();
  }
  if (nl < 32 && (mask >> nl) != 0) {
    r.error(Checker::collective,
            what + ": the mask names lanes " + std::to_string(nl) + "..31, which do not exist "
            "(the block has " + std::to_string(r.nthreads) + " threads; warp " +
            std::to_string(w) + " has " + std::to_string(nl) + " lanes)");
    r.abort_self();
  }
  bool complete = true;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u) || l == me) continue;
    const Thread& o = r.lane(w, l);
    if (o.state == TState::exited) {
      r.error(Checker::collective, what + ": lane " + std::to_string(l) +
                                       " of the mask has already exited");
      r.abort_self();
    }
    const bool same = o.state == TState::collective && o.coll.mask == mask &&
                      o.coll.kind == c.kind && o.coll.variant == c.variant;
    // A lane waiting in another collective whose mask names this lane waits for this lane
    // there, while this lane waits for it here: they disagree. (One whose mask does not name
    // this lane may still come here once its own collective completes.)
    if (o.state == TState::collective && !same && (o.coll.mask >> me & 1u)) {
      r.error(Checker::collective, what + ": lane " + std::to_string(l) + " waits in " +
                                       coll_name(o.coll.kind) + " with mask " +
                                       hex_mask(o.coll.mask) + ": the lanes disagree");
      r.abort_self();
    }
    if (!same) complete = false;
  }
  t.coll = c;
  t.state = TState::collective;
  if (!complete) {
    r.switch_to_scheduler();
    return;
  }
  resolve(r, w, mask);
  if (r.vc_active) {
    // The lanes synchronise: each one's accesses so far are ordered before every lane's next.
    std::vector<uint32_t> joined(r.nthreads, 0);
    for (unsigned l = 0; l < 32; ++l)
      if (mask >> l & 1u) r.release(r.lane(w, l), joined);
    for (unsigned l = 0; l < 32; ++l)
      if (mask >> l & 1u) r.acquire(r.lane(w, l), joined);
  }
  const uint32_t g = ++r.warp_gen[w];
  if (r.L->opt.racecheck)
    for (unsigned i = 0; i < 32; ++i)
      if (mask >> i & 1u)
        for (unsigned j = 0; j < 32; ++j)
          if (mask >> j & 1u) r.joint[size_t(w) * 1024 + i * 32 + j] = g;
  for (unsigned l = 0; l < 32; ++l)
    if (mask >> l & 1u) r.lane(w, l).state = TState::ready;
  if (r.aborting) throw Abort{};
}

template <typename T>
uint64_t to_bits(const T& v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "shuffled values are trivially copyable and at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <typename T>
T shfl(CollKind kind, unsigned mask, T var, int param, int width) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    Runner& r = runner();
    r.error(Checker::collective, std::string(coll_name(kind)) + ": width " +
                                     std::to_string(width) + " is not a power of two in [1, 32]");
    r.abort_self();
  }
  Coll c;
  c.kind = kind;
  c.mask = mask;
  c.in = to_bits(var);
  c.param = param;
  c.width = width;
  warp_arrive(c);
  return from_bits<T>(runner().cur->coll.out);
}

inline uint64_t vote(CollKind kind, unsigned mask, int pred) {
  Coll c;
  c.kind = kind;
  c.mask = mask;
  c.in = pred != 0;
  warp_arrive(c);
  return runner().cur->coll.out;
}

}  // namespace detail

template <typename T>
T shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return detail::shfl(detail::CollKind::shfl_idx, mask, var, src_lane, width);
}
template <typename T>
T shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return detail::shfl(detail::CollKind::shfl_up, mask, var, int(delta), width);
}
template <typename T>
T shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return detail::shfl(detail::CollKind::shfl_down, mask, var, int(delta), width);
}
template <typename T>
T shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return detail::shfl(detail::CollKind::shfl_xor, mask, var, lane_mask, width);
}
inline unsigned ballot_sync(unsigned mask, int pred) {
  return unsigned(detail::vote(detail::CollKind::ballot, mask, pred));
}
inline int any_sync(unsigned mask, int pred) {
  return int(detail::vote(detail::CollKind::any, mask, pred));
}
inline int all_sync(unsigned mask, int pred) {
  return int(detail::vote(detail::CollKind::all, mask, pred));
}
inline void syncwarp(unsigned mask = full_mask) { detail::vote(detail::CollKind::syncwarp, mask, 0); }

}  // namespace fastconv::simt
