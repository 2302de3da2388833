// Frozen filters: tensors an inference model promises not to write behind autograd's back
// (fastconv.fuse marks its copy's filters so). What a kernel derives from a frozen filter on
// every call (Winograd's transformed filters, a channels-last GEMM's transposed filter matrix,
// whether the filter is finite) is kept between calls instead, as oneDNN's prepacked weights
// are under torch.compile(freezing=True).
//
// A kept tensor is used only while the filter's version counter, data pointer, sizes and
// strides are what they were when it was made, so every in-place write that autograd sees
// (w.copy_, an optimiser's step, load_state_dict, fastconv.fuse's own folding) rebuilds it on
// the next call. A write through w.data, which has a version counter of its own, is not seen:
// thaw the filter (fastconv.thaw_filters) before writing it that way.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fastconv {

// Marks w frozen (again: a no-op). ValueError for a tensor that has no version counter (one
// made under torch.inference_mode), whose writes could not be seen.
void freeze_filter(const at::Tensor& w);
// Forgets w (and what was derived from it); a filter never frozen is a no-op.
void thaw_filter(const at::Tensor& w);
void thaw_all_filters();
// [frozen filters still alive, derived tensors kept, their bytes, hits, misses], for tests and
// the benchmark. Filters that have died are dropped first.
std::vector<int64_t> filter_cache_state();

// Set by the operator around one fprop or dgrad kernel: the caller's filter, of which the
// kernel's w is that tensor or a contiguous copy (nullptr: none; the tensor must outlive the
// scope). Nests; per thread.
class FilterScope {
 public:
  explicit FilterScope(const at::Tensor* filter);
  ~FilterScope();
  FilterScope(const FilterScope&) = delete;
  FilterScope& operator=(const FilterScope&) = delete;

 private:
  const at::Tensor* previous_;
};

// The tensor that make() derives from the current scope's filter. When that filter is frozen,
// the one kept under `key` if it is still current, else make()'s, kept. The key names every
// input of make() besides the filter's values (kernel, direction, layout, dtype, groups).
// make() runs outside any lock; it may run threads of its own.
at::Tensor derived_from_filter(const std::string& key, const std::function<at::Tensor()>& make);

// read() (whether t holds only finite values), remembered while t is a current frozen filter.
bool finite_operand(const at::Tensor& t, const std::function<bool()>& read);

}  // namespace fastconv
