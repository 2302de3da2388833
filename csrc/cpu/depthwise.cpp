// Depthwise convolution on the CPU (groups == C, so each filter sees one input channel; K =
// C * multiplier). Works on contiguous NCHW planes: for each output row and tap, the range of
// output columns whose input column lies inside the image is computed once, so the inner loop
// has no bounds test and, at stride 1, runs over contiguous memory.
#include "cpu/kernels.h"
#include "cpu/strided.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace fastconv::cpu {

namespace {

// Output columns q in [lo, hi) read input column q * stride + offset inside [0, W).
struct ColumnRange {
  int64_t lo, hi;
};

ColumnRange valid_columns(int64_t offset, int64_t stride, int64_t W, int64_t Q) {
  const int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t last = W - 1 - offset;  // q * stride <= last
  const int64_t hi = last < 0 ? 0 : std::min(Q, last / stride + 1);
  return {lo, std::max(lo, hi)};
}

// The planes of a tensor as contiguous NCHW memory, and where to write results back.
at::Tensor contiguous_output(at::Tensor& out) {
  return out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
}

void finish_output(at::Tensor& out, const at::Tensor& buffer) {
  if (!buffer.is_same(out)) out.copy_(buffer);
}

template <typename scalar_t>
void fprop_impl(const ConvProblem& p, const at::Tensor& x_in, const at::Tensor& w_in,
                at::Tensor& y_out) {
  using acc_t = acc_type<scalar_t>;
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  at::Tensor y = contiguous_output(y_out);
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  scalar_t* yd = y.data_ptr<scalar_t>();
  const int64_t multiplier = p.K / p.C;
  at::parallel_for(0, p.N * p.K, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(p.Q);
    for (int64_t nk = begin; nk < end; ++nk) {
      const int64_t n = nk / p.K, k = nk % p.K, c = k / multiplier;
      const scalar_t* plane = xd + (n * p.C + c) * p.H * p.W;
      const scalar_t* filter = wd + k * p.R * p.S;
      scalar_t* out = yd + nk * p.P * p.Q;
      for (int64_t op = 0; op < p.P; ++op) {
        std::fill(row.begin(), row.end(), acc_t(0));
        for (int64_t r = 0; r < p.R; ++r) {
          const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
          if (h < 0 || h >= p.H) continue;
          const scalar_t* in = plane + h * p.W;
          for (int64_t s = 0; s < p.S; ++s) {
            const acc_t tap = acc_t(filter[r * p.S + s]);
            const int64_t offset = s * p.dilation_w - p.pad_left;
            const auto cols = valid_columns(offset, p.stride_w, p.W, p.Q);
            for (int64_t q = cols.lo; q < cols.hi; ++q)
              row[q] += tap * acc_t(in[q * p.stride_w + offset]);
          }
        }
        for (int64_t q = 0; q < p.Q; ++q) out[op * p.Q + q] = scalar_t(row[q]);
      }
    }
  });
  finish_output(y_out, y);
}

// Each task owns one (n, c) plane of dx and scatters into it from the multiplier outputs
// that read channel c, so no two tasks write alike.
template <typename scalar_t>
void dgrad_impl(const ConvProblem& p, const at::Tensor& dy_in, const at::Tensor& w_in,
                at::Tensor& dx_out) {
  using acc_t = acc_type<scalar_t>;
  const at::Tensor dy = dy_in.contiguous(), w = w_in.contiguous();
  at::Tensor dx = contiguous_output(dx_out);
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  const scalar_t* wd = w.const_data_ptr<scalar_t>();
  scalar_t* dxd = dx.data_ptr<scalar_t>();
  const int64_t multiplier = p.K / p.C;
  at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(p.H * p.W);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / p.C, c = nc % p.C;
      std::fill(plane.begin(), plane.end(), acc_t(0));
      for (int64_t j = 0; j < multiplier; ++j) {
        const int64_t k = c * multiplier + j;
        const scalar_t* grad = dyd + (n * p.K + k) * p.P * p.Q;
        const scalar_t* filter = wd + k * p.R * p.S;
        for (int64_t op = 0; op < p.P; ++op) {
          const scalar_t* g = grad + op * p.Q;
          for (int64_t r = 0; r < p.R; ++r) {
            const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
            if (h < 0 || h >= p.H) continue;
            acc_t* out = plane.data() + h * p.W;
            for (int64_t s = 0; s < p.S; ++s) {
              const acc_t tap = acc_t(filter[r * p.S + s]);
              const int64_t offset = s * p.dilation_w - p.pad_left;
              const auto cols = valid_columns(offset, p.stride_w, p.W, p.Q);
              for (int64_t q = cols.lo; q < cols.hi; ++q)
                out[q * p.stride_w + offset] += tap * acc_t(g[q]);
            }
          }
        }
      }
      scalar_t* dst = dxd + nc * p.H * p.W;
      for (int64_t i = 0; i < p.H * p.W; ++i) dst[i] = scalar_t(plane[i]);
    }
  });
  finish_output(dx_out, dx);
}

template <typename scalar_t>
void wgrad_impl(const ConvProblem& p, const at::Tensor& x_in, const at::Tensor& dy_in,
                at::Tensor& dw_out) {
  using acc_t = acc_type<scalar_t>;
  const at::Tensor x = x_in.contiguous(), dy = dy_in.contiguous();
  at::Tensor dw = contiguous_output(dw_out);
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
  scalar_t* dwd = dw.data_ptr<scalar_t>();
  const int64_t multiplier = p.K / p.C;
  at::parallel_for(0, p.K, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> taps(p.R * p.S);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t c = k / multiplier;
      std::fill(taps.begin(), taps.end(), acc_t(0));
      for (int64_t n = 0; n < p.N; ++n) {
        const scalar_t* plane = xd + (n * p.C + c) * p.H * p.W;
        const scalar_t* grad = dyd + (n * p.K + k) * p.P * p.Q;
        for (int64_t op = 0; op < p.P; ++op) {
          const scalar_t* g = grad + op * p.Q;
          for (int64_t r = 0; r < p.R; ++r) {
            const int64_t h = op * p.stride_h - p.pad_top + r * p.dilation_h;
            if (h < 0 || h >= p.H) continue;
            const scalar_t* in = plane + h * p.W;
            for (int64_t s = 0; s < p.S; ++s) {
              const int64_t offset = s * p.dilation_w - p.pad_left;
              const auto cols = valid_columns(offset, p.stride_w, p.W, p.Q);
              acc_t sum = 0;
              for (int64_t q = cols.lo; q < cols.hi; ++q)
                sum += acc_t(g[q]) * acc_t(in[q * p.stride_w + offset]);
              taps[r * p.S + s] += sum;
            }
          }
        }
      }
      for (int64_t i = 0; i < p.R * p.S; ++i) dwd[k * p.R * p.S + i] = scalar_t(taps[i]);
    }
  });
  finish_output(dw_out, dw);
}

void fprop(const ConvProblem& p, const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "depthwise_fprop", [&] { fprop_impl<scalar_t>(p, x, w, y); });
}

void dgrad(const ConvProblem& p, const at::Tensor& dy, const at::Tensor& w, at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(),
                                  "depthwise_dgrad", [&] { dgrad_impl<scalar_t>(p, dy, w, dx); });
}

void wgrad(const ConvProblem& p, const at::Tensor& x, const at::Tensor& dy, at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "depthwise_wgrad", [&] { wgrad_impl<scalar_t>(p, x, dy, dw); });
}

bool can_implement(const ConvProblem& p, Direction, at::ScalarType) { return p.is_depthwise(); }

}  // namespace

ConvAlgorithm depthwise_algorithm() {
  return {"depthwise", &can_implement, &fprop, &dgrad, &wgrad};
}

}  // namespace fastconv::cpu
