// The CPU registration: the convolution algorithm list (fastest first, the direct kernel
// last), the RoI kernels, and every operator for the CPU dispatch key.
#include "common/algorithms.h"
#include "common/conv_ops.h"
#include "common/roi_ops.h"
#include "cpu/kernels.h"
#include "cpu/parallel.h"
#include "cpu/sgemm.h"

#include <torch/library.h>

#include <utility>

// The CPU thread team's state (cpu/parallel.h), for tests and the benchmark.
TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  m.def("_cpu_team_state() -> int[]", &fastconv::cpu::team_state);
  m.def("_cpu_team_hold_serial(int ms) -> ()", &fastconv::cpu::hold_serial);
  m.def("_cpu_team_use_aten(bool aten) -> ()", &fastconv::cpu::use_aten_team);
  m.def("_cpu_machine_load() -> int[]", &fastconv::cpu::machine_load);
  m.def("_cpu_machine_oversubscribed(int runnable, int cpus, int team_threads, bool serial_now) -> bool", &fastconv::cpu::machine_oversubscribed);
  m.def("_cpu_team_region_was_contended(int region_ns, int caller_wait_ns) -> bool",
        &fastconv::cpu::region_was_contended);
}

// The float32 GEMM's choice (cpu/sgemm.h), and its own kernel called directly, for tests and the
// benchmark.
namespace {
void sgemm_direct(const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool accumulate) {
  fastconv::cpu::own_mm_out(c, a, b, accumulate);
}
void set_sgemm_mode(c10::string_view m) { fastconv::cpu::set_sgemm_mode(std::string(m)); }
}  // namespace

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  m.def("_cpu_sgemm_set_mode(str mode) -> ()", &set_sgemm_mode);
  m.def("_cpu_sgemm_mode() -> str", &fastconv::cpu::sgemm_mode);
  m.def("_cpu_sgemm_supported() -> bool", &fastconv::cpu::sgemm_supported);
  m.def("_cpu_sgemm_active() -> bool", &fastconv::cpu::own_sgemm_active);
  m.def("_cpu_sgemm_products() -> int", &fastconv::cpu::own_sgemm_products);
  m.def("_cpu_sgemm(Tensor a, Tensor b, Tensor(a!) c, bool accumulate) -> ()", &sgemm_direct);
  m.def("_cpu_transposed_copy(Tensor m) -> Tensor", &fastconv::cpu::transposed_copy);
}

namespace {

// An operator's CPU entry point run under a TeamScope (cpu/parallel.h): on a contended machine
// the whole call, ATen's work inside it included, stays on the calling thread.
template <auto op>
struct OnCpuTeam;
template <typename R, typename... Args, R (*op)(Args...)>
struct OnCpuTeam<op> {
  static R call(Args... args) {
    const fastconv::cpu::TeamScope scope;
    return op(std::forward<Args>(args)...);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  using namespace fastconv;
  register_conv_algorithms(c10::DeviceType::CPU, {cpu::depthwise_algorithm(),
                                                  cpu::gemm_1x1_algorithm(),
                                                  cpu::grouped_planes_algorithm(),
                                                  cpu::gemm_bf16dot_algorithm(),
                                                  cpu::winograd_4x4_algorithm(),
                                                  cpu::winograd_2x2_algorithm(),
                                                  cpu::direct_blocked_algorithm(),
                                                  cpu::im2col_gemm_algorithm(),
                                                  cpu::direct_algorithm()});
  register_layout_copy(c10::DeviceType::CPU, &cpu::layout_copy);
  m.impl("conv2d", &OnCpuTeam<&conv2d>::call);
  m.impl("conv2d_fused", &OnCpuTeam<&conv2d_fused>::call);
  m.impl("conv2d_backward", &OnCpuTeam<&conv2d_backward>::call);
  m.impl("conv_transpose2d", &OnCpuTeam<&conv_transpose2d>::call);
  m.impl("conv_transpose2d_backward", &OnCpuTeam<&conv_transpose2d_backward>::call);
  register_roi_kernels(c10::DeviceType::CPU,
                       {&cpu::roi_align_forward, &cpu::roi_align_backward,
                        &cpu::roi_pool_forward, &cpu::roi_pool_backward, KernelState::verified,
                        /*align_takes_channels_last=*/true});
  m.impl("roi_align", &OnCpuTeam<&roi_align>::call);
  m.impl("roi_align_multilevel", &OnCpuTeam<&roi_align_multilevel>::call);
  m.impl("roi_align_backward", &OnCpuTeam<&roi_align_backward>::call);
  m.impl("roi_pool", &OnCpuTeam<&roi_pool>::call);
  m.impl("roi_pool_backward", &OnCpuTeam<&roi_pool_backward>::call);
}
