// The self-test operators' registration: for the CUDA key in the CUDA build, for CPU tensors in
// the emulation build (their kernels then run on the emulated GPU).
#include "cuda/selftest/selftest_ops.h"

#include <torch/library.h>

#if defined(FASTCONV_SIMT)
TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
#else
TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
#endif
  m.impl("_tensor_core_check", &fastconv::cuda::tensor_core_check);
  m.impl("_launch_probe", &fastconv::cuda::launch_probe);
}
