// fastconv::simt cp.async: cp.async.ca/cg.shared.global with 4, 8 or 16 bytes (and the zero-fill
// form with a source size below the copy size), cp.async.commit_group, cp.async.wait_group N and
// cp.async.wait_all.
//
// Emulation: the global source is read (bounds-checked, traced) when the copy is issued; the
// shared destination is written when a wait_group makes the copy's group complete, as this
// thread's write at that moment (initcheck sees it then). For racecheck the destination is
// written from the issue to the completion: a read of it by another thread since the last
// barrier before the issue is a write-after-read (a stage refilled while still being read),
// and any access to it, by any thread, before the completion is reported, since on the GPU the
// copy may land before or after it. A thread that exits with copies never waited for is
// reported (synccheck).
#pragma once

#include "simt/memory.h"

namespace fastconv::simt {

namespace detail {
inline void complete_async(const std::vector<AsyncCopy>& group) {
  Runner& r = runner();
  for (const AsyncCopy& c : group) {
    async_copy_completed(c.off, c.bytes);
    if (shared_access(c.off, c.bytes, c.lo, c.hi, c.array, true, false, 1))
      std::memcpy(r.arena.data() + c.off, c.data, c.bytes);
  }
}
}  // namespace detail

// Copies `bytes` (4, 8 or 16) from src to dst asynchronously; only the first src_bytes come from
// src, the rest are zeros (src_bytes = 0 reads nothing: the usual way to pad out of bounds).
template <typename D, typename S>
void cp_async(SharedPtr<D> dst, GlobalPtr<S> src, int bytes, int src_bytes = -1) {
  detail::Runner& r = detail::runner();
  if (src_bytes < 0) src_bytes = bytes;
  if ((bytes != 4 && bytes != 8 && bytes != 16) || src_bytes > bytes) {
    r.error(Checker::memcheck, "cp_async: copy size " + std::to_string(bytes) + " / source size " +
                                   std::to_string(src_bytes) + " (sizes are 4, 8 or 16 bytes)");
    return;
  }
  const auto d = shared_cast<uint8_t>(dst);
  const auto s = global_cast<const uint8_t>(src);
  if (d.window_offset() % bytes != 0 || s.offset_bytes() % bytes != 0) {
    r.error(Checker::memcheck, "cp_async: " + std::to_string(bytes) +
                                   "-byte copy with a misaligned address (shared byte " +
                                   std::to_string(d.window_offset()) + ", global byte offset " +
                                   std::to_string(s.offset_bytes()) + ")",
            "shared", d.window_offset());
    return;
  }
  if (d.window_offset() < d.lo_bound() || d.window_offset() + bytes > d.hi_bound()) {
    r.error(Checker::memcheck, "cp_async: destination " +
                                   detail::fmt_index(d.window_offset() - d.lo_bound(), 1) + " of " +
                                   detail::shared_name(r, d.array_id()) +
                                   " + " + std::to_string(bytes) + " bytes is past its size",
            "shared", d.window_offset());
    return;
  }
  detail::AsyncCopy c{d.window_offset(), d.lo_bound(), d.hi_bound(), d.array_id(), uint32_t(bytes), {}};
  if (src_bytes > 0) {
    const auto* p = s.checked_read_bytes(size_t(src_bytes));
    if (p) std::memcpy(c.data, p, size_t(src_bytes));
  }
  detail::async_copy_issued(c.off, c.bytes, c.lo, c.array);
  r.cur->async_open.push_back(c);
}

inline void cp_async_commit_group() {
  detail::Thread& t = *detail::runner().cur;
  t.async_groups.push_back(std::move(t.async_open));
  t.async_open.clear();
}

// Waits until at most n of this thread's committed groups are still pending.
inline void cp_async_wait_group(int n) {
  detail::Thread& t = *detail::runner().cur;
  while (t.async_groups.size() > size_t(std::max(n, 0))) {
    detail::complete_async(t.async_groups.front());
    t.async_groups.erase(t.async_groups.begin());
  }
}

// cp.async.wait_all: commits the open copies and waits for everything.
inline void cp_async_wait_all() {
  cp_async_commit_group();
  cp_async_wait_group(0);
}

}  // namespace fastconv::simt
