"""Fake (shape) kernels and autograd for every fastconv operator.

The operators and their CPU/CUDA kernels are defined in C++ (csrc/fastconv.cpp). Each backward
formula here calls fastconv operators only, and each backward operator has a backward of its
own, so gradients of any order stay on fastconv's kernels.
"""

import torch
from torch._prims_common import suggest_memory_format

from ._conv_formulas import conv_output_size, transposed_output_size
from .errors import ArgumentError

ops = torch.ops.fastconv


def _output_memory_format(input, weight):
    # PyTorch's rule: channels_last if the input or the filter is.
    if torch.channels_last in (suggest_memory_format(input), suggest_memory_format(weight)):
        return torch.channels_last
    return torch.contiguous_format


def _empty(shape, like, memory_format=torch.contiguous_format, dtype=None):
    return torch.empty(
        shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format
    )


def _check_4d(op, **tensors):
    for name, t in tensors.items():
        torch._check_with(
            ArgumentError,
            t.dim() == 4,
            lambda: f"fastconv::{op}: argument '{name}' must be a 4-D tensor, got shape "
            f"{tuple(t.shape)}",
        )


# ---------------------------------------------------------------- fake kernels


@torch.library.register_fake("fastconv::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    _check_4d("conv2d", input=input, weight=weight)
    n, c, h, w = input.shape
    k, c_per_group, r, s = weight.shape
    torch._check_with(
        ArgumentError,
        c_per_group * groups == c,
        lambda: f"fastconv::conv2d: weight {tuple(weight.shape)} with groups={groups} expects "
        f"{c_per_group * groups} input channels, got {c}",
    )
    p = conv_output_size(h, r, padding[0], padding[1], stride[0], dilation[0])
    q = conv_output_size(w, s, padding[2], padding[3], stride[1], dilation[1])
    return _empty((n, k, p, q), input, _output_memory_format(input, weight))


@torch.library.register_fake("fastconv::conv2d_backward")
def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, mask):
    fmt = _output_memory_format(input, weight)
    return (
        _empty(input.shape, input, fmt) if mask[0] else None,
        _empty(weight.shape, weight, fmt) if mask[1] else None,
        _empty((weight.shape[0],), weight) if mask[2] else None,
    )


@torch.library.register_fake("fastconv::conv_transpose2d")
def _conv_transpose2d_fake(
    input, weight, bias, stride, padding, output_padding, dilation, groups
):
    _check_4d("conv_transpose2d", input=input, weight=weight)
    n, c, h, w = input.shape
    torch._check_with(
        ArgumentError,
        weight.shape[0] == c,
        lambda: f"fastconv::conv_transpose2d: weight {tuple(weight.shape)} expects "
        f"{weight.shape[0]} input channels, got {c}",
    )
    out_h = transposed_output_size(
        h, weight.shape[2], padding[0], padding[1], stride[0], dilation[0], output_padding[0]
    )
    out_w = transposed_output_size(
        w, weight.shape[3], padding[2], padding[3], stride[1], dilation[1], output_padding[1]
    )
    shape = (n, weight.shape[1] * groups, out_h, out_w)
    return _empty(shape, input, _output_memory_format(input, weight))


@torch.library.register_fake("fastconv::conv_transpose2d_backward")
def _conv_transpose2d_backward_fake(
    grad_output, input, weight, stride, padding, output_padding, dilation, groups, mask
):
    fmt = _output_memory_format(input, weight)
    return (
        _empty(input.shape, input, fmt) if mask[0] else None,
        _empty(weight.shape, weight, fmt) if mask[1] else None,
        _empty((weight.shape[1] * groups,), weight) if mask[2] else None,
    )


@torch.library.register_fake("fastconv::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    _check_4d("roi_align", input=input)
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@torch.library.register_fake("fastconv::roi_align_multilevel")
def _roi_align_multilevel_fake(features, rois, levels, spatial_scales, pooled_height, pooled_width,
                               sampling_ratio, aligned):
    for i, f in enumerate(features):
        _check_4d("roi_align_multilevel", **{f"features[{i}]": f})
    first = features[0]
    return first.new_empty((rois.shape[0], first.shape[1], pooled_height, pooled_width))


@torch.library.register_fake("fastconv::roi_align_backward")
def _roi_align_backward_fake(
    grad, rois, spatial_scale, pooled_height, pooled_width, n, c, h, w, sampling_ratio, aligned
):
    return grad.new_empty((n, c, h, w))


@torch.library.register_fake("fastconv::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    _check_4d("roi_pool", input=input)
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)


@torch.library.register_fake("fastconv::roi_pool_backward")
def _roi_pool_backward_fake(grad, rois, argmax, spatial_scale, pooled_height, pooled_width, n, c, h, w):
    return grad.new_empty((n, c, h, w))


# ---------------------------------------------------------------- autograd: convolution
#
# Both pairs, conv2d / conv2d_backward and conv_transpose2d / conv_transpose2d_backward, have
# the same shape: forward(x, w) is bilinear, and backward(gO, x, w) returns its input gradient
# (linear in gO and w), its weight gradient (linear in x and gO) and the bias gradient
# sum(gO). (conv2d's backward is dgrad and wgrad; the transposed one's is fprop and wgrad.)
# Differentiating backward therefore needs only forward and backward again:
#   d/d gO  = forward(gg_input, w) + forward(x, gg_weight) + gg_bias
#   d/d x   = backward(gO, x, gg_weight)[input gradient]
#   d/d w   = backward(gO, gg_input, w)[weight gradient]
# so gradients of any order stay on fastconv's kernels.


def _sum_terms(terms):
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _register_conv_autograd(forward_name, backward_name):
    forward, backward = getattr(ops, forward_name), getattr(ops, backward_name)

    def setup(ctx, inputs, output):
        input, weight, bias, *params = inputs
        ctx.save_for_backward(input, weight)
        ctx.params = params
        ctx.has_bias = bias is not None

    def grad(ctx, grad_output):
        input, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = [need[0], need[1], ctx.has_bias and need[2]]
        gi, gw, gb = backward(grad_output, input, weight, *ctx.params, mask)
        return (gi, gw, gb) + (None,) * len(ctx.params)

    def backward_setup(ctx, inputs, output):
        grad_output, input, weight, *params, mask = inputs
        ctx.save_for_backward(grad_output, input, weight)
        ctx.params = params

    def backward_grad(ctx, gg_input, gg_weight, gg_bias):
        grad_output, input, weight = ctx.saved_tensors
        params = ctx.params
        need = ctx.needs_input_grad
        g_grad_output = g_input = g_weight = None
        if need[0]:
            g_grad_output = _sum_terms([
                None if gg_input is None else forward(gg_input, weight, None, *params),
                None if gg_weight is None else forward(input, gg_weight, None, *params),
                None if gg_bias is None else gg_bias.view(1, -1, 1, 1).expand_as(grad_output),
            ])
        if need[1] and gg_weight is not None:
            g_input = backward(grad_output, input, gg_weight, *params, [True, False, False])[0]
        if need[2] and gg_input is not None:
            g_weight = backward(grad_output, gg_input, weight, *params, [False, True, False])[1]
        return (g_grad_output, g_input, g_weight) + (None,) * (len(params) + 1)

    torch.library.register_autograd(f"fastconv::{forward_name}", grad, setup_context=setup)
    torch.library.register_autograd(
        f"fastconv::{backward_name}", backward_grad, setup_context=backward_setup
    )


_register_conv_autograd("conv2d", "conv2d_backward")
_register_conv_autograd("conv_transpose2d", "conv_transpose2d_backward")


# ---------------------------------------------------------------- autograd: RoI operators
#
# Both are linear in their input. RoIAlign's backward is the adjoint of its forward, so the
# backward of roi_align_backward is roi_align itself. RoIPool's backward scatters through the
# recorded argmax; its backward gathers through it. Boxes get no gradient (as torchvision).


def _roi_align_setup(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.input_shape = tuple(input.shape)
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _roi_align_grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    scale, ph, pw, sampling_ratio, aligned = ctx.args
    gi = ops.roi_align_backward(grad, rois, scale, ph, pw, *ctx.input_shape, sampling_ratio, aligned)
    return gi, None, None, None, None, None, None


def _roi_align_multilevel_setup(ctx, inputs, output):
    features, rois, levels, spatial_scales, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois, levels)
    ctx.shapes = [tuple(f.shape) for f in features]
    ctx.args = (list(spatial_scales), pooled_height, pooled_width, sampling_ratio, aligned)


def _roi_align_multilevel_grad(ctx, grad):
    # Each level's gradient is RoIAlign's backward over the boxes that level pooled, in their
    # order: the same kernels (and, under deterministic mode, the same bits) as one level.
    rois, levels = ctx.saved_tensors
    scales, ph, pw, sampling_ratio, aligned = ctx.args
    grads = []
    for level, shape in enumerate(ctx.shapes):
        index = torch.nonzero(levels == level).squeeze(1)
        grads.append(ops.roi_align_backward(grad.index_select(0, index), rois.index_select(0, index),
                                            scales[level], ph, pw, *shape, sampling_ratio, aligned))
    return grads, None, None, None, None, None, None, None


def _roi_align_backward_setup(ctx, inputs, output):
    grad, rois, scale, ph, pw, n, c, h, w, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (scale, ph, pw, sampling_ratio, aligned)


def _roi_align_backward_grad(ctx, gg):
    (rois,) = ctx.saved_tensors
    g = ops.roi_align(gg, rois, *ctx.args) if ctx.needs_input_grad[0] else None
    return (g,) + (None,) * 10


def _roi_pool_setup(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width = inputs
    out, argmax = output
    ctx.mark_non_differentiable(argmax)
    ctx.save_for_backward(rois, argmax)
    ctx.input_shape = tuple(input.shape)
    ctx.args = (spatial_scale, pooled_height, pooled_width)


def _roi_pool_grad(ctx, grad, _grad_argmax):
    rois, argmax = ctx.saved_tensors
    gi = ops.roi_pool_backward(grad, rois, argmax, *ctx.args, *ctx.input_shape)
    return gi, None, None, None, None


def _roi_pool_backward_setup(ctx, inputs, output):
    grad, rois, argmax, scale, ph, pw, n, c, h, w = inputs
    ctx.save_for_backward(rois, argmax)


def _roi_pool_backward_grad(ctx, gg):
    rois, argmax = ctx.saved_tensors
    g = None
    if ctx.needs_input_grad[0]:
        planes = gg[rois[:, 0].long()].flatten(2)  # [K, C, H * W]: each RoI's image
        index = argmax.flatten(2)
        picked = planes.gather(2, index.clamp_min(0)).view_as(argmax)
        g = torch.where(argmax >= 0, picked, torch.zeros_like(picked))
    return (g,) + (None,) * 9


torch.library.register_autograd("fastconv::roi_align", _roi_align_grad, setup_context=_roi_align_setup)
torch.library.register_autograd(
    "fastconv::roi_align_multilevel", _roi_align_multilevel_grad, setup_context=_roi_align_multilevel_setup
)
torch.library.register_autograd(
    "fastconv::roi_align_backward", _roi_align_backward_grad, setup_context=_roi_align_backward_setup
)
torch.library.register_autograd("fastconv::roi_pool", _roi_pool_grad, setup_context=_roi_pool_setup)
torch.library.register_autograd(
    "fastconv::roi_pool_backward", _roi_pool_backward_grad, setup_context=_roi_pool_backward_setup
)
