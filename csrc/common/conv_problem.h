// ConvProblem: the one description of a 2-D convolution, built once from the tensors and the
// operator's arguments and passed to every kernel.
//
// Names: activation x [N, C, H, W]; filter w [K, C/groups, R, S]; output y [N, K, P, Q].
// A transposed convolution is described by the convolution whose dgrad it is, so its output
// is this problem's x and its input is this problem's y.
#pragma once

#include "common/macros.h"

#include <c10/util/ArrayRef.h>

#include <array>
#include <cstdint>
#include <string>

namespace fastconv {

// The hyper-parameters of a convolution as the operators receive them.
struct ConvParams {
  std::array<int64_t, 2> stride;    // (h, w)
  std::array<int64_t, 4> padding;   // (top, bottom, left, right): zeros added on each side
  std::array<int64_t, 2> dilation;  // (h, w)
  int64_t groups;
};

// fprop computes y from x and w; dgrad dx from dy and w; wgrad dw from x and dy.
enum class Direction { fprop, dgrad, wgrad };

// One group's convolution in one direction as a GEMM, C[M, N] = A[M, K] · B[K, N], with
// groups such GEMMs side by side (a grid dimension on the GPU). Rows of A and C are output
// pixels (fprop, dgrad) or filters (wgrad); K is the reduction.
struct GemmShape {
  int64_t M, N, K;
};

struct ConvProblem {
  int64_t N, C, H, W;
  int64_t K, R, S;
  int64_t P, Q;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t stride_h, stride_w;
  int64_t dilation_h, dilation_w;
  int64_t groups;

  FASTCONV_HD int64_t C_per_group() const { return C / groups; }
  FASTCONV_HD int64_t K_per_group() const { return K / groups; }
  // Multiply-adds count twice; padded taps count too, as every library counts them.
  double flops() const {
    return 2.0 * double(N) * double(K) * double(P) * double(Q) * double(C_per_group()) *
           double(R) * double(S);
  }
  // Each of x, w and y read or written exactly once: the floor of any kernel's traffic.
  double min_bytes(int64_t element_size) const {
    return double(element_size) *
           (double(N) * C * H * W + double(K) * C_per_group() * R * S + double(N) * K * P * Q);
  }
  bool is_depthwise() const { return C_per_group() == 1; }
  // The implicit-GEMM mapping, written once (a kernel names its A, B, C from this):
  //   fprop: M = N·P·Q, N = K/g,       K = C/g·R·S   (A: x gathered, B: w, C: y)
  //   dgrad: M = N·H·W, N = C/g,       K = K/g·R·S   (A: dy gathered, B: w, C: dx)
  //   wgrad: M = K/g,   N = C/g·R·S,   K = N·P·Q     (A: dy, B: x gathered, C: dw)
  // fprop and wgrad do flops() = 2·M·N·K·groups. dgrad's M runs over every input pixel, so
  // at stride > 1 its GEMM also multiplies the zeros between the outputs (H·W against P·Q).
  GemmShape gemm(Direction d) const {
    switch (d) {
      case Direction::fprop: return {N * P * Q, K_per_group(), C_per_group() * R * S};
      case Direction::dgrad: return {N * H * W, C_per_group(), K_per_group() * R * S};
      case Direction::wgrad: return {K_per_group(), C_per_group() * R * S, N * P * Q};
    }
    return {0, 0, 0};
  }
  // Nothing to compute: the result is all zeros (or empty).
  bool is_empty() const { return N == 0 || P == 0 || Q == 0; }
  std::string str() const;
};

// Validates the arguments of conv2d (op names the operator in messages) and describes it.
ConvProblem make_conv_problem(const char* op, c10::IntArrayRef x_sizes, c10::IntArrayRef w_sizes,
                              const ConvParams& params);

// Validates the arguments of conv_transpose2d, whose input has x_sizes and filter w_sizes
// ([C_in, C_out/groups, R, S]), and describes the convolution whose dgrad it computes.
ConvProblem make_transposed_problem(const char* op, c10::IntArrayRef x_sizes,
                                    c10::IntArrayRef w_sizes, const ConvParams& params,
                                    c10::IntArrayRef output_padding);

// Validates and packs the hyper-parameters.
ConvParams make_conv_params(const char* op, c10::IntArrayRef stride, c10::IntArrayRef padding,
                            c10::IntArrayRef dilation, int64_t groups);

}  // namespace fastconv
