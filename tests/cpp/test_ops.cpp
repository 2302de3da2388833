// Calls fastconv's operators from C++ through the dispatcher, as a libtorch user would:
// conv2d on every CPU algorithm against ATen's reference, conv2d_backward, RoIAlign on a
// case with a known answer, and a bad argument that must throw a c10::Error naming it.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "common/algorithms.h"
#include "common/conv_ops.h"

#include <cstdio>
#include <optional>
#include <string>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).norm().item<double>() / b.norm().item<double>();
}

using Conv2d = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                          c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef, int64_t);
using Conv2dBackward = std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>,
                                  std::optional<at::Tensor>>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef,
    c10::IntArrayRef, int64_t, std::array<bool, 3>);
using RoiAlign = at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t,
                            int64_t, bool);

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace

int main() {
  at::manual_seed(0);
  const auto conv2d = op<Conv2d>("fastconv::conv2d");
  const auto conv2d_backward = op<Conv2dBackward>("fastconv::conv2d_backward");
  const auto roi_align = op<RoiAlign>("fastconv::roi_align");

  const auto x = at::randn({2, 4, 7, 6}, at::kDouble);
  const auto w = at::randn({6, 2, 3, 3}, at::kDouble);
  const auto b = at::randn({6}, at::kDouble);
  // fastconv pads per side (top 1, bottom 1, left 0, right 2); ATen pads (left, right, top, bottom).
  const std::vector<int64_t> stride{2, 1}, no_padding{0, 0}, dilation{1, 2};
  const auto ref = at::conv2d(at::constant_pad_nd(x, {0, 2, 1, 1}), w, b, stride, no_padding, dilation, 2);

  const auto& list = fastconv::conv_algorithms(c10::DeviceType::CPU);
  expect(!list.empty() && std::string(list.back().name) == "direct", "CPU list ends with direct");
  const auto problem =
      fastconv::make_conv_problem("test", x.sizes(), w.sizes(), {{2, 1}, {1, 1, 0, 2}, {1, 2}, 2});
  const auto request = fastconv::make_conv_request(fastconv::Direction::fprop, problem, x, w,
                                                   at::MemoryFormat::Contiguous, -1);
  // Channel runs of 2 doubles (C/g) and 3 doubles (K/g): 16 and 24 bytes, so 8-byte vectors.
  expect(request.compute_capability == 0 && request.layout == fastconv::Layout::nchw &&
             request.alignment == 8,
         "the CPU request: no SM version, NCHW, 8-byte alignment");
  for (const auto& algorithm : list) {
    if (!algorithm.implements(problem, request)) continue;
    fastconv::set_forced_algorithm(algorithm.name);
    const auto y = conv2d.call(x, w, b, {2, 1}, {1, 1, 0, 2}, {1, 2}, 2);
    expect(rel_err(y, ref) < 1e-12, std::string("conv2d on ") + algorithm.name);
  }
  fastconv::set_forced_algorithm("");

  // The implicit-GEMM mapping: fprop and wgrad are the same multiply-adds; dgrad's GEMM runs
  // over every input pixel, H·W of them where fprop has P·Q outputs.
  const auto gemm_flops = [&](fastconv::Direction d) {
    const auto g = problem.gemm(d);
    return 2.0 * double(g.M) * double(g.N) * double(g.K) * double(problem.groups);
  };
  expect(gemm_flops(fastconv::Direction::fprop) == problem.flops(), "fprop's GEMM gives flops()");
  expect(gemm_flops(fastconv::Direction::wgrad) == problem.flops(), "wgrad's GEMM gives flops()");
  expect(gemm_flops(fastconv::Direction::dgrad) * double(problem.P * problem.Q) ==
             problem.flops() * double(problem.H * problem.W),
         "dgrad's GEMM gives flops() scaled by H*W / (P*Q)");

  const auto grad = at::randn(ref.sizes(), at::kDouble);
  auto [dx, dw, db] =
      conv2d_backward.call(grad, x, w, {2, 1}, {1, 1, 0, 2}, {1, 2}, 2, {true, true, true});
  auto xr = x.clone().requires_grad_();
  auto wr = w.clone().requires_grad_();
  at::conv2d(at::constant_pad_nd(xr, {0, 2, 1, 1}), wr, b, stride, no_padding, dilation, 2).backward(grad);
  expect(dx && rel_err(*dx, xr.grad()) < 1e-12, "conv2d_backward grad_input");
  expect(dw && rel_err(*dw, wr.grad()) < 1e-12, "conv2d_backward grad_weight");
  expect(db && rel_err(*db, grad.sum({0, 2, 3})) < 1e-12, "conv2d_backward grad_bias");

  // Every sample of a box inside a constant image reads that constant.
  const auto image = at::full({1, 3, 10, 10}, 2.5, at::kDouble);
  const auto rois = at::tensor({0.0, 1.0, 2.0, 7.0, 8.0}, at::kDouble).view({1, 5});
  const auto pooled = roi_align.call(image, rois, 1.0, 4, 3, 2, true);
  expect(pooled.sizes() == at::IntArrayRef({1, 3, 4, 3}) &&
             (pooled - 2.5).abs().max().item<double>() < 1e-12,
         "roi_align of a constant image");

  bool threw = false;
  try {
    conv2d.call(x, w, b, {1, 1}, {0, 0, 0, 0}, {1, 1}, 3);
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("groups") != std::string::npos;
  }
  expect(threw, "a bad groups argument throws an error naming it");

  // An emulated kernel runs on a GPU once that GPU's self-test has passed it, or where the
  // record of real-hardware runs lists it for the GPU's SM version; an unverified one only when
  // the user asks (FASTCONV_ALLOW_UNVERIFIED_KERNELS, unset here). One kernel's verdict never
  // touches another's.
  using fastconv::KernelState;
  const auto cuda = c10::DeviceType::CUDA;
  expect(fastconv::may_run("k", KernelState::verified, cuda, 5, 90), "a verified kernel runs");
  expect(!fastconv::may_run("k", KernelState::emulated, cuda, 5, 90), "an emulated kernel waits for the self-test");
  fastconv::set_selftest_result(5, "k", true, "");
  expect(fastconv::may_run("k", KernelState::emulated, cuda, 5, 90) &&
             !fastconv::may_run("k", KernelState::emulated, cuda, 6, 90) &&
             !fastconv::may_run("other", KernelState::emulated, cuda, 5, 90),
         "the self-test of GPU 5 switches kernel k on there, and nothing else");
  expect(!fastconv::may_run("k", KernelState::unverified, cuda, 5, 90), "an unverified kernel stays off");
  fastconv::set_selftest_result(5, "k", false, "case x: rel_err 1");
  expect(!fastconv::may_run("k", KernelState::emulated, cuda, 5, 90) &&
             fastconv::why_not_runnable("k", KernelState::emulated, cuda, 5, 90).find("case x") != std::string::npos,
         "a failed self-test keeps it off, and the refusal names the failing case");
  fastconv::set_verified_kernels(90, {"other"});
  expect(fastconv::may_run("other", KernelState::emulated, cuda, 6, 90) &&
             !fastconv::may_run("other", KernelState::emulated, cuda, 6, 80),
         "a kernel verified for sm_90 runs on every sm_90 GPU, and only there");

  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
