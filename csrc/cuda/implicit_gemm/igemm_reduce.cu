// wgrad's second pass: the split-K partial sums added in a fixed order (igemm_kernels.cuh).
#include "cuda/implicit_gemm/igemm_kernels.cuh"
#include "cuda/implicit_gemm/implicit_gemm.h"

#include <ATen/Dispatch.h>

namespace fastconv::cuda::igemm {

void reduce_splits(const at::Tensor& workspace, int64_t splits, at::Tensor& dw) {
  const int64_t count = dw.numel();
  auto launch = [&](auto type) {
    using T = decltype(type);
    launch_kernel("igemm::reduce_splits_kernel", reduce_splits_kernel<T>, blocks_for(count), kThreads, 0,
                  global_view<const float>(workspace, "workspace"), splits, count, global_view<T>(dw, "dw"));
  };
  AT_DISPATCH_SWITCH(dw.scalar_type(), "igemm::reduce_splits",
                     AT_DISPATCH_CASE(at::kHalf, [&] { launch(scalar_t{}); })
                     AT_DISPATCH_CASE(at::kBFloat16, [&] { launch(scalar_t{}); })
                     AT_DISPATCH_CASE(at::kFloat, [&] { launch(scalar_t{}); }));
}

}  // namespace fastconv::cuda::igemm
