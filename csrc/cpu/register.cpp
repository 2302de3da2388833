// The CPU registration: the convolution algorithm list (fastest first, the direct kernel
// last), the RoI kernels, and every operator for the CPU dispatch key.
#include "common/algorithms.h"
#include "common/conv_ops.h"
#include "common/roi_ops.h"
#include "cpu/kernels.h"

#include <torch/library.h>

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
  m.impl("conv2d", &conv2d);
  m.impl("conv2d_fused", &conv2d_fused);
  m.impl("conv2d_backward", &conv2d_backward);
  m.impl("conv_transpose2d", &conv_transpose2d);
  m.impl("conv_transpose2d_backward", &conv_transpose2d_backward);
  register_roi_kernels(c10::DeviceType::CPU,
                       {&cpu::roi_align_forward, &cpu::roi_align_backward,
                        &cpu::roi_pool_forward, &cpu::roi_pool_backward, KernelState::verified,
                        /*align_takes_channels_last=*/true});
  m.impl("roi_align", &roi_align);
  m.impl("roi_align_multilevel", &roi_align_multilevel);
  m.impl("roi_align_backward", &roi_align_backward);
  m.impl("roi_pool", &roi_pool);
  m.impl("roi_pool_backward", &roi_pool_backward);
}
