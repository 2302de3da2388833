#include "common/conv_problem.h"

#include "common/checks.h"

#include <c10/util/Exception.h>

#include <sstream>

namespace fastconv {

std::string ConvProblem::str() const {
  std::ostringstream s;
  s << "N=" << N << " C=" << C << " H=" << H << " W=" << W << " K=" << K << " R=" << R
    << " S=" << S << " P=" << P << " Q=" << Q << " pad=(" << pad_top << "," << pad_bottom << ","
    << pad_left << "," << pad_right << ") stride=(" << stride_h << "," << stride_w
    << ") dilation=(" << dilation_h << "," << dilation_w << ") groups=" << groups;
  return s.str();
}

ConvParams make_conv_params(const char* op, c10::IntArrayRef stride, c10::IntArrayRef padding,
                            c10::IntArrayRef dilation, int64_t groups) {
  FASTCONV_CHECK_VALUE(stride.size() == 2, op, ": stride must have 2 values (h, w), got ", stride);
  FASTCONV_CHECK_VALUE(padding.size() == 4, op,
                       ": padding must have 4 values (top, bottom, left, right), got ", padding);
  FASTCONV_CHECK_VALUE(dilation.size() == 2, op, ": dilation must have 2 values (h, w), got ",
                       dilation);
  for (auto v : stride) FASTCONV_CHECK_VALUE(v > 0, op, ": stride must be positive, got ", stride);
  for (auto v : padding)
    FASTCONV_CHECK_VALUE(v >= 0, op, ": padding must be non-negative, got ", padding);
  for (auto v : dilation)
    FASTCONV_CHECK_VALUE(v > 0, op, ": dilation must be positive, got ", dilation);
  FASTCONV_CHECK_VALUE(groups > 0, op, ": groups must be positive, got ", groups);
  return ConvParams{{stride[0], stride[1]},
                    {padding[0], padding[1], padding[2], padding[3]},
                    {dilation[0], dilation[1]},
                    groups};
}

namespace {

ConvProblem base_problem(const ConvParams& p) {
  ConvProblem problem{};
  problem.pad_top = p.padding[0];
  problem.pad_bottom = p.padding[1];
  problem.pad_left = p.padding[2];
  problem.pad_right = p.padding[3];
  problem.stride_h = p.stride[0];
  problem.stride_w = p.stride[1];
  problem.dilation_h = p.dilation[0];
  problem.dilation_w = p.dilation[1];
  problem.groups = p.groups;
  return problem;
}

}  // namespace

ConvProblem make_conv_problem(const char* op, c10::IntArrayRef x, c10::IntArrayRef w,
                              const ConvParams& params) {
  FASTCONV_CHECK_VALUE(x.size() == 4 && w.size() == 4, op,
                       ": input and weight must be 4-D, got shapes ", x, " and ", w);
  ConvProblem p = base_problem(params);
  p.N = x[0], p.C = x[1], p.H = x[2], p.W = x[3];
  p.K = w[0], p.R = w[2], p.S = w[3];
  const int64_t g = params.groups;
  FASTCONV_CHECK_VALUE(p.K > 0, op, ": weight must have at least one output channel, got shape ",
                       w);
  FASTCONV_CHECK_VALUE(p.R > 0 && p.S > 0, op, ": weight's kernel size must be positive, got ", w);
  FASTCONV_CHECK_VALUE(p.C % g == 0, op, ": input channels (", p.C,
                       ") must be divisible by groups (", g, ")");
  FASTCONV_CHECK_VALUE(p.K % g == 0, op, ": weight's output channels (", p.K,
                       ") must be divisible by groups (", g, ")");
  FASTCONV_CHECK_VALUE(w[1] * g == p.C, op, ": weight of shape ", w, " with groups=", g,
                       " expects input with ", w[1] * g, " channels, but input has ", p.C,
                       " channels (shape ", x, ")");
  const int64_t padded_h = p.H + p.pad_top + p.pad_bottom;
  const int64_t padded_w = p.W + p.pad_left + p.pad_right;
  const int64_t extent_h = p.dilation_h * (p.R - 1) + 1;
  const int64_t extent_w = p.dilation_w * (p.S - 1) + 1;
  FASTCONV_CHECK_VALUE(extent_h <= padded_h && extent_w <= padded_w, op,
                       ": the dilated kernel (", extent_h, " x ", extent_w,
                       ") is larger than the padded input (", padded_h, " x ", padded_w, ")");
  p.P = (padded_h - extent_h) / p.stride_h + 1;
  p.Q = (padded_w - extent_w) / p.stride_w + 1;
  return p;
}

ConvProblem make_transposed_problem(const char* op, c10::IntArrayRef x, c10::IntArrayRef w,
                                    const ConvParams& params, c10::IntArrayRef output_padding) {
  FASTCONV_CHECK_VALUE(x.size() == 4 && w.size() == 4, op,
                       ": input and weight must be 4-D, got shapes ", x, " and ", w);
  FASTCONV_CHECK_VALUE(output_padding.size() == 2, op,
                       ": output_padding must have 2 values (h, w), got ", output_padding);
  ConvProblem p = base_problem(params);
  const int64_t g = params.groups;
  // The transposed input plays the convolution's output y: its channels are the filter's K.
  p.N = x[0], p.K = x[1], p.P = x[2], p.Q = x[3];
  p.R = w[2], p.S = w[3];
  FASTCONV_CHECK_VALUE(p.K > 0, op, ": input must have at least one channel, got shape ", x);
  FASTCONV_CHECK_VALUE(w[0] == p.K, op, ": weight of shape ", w, " expects input with ", w[0],
                       " channels, but input has ", p.K, " channels (shape ", x, ")");
  FASTCONV_CHECK_VALUE(w[1] > 0, op, ": weight must have at least one output channel, got shape ",
                       w);
  FASTCONV_CHECK_VALUE(p.R > 0 && p.S > 0, op, ": weight's kernel size must be positive, got ", w);
  FASTCONV_CHECK_VALUE(p.K % g == 0, op, ": input channels (", p.K,
                       ") must be divisible by groups (", g, ")");
  p.C = w[1] * g;
  const int64_t op_h = output_padding[0], op_w = output_padding[1];
  FASTCONV_CHECK_VALUE(op_h >= 0 && op_w >= 0, op, ": output_padding must be non-negative, got ",
                       output_padding);
  FASTCONV_CHECK_VALUE(op_h < std::max(p.stride_h, p.dilation_h) &&
                           op_w < std::max(p.stride_w, p.dilation_w),
                       op, ": output_padding ", output_padding,
                       " must be smaller than either stride or dilation, got stride (", p.stride_h,
                       ", ", p.stride_w, ") and dilation (", p.dilation_h, ", ", p.dilation_w, ")");
  p.H = (p.P - 1) * p.stride_h - p.pad_top - p.pad_bottom + p.dilation_h * (p.R - 1) + op_h + 1;
  p.W = (p.Q - 1) * p.stride_w - p.pad_left - p.pad_right + p.dilation_w * (p.S - 1) + op_w + 1;
  FASTCONV_CHECK_VALUE(p.H > 0 && p.W > 0, op, ": the computed output size (", p.H, " x ", p.W,
                       ") is not positive: padding is too large for input ", x, " and weight ", w);
  return p;
}

}  // namespace fastconv
