// The CPU kernels' side of the fused epilogue (common/algorithms.h, Epilogue): raw pointers
// to the stages a kernel was given, and the two ways the kernels apply them. A kernel that
// holds its sums in the accumulation type calls ep(sum, channel, index) where it stores the
// output element `index` (its offset in the output, which is the residual's too). A kernel
// whose GEMM wrote float sums straight into the output runs apply_* over that block while it
// is still in cache; those loops are instantiated per activation, so that they vectorise.
#pragma once

#include "common/acc_type.h"
#include "common/activation.h"
#include "common/algorithms.h"
#include "cpu/parallel.h"
#include "cpu/vector_clones.h"


#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fastconv::cpu {

template <typename scalar_t>
struct EpilogueView {
  using acc_t = acc_type<scalar_t>;
  const scalar_t* bias = nullptr;      // [channels]
  const scalar_t* residual = nullptr;  // the output's elements, in the kernel's output layout
  Activation activation = Activation::none;
  acc_t slope = 0;

  EpilogueView() = default;
  explicit EpilogueView(const Epilogue& e)
      : bias(e.bias.defined() ? e.bias.const_data_ptr<scalar_t>() : nullptr),
        residual(e.residual.defined() ? e.residual.const_data_ptr<scalar_t>() : nullptr),
        activation(e.activation),
        slope(acc_t(e.negative_slope)) {}

  bool empty() const { return !bias && !residual && activation == Activation::none; }

  // The output element `index` of channel `channel` from its sum.
  acc_t operator()(acc_t sum, int64_t channel, int64_t index) const {
    if (bias) sum += acc_t(bias[channel]);
    if (residual) sum += acc_t(residual[index]);
    return activate(activation, sum, slope);
  }
};

// Calls f(std::integral_constant<Activation, a>{}) for the run-time activation a.
template <typename F>
void with_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::none: f(std::integral_constant<Activation, Activation::none>{}); break;
    case Activation::relu: f(std::integral_constant<Activation, Activation::relu>{}); break;
    case Activation::relu6: f(std::integral_constant<Activation, Activation::relu6>{}); break;
    case Activation::silu: f(std::integral_constant<Activation, Activation::silu>{}); break;
    case Activation::hardswish: f(std::integral_constant<Activation, Activation::hardswish>{}); break;
    case Activation::leaky_relu: f(std::integral_constant<Activation, Activation::leaky_relu>{}); break;
  }
}

// The in-place passes, for outputs held in the accumulation type (float, double).

// channels_last block: pixels [m0, m0 + count), channels [k0, k0 + kn), y the whole output
// ([pixels, K] memory). On every thread: call it outside parallel regions.
template <typename T>
void apply_channels_last(const EpilogueView<T>& ep, T* y, int64_t K, int64_t m0, int64_t count,
                         int64_t k0, int64_t kn) {
  static_assert(std::is_same_v<T, acc_type<T>>, "in-place epilogues need accumulator outputs");
  if (ep.empty()) return;
  with_activation(ep.activation, [&](auto act) {
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(kn, 1));
    cpu::parallel_for(m0, m0 + count, grain, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) {
        T* row = y + m * K + k0;
        const T* res = ep.residual ? ep.residual + m * K + k0 : nullptr;
        const T* b = ep.bias ? ep.bias + k0 : nullptr;
        for (int64_t j = 0; j < kn; ++j) {
          T v = row[j];
          if (b) v += b[j];
          if (res) v += res[j];
          row[j] = activate(decltype(act)::value, v, ep.slope);
        }
      }
    });
  });
}

// NCHW run: elements [offset, offset + len) of output plane (n, k); y the whole output. On
// the calling thread.
template <typename T>
void apply_plane_run(const EpilogueView<T>& ep, T* y, int64_t plane_size, int64_t K, int64_t n,
                     int64_t k, int64_t offset, int64_t len) {
  static_assert(std::is_same_v<T, acc_type<T>>, "in-place epilogues need accumulator outputs");
  if (ep.empty()) return;
  const int64_t first = (n * K + k) * plane_size + offset;
  T* run = y + first;
  const T* res = ep.residual ? ep.residual + first : nullptr;
  const T b = ep.bias ? ep.bias[k] : T(0);
  with_activation(ep.activation, [&](auto act) {
    for (int64_t i = 0; i < len; ++i) {
      T v = run[i] + b;
      if (res) v += res[i];
      run[i] = activate(decltype(act)::value, v, ep.slope);
    }
  });
}

#if defined(__GNUC__) && defined(__x86_64__)
// The activation of 16 float lanes: relu and relu6 in registers with the operands ordered so
// that a NaN passes (VMAXPS returns its second source when either is NaN), the others lane by
// lane through the scalar formula every kernel shares.
FASTCONV_TARGET_AVX512F inline __m512 activate16(Activation a, float slope, __m512 v) {
  switch (a) {
    case Activation::none: return v;
    case Activation::relu: return _mm512_max_ps(_mm512_setzero_ps(), v);
    case Activation::relu6:
      return _mm512_min_ps(_mm512_set1_ps(6.f), _mm512_max_ps(_mm512_setzero_ps(), v));
    default: {
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, v);
      for (float& l : lanes) l = activate(a, l, slope);
      return _mm512_load_ps(lanes);
    }
  }
}

// The epilogue of 16 float sums in a zmm register, in the order EpilogueView applies it: the
// bias (`bias`: the 16 lanes' biases, read only when ep has one), the residual (16 lanes from
// `residual`, masked by m, when ep has one), then the activation.
FASTCONV_TARGET_AVX512F inline __m512 epilogue16(const EpilogueView<float>& ep, __m512 sum,
                                                 __m512 bias, const float* residual,
                                                 __mmask16 m) {
  if (ep.bias) sum = _mm512_add_ps(sum, bias);
  if (ep.residual) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(m, residual));
  return activate16(ep.activation, ep.slope, sum);
}

// Stores 16 lanes (masked by m), or streams them past the caches where `stream` asks and the
// store is a whole aligned line: for outputs far larger than the caches, whose lines would
// otherwise be read before they are written.
FASTCONV_TARGET_AVX512F inline void store16(float* dst, __mmask16 m, __m512 v, bool stream) {
  if (stream && m == __mmask16(0xffff) && (reinterpret_cast<uintptr_t>(dst) & 63) == 0)
    _mm512_stream_ps(dst, v);
  else
    _mm512_mask_storeu_ps(dst, m, v);
}
#endif

}  // namespace fastconv::cpu
