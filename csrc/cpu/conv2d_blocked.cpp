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
#include "common/acc_type.h"
#include "cpu/epilogue.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/vector_clones.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>

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

Phases phase_shape(const ConvProblem& p) {
  const int64_t blocks = (p.Q + kLanes - 1) / kLanes;
  const int64_t reach = (p.S - 1) * p.dilation_w / p.stride_w + 1;
  return {p.H + p.pad_top + p.pad_bottom, blocks * kLanes + reach};
}

// Filters packed [K / kFilters][C][R][S][kFilters] in acc_t, zero past K.
template <typename scalar_t, typename acc_t>
std::vector<acc_t> pack_filters(const ConvProblem& p, const at::Tensor& w) {
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  const int64_t blocks = (p.K + kFilters - 1) / kFilters, taps = p.C * p.R * p.S;
  std::vector<acc_t> packed(blocks * taps * kFilters, acc_t(0));
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t t = 0; t < taps; ++t)
      packed[(k / kFilters * taps + t) * kFilters + k % kFilters] = acc_t(wd[k * taps + t]);
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

template <typename scalar_t>
void fprop_impl(const ConvProblem& p, bool channels_last, const at::Tensor& x,
                const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y) {
  using acc_t = acc_type<scalar_t>;
  const EpilogueView<scalar_t> ep(epilogue);
  const Phases ph = phase_shape(p);
  const std::vector<acc_t> filters = pack_filters<scalar_t, acc_t>(p, w);
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
          const scalar_t* src = xd + ((n * p.C + c) * p.H + h) * p.W;
          for (int64_t u = 0; u < ph.cols; ++u) {
            const int64_t wcol = u * p.stride_w + phase - p.pad_left;
            dst[u] = (h >= 0 && h < p.H && wcol >= 0 && wcol < p.W) ? acc_t(src[wcol]) : acc_t(0);
          }
        }
      }
    });
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
