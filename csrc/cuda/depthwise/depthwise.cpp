// The depthwise convolution (C/groups == 1, channel multiplier K/groups >= 1): the algorithm's
// entry and its host-side planning (the NCHW tiles). Both layouts: channels_last with threads
// over channels, NCHW with one block per plane tile staged in shared memory (nhwc where not
// even one output's window fits). The launchers are depthwise_{fprop,dgrad,wgrad}.cu, the
// kernels depthwise_kernels.cuh.
#include "cuda/depthwise/depthwise.h"
#include "cuda/kernels.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace fastconv::cuda {

namespace depthwise {

// The input window an NCHW tile of rows x cols outputs stages: fprop reads x around its y
// tile, dgrad reads dy around its dx tile (the taps that land in it, at any stride).
static PlaneTile window(const ConvProblem& p, Direction d, int rows, int cols) {
  const int64_t span_h = (p.R - 1) * p.dilation_h, span_w = (p.S - 1) * p.dilation_w;
  auto clamp = [](int64_t v) { return int(std::min<int64_t>(v, int64_t(1) << 30)); };
  PlaneTile t{rows, cols, 0, 0, 0};
  int64_t step = 1;  // staged columns between neighbouring lanes' first taps
  if (d == Direction::fprop) {
    t.in_rows = clamp((rows - 1) * p.stride_h + span_h + 1);
    t.in_cols = clamp((cols - 1) * p.stride_w + span_w + 1);
    step = p.stride_w;
  } else {
    t.in_rows = clamp((rows - 1 + span_h) / p.stride_h + 2);
    t.in_cols = clamp((cols - 1 + span_w) / p.stride_w + 2);
  }
  t.in_stride = t.in_cols;
  if (cols % 32 != 0 && t.in_cols < (1 << 29)) {
    const int64_t want = (int64_t(cols) * step) % 32;
    t.in_stride = clamp(t.in_cols + ((want - t.in_cols) % 32 + 32) % 32);
  }
  return t;
}

PlaneTile plane_tile(const ConvProblem& p, Direction d, int64_t element_size) {
  const int64_t capacity = NchwConfig::kSharedBytes / element_size;
  const int64_t out_rows = d == Direction::fprop ? p.P : p.H;
  const int64_t out_cols = d == Direction::fprop ? p.Q : p.W;
  const int64_t span_h = (p.R - 1) * p.dilation_h, span_w = (p.S - 1) * p.dilation_w;
  if (span_h >= capacity || span_w >= capacity) return {0, 0, 0, 0, 0};  // no int overflow below
  int rows = int(std::min<int64_t>(NchwConfig::kTileRows, out_rows));
  int cols = int(std::min<int64_t>(NchwConfig::kTileCols, out_cols));
  while (true) {
    const PlaneTile t = window(p, d, rows, cols);
    if (int64_t(t.in_rows) * t.in_stride <= capacity) return t;
    if (rows > 1) {
      rows = (rows + 1) / 2;
    } else if (cols > 1) {
      cols = (cols + 1) / 2;
    } else {
      return {0, 0, 0, 0, 0};
    }
  }
}

// For the nhwc kernels, whose lanes take consecutive channels k: the filter [K, 1, R, S] with
// k innermost in memory ([R][S][K], a copy of K*R*S elements), so that a warp's reads of one
// tap are one coalesced row; seen through strides as [K, 1, R, S].
at::Tensor channels_innermost(const at::Tensor& w) {
  return w.reshape({w.size(0), w.size(2), w.size(3)}).permute({1, 2, 0}).contiguous()
      .permute({2, 0, 1}).unsqueeze(1);
}

}  // namespace depthwise

namespace {

bool can_implement(const ConvProblem& p, const ConvRequest&) { return p.is_depthwise(); }

// The request's layout; nhwc for an NCHW request whose smallest tile's window does not fit
// the staged buffer (a huge dilation).
KernelLayouts layouts(const ConvProblem& p, const ConvRequest& r) {
  if (r.layout == Layout::nchw && r.direction != Direction::wgrad &&
      depthwise::plane_tile(p, r.direction, c10::elementSize(r.dtype)).rows == 0)
    return {Layout::nhwc, Layout::nhwc};
  return {r.layout, r.layout};
}

}  // namespace

ConvAlgorithm depthwise_algorithm() {
  ConvAlgorithm a{"depthwise", &can_implement, &depthwise::fprop, &depthwise::dgrad, &depthwise::wgrad};
  a.layouts = &layouts;
  a.fused_stages = &fprop_fuses_every_stage_dgrad_the_bias;
  a.state = KernelState::emulated;  // passes the emulation suite; not yet run on a GPU
  return a;
}

}  // namespace fastconv::cuda
