"""Convolution and RoI functions on fastconv's kernels.

conv1d, conv2d, conv_transpose1d and conv_transpose2d take exactly the arguments of their
torch.nn.functional namesakes, with the same defaults and results (int or tuple arguments,
padding='same' / 'valid' for convolutions, unbatched inputs, complex operands, inputs without
channels). As an extension, an explicit padding may also give each side: (left, right) for
1-D, (top, bottom, left, right) for 2-D.

roi_align and roi_pool follow torchvision.ops: boxes are a Tensor[K, 5] of (batch index, x1,
y1, x2, y2) or a list of Tensor[L, 4], one per image.
"""

import numbers
import operator
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
from torch import Tensor

from . import _complex
from . import selftest
from ._ops import differentiable as ops
from .errors import ArgumentError, ArgumentTypeError, BoxesError, BoxesTypeError

__all__ = ["ACTIVATIONS", "conv1d", "conv2d", "conv2d_fused", "conv_transpose1d", "conv_transpose2d", "roi_align", "roi_pool",
           "multi_level_roi_align"]

# torch.fx: each function here is a leaf of symbolic tracing. While torch.fx traces, it
# replaces these names in this module's namespace (which is also what `F.conv2d` reads in
# fastconv.nn and elsewhere) by a stand-in that records one call_function node to the function
# itself, so the argument checks below never see a Proxy and never enter the graph; when the
# GraphModule runs, the real function runs, checks included, as in eager mode.
torch.fx.wrap("conv1d")
torch.fx.wrap("conv2d")
torch.fx.wrap("conv2d_fused")
torch.fx.wrap("conv_transpose1d")
torch.fx.wrap("conv_transpose2d")
torch.fx.wrap("roi_align")
torch.fx.wrap("roi_pool")
torch.fx.wrap("multi_level_roi_align")


def _on_gpu(t):
    """The first call on each GPU runs fastconv's on-device self-test (fastconv.selftest),
    which switches on there each emulated CUDA kernel it passes; later calls cost a set lookup."""
    if t.is_cuda and not torch.compiler.is_compiling():
        selftest.ensure(t.device)


def _check_tensor(fn, name, value):
    if not isinstance(value, Tensor):
        raise ArgumentTypeError(f"{fn}: argument '{name}' must be a Tensor, got {type(value).__name__}")


def _check_bias(fn, bias):
    if bias is not None and not isinstance(bias, Tensor):
        raise ArgumentTypeError(f"{fn}: argument 'bias' must be a Tensor or None, got {type(bias).__name__}")


def _int(fn, name, value):
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{fn}: argument '{name}' must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(
            f"{fn}: argument '{name}' must be an int or a tuple of ints, got {value!r}"
        ) from None
    # The operators take int64; beyond it the dispatcher would fail with its own words.
    if not -(2**63) <= value < 2**63:
        raise ArgumentError(f"{fn}: argument '{name}' is out of the int64 range, got {value}")
    return value


def _float(fn, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not (
        isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point()
    ):
        raise ArgumentTypeError(f"{fn}: argument '{name}' must be a float, got {type(value).__name__}")
    return float(value)


def _bool(fn, name, value):
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{fn}: argument '{name}' must be a bool, got {value!r}")
    return value


def _ints(fn, name, value, n):
    """An int, or a tuple/list of n ints, as a tuple of n ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ArgumentError(f"{fn}: argument '{name}' must have {n} values, got {tuple(value)}")
        return tuple(_int(fn, name, v) for v in value)
    return (_int(fn, name, value),) * n


def _batched(fn, input, batched_dim):
    if input.dim() == batched_dim:
        return True
    if input.dim() == batched_dim - 1:
        return False
    raise ArgumentError(
        f"{fn}: argument 'input' must be {batched_dim - 1}-D (unbatched) or {batched_dim}-D "
        f"(batched), got a {input.dim()}-D tensor of shape {tuple(input.shape)}"
    )


def _check_weight_dim(fn, weight, dim):
    if weight.dim() != dim:
        raise ArgumentError(
            f"{fn}: argument 'weight' must be a {dim}-D tensor, got shape {tuple(weight.shape)}"
        )


def _padding(fn, padding, kernel, stride, dilation):
    """Per-side padding (begin, end for each spatial dim) of a convolution."""
    dims = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * (2 * dims)
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ArgumentError(f"{fn}: padding='same' is not supported for strided convolutions")
            sides = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)  # as PyTorch: the odd pixel goes to the end
                sides += [total // 2, total - total // 2]
            return tuple(sides)
        raise ArgumentError(
            f"{fn}: argument 'padding' must be 'valid', 'same', an int or a tuple, got {padding!r}"
        )
    return _explicit_padding(fn, padding, dims)


def _explicit_padding(fn, padding, dims):
    if isinstance(padding, (tuple, list)) and len(padding) == 2 * dims:
        sides = tuple(_int(fn, "padding", v) for v in padding)
    else:
        per_dim = _ints(fn, "padding", padding, dims)
        sides = tuple(v for p in per_dim for v in (p, p))
    if any(v < 0 for v in sides):
        raise ArgumentError(f"{fn}: argument 'padding' must be non-negative, got {padding!r}")
    return sides


def _convolve(fn, op, x, weight, bias, *params):
    """op(x, weight, bias, *params) on fastconv's real kernels; complex operands take three
    real calls (fastconv._complex)."""
    if _complex.involved(x, weight, bias):
        return _complex.bilinear(fn, op, x, weight, bias, *params)
    return op(x, weight, bias, *params)


def _torch_channels(y, x):
    """torch gives a convolution of an input without channels no output channels either (its
    meta kernel sets them to 0). The operator returns what the sums give, zeros plus the bias
    in [N, K, P, Q]; this keeps torch's shape, and autograd still reaches the weight and the
    bias, with zero gradients, as in torch. (Not while torch.jit.trace records, whose sizes
    are traced values: a traced model is one for inputs with channels.)"""
    return y[:, :0] if not torch.jit.is_tracing() and x.shape[1] == 0 else y


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: Union[int, Tuple[int, int]] = 1,
    padding: Union[str, int, Tuple[int, ...]] = 0,
    dilation: Union[int, Tuple[int, int]] = 1,
    groups: int = 1,
) -> Tensor:
    fn = "fastconv.functional.conv2d"
    _check_tensor(fn, "input", input)
    _on_gpu(input)
    _check_tensor(fn, "weight", weight)
    _check_bias(fn, bias)
    batched = _batched(fn, input, 4)
    _check_weight_dim(fn, weight, 4)
    stride = _ints(fn, "stride", stride, 2)
    dilation = _ints(fn, "dilation", dilation, 2)
    pad = _padding(fn, padding, tuple(weight.shape[2:]), stride, dilation)
    x = input if batched else input.unsqueeze(0)
    y = _convolve(fn, ops.conv2d, x, weight, bias, stride, pad, dilation, _int(fn, "groups", groups))
    y = _torch_channels(y, x)
    return y if batched else y.squeeze(0)


ACTIVATIONS = ("none", "relu", "relu6", "silu", "hardswish", "leaky_relu")


def conv2d_fused(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    residual: Optional[Tensor] = None,
    stride: Union[int, Tuple[int, int]] = 1,
    padding: Union[str, int, Tuple[int, ...]] = 0,
    dilation: Union[int, Tuple[int, int]] = 1,
    groups: int = 1,
    activation: str = "none",
    negative_slope: float = 0.01,
) -> Tensor:
    """activation(conv2d(input, weight, bias, stride, padding, dilation, groups) + residual),
    for inference: one operator, whose kernel applies the bias, the residual add and the
    activation while the outputs are still in its registers or cache, where the chosen
    algorithm fuses them (fastconv.algorithms.fused_stages says which), and ATen's ops after
    it where not. residual (optional) has the output's shape; activation is one of
    fastconv.functional.ACTIVATIONS, leaky_relu with negative_slope. Not differentiable: with
    an input that requires grad under grad mode it raises RuntimeError (use conv2d, then the
    add and the activation, to train)."""
    fn = "fastconv.functional.conv2d_fused"
    _check_tensor(fn, "input", input)
    _on_gpu(input)
    _check_tensor(fn, "weight", weight)
    _check_bias(fn, bias)
    if residual is not None and not isinstance(residual, Tensor):
        raise ArgumentTypeError(f"{fn}: argument 'residual' must be a Tensor or None, got {type(residual).__name__}")
    if not isinstance(activation, str):
        raise ArgumentTypeError(f"{fn}: argument 'activation' must be a str, got {type(activation).__name__}")
    if activation not in ACTIVATIONS:
        raise ArgumentError(f"{fn}: argument 'activation' must be one of {', '.join(map(repr, ACTIVATIONS))}, "
                            f"got {activation!r}")
    slope = _float(fn, "negative_slope", negative_slope)
    if _complex.involved(input, weight, bias) or (residual is not None and residual.is_complex()):
        raise ArgumentTypeError(f"{fn}: complex tensors are not supported (the activations are real functions)")
    batched = _batched(fn, input, 4)
    _check_weight_dim(fn, weight, 4)
    stride = _ints(fn, "stride", stride, 2)
    dilation = _ints(fn, "dilation", dilation, 2)
    pad = _padding(fn, padding, tuple(weight.shape[2:]), stride, dilation)
    x = input if batched else input.unsqueeze(0)
    if residual is not None and not batched:
        residual = residual.unsqueeze(0)
    y = torch.ops.fastconv.conv2d_fused(x, weight, bias, residual, stride, pad, dilation,
                                        _int(fn, "groups", groups), activation, slope)
    y = _torch_channels(y, x)
    return y if batched else y.squeeze(0)


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: Union[int, Tuple[int]] = 1,
    padding: Union[str, int, Tuple[int, ...]] = 0,
    dilation: Union[int, Tuple[int]] = 1,
    groups: int = 1,
) -> Tensor:
    fn = "fastconv.functional.conv1d"
    _check_tensor(fn, "input", input)
    _on_gpu(input)
    _check_tensor(fn, "weight", weight)
    _check_bias(fn, bias)
    batched = _batched(fn, input, 3)
    _check_weight_dim(fn, weight, 3)
    stride = _ints(fn, "stride", stride, 1)
    dilation = _ints(fn, "dilation", dilation, 1)
    pad = _padding(fn, padding, tuple(weight.shape[2:]), stride, dilation)
    x = input if batched else input.unsqueeze(0)
    # A 1-D convolution is a 2-D one over rows of height 1.
    y = _convolve(
        fn,
        ops.conv2d,
        x.unsqueeze(2),
        weight.unsqueeze(2),
        bias,
        (1,) + stride,
        (0, 0) + pad,
        (1,) + dilation,
        _int(fn, "groups", groups),
    ).squeeze(2)
    y = _torch_channels(y, x)
    return y if batched else y.squeeze(0)


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: Union[int, Tuple[int, int]] = 1,
    padding: Union[int, Tuple[int, ...]] = 0,
    output_padding: Union[int, Tuple[int, int]] = 0,
    groups: int = 1,
    dilation: Union[int, Tuple[int, int]] = 1,
) -> Tensor:
    fn = "fastconv.functional.conv_transpose2d"
    _check_tensor(fn, "input", input)
    _on_gpu(input)
    _check_tensor(fn, "weight", weight)
    _check_bias(fn, bias)
    batched = _batched(fn, input, 4)
    _check_weight_dim(fn, weight, 4)
    if isinstance(padding, str):
        raise ArgumentError(f"{fn}: argument 'padding' must be an int or a tuple, got {padding!r}")
    x = input if batched else input.unsqueeze(0)
    y = _convolve(
        fn,
        ops.conv_transpose2d,
        x,
        weight,
        bias,
        _ints(fn, "stride", stride, 2),
        _explicit_padding(fn, padding, 2),
        _ints(fn, "output_padding", output_padding, 2),
        _ints(fn, "dilation", dilation, 2),
        _int(fn, "groups", groups),
    )
    return y if batched else y.squeeze(0)


def conv_transpose1d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: Union[int, Tuple[int]] = 1,
    padding: Union[int, Tuple[int, ...]] = 0,
    output_padding: Union[int, Tuple[int]] = 0,
    groups: int = 1,
    dilation: Union[int, Tuple[int]] = 1,
) -> Tensor:
    fn = "fastconv.functional.conv_transpose1d"
    _check_tensor(fn, "input", input)
    _on_gpu(input)
    _check_tensor(fn, "weight", weight)
    _check_bias(fn, bias)
    batched = _batched(fn, input, 3)
    _check_weight_dim(fn, weight, 3)
    if isinstance(padding, str):
        raise ArgumentError(f"{fn}: argument 'padding' must be an int or a tuple, got {padding!r}")
    x = input if batched else input.unsqueeze(0)
    y = _convolve(
        fn,
        ops.conv_transpose2d,
        x.unsqueeze(2),
        weight.unsqueeze(2),
        bias,
        (1,) + _ints(fn, "stride", stride, 1),
        (0, 0) + _explicit_padding(fn, padding, 1),
        (0,) + _ints(fn, "output_padding", output_padding, 1),
        (1,) + _ints(fn, "dilation", dilation, 1),
        _int(fn, "groups", groups),
    ).squeeze(2)
    return y if batched else y.squeeze(0)


def _rois(fn, boxes):
    """torchvision's box formats as one Tensor[K, 5] of (batch index, x1, y1, x2, y2)."""
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise BoxesError(
                f"{fn}: argument 'boxes' as a Tensor must have shape [K, 5], got {tuple(boxes.shape)}"
            )
        _check_box_dtype(fn, boxes)
        return boxes
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
                shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
                raise BoxesError(
                    f"{fn}: argument 'boxes' as a list must hold Tensor[L, 4], one per image; "
                    f"boxes[{i}] is {shape}"
                )
        if not boxes:
            raise BoxesError(f"{fn}: argument 'boxes' is an empty list; give one Tensor[L, 4] per image")
        for b in boxes:
            _check_box_dtype(fn, b)
        concat = torch.cat(list(boxes), dim=0)
        ids = torch.cat(
            [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0
        )
        return torch.cat([ids, concat], dim=1)
    raise BoxesTypeError(
        f"{fn}: argument 'boxes' must be a Tensor[K, 5] or a list of Tensor[L, 4], got "
        f"{type(boxes).__name__}"
    )


def _check_box_dtype(fn, boxes):
    if not boxes.is_floating_point():
        raise ArgumentTypeError(f"{fn}: argument 'boxes' must be a floating-point tensor, got {boxes.dtype}")


def _output_size(fn, output_size):
    size = _ints(fn, "output_size", output_size, 2)
    if any(s <= 0 for s in size):
        raise ArgumentError(f"{fn}: argument 'output_size' must be positive, got {output_size!r}")
    return size


def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """torchvision.ops.roi_align on fastconv's kernels: average of bilinear samples per bin."""
    fn = "fastconv.functional.roi_align"
    _check_tensor(fn, "input", input)
    _on_gpu(input)
    rois = _rois(fn, boxes)
    ph, pw = _output_size(fn, output_size)
    return ops.roi_align(
        input, rois, _float(fn, "spatial_scale", spatial_scale), ph, pw,
        _int(fn, "sampling_ratio", sampling_ratio), _bool(fn, "aligned", aligned),
    )


def multi_level_roi_align(
    features: List[Tensor],
    boxes: Union[Tensor, List[Tensor]],
    levels: Tensor,
    output_size: Union[int, Tuple[int, int]],
    spatial_scales: List[float],
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign of each box from its own feature map, in one pass: box k is pooled from
    features[levels[k]] at spatial_scales[levels[k]]. The FPN pooler's core (levels from
    box sizes: fastconv.nn.MultiScaleRoIAlign); on CUDA one kernel launch for all levels.

    features: 1 to 8 Tensor[N, C, H_l, W_l] of one dtype and device; boxes: as roi_align;
    levels: int64 Tensor[K], one level index per box."""
    fn = "fastconv.functional.multi_level_roi_align"
    if not isinstance(features, (list, tuple)) or not features:
        raise ArgumentTypeError(f"{fn}: argument 'features' must be a non-empty list of Tensors, got {type(features).__name__}")
    for i, f in enumerate(features):
        _check_tensor(fn, f"features[{i}]", f)
    _on_gpu(features[0])
    rois = _rois(fn, boxes)
    _check_tensor(fn, "levels", levels)
    if not isinstance(spatial_scales, (list, tuple)):
        raise ArgumentTypeError(f"{fn}: argument 'spatial_scales' must be a list of floats, got {type(spatial_scales).__name__}")
    scales = [_float(fn, f"spatial_scales[{i}]", s) for i, s in enumerate(spatial_scales)]
    ph, pw = _output_size(fn, output_size)
    return ops.roi_align_multilevel(
        list(features), rois, levels, scales, ph, pw,
        _int(fn, "sampling_ratio", sampling_ratio), _bool(fn, "aligned", aligned),
    )


def roi_pool(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
) -> Tensor:
    """torchvision.ops.roi_pool on fastconv's kernels: maximum per bin of the quantised box."""
    fn = "fastconv.functional.roi_pool"
    _check_tensor(fn, "input", input)
    _on_gpu(input)
    rois = _rois(fn, boxes)
    ph, pw = _output_size(fn, output_size)
    return ops.roi_pool(input, rois, _float(fn, "spatial_scale", spatial_scale), ph, pw)[0]
