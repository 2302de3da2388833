// The algorithm list of each device, and the contract between the operators and the kernels.
//
// A convolution operator describes what it needs as a ConvProblem (the shapes) and a
// ConvRequest (direction, dtype, layout, alignment, architecture) and asks its device's list
// for the first algorithm that can implement the request and prefers it. The list ends with a
// direct kernel that implements everything, so every input has a correct path. The library
// answers "can this algorithm implement this?" itself (fastconv::_can_implement), and the
// tests ask it rather than keeping a copy of the rules.
//
// The operator, not the kernel, owns the tensors: it allocates the output in the memory
// format PyTorch returns, hands each kernel its operands contiguous in the layouts the
// algorithm declares (copying only what does not already conform, and copying the result
// back once when the kernel's output layout differs from the returned one), adds the bias
// when the kernel does not fuse it, and handles empty problems. A kernel never allocates its
// result, checks arguments, converts layouts or calls another algorithm's kernels.
#pragma once

#include "common/activation.h"
#include "common/conv_problem.h"
#include "common/kernel_gate.h"

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <optional>
#include <string>
#include <vector>

namespace fastconv {

const char* direction_name(Direction d);
std::optional<Direction> parse_direction(const std::string& name);

// Activation layouts. Filters follow their activations: [K, C/g, R, S] contiguous with
// nchw, and channels_last ([K, R, S, C/g] in memory, CUTLASS's KRSC) with nhwc.
enum class Layout { nchw, nhwc };
const char* layout_name(Layout l);
at::MemoryFormat memory_format_of(Layout l);

// What an operator asks of an algorithm, apart from the shapes.
struct ConvRequest {
  Direction direction;
  at::ScalarType dtype;
  // The layout the operator returns its result in (PyTorch's rule: channels_last when the
  // input or the filter is).
  Layout layout;
  // The largest power of two, at most 16 bytes, that divides every operand's base address
  // and the byte length of each group's channel run (C/g and K/g elements): the widest
  // vector a channels-last kernel may load without a predicate.
  int alignment;
  // SM version as major * 10 + minor (90 for the H100/H200); 0 on the CPU.
  int compute_capability;
  // The device's index (-1 for the CPU and the emulated GPU): whether an emulated kernel may
  // run depends on that GPU's self-test (common/kernel_gate.h).
  int device_index = -1;
  // Whether float32 may run on TF32 tensor cores (torch.backends.cudnn.allow_tf32, as
  // cuDNN reads it); when false, float32 needs an exact float32 kernel.
  bool allow_tf32 = false;
  // Whether x, w and dy hold only finite values. Known only to algorithms that declare
  // needs_finite_operands, for which the dispatcher reads the operands (see below);
  // assumed true elsewhere.
  bool operands_finite = true;
};

// The layouts a kernel takes its operands in for one request: the tensors it reads
// (activations, gradients and the filter) and the one it writes.
struct KernelLayouts {
  Layout inputs;
  Layout output;
};

// The elementwise stages after a convolution's sums, in the order they apply:
//   out = activation(sum + bias[channel] + residual)
// A kernel that fuses a stage applies it in the accumulation type, before its one rounding.
enum EpilogueStage : unsigned {
  kBiasStage = 1u,
  kResidualStage = 2u,
  kActivationStage = 4u,
  kAllStages = 7u,
};

// The stages a kernel is asked to apply. Undefined tensors and Activation::none are stages
// not asked for. bias: [channels of the output], contiguous, the output's dtype. residual:
// the output's shape and dtype, contiguous in the kernel's output layout, so that its
// element i is added to the output's element i.
struct Epilogue {
  at::Tensor bias;
  at::Tensor residual;
  Activation activation = Activation::none;
  double negative_slope = 0.0;  // leaky_relu's

  unsigned stages() const {
    return (bias.defined() ? kBiasStage : 0u) | (residual.defined() ? kResidualStage : 0u) |
           (activation != Activation::none ? kActivationStage : 0u);
  }
};

// Kernels receive operands contiguous in the algorithm's KernelLayouts, which they are told
// (strides alone cannot say: a tensor with one channel, or one pixel, is contiguous in both
// layouts), and write every element of their output. All sizes of the problem are positive.
// fprop and dgrad take an epilogue holding only stages the algorithm fuses for the request
// (ConvAlgorithm::fused_stages): the forward result of conv2d and conv2d_fused is fprop's, of
// conv_transpose2d dgrad's (which is only ever asked for the bias).
using FpropKernel = void (*)(const ConvProblem&, const KernelLayouts&, const at::Tensor& x,
                             const at::Tensor& w, const Epilogue& epilogue, at::Tensor& y);
using DgradKernel = void (*)(const ConvProblem&, const KernelLayouts&, const at::Tensor& dy,
                             const at::Tensor& w, const Epilogue& epilogue, at::Tensor& dx);
using WgradKernel = void (*)(const ConvProblem&, const KernelLayouts&, const at::Tensor& x,
                             const at::Tensor& dy, at::Tensor& dw);

struct ConvAlgorithm {
  const char* name;
  // A capability: whether the kernels compute this problem for this request correctly.
  // Only asked for directions that have a kernel.
  bool (*can_implement)(const ConvProblem&, const ConvRequest&);
  FpropKernel fprop;  // nullptr: this algorithm does not do that direction
  DgradKernel dgrad;
  WgradKernel wgrad;
  // nullptr: the kernels take every operand in the request's layout.
  KernelLayouts (*layouts)(const ConvProblem&, const ConvRequest&) = nullptr;
  // The epilogue stages (EpilogueStage bits) that fprop and dgrad apply themselves for this
  // request; the operator applies the rest after the kernel. nullptr: none.
  unsigned (*fused_stages)(const ConvProblem&, const ConvRequest&) = nullptr;
  // Whether the kernels need x, w and dy to be finite to give torch's result (a transform
  // spreads one inf or NaN over a whole tile). The automatic choice then reads the
  // operands before choosing (on the CPU one pass over them, a few per cent of a Winograd
  // layer; a GPU algorithm must never set this, as the read would be a device-to-host sync).
  bool needs_finite_operands = false;
  // How far the kernels are proved (common/kernel_gate.h decides where they may run, by
  // this algorithm's name).
  KernelState state = KernelState::verified;
  // For the automatic choice only: whether this algorithm should take a problem it can
  // implement (a speed rule, where can_implement is a capability). A forced algorithm runs
  // whatever this says. nullptr: every problem it can implement.
  bool (*preferred)(const ConvProblem&, const ConvRequest&) = nullptr;

  bool has_kernel(Direction d) const;
  // has_kernel and can_implement, and the finiteness rule.
  bool implements(const ConvProblem& p, const ConvRequest& r) const;
  KernelLayouts layouts_for(const ConvProblem& p, const ConvRequest& r) const;
  unsigned fused_stages_for(const ConvProblem& p, const ConvRequest& r) const {
    return fused_stages ? fused_stages(p, r) : 0u;
  }
};

// The common answers for ConvAlgorithm::fused_stages.
inline unsigned fuses_bias(const ConvProblem&, const ConvRequest&) { return kBiasStage; }
inline unsigned fuses_every_stage(const ConvProblem&, const ConvRequest&) { return kAllStages; }
// fprop's kernel applies every stage; dgrad's none.
inline unsigned fprop_fuses_every_stage(const ConvProblem&, const ConvRequest& r) {
  return r.direction == Direction::fprop ? kAllStages : 0u;
}
// fprop's kernel applies every stage; dgrad's (conv_transpose2d's forward) the bias.
inline unsigned fprop_fuses_every_stage_dgrad_the_bias(const ConvProblem&, const ConvRequest& r) {
  return r.direction == Direction::fprop ? kAllStages : kBiasStage;
}
// For fprop kernels whose half-type paths round before an epilogue could run (a half-type
// GEMM from ATen writes rounded values): every stage where the output type is the
// accumulation type, none otherwise.
inline unsigned fprop_fuses_every_stage_in_float(const ConvProblem&, const ConvRequest& r) {
  return r.direction == Direction::fprop && (r.dtype == at::kFloat || r.dtype == at::kDouble)
             ? kAllStages
             : 0u;
}

// A device's own copy of a 4-D tensor between the NCHW and channels_last layouts, into dst
// (allocated, src's sizes): false where it does not apply, and the operator copies with ATen.
// (ATen's channels_last-to-NCHW float copy ran at 7-8 GB/s on the 2-core Zen 5, where the
// blocked transpose of cpu/sgemm.h ran 6x faster.)
using LayoutCopy = bool (*)(const at::Tensor& src, at::Tensor& dst);
void register_layout_copy(c10::DeviceType device, LayoutCopy copy);
// dst = src through the device's LayoutCopy where it applies, else ATen's copy_.
void copy_between_layouts(const at::Tensor& src, at::Tensor& dst);
// t itself where it is contiguous in `format`, else a copy that is.
at::Tensor contiguous_in(const at::Tensor& t, at::MemoryFormat format);

// Installs a device's list, fastest first. Called once by each device's registration.
void register_conv_algorithms(c10::DeviceType device, std::vector<ConvAlgorithm> list);
const std::vector<ConvAlgorithm>& conv_algorithms(c10::DeviceType device);
// nullptr when the device's list has no algorithm of that name.
const ConvAlgorithm* find_conv_algorithm(c10::DeviceType device, const std::string& name);

// Reads whether operands are finite, for the choice below: called only when an algorithm
// that needs it comes up, and at most once per choice.
using FinitenessProbe = bool (*)(const void* context);

// The algorithm that runs: the forced one if set (an error if it cannot implement the
// request), otherwise the first in the device's list that implements and prefers it and may
// run on the device (common/kernel_gate.h). An algorithm the gate keeps off is passed over;
// where that leaves none that prefers the problem, the first other one that implements it
// runs; and the error when none is left names each one and why. This is the one place where the
// data can steer the choice: `finite` is asked only when an algorithm with
// needs_finite_operands is next in line.
const ConvAlgorithm& choose_conv_algorithm(c10::DeviceType device, const ConvProblem& problem,
                                           ConvRequest request, FinitenessProbe finite,
                                           const void* context);

// Process-wide, so that it also reaches autograd's worker threads. Empty means "choose".
// The environment variable FASTCONV_ALGO sets it when the library loads.
void set_forced_algorithm(const std::string& name);
std::string forced_algorithm();

}  // namespace fastconv
