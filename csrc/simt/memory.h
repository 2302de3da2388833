// fastconv::simt memory: checked views of global and shared memory, and atomics.
//
// GlobalPtr<T> / SharedPtr<T> are the types a kernel's pointers are written with (as gptr<T> and
// sptr<T>, cuda/common/primitives.h). Under nvcc they are plain T*; here they carry their
// buffer's bounds so that every access is checked (memcheck), recorded per byte (racecheck,
// initcheck; shared only) and traced (metrics). p[i] and *p return a Ref proxy: it converts to T (a read), takes `= value` (a
// write) and the compound assignments (a read then a write). Caveat of any proxy: `auto v = p[i]`
// keeps the proxy, not the value; write `T v = p[i]`. Members of a struct element are reached
// through a copy (`float4 v = p[i]; v.x`), and written back with `p[i] = v`.
#pragma once

#include "simt/runtime.h"

#include <cinttypes>
#include <type_traits>

namespace fastconv::simt {

template <typename T> class GlobalPtr;
template <typename T> class SharedPtr;

// The element proxy returned by GlobalPtr<T>::operator[] and SharedPtr<T>::operator[].
template <typename P>
class Ref {
 public:
  using T = typename P::element_type;
  using V = std::remove_cv_t<T>;
  explicit Ref(P p) : p_(p) {}
  Ref(const Ref&) = default;

  V load() const { return p_.load(); }
  operator V() const { return p_.load(); }
  P operator&() const { return p_; }

  const Ref& operator=(V v) const
    requires(!std::is_const_v<T>)
  {
    p_.store(v);
    return *this;
  }
  const Ref& operator=(const Ref& o) const
    requires(!std::is_const_v<T>)
  {
    p_.store(o.load());
    return *this;
  }
  template <typename Q>
  const Ref& operator=(const Ref<Q>& o) const
    requires(!std::is_const_v<T>)
  {
    p_.store(V(o.load()));
    return *this;
  }

#define FASTCONV_SIMT_COMPOUND(op)                   \
  template <typename U>                              \
  const Ref& operator op##=(const U& u) const        \
    requires(!std::is_const_v<T>)                    \
  {                                                  \
    p_.store(V(p_.load() op u));                     \
    return *this;                                    \
  }
  FASTCONV_SIMT_COMPOUND(+)
  FASTCONV_SIMT_COMPOUND(-)
  FASTCONV_SIMT_COMPOUND(*)
  FASTCONV_SIMT_COMPOUND(/)
  FASTCONV_SIMT_COMPOUND(%)
  FASTCONV_SIMT_COMPOUND(&)
  FASTCONV_SIMT_COMPOUND(|)
  FASTCONV_SIMT_COMPOUND(^)
  FASTCONV_SIMT_COMPOUND(<<)
  FASTCONV_SIMT_COMPOUND(>>)
#undef FASTCONV_SIMT_COMPOUND

  const Ref& operator++() const { return *this += 1; }
  const Ref& operator--() const { return *this -= 1; }
  V operator++(int) const {
    V v = load();
    p_.store(V(v + 1));
    return v;
  }
  V operator--(int) const {
    V v = load();
    p_.store(V(v - 1));
    return v;
  }

 private:
  P p_;
};

namespace detail {

inline std::string fmt_index(int64_t off, size_t elem) {
  if (off >= 0 && off % int64_t(elem) == 0) return "element " + std::to_string(off / int64_t(elem));
  return "byte offset " + std::to_string(off);
}

// Checks and records a global access of n bytes at byte offset off of a buffer of `bytes` bytes.
inline bool global_access(const std::byte* base, int64_t bytes, int64_t off, size_t n, bool write,
                          bool atomic, size_t elem, const char* name) {
  Runner* r = tl_runner;
  if (off < 0 || off + int64_t(n) > bytes) {
    const std::string what =
        std::string(write ? "writes " : "reads ") + "global " + fmt_index(off, elem) +
        " of buffer '" + (name ? name : "?") + "', which has " +
        std::to_string(bytes / int64_t(elem)) + " element(s) of " + std::to_string(elem) +
        " byte(s)" + (base ? "" : " (a null/empty GlobalPtr)");
    if (!r || !r->cur) throw std::out_of_range("fastconv::simt memcheck (host): " + what);
    r->error(Checker::memcheck, what + "; the access was dropped", "global", off);
    return false;
  }
  if (r && r->cur && r->L->opt.metrics && !atomic) {
    const uint64_t key = uint64_t(reinterpret_cast<uintptr_t>(base)) + uint64_t(off / 32) * 32;
    (write ? r->cur->gstore : r->cur->gload).push_back({key, uint32_t(n), uint32_t(off % 32)});
  }
  return true;
}

inline std::string shared_name(const Runner& r, int array) {
  if (array < 0) return "dynamic shared memory";
  const SharedDecl& d = r.decls[size_t(array)];
  return "shared array '" + d.name + "' (" + std::to_string(d.count) + " x " +
         std::to_string(d.elem_size) + " bytes)";
}

// Whether access p happens before thread t's access now: the same thread, a syncthreads between
// them, a warp collective both lanes took part in since, or a chain of releases and acquires
// (mbarriers, named barriers, warpgroup instructions) that t's vector clock has seen.
inline bool ordered_before(const Runner& r, const Rec& p, const Thread& t) {
  if (p.tid == kNone || p.tid == t.tid || p.epoch != r.epoch) return true;
  if (r.vc_active && t.vc[p.tid] >= p.clk) return true;
  if (p.tid / 32 != t.tid / 32) return false;
  const uint32_t j = r.joint[size_t(t.tid / 32) * 1024 + (p.tid % 32) * 32 + t.tid % 32];
  return j > p.wgen;
}

// Checks and records a shared access of n bytes at window offset off, derived from the array
// [lo, hi). Returns false (access dropped) when it falls outside.
inline bool shared_access(int64_t off, size_t n, int64_t lo, int64_t hi, int array, bool write,
                          bool atomic, size_t elem) {
  Runner& r = runner();
  Thread& t = *r.cur;
  if (off < lo || off + int64_t(n) > hi) {
    r.error(Checker::memcheck,
            std::string(write ? "writes " : "reads ") + fmt_index(off - lo, elem) + " of " +
                shared_name(r, array) + ", past its declared size; the access was dropped",
            "shared", off);
    return false;
  }
  const LaunchOptions& o = r.L->opt;
  if (o.initcheck || o.racecheck) {
    const Rec me{uint16_t(t.tid), r.epoch, r.warp_gen[t.tid / 32], t.clock};
    bool init_reported = false, race_reported = false;
    for (int64_t b = off; b < off + int64_t(n); ++b) {
      ByteShadow& s = r.shadow[size_t(b)];
      if (o.racecheck && s.async_tid != kNone && !race_reported) {
        race_reported = true;
        const Thread& issuer = r.threads_[s.async_tid];
        r.error(Checker::racecheck,
                std::string(write ? "writes " : "reads ") + fmt_index(off - lo, elem) + " of " +
                    shared_name(r, array) + " (shared byte " + std::to_string(b) +
                    "), the destination of a cp.async that " +
                    (issuer.tid == t.tid ? std::string("this thread") : thread_str(issuer)) +
                    " issued and has not completed (no cp_async_wait_group since): the copy may "
                    "land before or after this access",
                "shared", b, &issuer);
      }
      if (o.initcheck && !write && !s.init && !init_reported) {
        init_reported = true;
        r.error(Checker::initcheck,
                "reads " + fmt_index(off - lo, elem) + " of " + shared_name(r, array) +
                    " (shared byte " + std::to_string(b) + "), which no thread of the block has "
                    "written",
                "shared", b);
      }
      if (o.racecheck && !atomic && !race_reported) {
        const Rec* hit = nullptr;
        const char* kind = "";
        if (!ordered_before(r, s.w, t)) {
          hit = &s.w;
          kind = write ? "written (write-after-write)" : "written (read-after-write)";
        } else if (write && !ordered_before(r, s.r1, t)) {
          hit = &s.r1;
          kind = "read (write-after-read)";
        } else if (write && !ordered_before(r, s.r2, t)) {
          hit = &s.r2;
          kind = "read (write-after-read)";
        }
        if (hit) {
          race_reported = true;
          const Thread& other = r.threads_[hit->tid];
          r.error(Checker::racecheck,
                  std::string(write ? "writes " : "reads ") + fmt_index(off - lo, elem) + " of " +
                      shared_name(r, array) + " (shared byte " + std::to_string(b) +
                      "), which " + thread_str(other) + " " + kind +
                      " with no syncthreads between them (both after barrier " +
                      std::to_string(r.epoch) + ")",
                  "shared", b, &other);
        }
      }
      if (write && s.async_reads && o.racecheck && !race_reported) {
        race_reported = true;
        r.error(Checker::racecheck,
                "writes " + fmt_index(off - lo, elem) + " of " + shared_name(r, array) + " (shared byte " +
                    std::to_string(b) + ") while a wgmma reading it is in flight (its warpgroup has not "
                    "retired it with wgmma_wait_group): the tensor cores may read either value",
                "shared", b);
      }
      if (write) {
        s.init = true;
        if (!atomic) {
          s.w = me;
          s.r1 = s.r2 = Rec{};
          s.w_generic = true;
          s.w_fences = t.proxy_fences;
        }
      } else if (!atomic) {
        if (s.r1.tid == kNone || s.r1.tid == me.tid || s.r1.epoch != me.epoch)
          s.r1 = me;
        else
          s.r2 = me;
      }
    }
  }
  if (o.metrics) t.shared.push_back({uint64_t(off), uint32_t(n), 0, uint32_t(r.epoch)});
  return true;
}

// racecheck at a cp.async's issue. The copy writes its destination at some moment between the
// issue and the wait_group that completes it, so for ordering it is a write at the issue (a
// read of those bytes by another thread since the last barrier is a write-after-read: the
// stage was refilled while still being read) that lasts until the completion (pending: any
// access in between is reported by shared_access). Bounds were checked by the caller.
inline void async_copy_issued(int64_t off, size_t n, int64_t lo, int array) {
  Runner& r = runner();
  if (!r.L->opt.racecheck) return;
  Thread& t = *r.cur;
  const Rec me{uint16_t(t.tid), r.epoch, r.warp_gen[t.tid / 32], t.clock};
  bool reported = false;
  for (int64_t b = off; b < off + int64_t(n); ++b) {
    ByteShadow& s = r.shadow[size_t(b)];
    if (!reported) {
      const Thread* other = nullptr;
      std::string kind;
      if (s.async_tid != kNone) {
        other = &r.threads_[s.async_tid];
        kind = "is still the destination of a pending cp.async of " + thread_str(*other) +
               " (write-after-write)";
      } else if (!ordered_before(r, s.w, t)) {
        other = &r.threads_[s.w.tid];
        kind = "was written by " + thread_str(*other) + " (write-after-write)";
      } else if (!ordered_before(r, s.r1, t)) {
        other = &r.threads_[s.r1.tid];
        kind = "was read by " + thread_str(*other) + " (write-after-read)";
      } else if (!ordered_before(r, s.r2, t)) {
        other = &r.threads_[s.r2.tid];
        kind = "was read by " + thread_str(*other) + " (write-after-read)";
      }
      if (other) {
        reported = true;
        r.error(Checker::racecheck,
                "cp.async into " + fmt_index(b - lo, 1) + " of " + shared_name(r, array) +
                    " (shared byte " + std::to_string(b) + "), which " + kind +
                    " with no syncthreads between that access and the copy's issue (both after "
                    "barrier " + std::to_string(r.epoch) + ")",
                "shared", b, other);
      }
    }
    s.w = me;
    s.r1 = s.r2 = Rec{};
    s.async_tid = uint16_t(t.tid);
  }
}

// The reads an async-proxy instruction (wgmma) makes of [off, off + n), as thread t's at this
// moment, for racecheck: ordered after the bytes' last writer (and, where that write came
// through the generic proxy, after the writer's fence.proxy.async), and remembered as a read so
// that a later write must be ordered after it. `what` names the instruction in the reports.
inline void async_proxy_read(Runner& r, Thread& t, int64_t off, size_t n, const std::string& what) {
  const LaunchOptions& o = r.L->opt;
  if (!o.racecheck && !o.initcheck) return;
  const Rec me{uint16_t(t.tid), r.epoch, r.warp_gen[t.tid / 32], t.clock};
  bool init_reported = false, race_reported = false, fence_reported = false;
  for (int64_t b = off; b < off + int64_t(n); ++b) {
    ByteShadow& s = r.shadow[size_t(b)];
    if (o.initcheck && !s.init && !init_reported) {
      init_reported = true;
      r.error(Checker::initcheck, what + " reads shared byte " + std::to_string(b) +
                                      ", which no thread of the block has written", "shared", b);
    }
    if (!o.racecheck) continue;
    if (s.async_tid != kNone && !race_reported) {
      race_reported = true;
      r.error(Checker::racecheck, what + " reads shared byte " + std::to_string(b) +
                                      ", the destination of a cp.async of " + thread_str(r.threads_[s.async_tid]) +
                                      " that has not completed", "shared", b, &r.threads_[s.async_tid]);
    } else if (!ordered_before(r, s.w, t) && !race_reported) {
      race_reported = true;
      r.error(Checker::racecheck, what + " reads shared byte " + std::to_string(b) + ", which " +
                                      thread_str(r.threads_[s.w.tid]) + " wrote with no barrier or "
                                      "mbarrier hand-off ordering the write before it (read-after-write)",
              "shared", b, &r.threads_[s.w.tid]);
    }
    if (s.w_generic && s.w.tid != kNone && r.threads_[s.w.tid].proxy_fences <= s.w_fences && !fence_reported) {
      fence_reported = true;
      r.error(Checker::racecheck, what + " reads shared byte " + std::to_string(b) + ", which " +
                                      thread_str(r.threads_[s.w.tid]) + " wrote through the generic proxy "
                                      "with no fence.proxy.async after it: the tensor cores may not see the write",
              "shared", b, &r.threads_[s.w.tid]);
    }
    if (s.r1.tid == kNone || s.r1.tid == me.tid || s.r1.epoch != me.epoch)
      s.r1 = me;
    else
      s.r2 = me;
  }
}

// The copy completes: its bytes are no longer pending (the write itself is then recorded as
// this thread's, at the completion, by shared_access).
inline void async_copy_completed(int64_t off, size_t n) {
  Runner& r = runner();
  if (!r.L->opt.racecheck) return;
  for (int64_t b = off; b < off + int64_t(n); ++b) r.shadow[size_t(b)].async_tid = kNone;
}

}  // namespace detail

// A pointer into a global buffer: the buffer's start and size travel with it.
template <typename T>
class GlobalPtr {
 public:
  using element_type = T;
  using V = std::remove_cv_t<T>;
  static_assert(std::is_trivially_copyable_v<V>, "GlobalPtr elements must be trivially copyable");

  GlobalPtr() = default;
  GlobalPtr(T* data, int64_t count, const char* name = "global")
      : base_(reinterpret_cast<std::byte*>(const_cast<V*>(data))),
        bytes_(data ? count * int64_t(sizeof(T)) : 0), off_(0), name_(name) {}
  template <typename U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  GlobalPtr(const GlobalPtr<U>& o) : base_(o.base_), bytes_(o.bytes_), off_(o.off_), name_(o.name_) {}

  Ref<GlobalPtr> operator[](int64_t i) const { return Ref<GlobalPtr>(*this + i); }
  Ref<GlobalPtr> operator*() const { return Ref<GlobalPtr>(*this); }

  GlobalPtr operator+(int64_t n) const {
    GlobalPtr p = *this;
    p.off_ += n * int64_t(sizeof(T));
    return p;
  }
  GlobalPtr operator-(int64_t n) const { return *this + (-n); }
  GlobalPtr& operator+=(int64_t n) { return *this = *this + n; }
  GlobalPtr& operator-=(int64_t n) { return *this = *this - n; }
  GlobalPtr& operator++() { return *this += 1; }
  GlobalPtr& operator--() { return *this -= 1; }
  int64_t operator-(const GlobalPtr& o) const { return (off_ - o.off_) / int64_t(sizeof(T)); }
  friend bool operator==(const GlobalPtr& a, const GlobalPtr& b) {
    return a.base_ == b.base_ && a.off_ == b.off_;
  }
  explicit operator bool() const { return base_ != nullptr; }

  V load() const {
    V v{};
    if (detail::global_access(base_, bytes_, off_, sizeof(T), false, false, sizeof(T), name_))
      std::memcpy(&v, base_ + off_, sizeof(T));
    return v;
  }
  void store(const V& v) const
    requires(!std::is_const_v<T>)
  {
    if (detail::global_access(base_, bytes_, off_, sizeof(T), true, false, sizeof(T), name_))
      std::memcpy(base_ + off_, &v, sizeof(T));
  }
  // The element's address after a bounds check (for atomics); nullptr when out of bounds.
  V* checked_address(bool write) const {
    if (!detail::global_access(base_, bytes_, off_, sizeof(T), write, true, sizeof(T), name_))
      return nullptr;
    return reinterpret_cast<V*>(base_ + off_);
  }
  // n bytes from here read as one access (checked, traced): cp.async's source. nullptr if outside.
  const std::byte* checked_read_bytes(size_t n) const {
    if (!detail::global_access(base_, bytes_, off_, n, false, false, 1, name_)) return nullptr;
    return base_ + off_;
  }
  int64_t size_bytes() const { return bytes_; }
  int64_t offset_bytes() const { return off_; }

  template <typename U> friend class GlobalPtr;
  template <typename U, typename W> friend GlobalPtr<U> global_cast(GlobalPtr<W>);

 private:
  std::byte* base_ = nullptr;
  int64_t bytes_ = 0;
  int64_t off_ = 0;
  const char* name_ = "global";
};

// Wraps a host buffer of `count` elements for a kernel argument (nvcc: the pointer itself).
template <typename T>
GlobalPtr<T> global(T* data, int64_t count, const char* name = "global") {
  return GlobalPtr<T>(data, count, name);
}

// reinterpret_cast between element types, keeping the buffer's bounds.
template <typename U, typename W>
GlobalPtr<U> global_cast(GlobalPtr<W> p) {
  GlobalPtr<U> q;
  q.base_ = p.base_;
  q.bytes_ = p.bytes_;
  q.off_ = p.off_;
  q.name_ = p.name_;
  return q;
}

// A pointer into the block's shared memory window, bounded by the array it came from.
template <typename T>
class SharedPtr {
 public:
  using element_type = T;
  using V = std::remove_cv_t<T>;
  static_assert(std::is_trivially_copyable_v<V>, "SharedPtr elements must be trivially copyable");

  SharedPtr() = default;
  SharedPtr(int64_t off, int64_t lo, int64_t hi, int array) : off_(off), lo_(lo), hi_(hi), array_(array) {}
  template <typename U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  SharedPtr(const SharedPtr<U>& o) : off_(o.off_), lo_(o.lo_), hi_(o.hi_), array_(o.array_) {}

  Ref<SharedPtr> operator[](int64_t i) const { return Ref<SharedPtr>(*this + i); }
  Ref<SharedPtr> operator*() const { return Ref<SharedPtr>(*this); }

  SharedPtr operator+(int64_t n) const {
    SharedPtr p = *this;
    p.off_ += n * int64_t(sizeof(T));
    return p;
  }
  SharedPtr operator-(int64_t n) const { return *this + (-n); }
  SharedPtr& operator+=(int64_t n) { return *this = *this + n; }
  SharedPtr& operator-=(int64_t n) { return *this = *this - n; }
  SharedPtr& operator++() { return *this += 1; }
  SharedPtr& operator--() { return *this -= 1; }
  int64_t operator-(const SharedPtr& o) const { return (off_ - o.off_) / int64_t(sizeof(T)); }
  friend bool operator==(const SharedPtr& a, const SharedPtr& b) { return a.off_ == b.off_; }

  V load() const {
    V v{};
    if (detail::shared_access(off_, sizeof(T), lo_, hi_, array_, false, false, sizeof(T)))
      std::memcpy(&v, detail::runner().arena.data() + off_, sizeof(T));
    return v;
  }
  void store(const V& v) const
    requires(!std::is_const_v<T>)
  {
    if (detail::shared_access(off_, sizeof(T), lo_, hi_, array_, true, false, sizeof(T)))
      std::memcpy(detail::runner().arena.data() + off_, &v, sizeof(T));
  }
  V* checked_address(bool write) const {
    if (!detail::shared_access(off_, sizeof(T), lo_, hi_, array_, write, true, sizeof(T)))
      return nullptr;
    return reinterpret_cast<V*>(detail::runner().arena.data() + off_);
  }
  // The byte offset in the shared window (what cvta.to.shared would give on the GPU), and the
  // bounds of the array the pointer came from.
  int64_t window_offset() const { return off_; }
  int64_t lo_bound() const { return lo_; }
  int64_t hi_bound() const { return hi_; }
  int array_id() const { return array_; }

  template <typename U> friend class SharedPtr;
  template <typename U, typename W> friend SharedPtr<U> shared_cast(SharedPtr<W>);

 private:
  int64_t off_ = 0, lo_ = 0, hi_ = 0;
  int array_ = -1;
};

template <typename U, typename W>
SharedPtr<U> shared_cast(SharedPtr<W> p) {
  return SharedPtr<U>(p.off_, p.lo_, p.hi_, p.array_);
}

// A static __shared__ array. Every thread of the block calls it in the same order (declarations
// are matched by order); they all receive the same storage.
template <typename T>
SharedPtr<T> shared_array(int64_t count, const char* name = "shared") {
  detail::Runner& r = detail::runner();
  detail::Thread& t = *r.cur;
  const unsigned k = t.n_decl++;
  if (k < r.decls.size()) {
    const detail::SharedDecl& d = r.decls[k];
    if (d.elem_size != sizeof(T) || d.count != count) {
      r.error(Checker::memcheck, "shared declaration #" + std::to_string(k) + " '" + name +
                                     "' does not match '" + d.name +
                                     "' declared by another thread in that position");
      r.abort_self();
    }
    return SharedPtr<T>(d.offset, d.offset, d.offset + int64_t(d.bytes), int(k));
  }
  const int64_t align = std::max<int64_t>(16, int64_t(alignof(T)));
  const int64_t off = (r.arena_used + align - 1) / align * align;
  const int64_t bytes = count * int64_t(sizeof(T));
  const int64_t static_bytes = off + bytes - (r.dynamic_bytes + 15) / 16 * 16;
  if (count < 0 || static_bytes > int64_t(limits::static_shared_bytes) ||
      off + bytes > int64_t(limits::max_shared_bytes_optin)) {
    r.error(Checker::launch, std::string("shared array '") + name + "' of " + std::to_string(bytes) +
                                 " bytes takes static shared memory to " +
                                 std::to_string(static_bytes) +
                                 " bytes (limit 48 KiB) / the window to " +
                                 std::to_string(off + bytes) + " bytes (limit 227 KiB)");
    r.abort_self();
  }
  r.arena_used = off + bytes;
  if (r.arena_used > r.arena_hw) {
    std::memset(r.arena.data() + r.arena_hw, 0xCD, size_t(r.arena_used - r.arena_hw));
    r.arena_hw = r.arena_used;
  }
  r.decls.push_back({off, size_t(bytes), sizeof(T), count, name});
  return SharedPtr<T>(off, off, off + bytes, int(k));
}

// extern __shared__ T buf[]: the launch's dynamic shared memory, viewed as T.
template <typename T>
SharedPtr<T> dynamic_shared() {
  detail::Runner& r = detail::runner();
  return SharedPtr<T>(0, 0, r.dynamic_bytes, -1);
}

// Declaration macros that the nvcc side will define as __shared__ arrays.
#define FASTCONV_SHARED(T, name, count) \
  ::fastconv::simt::SharedPtr<T> name = ::fastconv::simt::shared_array<T>((count), #name)
#define FASTCONV_DYNAMIC_SHARED(T, name) \
  ::fastconv::simt::SharedPtr<T> name = ::fastconv::simt::dynamic_shared<T>()

// ---------------------------------------------------------------------------------------------
// Atomics. Global ones are real atomics (std::atomic_ref) since blocks run on several OS
// threads; shared ones are plain read-modify-writes (a block's fibers share one OS thread and
// never switch inside one) and are exempt from racecheck. Each returns the old value.

namespace detail {
template <typename P, typename F>
auto atomic_rmw(P p, F f) {
  using V = typename P::V;
  V* a = p.checked_address(true);
  if (!a) return V{};
  if constexpr (std::is_same_v<P, GlobalPtr<typename P::element_type>>) {
    if (reinterpret_cast<uintptr_t>(a) % std::atomic_ref<V>::required_alignment != 0) {
      runner().error(Checker::memcheck, "atomic on a misaligned global address (" +
                                            std::to_string(sizeof(V)) + "-byte element)",
                     "global", p.offset_bytes());
      return V{};
    }
    std::atomic_ref<V> ref(*a);
    V old = ref.load(std::memory_order_relaxed);
    while (!ref.compare_exchange_weak(old, f(old), std::memory_order_relaxed)) {
    }
    return old;
  } else {
    V old;
    std::memcpy(&old, a, sizeof(V));
    V nv = f(old);
    std::memcpy(a, &nv, sizeof(V));
    return old;
  }
}
}  // namespace detail

template <typename P>
concept DevicePtr = requires { typename P::element_type; } &&
                    (std::is_same_v<P, GlobalPtr<typename P::element_type>> ||
                     std::is_same_v<P, SharedPtr<typename P::element_type>>);

template <DevicePtr P> auto atomic_add(P p, typename P::V v) {
  return detail::atomic_rmw(p, [v](auto o) { return decltype(o)(o + v); });
}
template <DevicePtr P> auto atomic_sub(P p, typename P::V v) {
  return detail::atomic_rmw(p, [v](auto o) { return decltype(o)(o - v); });
}
template <DevicePtr P> auto atomic_max(P p, typename P::V v) {
  return detail::atomic_rmw(p, [v](auto o) { return o < v ? v : o; });
}
template <DevicePtr P> auto atomic_min(P p, typename P::V v) {
  return detail::atomic_rmw(p, [v](auto o) { return v < o ? v : o; });
}
template <DevicePtr P> auto atomic_exch(P p, typename P::V v) {
  return detail::atomic_rmw(p, [v](auto) { return v; });
}
template <DevicePtr P> auto atomic_and(P p, typename P::V v) {
  return detail::atomic_rmw(p, [v](auto o) { return decltype(o)(o & v); });
}
template <DevicePtr P> auto atomic_or(P p, typename P::V v) {
  return detail::atomic_rmw(p, [v](auto o) { return decltype(o)(o | v); });
}
template <DevicePtr P> auto atomic_xor(P p, typename P::V v) {
  return detail::atomic_rmw(p, [v](auto o) { return decltype(o)(o ^ v); });
}
// atomicCAS: writes v if the element equals compare; returns the old value.
template <DevicePtr P> auto atomic_cas(P p, typename P::V compare, typename P::V v) {
  return detail::atomic_rmw(p, [compare, v](auto o) { return o == compare ? v : o; });
}

}  // namespace fastconv::simt
