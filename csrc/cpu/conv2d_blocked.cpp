// Direct convolution with register blocks, for layers with few input channels: the 7×7 and
// 11×11 strided stems of ResNet, GoogLeNet and AlexNet, VGG's first layer, GoogLeNet's 5×5.
// There im2col's column matrix has only C*R*S = 27–400 rows for 32–96 filters, and the GEMM
// spends much of its time packing it.
//
// Each image's planes are zero-padded once and split by column into stride_w phases, so
// that the input columns under kLanes consecutive outputs are consecutive in one phase row:
// padded column q * stride_w + s * dilation_w lies in phase (s * dilation_w) % stride_w at
// q + (s * dilation_w) / stride_w. A task computes kFilters filters × kLanes outputs of one
// output row in registers, over every (c, r, s): one vector load per tap, kFilters FMAs.
// fprop only; dgrad and wgrad are im2col's.
//
// For float32 on CPUs with AVX-512F two hand-blocked kernels stand beside that loop (which
// FASTCONV_CPU_HIDE=avx512f gives back). The compiled loop kept 16 accumulators and ran each
// output through the scalar epilogue, and its channels-last stores went one element at a time
// (VGG's first layer at 0.18x oneDNN). Both keep 24 zmm sums through every tap and store with
// the epilogue in registers, each in the order its output layout wants:
//  - NCHW: 8 filters x 48 output columns (3 vectors from a phase row, 8 broadcast taps);
//  - channels-last: 6 output pixels x 64 filters (4 vectors of packed taps, 6 broadcast
//    inputs; 8 x 48, 12 x 32 or 16 x 16 for the last filters), stored one pixel's filters at
//    a time.
#include "common/acc_type.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/vector_clones.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FASTCONV_BLOCKED_AVX512 1
#else
#define FASTCONV_BLOCKED_AVX512 0
#endif

namespace fastconv::cpu {

namespace {

constexpr int64_t kFilters = 8;
constexpr int64_t kLanes = 32;

// The phases of one image would hold more than this many elements: refused (the plane
// copies are per image, and must stay bounded).
constexpr int64_t kMostPhaseElements = int64_t(1) << 22;

struct Phases {
  int64_t rows, cols;  // each phase is rows x cols; cols covers every output block's reads
  int64_t size() const { return rows * cols; }
};

// The AVX-512 kernels' column blocks (48 columns, or 6, 8, 12 or 16 pixels) end within a
// multiple of 48.
constexpr int64_t kWideColumns = 48;
constexpr int64_t kWideFilters = 64;  // the channels-last AVX-512 kernel's filter block

Phases phase_shape(const ConvProblem& p) {
  const auto rounded = [&](int64_t m) { return (p.Q + m - 1) / m * m; };
  const int64_t reach = (p.S - 1) * p.dilation_w / p.stride_w + 1;
  return {p.H + p.pad_top + p.pad_bottom, std::max(rounded(kLanes), rounded(kWideColumns)) + reach};
}

// Filters packed [ceil(K / width)][C][R][S][width] in acc_t, zero past K: width kFilters for
// the loop below and the NCHW AVX-512 kernel, kWideFilters for the channels-last one.
template <typename scalar_t, typename acc_t>
std::vector<acc_t> pack_filters(const ConvProblem& p, const at::Tensor& w, int64_t width) {
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  const int64_t blocks = (p.K + width - 1) / width, taps = p.C * p.R * p.S;
  std::vector<acc_t> packed(blocks * taps * width, acc_t(0));
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t t = 0; t < taps; ++t)
      packed[(k / width * taps + t) * width + k % width] = acc_t(wd[k * taps + t]);
  return packed;
}

// One block: y[k0 + f][op][q0 + l] for f < kFilters, l < kLanes, in registers.
// column_offsets[s]: where tap s's columns start within a channel's phases, from the row start.
template <typename acc_t>
FASTCONV_VECTOR_CLONES void block(const ConvProblem& p, const Phases& ph,
                                  const acc_t* __restrict phases, const acc_t* __restrict filters,
                                  const int64_t* __restrict column_offsets, int64_t op, int64_t q0,
                                  acc_t* __restrict out) {
  acc_t acc[kFilters][kLanes];
  for (int64_t f = 0; f < kFilters; ++f)
    for (int64_t l = 0; l < kLanes; ++l) acc[f][l] = acc_t(0);
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t row = op * p.stride_h + r * p.dilation_h;
      const acc_t* x_row = phases + c * p.stride_w * ph.size() + row * ph.cols + q0;
      const acc_t* wf_row = filters + (c * p.R + r) * p.S * kFilters;
      for (int64_t s = 0; s < p.S; ++s) {
        const acc_t* x = x_row + column_offsets[s];
        const acc_t* wf = wf_row + s * kFilters;
        for (int64_t f = 0; f < kFilters; ++f)
          for (int64_t l = 0; l < kLanes; ++l) acc[f][l] += wf[f] * x[l];
      }
    }
  for (int64_t f = 0; f < kFilters; ++f)
    for (int64_t l = 0; l < kLanes; ++l) out[f * kLanes + l] = acc[f][l];
}

#if FASTCONV_BLOCKED_AVX512

// An output this large (VGG's first layer: 25.7 MB at batch 2) leaves the caches whatever
// the kernel does, so its stores stream, sparing the read of each line before it is written.
// Smaller ones (ResNet's stem, 6.4 MB) stay in the L3 for the layer that reads them next.
constexpr int64_t kStreamBytes = int64_t(16) << 20;

// NCHW: y[k0 + f][op][q0 + l] for f < 8 (the packed block of pack_filters), l < 16 * NV, then
// stored with the epilogue through masks that stop at Q. `image_y` and `image_residual` point
// at image n's output.
template <int NV>
FASTCONV_TARGET_AVX512F void planes_block_avx512(const ConvProblem& p, const Phases& ph,
                                                 const float* __restrict phases,
                                                 const float* __restrict filters,
                                                 const int64_t* __restrict column_offsets, int64_t op,
                                                 int64_t q0, int64_t k0, int64_t filters_here,
                                                 const EpilogueView<float>& ep, float* image_y,
                                                 const float* image_residual, bool stream) {
  static_assert(kFilters == 8, "the kernel holds 8 filters of sums");
  __m512 acc[8][NV];
#pragma GCC unroll 8
  for (int f = 0; f < 8; ++f)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[f][v] = _mm512_setzero_ps();
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t row = op * p.stride_h + r * p.dilation_h;
      const float* x_row = phases + c * p.stride_w * ph.size() + row * ph.cols + q0;
      const float* wf = filters + (c * p.R + r) * p.S * 8;
      for (int64_t s = 0; s < p.S; ++s, wf += 8) {
        const float* x = x_row + column_offsets[s];
        __m512 in[NV];
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v) in[v] = _mm512_loadu_ps(x + 16 * v);
#pragma GCC unroll 8
        for (int f = 0; f < 8; ++f) {
          const __m512 tap = _mm512_set1_ps(wf[f]);
#pragma GCC unroll 3
          for (int v = 0; v < NV; ++v) acc[f][v] = _mm512_fmadd_ps(tap, in[v], acc[f][v]);
        }
      }
    }
#pragma GCC unroll 8
  for (int f = 0; f < 8; ++f) {
    if (f >= filters_here) break;
    const int64_t k = k0 + f, first = (k * p.P + op) * p.Q + q0;
    const __m512 bias = _mm512_set1_ps(ep.bias ? ep.bias[k] : 0.f);
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) {
      const int64_t left = p.Q - q0 - 16 * v;
      if (left <= 0) break;
      const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      const int64_t index = first + 16 * v;
      const __m512 out = epilogue16(ep, acc[f][v], bias, image_residual ? image_residual + index : nullptr, m);
      store16(image_y + index, m, out, stream);
    }
  }
}

// Channels-last: y[op][q0 + i][k0 + j] for i < PX pixels, j < 16 * V filters (`filters`: the
// block's taps packed [C][R][S][kWideFilters]), stored one pixel's filters at a time, masked to
// `filters_here` and to the Q - q0 pixels left.
template <int V, int PX>
FASTCONV_TARGET_AVX512F void pixels_block_avx512(const ConvProblem& p, const Phases& ph,
                                                 const float* __restrict phases,
                                                 const float* __restrict filters,
                                                 const int64_t* __restrict column_offsets, int64_t op,
                                                 int64_t q0, int64_t k0, int64_t filters_here,
                                                 const EpilogueView<float>& ep, float* image_y,
                                                 const float* image_residual, bool stream) {
  __m512 acc[PX][V];
#pragma GCC unroll 16
  for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t row = op * p.stride_h + r * p.dilation_h;
      const float* x_row = phases + c * p.stride_w * ph.size() + row * ph.cols + q0;
      const float* wf = filters + (c * p.R + r) * p.S * kWideFilters;
      for (int64_t s = 0; s < p.S; ++s, wf += kWideFilters) {
        const float* x = x_row + column_offsets[s];
        __m512 taps[V];
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) taps[v] = _mm512_loadu_ps(wf + 16 * v);
#pragma GCC unroll 16
        for (int i = 0; i < PX; ++i) {
          const __m512 in = _mm512_set1_ps(x[i]);
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(in, taps[v], acc[i][v]);
        }
      }
    }
  __mmask16 mask[V];
  __m512 bias[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const int64_t left = filters_here - 16 * v;
    mask[v] = left >= 16 ? __mmask16(0xffff) : left > 0 ? __mmask16((1u << left) - 1) : __mmask16(0);
    bias[v] = ep.bias ? _mm512_maskz_loadu_ps(mask[v], ep.bias + k0 + 16 * v) : _mm512_setzero_ps();
  }
  const int64_t pixels = std::min<int64_t>(PX, p.Q - q0);
#pragma GCC unroll 16
  for (int i = 0; i < PX; ++i) {
    if (i >= pixels) break;
    const int64_t first = (op * p.Q + q0 + i) * p.K + k0;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const int64_t index = first + 16 * v;
      const __m512 out = epilogue16(ep, acc[i][v], bias[v], image_residual ? image_residual + index : nullptr, mask[v]);
      store16(image_y + index, mask[v], out, stream);
    }
  }
}

// One output row of one filter block of image n (the phases are that image's), on the
// calling thread.
void row_avx512(const ConvProblem& p, bool channels_last, const Phases& ph, const float* phases,
                const float* filters, const int64_t* column_offsets, int64_t kb, int64_t op,
                const EpilogueView<float>& ep, float* image_y, const float* image_residual,
                bool stream) {
  const int64_t taps = p.C * p.R * p.S;
  if (!channels_last) {
    const int64_t k0 = kb * kFilters, filters_here = std::min(kFilters, p.K - k0);
    const float* block = filters + kb * taps * kFilters;
    for (int64_t q0 = 0; q0 < p.Q; q0 += kWideColumns) {
      const int64_t vectors = std::min<int64_t>(3, (p.Q - q0 + 15) / 16);
      auto run = [&](auto kernel) {
        kernel(p, ph, phases, block, column_offsets, op, q0, k0, filters_here, ep, image_y, image_residual, stream);
      };
      if (vectors == 3) run(planes_block_avx512<3>);
      else if (vectors == 2) run(planes_block_avx512<2>);
      else run(planes_block_avx512<1>);
    }
    return;
  }
  const int64_t k0 = kb * kWideFilters, filters_here = std::min(kWideFilters, p.K - k0);
  const float* block = filters + kb * taps * kWideFilters;
  auto sweep = [&](auto kernel, int64_t pixels) {
    for (int64_t q0 = 0; q0 < p.Q; q0 += pixels)
      kernel(p, ph, phases, block, column_offsets, op, q0, k0, filters_here, ep, image_y, image_residual, stream);
  };
  switch ((filters_here + 15) / 16) {
    case 4: sweep(pixels_block_avx512<4, 6>, 6); break;
    case 3: sweep(pixels_block_avx512<3, 8>, 8); break;
    case 2: sweep(pixels_block_avx512<2, 12>, 12); break;
    default: sweep(pixels_block_avx512<1, 16>, 16); break;
  }
}
#endif

template <typename scalar_t>
void fprop_impl(const ConvProblem& p, bool channels_last, const at::Tensor& x,
                const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  using acc_t = acc_type<scalar_t>;
  const EpilogueView<scalar_t> ep(epilogue);
  const Phases ph = phase_shape(p);
  // The AVX-512 kernels: float32 (their sums are float, so double keeps the plain loop).
  const bool avx512 = FASTCONV_BLOCKED_AVX512 && std::is_same_v<scalar_t, float> && cpu_has_avx512f();
  const bool wide = avx512 && channels_last;
  const std::vector<acc_t> filters = pack_filters<scalar_t, acc_t>(p, w, wide ? kWideFilters : kFilters);
  const scalar_t* xd = x.data_ptr<scalar_t>();
  scalar_t* yd = y.data_ptr<scalar_t>();
  const int64_t kblocks = (p.K + kFilters - 1) / kFilters, qblocks = (p.Q + kLanes - 1) / kLanes;
  const int64_t taps = p.C * p.R * p.S;
  std::vector<acc_t> phases(p.C * p.stride_w * ph.size());
  std::vector<int64_t> column_offsets(p.S);
  for (int64_t s = 0; s < p.S; ++s)
    column_offsets[s] = s * p.dilation_w % p.stride_w * ph.size() + s * p.dilation_w / p.stride_w;
  for (int64_t n = 0; n < p.N; ++n) {
    // Padded planes, split by column phase; zero wherever no input lies.
    cpu::parallel_for(0, p.C * ph.rows, 16, [&](int64_t b, int64_t e) {
      for (int64_t cr = b; cr < e; ++cr) {
        const int64_t c = cr / ph.rows, hp = cr % ph.rows, h = hp - p.pad_top;
        for (int64_t phase = 0; phase < p.stride_w; ++phase) {
          acc_t* dst = phases.data() + ((c * p.stride_w + phase) * ph.rows + hp) * ph.cols;
          // Phase column u reads input column u * stride_w + phase - pad_left: the columns
          // [lo, hi) lie inside the row, the rest are padding (a branch per element here cost
          // as much as MobileNet's whole stem).
          const int64_t first = phase - p.pad_left;
          const int64_t lo = first >= 0 ? 0 : (-first + p.stride_w - 1) / p.stride_w;
          const int64_t hi = (h < 0 || h >= p.H || p.W - first <= 0)
                                 ? lo
                                 : std::max(lo, std::min(ph.cols, (p.W - first + p.stride_w - 1) / p.stride_w));
          std::fill(dst, dst + std::min(lo, ph.cols), acc_t(0));
          const scalar_t* src = xd + ((n * p.C + c) * p.H + h) * p.W + first;
          for (int64_t u = lo; u < hi; ++u) dst[u] = acc_t(src[u * p.stride_w]);
          std::fill(dst + std::min(hi, ph.cols), dst + ph.cols, acc_t(0));
        }
      }
    });
#if FASTCONV_BLOCKED_AVX512
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (avx512) {
        const int64_t blocks = wide ? (p.K + kWideFilters - 1) / kWideFilters : kblocks;
        float* image_y = yd + n * p.K * p.P * p.Q;
        const float* image_residual = ep.residual ? ep.residual + n * p.K * p.P * p.Q : nullptr;
        const bool stream = y.numel() * int64_t(sizeof(float)) >= kStreamBytes;
        cpu::parallel_for(0, blocks * p.P, 1, [&](int64_t b, int64_t e) {
          for (int64_t task = b; task < e; ++task)
            row_avx512(p, channels_last, ph, phases.data(), filters.data(), column_offsets.data(),
                       task / p.P, task % p.P, ep, image_y, image_residual, stream);
          // Streamed lines must be visible to whoever reads y after the region ends.
          if (stream) _mm_sfence();
        });
        continue;
      }
    }
#endif
    cpu::parallel_for(0, kblocks * p.P, 1, [&](int64_t b, int64_t e) {
      acc_t out[kFilters * kLanes];
      for (int64_t task = b; task < e; ++task) {
        const int64_t kb = task / p.P, op = task % p.P;
        for (int64_t qb = 0; qb < qblocks; ++qb) {
          const int64_t q0 = qb * kLanes;
          block<acc_t>(p, ph, phases.data(), filters.data() + kb * taps * kFilters,
                       column_offsets.data(), op, q0, out);
          const int64_t cols = std::min(kLanes, p.Q - q0);
          const int64_t filters_here = std::min(kFilters, p.K - kb * kFilters);
          const int64_t k0 = kb * kFilters;
          if (channels_last) {
            const int64_t first = ((n * p.P + op) * p.Q + q0) * p.K + k0;
            for (int64_t l = 0; l < cols; ++l)
              for (int64_t f = 0; f < filters_here; ++f)
                yd[first + l * p.K + f] = scalar_t(ep(out[f * kLanes + l], k0 + f, first + l * p.K + f));
          } else {
            for (int64_t f = 0; f < filters_here; ++f) {
              const int64_t first = ((n * p.K + k0 + f) * p.P + op) * p.Q + q0;
              for (int64_t l = 0; l < cols; ++l)
                yd[first + l] = scalar_t(ep(out[f * kLanes + l], k0 + f, first + l));
            }
          }
        }
      }
    });
  }
}

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "blocked_fprop", [&] {
    fprop_impl<scalar_t>(p, layouts.output == Layout::nhwc, x, w, epilogue, y);
  });
}

bool can_implement(const ConvProblem& p, const ConvRequest&) {
  return p.groups == 1 && p.C * p.stride_w * phase_shape(p).size() <= kMostPhaseElements;
}

// Few input channels, float32 and float64: where im2col's columns are mostly copies. With
// hundreds of channels im2col's GEMM wins, and in bfloat16 its bf16 GEMM wins on the stems
// (bench/NOTES.md, "Speed rules and their measurements").
bool preferred(const ConvProblem& p, const ConvRequest& r) {
  return (r.dtype == at::kFloat || r.dtype == at::kDouble) && p.C <= 16 && p.K >= kFilters;
}

// The planes are read NCHW; a channels-last result is written in place, 8 filters per pixel
// (copying a whole NCHW result over afterwards cost more than the convolution on VGG's first
// layer).
KernelLayouts layouts(const ConvProblem&, const ConvRequest& r) { return {Layout::nchw, r.layout}; }

}  // namespace

// fprop only: the backward directions go down the list to the algorithms that have them.
ConvAlgorithm direct_blocked_algorithm() {
  ConvAlgorithm a{"direct_blocked", &can_implement, &fprop, nullptr, nullptr, &layouts};
  a.preferred = &preferred;
  a.fused_stages = &fuses_every_stage;  // fprop is its only direction
  return a;
}

}  // namespace fastconv::cpu
