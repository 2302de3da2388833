#include "common/filter_cache.h"

#include "common/checks.h"

#include <c10/core/TensorImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace fastconv {

namespace {

using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

// What a kept tensor was made from. The weak reference keeps the TensorImpl's memory from
// being reused while the entry exists, so a live entry's address names that one tensor.
struct Snapshot {
  uint32_t version = 0;
  const void* data = nullptr;
  std::vector<int64_t> sizes, strides;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  c10::Device device = c10::Device(c10::kCPU);

  static Snapshot of(const at::Tensor& t) {
    return {t.unsafeGetTensorImpl()->version_counter().current_version(), t.const_data_ptr(),
            t.sizes().vec(), t.strides().vec(), t.scalar_type(), t.device()};
  }
  // Whether t is still what this was taken of (no copy of its sizes: this runs on every call).
  bool matches(const at::Tensor& t) const {
    return version == t.unsafeGetTensorImpl()->version_counter().current_version() &&
           data == t.const_data_ptr() && t.sizes() == c10::IntArrayRef(sizes) &&
           t.strides() == c10::IntArrayRef(strides) && dtype == t.scalar_type() &&
           device == t.device();
  }
  bool operator==(const Snapshot& o) const {
    return version == o.version && data == o.data && sizes == o.sizes && strides == o.strides &&
           dtype == o.dtype && device == o.device;
  }
};

struct Entry {
  WeakImpl filter;
  Snapshot made_from;  // of every tensor in `derived` and of `finite`
  std::map<std::string, at::Tensor> derived;
  int finite = -1;  // unknown
};

struct Cache {
  std::mutex mutex;
  std::unordered_map<const c10::TensorImpl*, Entry> entries;
  int64_t hits = 0, misses = 0;
  // Whether any filter was ever frozen: until then every lookup answers "not frozen" without
  // taking the lock, so models that never freeze pay nothing on each call.
  std::atomic<bool> used{false};

  void drop_dead() {
    for (auto it = entries.begin(); it != entries.end();)
      it = it->second.filter.expired() ? entries.erase(it) : std::next(it);
  }
  // The entry of a live frozen t, emptied if t changed since; nullptr when t is not frozen.
  Entry* current(const at::Tensor& t) {
    auto it = entries.find(t.unsafeGetTensorImpl());
    if (it == entries.end()) return nullptr;
    Entry& e = it->second;
    if (!e.made_from.matches(t)) {
      e.derived.clear();
      e.finite = -1;
      e.made_from = Snapshot::of(t);
    }
    return &e;
  }
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: kernels may run during interpreter exit
  return *c;
}

thread_local const at::Tensor* current_filter = nullptr;

}  // namespace

void freeze_filter(const at::Tensor& w) {
  FASTCONV_CHECK_VALUE(w.defined(), "fastconv.freeze_filters: the filter is undefined");
  FASTCONV_CHECK_VALUE(!w.is_inference(),
                       "fastconv.freeze_filters: the filter is an inference tensor (made under "
                       "torch.inference_mode), which keeps no version counter, so a write to it "
                       "could not be seen; make it outside inference mode");
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.used.store(true, std::memory_order_relaxed);
  c.drop_dead();
  // Already there (and alive, dead ones being dropped): frozen already.
  c.entries.emplace(w.unsafeGetTensorImpl(),
                    Entry{WeakImpl(w.getIntrusivePtr()), Snapshot::of(w), {}, -1});
}

void thaw_filter(const at::Tensor& w) {
  if (!w.defined()) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.entries.erase(w.unsafeGetTensorImpl());
  c.drop_dead();
}

void thaw_all_filters() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.entries.clear();
}

std::vector<int64_t> filter_cache_state() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.drop_dead();
  int64_t derived = 0, bytes = 0;
  for (const auto& kv : c.entries)
    for (const auto& d : kv.second.derived) {
      ++derived;
      bytes += d.second.nbytes();
    }
  return {int64_t(c.entries.size()), derived, bytes, c.hits, c.misses};
}

FilterScope::FilterScope(const at::Tensor* filter) : previous_(current_filter) {
  current_filter = filter;
}
FilterScope::~FilterScope() { current_filter = previous_; }

at::Tensor derived_from_filter(const std::string& key, const std::function<at::Tensor()>& make) {
  const at::Tensor* filter = current_filter;
  Cache& c = cache();
  if (filter == nullptr || !filter->defined() || !c.used.load(std::memory_order_relaxed)) return make();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    c.drop_dead();
    Entry* e = c.current(*filter);
    if (e == nullptr) return make();
    auto it = e->derived.find(key);
    if (it != e->derived.end()) {
      ++c.hits;
      return it->second;
    }
    ++c.misses;
  }
  const Snapshot before = Snapshot::of(*filter);
  at::Tensor made = make();
  std::lock_guard<std::mutex> lock(c.mutex);
  Entry* e = c.current(*filter);
  // Kept only if the filter was not written (nor thawed) while make() read it.
  if (e != nullptr && e->made_from == before) e->derived[key] = made;
  return made;
}

bool finite_operand(const at::Tensor& t, const std::function<bool()>& read) {
  Cache& c = cache();
  if (!c.used.load(std::memory_order_relaxed)) return read();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    Entry* e = c.current(t);
    if (e == nullptr) return read();
    if (e->finite >= 0) return e->finite == 1;
  }
  const Snapshot before = Snapshot::of(t);
  const bool finite = read();
  std::lock_guard<std::mutex> lock(c.mutex);
  Entry* e = c.current(t);
  if (e != nullptr && e->made_from == before) e->finite = finite ? 1 : 0;
  return finite;
}

}  // namespace fastconv
