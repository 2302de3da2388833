// The self-test operators' host entries (the launchers of this folder), registered by
// selftest_ops.cpp. Host-only declarations: included by both g++ and nvcc.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

namespace fastconv::cuda {

// fastconv::_tensor_core_check: a @ bt.T for bf16 a [16, 16] and bt [8, 16], on the tensor cores.
at::Tensor tensor_core_check(const at::Tensor& a, const at::Tensor& bt);
// fastconv::_launch_probe: the probe kernel launched correctly or with a planted fault.
void launch_probe(const at::Tensor& out, c10::string_view fault);

}  // namespace fastconv::cuda
