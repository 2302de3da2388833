// The CUDA registration: the convolution algorithm list (the direct kernel last), the RoI
// kernels, and every operator for the CUDA dispatch key. Compiled in CUDA builds, and in the
// emulation build (FASTCONV_SIMT=1) where the same lists serve fastconv.testing.emulated_cuda.
//
// None of these kernels has run on a GPU yet. They pass the emulation suite, so they are
// registered emulated: on a GPU they run once fastconv's self-test has passed there (or with
// FASTCONV_ALLOW_UNVERIFIED_KERNELS=1, as the GPU check sets). Set KernelState::verified once
// bench/gpu_check.sh passes on a real GPU.
#include "common/algorithms.h"
#include "common/conv_ops.h"
#include "common/emulation.h"
#include "common/roi_ops.h"
#include "cuda/common/device_info.h"
#include "cuda/kernels.h"

#include <torch/library.h>

namespace {

void register_cuda_kernels() {
  using namespace fastconv;
  std::vector<ConvAlgorithm> list;
#if defined(FASTCONV_WITH_SM90A) || defined(FASTCONV_SIMT)
  // Built where the architecture list names sm 9.0 (setup.py); each refuses other devices.
  list.push_back(cuda::hopper_128x256_algorithm());
  list.push_back(cuda::hopper_128x128_algorithm());
  list.push_back(cuda::hopper_128x64_algorithm());
#endif
  for (ConvAlgorithm a : {cuda::implicit_gemm_128x128_algorithm(), cuda::implicit_gemm_64x64_algorithm(),
                          cuda::depthwise_algorithm(), cuda::implicit_gemm_ffma_algorithm(), cuda::direct_algorithm()})
    list.push_back(a);
  register_conv_algorithms(c10::DeviceType::CUDA, std::move(list));
  register_compute_capability_query(c10::DeviceType::CUDA, [](c10::DeviceIndex index) {
    return cuda::device_info(index).compute_capability;
  });
  register_roi_kernels(c10::DeviceType::CUDA,
                       {&cuda::roi_align_forward, &cuda::roi_align_backward,
                        &cuda::roi_pool_forward, &cuda::roi_pool_backward, KernelState::emulated,
                        /*align_takes_channels_last=*/true, &cuda::roi_align_forward_multilevel});
}

}  // namespace

#if defined(FASTCONV_SIMT)

// The emulation build: the same kernels, compiled for the host, as the CUDA list that CPU
// tensors take inside fastconv.testing.emulated_cuda(). No CUDA dispatch key: a real GPU
// tensor never reaches host-compiled kernels.
static const bool emulated_cuda_registered = [] {
  register_cuda_kernels();
  fastconv::mark_emulation_built();
  return true;
}();

#else

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  using namespace fastconv;
  register_cuda_kernels();
  m.impl("conv2d", &conv2d);
  m.impl("conv2d_fused", &conv2d_fused);
  m.impl("conv2d_backward", &conv2d_backward);
  m.impl("conv_transpose2d", &conv_transpose2d);
  m.impl("conv_transpose2d_backward", &conv_transpose2d_backward);
  m.impl("roi_align", &roi_align);
  m.impl("roi_align_multilevel", &roi_align_multilevel);
  m.impl("roi_align_backward", &roi_align_backward);
  m.impl("roi_pool", &roi_pool);
  m.impl("roi_pool_backward", &roi_pool_backward);
}

#endif
