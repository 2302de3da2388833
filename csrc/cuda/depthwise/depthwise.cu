// The depthwise convolution (C/groups == 1, channel multiplier K/groups >= 1): the host side
// (dtype and filter-size dispatch, tiles, grids) of the kernels in depthwise_kernels.cuh, and
// the algorithm's entry. Both layouts: channels_last with threads over channels, NCHW with one
// block per plane tile staged in shared memory (nhwc where not even one output's window fits).
#include "cuda/depthwise/config.h"
#include "cuda/depthwise/depthwise_kernels.cuh"
#include "cuda/kernels.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <type_traits>

namespace fastconv::cuda {

namespace {

using depthwise::NchwConfig;
using depthwise::NhwcConfig;
using depthwise::PlaneTile;
using depthwise::PlaneTiles;

template <typename scalar_t>
gptr<const scalar_t> bias_data(const at::Tensor& bias) {
  return bias.defined() ? global_view<const scalar_t>(bias, "bias") : gptr<const scalar_t>();
}

// The filter size as a template constant: 3, 5 or 7 for square filters, 0 for any other.
template <typename Body>
void filter_switch(const ConvProblem& p, Body&& body) {
  if (p.R == p.S && p.R == 3) return body(std::integral_constant<int, 3>{});
  if (p.R == p.S && p.R == 5) return body(std::integral_constant<int, 5>{});
  if (p.R == p.S && p.R == 7) return body(std::integral_constant<int, 7>{});
  body(std::integral_constant<int, 0>{});
}

// The input window an NCHW tile of rows x cols outputs stages: fprop reads x around its y
// tile, dgrad reads dy around its dx tile (the taps that land in it, at any stride).
PlaneTile window(const ConvProblem& p, Direction d, int rows, int cols) {
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

// The largest NCHW tile (rows halved first, then columns) whose window fits the staged
// buffer; rows == 0 when not even one output's does.
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

unsigned int item_blocks(int64_t items) {
  return static_cast<unsigned int>(std::clamp<int64_t>(items, 1, int64_t(1) << 20));
}

void fprop(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& w, const at::Tensor& bias, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_fprop", [&] {
    filter_switch(p, [&](auto ksize) {
      constexpr int KSize = decltype(ksize)::value;
      if (layouts.output == Layout::nhwc) {
        const int64_t groups_q = ceil_div(p.Q, NhwcConfig::kPixelsPerThread);
        const at::Tensor wk = channels_innermost(w);
        launch_kernel("depthwise::fprop_nhwc_kernel", depthwise::fprop_nhwc_kernel<scalar_t, KSize>,
                      blocks_for(p.N * p.P * groups_q * p.K, NhwcConfig::kThreads),
                      NhwcConfig::kThreads, 0, p, view4<const scalar_t>(x, "x"),
                      view4<const scalar_t>(wk, "w"), bias_data<scalar_t>(bias), view4<scalar_t>(y, "y"));
      } else {
        const PlaneTile tile = plane_tile(p, Direction::fprop, sizeof(scalar_t));
        TORCH_CHECK(tile.rows > 0, "fastconv: depthwise NCHW fprop without a tile (layouts says nhwc)");
        const int64_t items = PlaneTiles(tile, p.K, p.P, p.Q).count(p.N);
        launch_kernel("depthwise::fprop_nchw_kernel", depthwise::fprop_nchw_kernel<scalar_t, KSize>,
                      item_blocks(items), NchwConfig::kThreads, 0, p, tile,
                      view4<const scalar_t>(x, "x"), view4<const scalar_t>(w, "w"),
                      bias_data<scalar_t>(bias), view4<scalar_t>(y, "y"));
      }
    });
  });
}

void dgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& dy,
           const at::Tensor& w, const at::Tensor& bias, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "depthwise_dgrad", [&] {
    filter_switch(p, [&](auto ksize) {
      constexpr int KSize = decltype(ksize)::value;
      if (layouts.output == Layout::nhwc) {
        const at::Tensor wk = channels_innermost(w);
        launch_kernel("depthwise::dgrad_nhwc_kernel", depthwise::dgrad_nhwc_kernel<scalar_t, KSize>,
                      blocks_for(p.N * p.H * p.W * p.C, NhwcConfig::kThreads), NhwcConfig::kThreads,
                      0, p, view4<const scalar_t>(dy, "dy"), view4<const scalar_t>(wk, "w"),
                      bias_data<scalar_t>(bias), view4<scalar_t>(dx, "dx"));
      } else {
        const PlaneTile tile = plane_tile(p, Direction::dgrad, sizeof(scalar_t));
        TORCH_CHECK(tile.rows > 0, "fastconv: depthwise NCHW dgrad without a tile (layouts says nhwc)");
        const int64_t items = PlaneTiles(tile, p.C, p.H, p.W).count(p.N);
        launch_kernel("depthwise::dgrad_nchw_kernel", depthwise::dgrad_nchw_kernel<scalar_t, KSize>,
                      item_blocks(items), NchwConfig::kThreads, 0, p, tile,
                      view4<const scalar_t>(dy, "dy"), view4<const scalar_t>(w, "w"),
                      bias_data<scalar_t>(bias), view4<scalar_t>(dx, "dx"));
      }
    });
  });
}

template <class Cfg, typename scalar_t>
void launch_wgrad(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy, at::Tensor& dw) {
  const int64_t items = ceil_div(p.K, Cfg::kChannels) * p.R * p.S;
  launch_kernel("depthwise::wgrad_kernel", depthwise::wgrad_kernel<scalar_t, Cfg>, item_blocks(items),
                Dim3(Cfg::kChannels, Cfg::kPixels, 1), 0, p, view4<const scalar_t>(x, "x"),
                view4<const scalar_t>(dy, "dy"), view4<scalar_t>(dw, "dw"));
}

void wgrad(const ConvProblem& p, const KernelLayouts& layouts, const at::Tensor& x,
           const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_wgrad", [&] {
    if (layouts.inputs == Layout::nhwc)
      launch_wgrad<depthwise::WgradNhwc, scalar_t>(p, x, dy, dw);
    else
      launch_wgrad<depthwise::WgradNchw, scalar_t>(p, x, dy, dw);
  });
}

bool can_implement(const ConvProblem& p, const ConvRequest&) { return p.is_depthwise(); }

// The request's layout; nhwc for an NCHW request whose smallest tile's window does not fit
// the staged buffer (a huge dilation).
KernelLayouts layouts(const ConvProblem& p, const ConvRequest& r) {
  if (r.layout == Layout::nchw && r.direction != Direction::wgrad &&
      plane_tile(p, r.direction, c10::elementSize(r.dtype)).rows == 0)
    return {Layout::nhwc, Layout::nhwc};
  return {r.layout, r.layout};
}

}  // namespace

ConvAlgorithm depthwise_algorithm() {
  ConvAlgorithm a{"depthwise", &can_implement, &fprop, &dgrad, &wgrad};
  a.layouts = &layouts;
  a.fuses_bias = true;
  a.state = KernelState::emulated;  // passes the emulation suite; not yet run on a GPU
  return a;
}

}  // namespace fastconv::cuda
