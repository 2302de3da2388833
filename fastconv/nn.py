"""Drop-in layers. Each convolution layer subclasses its torch.nn namesake, so it takes the
same arguments, initialises the same weights from the same seed, has the same state_dict keys
and repr, passes isinstance checks, and only its convolution runs on fastconv's kernels."""

from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair, _single

from . import functional as F
from . import routing
from ._pooler import RoIPooler

__all__ = [
    "MultiScaleRoIAlign",
    "RoIPooler",
    "Conv1d",
    "Conv2d",
    "FusedConv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "RoIAlign",
    "RoIPool",
    "convert",
]


class Conv1d(torch.nn.Conv1d):
    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(
                input, self._reversed_padding_repeated_twice, mode=self.padding_mode
            )
            return F.conv1d(input, weight, bias, self.stride, _single(0), self.dilation, self.groups)
        return F.conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(torch.nn.Conv2d):
    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(
                input, self._reversed_padding_repeated_twice, mode=self.padding_mode
            )
            return F.conv2d(input, weight, bias, self.stride, _pair(0), self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


_TORCH_ACTIVATIONS = {
    "none": lambda y, slope: y,
    "relu": lambda y, slope: torch.nn.functional.relu(y),
    "relu6": lambda y, slope: torch.nn.functional.relu6(y),
    "silu": lambda y, slope: torch.nn.functional.silu(y),
    "hardswish": lambda y, slope: torch.nn.functional.hardswish(y),
    "leaky_relu": lambda y, slope: torch.nn.functional.leaky_relu(y, slope),
}


class FusedConv2d(Conv2d):
    """A Conv2d, then an optional residual add, then an activation:
    activation(conv(input) + residual), as one fastconv::conv2d_fused call, whose kernel
    applies the add and the activation before its one rounding where the chosen algorithm
    fuses them. fastconv.fuse() puts it in place of a convolution (its BatchNorm folded in)
    and the add and activation that follow it; it can also be built directly. The same
    arguments and state_dict as Conv2d, plus activation (one of
    fastconv.functional.ACTIVATIONS) and negative_slope (leaky_relu's).

    forward(input, residual=None). Where a gradient is needed (grad mode on and an input or
    a parameter requiring grad) it runs the same sequence as separate differentiable ops, so
    it trains correctly; the fused operator itself is for inference. A residual that is not
    of the output's shape (one that broadcasts) also takes the separate ops."""

    def __init__(self, *args, activation: str = "none", negative_slope: float = 0.01, **kwargs):
        super().__init__(*args, **kwargs)
        if activation not in _TORCH_ACTIVATIONS:
            raise ValueError(f"fastconv.nn.FusedConv2d: activation must be one of "
                             f"{', '.join(map(repr, _TORCH_ACTIVATIONS))}, got {activation!r}")
        self.activation = activation
        self.negative_slope = float(negative_slope)

    @classmethod
    def from_conv(cls, conv: torch.nn.Conv2d, activation: str = "none",
                  negative_slope: float = 0.01) -> "FusedConv2d":
        """A FusedConv2d holding conv's own parameters (not copies)."""
        fused = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                    device="meta", dtype=conv.weight.dtype, activation=activation,
                    negative_slope=negative_slope)
        fused.weight = conv.weight
        fused.bias = conv.bias
        fused.train(conv.training)
        return fused

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.activation != "none":
            s += f", activation={self.activation}"
            if self.activation == "leaky_relu":
                s += f", negative_slope={self.negative_slope}"
        return s

    def _output_shape(self, input: Tensor) -> Tuple[int, ...]:
        from ._conv_formulas import conv_output_size

        # (left, right, top, bottom), for every padding mode and for "same" and "valid".
        left, right, top, bottom = self._reversed_padding_repeated_twice
        pads = ((top, bottom), (left, right))
        sizes = [conv_output_size(input.shape[-2 + i], self.kernel_size[i], *pads[i], self.stride[i],
                                  self.dilation[i]) for i in range(2)]
        return (*input.shape[:-3], self.out_channels, *sizes)

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (input, self.weight, self.bias, residual))
        if needs_grad or (residual is not None and tuple(residual.shape) != self._output_shape(input)):
            y = self._conv_forward(input, self.weight, self.bias)
            if residual is not None:
                y = y + residual
            return _TORCH_ACTIVATIONS[self.activation](y, self.negative_slope)
        x, padding = input, self.padding
        if self.padding_mode != "zeros":
            x = torch.nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = _pair(0)
        return F.conv2d_fused(x, self.weight, self.bias, residual, self.stride, padding, self.dilation,
                              self.groups, self.activation, self.negative_slope)


class ConvTranspose1d(torch.nn.ConvTranspose1d):
    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose1d")
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 1, self.dilation
        )
        return F.conv_transpose1d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
            self.dilation,
        )


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        return F.conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
            self.dilation,
        )


class RoIAlign(torch.nn.Module):
    """torchvision.ops.RoIAlign on fastconv's kernels."""

    def __init__(
        self,
        output_size: Union[int, Tuple[int, int]],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return F.roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, "
            f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, "
            f"aligned={self.aligned})"
        )


class RoIPool(torch.nn.Module):
    """torchvision.ops.RoIPool on fastconv's kernels."""

    def __init__(self, output_size: Union[int, Tuple[int, int]], spatial_scale: float):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return F.roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, "
            f"spatial_scale={self.spatial_scale})"
        )


class MultiScaleRoIAlign(torch.nn.Module):
    """torchvision.ops.MultiScaleRoIAlign on fastconv: the FPN pooler. Each box is pooled
    from the feature map its size picks (a box of side canonical_scale from level
    canonical_level, one level per factor two), all levels in one pass (on CUDA, one kernel
    launch: fastconv.functional.multi_level_roi_align).

    forward(x, boxes, image_shapes): x a dict of feature maps (those named in featmap_names
    are pooled, in the dict's order, finest first), boxes one Tensor[L, 4] of (x1, y1, x2, y2)
    per image, image_shapes the images' (height, width), from which the scales follow."""

    def __init__(self, featmap_names: List[str], output_size: Union[int, Tuple[int, int]],
                 sampling_ratio: int, *, canonical_scale: int = 224, canonical_level: int = 4):
        super().__init__()
        if isinstance(featmap_names, str) or not isinstance(featmap_names, (list, tuple)):
            raise TypeError(f"MultiScaleRoIAlign: featmap_names must be a list of str, got {featmap_names!r}")
        self.featmap_names = list(featmap_names)
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.pooler = RoIPooler(output_size, "align", sampling_ratio, aligned=False,
                                featmap_names=self.featmap_names, canonical_scale=canonical_scale,
                                canonical_level=canonical_level)

    def forward(self, x, boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        return self.pooler(x, boxes, image_shapes)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
                f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})")


_REPLACEMENTS = {
    torch.nn.Conv1d: Conv1d,
    torch.nn.Conv2d: Conv2d,
    torch.nn.ConvTranspose1d: ConvTranspose1d,
    torch.nn.ConvTranspose2d: ConvTranspose2d,
}


def convert(model: torch.nn.Module, functional: bool = False) -> torch.nn.Module:
    """Runs every torch.nn Conv1d, Conv2d, ConvTranspose1d and ConvTranspose2d inside model on
    fastconv, in place, and returns model.

    Each layer keeps its very parameter objects, buffers, hooks and attributes: only its class
    changes to the fastconv subclass, which adds no state. Layers of other subclasses of those
    classes (which may override forward) are left alone.

    functional=True also runs model's forward under fastconv.route_functional(), so that the
    torch.nn.functional convolutions those subclasses and any other code call reach fastconv
    too: a forward pre-hook on model enters the mode and a forward hook registered with
    always_call=True leaves it, even when forward raises (fastconv.routing.install; converting
    twice installs it once). Calling model.forward() directly bypasses the hooks."""
    if not isinstance(functional, bool):
        raise TypeError(f"convert(): functional must be a bool, got {type(functional).__name__}")
    for module in model.modules():
        replacement = _REPLACEMENTS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
    if functional:
        routing.install(model)
    return model
