// The Hopper (sm_90a) implicit-GEMM algorithms, one per tile configuration: wgmma from 128-byte
// swizzled shared memory, fed by a cp.async producer warpgroup over an mbarrier ring. fprop, and
// dgrad (by stride phases), through the gather GEMMs of implicit_gemm/gather_mapping.h; bf16 and
// fp16 with 16-byte channel runs; an H100/H200 (sm 9.0) running this binary's sm_90a kernels.
// wgrad and float32 stay on the mma.sync tiles after these in the CUDA list. Host code only.
#include "cuda/hopper/config.h"
#include "cuda/hopper/hopper.h"
#include "cuda/implicit_gemm/gather_mapping.h"
#include "cuda/common/device_info.h"
#include "cuda/common/launch_shape.h"
#include "cuda/kernels.h"

#include <ATen/ATen.h>

namespace fastconv::cuda {

namespace {

template <class Cfg>
struct Algorithm {
  static bool can_implement(const ConvProblem& p, const ConvRequest& r) {
    if (r.direction == Direction::wgrad) return false;
    if (r.dtype != at::kHalf && r.dtype != at::kBFloat16) return false;
    if (r.compute_capability != 90) return false;  // sm_90a code runs on sm 9.0 alone
    const DeviceInfo& d = device_info(r.device_index);
    if (!d.sm90a_kernels || Cfg::kSharedBytes > d.shared_memory_per_block_optin) return false;
    if (r.alignment < 16) return false;  // 16-byte chunks of 8 channels, never across a run
    if (p.groups > 65535) return false;  // grid z
    // 32-bit image coordinates, pixel indices and filter offsets, as the mma.sync gather GEMM.
    const int64_t pixels = std::max(p.N * p.H * p.W, p.N * p.P * p.Q);
    if (p.H + p.pad_top + p.pad_bottom >= (int64_t(1) << 30) || p.W + p.pad_left + p.pad_right >= (int64_t(1) << 30) ||
        pixels >= (int64_t(1) << 31) || double(p.K) * double(p.C_per_group()) * double(p.R * p.S) >= 2147483647.0)
      return false;
    const GemmShape gemm = p.gemm(r.direction);
    return ceil_div(gemm.M, Cfg::BM) <= 0x7fffffff && ceil_div(gemm.N, Cfg::BN) <= 65535;
  }

  static KernelLayouts layouts(const ConvProblem&, const ConvRequest&) { return {Layout::nhwc, Layout::nhwc}; }

  static void fprop(const ConvProblem& p, const KernelLayouts&, const at::Tensor& x, const at::Tensor& w,
                    const Epilogue& epilogue, at::Tensor& y) {
    hopper::launch_gather_gemm<Cfg>(igemm::fprop_gemm(p), p.groups, x, w, epilogue, y);
  }

  static void dgrad(const ConvProblem& p, const KernelLayouts&, const at::Tensor& dy, const at::Tensor& w,
                    const Epilogue& epilogue, at::Tensor& dx) {
    igemm::for_each_dgrad_phase(p, w, [&](const igemm::GatherGemm& g, const at::Tensor& sub) {
      hopper::launch_gather_gemm<Cfg>(g, p.groups, dy, sub, epilogue, dx);
    });
  }

  // Speed rules (a model until measured, bench/NOTES.md): the 128 x 256 tile where the GEMM's
  // N fills more than half of its 256 columns and its tiles fill every SM once; the 128 x 128
  // tile where N (a group's output channels) fills more than half of its 128; the 128 x 64
  // tile takes every other problem it can.
  static bool preferred_wide(const ConvProblem& p, const ConvRequest& r) {
    const GemmShape gemm = p.gemm(r.direction);
    const int64_t sms = device_info(r.device_index).sm_count;
    return gemm.N > Cfg::BN / 2 && ceil_div(gemm.M, Cfg::BM) * ceil_div(gemm.N, Cfg::BN) * p.groups >= sms;
  }
  static bool preferred_half_full(const ConvProblem& p, const ConvRequest& r) {
    return p.gemm(r.direction).N > Cfg::BN / 2;
  }

  enum class Rule { wide, half_full, any };
  static ConvAlgorithm make(const char* name, Rule rule) {
    ConvAlgorithm a{name, &can_implement, &fprop, &dgrad, nullptr};
    a.layouts = &layouts;
    a.fused_stages = &fuses_every_stage;  // in the staged epilogue
    a.state = KernelState::emulated;  // passes the emulation suite; not yet run on a GPU
    if (rule == Rule::wide) a.preferred = &preferred_wide;
    if (rule == Rule::half_full) a.preferred = &preferred_half_full;
    return a;
  }
};

using Wide = Algorithm<hopper::Tile128x256>;
using Square = Algorithm<hopper::Tile128x128>;
using Narrow = Algorithm<hopper::Tile128x64>;

}  // namespace

ConvAlgorithm hopper_128x256_algorithm() { return Wide::make("hopper_128x256", Wide::Rule::wide); }
ConvAlgorithm hopper_128x128_algorithm() { return Square::make("hopper_128x128", Square::Rule::half_full); }
ConvAlgorithm hopper_128x64_algorithm() { return Narrow::make("hopper_128x64", Narrow::Rule::any); }

}  // namespace fastconv::cuda
