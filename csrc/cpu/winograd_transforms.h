// The Winograd transforms of F(m×m, 3×3), m = 2 and 4, as pure math on one lane of values:
// no tiling, no layout, no threads (cpu/conv2d_winograd.cpp does those). With alpha = m + 2,
//   input  B^T d B   (alpha×alpha tile -> alpha×alpha)
//   filter G g G^T   (3×3 -> alpha×alpha)
//   output A^T v A   (alpha×alpha -> m×m)
// and for wgrad A dy A^T (m×m -> alpha×alpha) and G^T u G (alpha×alpha -> 3×3). Each is a
// 1-D transform applied along both axes; the *Op structs name them for a 2-D driver.
#pragma once

namespace fastconv::cpu::winograd {

// The 1-D transforms of F(m, 3) on values (one lane): B^T d, G g and A^T v. The 2-D ones
// apply them along each axis in turn. Coefficients from Lavin & Gray, points 0, ±1 (m = 2)
// and 0, ±1, ±2 (m = 4).
template <int m, typename T>
inline void input_1d(const T* d, T* o) {
  if constexpr (m == 2) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
  } else {
    o[0] = T(4) * d[0] - T(5) * d[2] + d[4];
    o[1] = -T(4) * (d[1] + d[2]) + d[3] + d[4];
    o[2] = T(4) * (d[1] - d[2]) - d[3] + d[4];
    o[3] = T(2) * (d[3] - d[1]) - d[2] + d[4];
    o[4] = T(2) * (d[1] - d[3]) - d[2] + d[4];
    o[5] = T(4) * d[1] - T(5) * d[3] + d[5];
  }
}

template <int m, typename T>
inline void filter_1d(const T* g, T* o) {
  if constexpr (m == 2) {
    o[0] = g[0];
    o[1] = (g[0] + g[1] + g[2]) * T(0.5);
    o[2] = (g[0] - g[1] + g[2]) * T(0.5);
    o[3] = g[2];
  } else {
    // Products with rounded reciprocals, not divisions: the rounding is far below any
    // tolerance, and divisions would dominate the filter transform.
    const T sixth = T(1) / T(6), twelfth = T(1) / T(12), twenty_fourth = T(1) / T(24);
    o[0] = g[0] * T(0.25);
    o[1] = -(g[0] + g[1] + g[2]) * sixth;
    o[2] = -(g[0] - g[1] + g[2]) * sixth;
    o[3] = g[0] * twenty_fourth + g[1] * twelfth + g[2] * sixth;
    o[4] = g[0] * twenty_fourth - g[1] * twelfth + g[2] * sixth;
    o[5] = g[2];
  }
}

template <int m, typename T>
inline void output_1d(const T* v, T* o) {
  if constexpr (m == 2) {
    o[0] = v[0] + v[1] + v[2];
    o[1] = v[1] - v[2] - v[3];
  } else {
    o[0] = v[0] + v[1] + v[2] + v[3] + v[4];
    o[1] = v[1] - v[2] + T(2) * (v[3] - v[4]);
    o[2] = v[1] + v[2] + T(4) * (v[3] + v[4]);
    o[3] = v[1] - v[2] + T(8) * (v[3] - v[4]) + v[5];
  }
}

// For wgrad (dg = G^T [ (A dy A^T) ⊙ (B^T d B) ] G summed over tiles): A dy on m values,
// and G^T u on alpha values.
template <int m, typename T>
inline void grad_1d(const T* y, T* o) {
  if constexpr (m == 2) {
    o[0] = y[0];
    o[1] = y[0] + y[1];
    o[2] = y[0] - y[1];
    o[3] = -y[1];
  } else {
    o[0] = y[0];
    o[1] = y[0] + y[1] + y[2] + y[3];
    o[2] = y[0] - y[1] + y[2] - y[3];
    o[3] = y[0] + T(2) * y[1] + T(4) * y[2] + T(8) * y[3];
    o[4] = y[0] - T(2) * y[1] + T(4) * y[2] - T(8) * y[3];
    o[5] = y[3];
  }
}

template <int m, typename T>
inline void filter_grad_1d(const T* u, T* o) {
  if constexpr (m == 2) {
    o[0] = u[0] + (u[1] + u[2]) * T(0.5);
    o[1] = (u[1] - u[2]) * T(0.5);
    o[2] = (u[1] + u[2]) * T(0.5) + u[3];
  } else {
    const T sixth = T(1) / T(6), twelfth = T(1) / T(12), twenty_fourth = T(1) / T(24);
    o[0] = u[0] * T(0.25) - (u[1] + u[2]) * sixth + (u[3] + u[4]) * twenty_fourth;
    o[1] = (u[2] - u[1]) * sixth + (u[3] - u[4]) * twelfth;
    o[2] = (u[3] + u[4] - u[1] - u[2]) * sixth + u[5];
  }
}

struct InputOp {
  template <int m, typename T>
  static void apply(const T* in, T* out) { input_1d<m>(in, out); }
};
struct OutputOp {
  template <int m, typename T>
  static void apply(const T* in, T* out) { output_1d<m>(in, out); }
};
struct GradOp {
  template <int m, typename T>
  static void apply(const T* in, T* out) { grad_1d<m>(in, out); }
};
struct FilterGradOp {
  template <int m, typename T>
  static void apply(const T* in, T* out) { filter_grad_1d<m>(in, out); }
};

}  // namespace fastconv::cpu::winograd
