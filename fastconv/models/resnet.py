"""ResNet (He et al., 2015) and ResNeXt (Xie et al., 2016) on fastconv convolutions.

The lecture's argument for residual learning: a deeper network should never train worse than
a shallower one, because its extra layers could be identities. Making each block learn a
residual F(x) and output F(x) + x makes the identity the easy default, and lets 152 layers
train. ResNeXt keeps the bottleneck block but splits its 3×3 convolution into `groups`
parallel paths ("cardinality"), which beats a plain ResNet of the same FLOPs and parameters.

Module names, constructor arguments and state_dict keys mirror torchvision.models.resnet*, so
a torchvision state_dict loads with strict=True and gives the same outputs. As in torchvision
(ResNet "v1.5"), a bottleneck block strides in its 3×3 convolution, not in the first 1×1.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Type, Union

import torch
from torch import nn

from .. import nn as fnn
from ._checks import positive_int as _positive_int
from ._registry import load_weights, register_model

__all__ = [
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
             dilation: int = 1) -> fnn.Conv2d:
    # padding = dilation keeps the spatial size for any dilation; no bias, BN follows.
    return fnn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation,
                      groups=groups, bias=False, dilation=dilation)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> fnn.Conv2d:
    return fnn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions and the shortcut: the block of ResNet-18 and -34."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Optional[Callable[[int], nn.Module]] = None,
    ) -> None:
        super().__init__()
        if groups != 1:
            raise ValueError(f"BasicBlock supports only groups=1, got groups={groups}")
        if base_width != 64:
            raise ValueError(f"BasicBlock supports only width_per_group=64, got {base_width}")
        if dilation != 1:
            raise ValueError(
                f"BasicBlock does not support dilation (got dilation={dilation}); "
                "replace_stride_with_dilation needs a Bottleneck network such as resnet50"
            )
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (grouped for ResNeXt), 1×1 expand by 4, and the shortcut: the block of
    ResNet-50 and deeper. The stride sits on the 3×3 convolution."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Optional[Callable[[int], nn.Module]] = None,
    ) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d if norm_layer is None else norm_layer
        # ResNeXt's "32x4d" means 32 groups of width 4 at planes=64; the width scales with
        # planes so that every stage keeps the same per-group ratio.
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A ResNet: 7×7 stride-2 stem and 3×3 max-pool, four stages of `layers[i]` blocks at 64,
    128, 256 and 512 planes (stages 2–4 halve the resolution), global average pooling and a
    fully connected classifier `fc`.

    replace_stride_with_dilation: three bools, one for each of stages 2–4; True keeps that
    stage's resolution and dilates its 3×3 convolutions instead (DeepLab-style dense features,
    output stride 16 or 8). Only Bottleneck blocks support it.
    """

    def __init__(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        layers: Sequence[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Optional[Sequence[bool]] = None,
        norm_layer: Optional[Callable[[int], nn.Module]] = None,
    ) -> None:
        super().__init__()
        if not (isinstance(block, type) and issubclass(block, (BasicBlock, Bottleneck))):
            raise TypeError(f"block must be BasicBlock or Bottleneck (or a subclass), got {block!r}")
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or len(layers) != 4:
            raise ValueError(f"layers must be a sequence of 4 block counts, got {layers!r}")
        layers = [_positive_int("layers[%d]" % i, n) for i, n in enumerate(layers)]
        _positive_int("num_classes", num_classes)
        _positive_int("groups", groups)
        _positive_int("width_per_group", width_per_group)
        if not isinstance(zero_init_residual, bool):
            raise TypeError(f"zero_init_residual must be a bool, got {type(zero_init_residual).__name__}")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if (
            isinstance(replace_stride_with_dilation, (str, bytes))
            or not isinstance(replace_stride_with_dilation, Sequence)
            or len(replace_stride_with_dilation) != 3
            or not all(d is True or d is False or d in (0, 1) for d in replace_stride_with_dilation)
        ):
            raise ValueError(
                "replace_stride_with_dilation must be None or a sequence of 3 bools, "
                f"got {replace_stride_with_dilation!r}"
            )
        replace_stride_with_dilation = [bool(d) for d in replace_stride_with_dilation]
        if issubclass(block, BasicBlock):
            if groups != 1 or width_per_group != 64:
                raise ValueError(
                    "ResNet with BasicBlock supports only groups=1 and width_per_group=64, "
                    f"got groups={groups}, width_per_group={width_per_group}"
                )
            if any(replace_stride_with_dilation):
                raise ValueError(
                    "replace_stride_with_dilation needs Bottleneck blocks (resnet50 and deeper); "
                    "BasicBlock has no dilated form"
                )
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        elif not callable(norm_layer):
            raise TypeError(f"norm_layer must be callable (channels -> module), got {norm_layer!r}")
        self._norm_layer = norm_layer

        self.inplanes = 64
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        # The stem, then the four stages, in torchvision's construction order: the order the
        # layers draw their default initialisation from the random generator.
        self.conv1 = fnn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        dilate = replace_stride_with_dilation
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch then starts as zero and each block as the identity: the
            # lecture's "extra layers set as identity" made literal (Goyal et al., 2017).
            for m in self.modules():
                last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if last_bn is not None and getattr(last_bn, "weight", None) is not None:
                    nn.init.zeros_(last_bn.weight)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        norm_layer = self._norm_layer
        first_dilation = self.dilation
        if dilate:
            # Trade this stage's stride for dilation: the resolution stays, the receptive field
            # still grows as if the stride were there. The first block keeps the previous
            # dilation, since its input has not been "strided" yet.
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # A projection shortcut (1×1 convolution + norm) where the shapes change.
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                       first_dilation, norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            stage.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                               dilation=self.dilation, norm_layer=norm_layer))
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _resnet(block, layers, weights, **kwargs) -> ResNet:
    return load_weights(ResNet(block, layers, **kwargs), weights)


def _fixed_by_name(builder: str, name: str, value, fixed) -> None:
    # resnext50_32x4d's name fixes groups=32, width 4; another value would silently build a
    # different network under the same name.
    if value != fixed:
        raise ValueError(
            f"{builder}: {name} is fixed at {fixed} by the model name, got {value}; "
            "build ResNet(Bottleneck, layers, groups=..., width_per_group=...) for other widths"
        )


# The builders take torchvision's keyword arguments (num_classes, zero_init_residual, groups,
# width_per_group, replace_stride_with_dilation, norm_layer) and hand them to ResNet, which
# checks them; an unknown one is a TypeError naming it.


@register_model
def resnet18(*, weights=None, **kwargs) -> ResNet:
    """ResNet-18: BasicBlocks [2, 2, 2, 2], 11,689,512 parameters for 1000 classes."""
    return _resnet(BasicBlock, [2, 2, 2, 2], weights, **kwargs)


@register_model
def resnet34(*, weights=None, **kwargs) -> ResNet:
    """ResNet-34: BasicBlocks [3, 4, 6, 3], 21,797,672 parameters for 1000 classes."""
    return _resnet(BasicBlock, [3, 4, 6, 3], weights, **kwargs)


@register_model
def resnet50(*, weights=None, **kwargs) -> ResNet:
    """ResNet-50: Bottlenecks [3, 4, 6, 3], 25,557,032 parameters for 1000 classes."""
    return _resnet(Bottleneck, [3, 4, 6, 3], weights, **kwargs)


@register_model
def resnet101(*, weights=None, **kwargs) -> ResNet:
    """ResNet-101: Bottlenecks [3, 4, 23, 3], 44,549,160 parameters for 1000 classes."""
    return _resnet(Bottleneck, [3, 4, 23, 3], weights, **kwargs)


@register_model
def resnet152(*, weights=None, **kwargs) -> ResNet:
    """ResNet-152, the lecture's ILSVRC 2015 winner: Bottlenecks [3, 8, 36, 3], 60,192,808
    parameters for 1000 classes."""
    return _resnet(Bottleneck, [3, 8, 36, 3], weights, **kwargs)


@register_model
def resnext50_32x4d(*, weights=None, **kwargs) -> ResNet:
    """ResNeXt-50 32×4d: ResNet-50's layout with 32 groups of width 4 in the 3×3
    convolutions, 25,028,904 parameters for 1000 classes."""
    return _resnext("resnext50_32x4d", [3, 4, 6, 3], 32, 4, weights, kwargs)


@register_model
def resnext101_32x8d(*, weights=None, **kwargs) -> ResNet:
    """ResNeXt-101 32×8d: ResNet-101's layout with 32 groups of width 8 in the 3×3
    convolutions, 88,791,336 parameters for 1000 classes."""
    return _resnext("resnext101_32x8d", [3, 4, 23, 3], 32, 8, weights, kwargs)


def _resnext(builder: str, layers, groups: int, width: int, weights, kwargs) -> ResNet:
    _fixed_by_name(builder, "groups", kwargs.setdefault("groups", groups), groups)
    _fixed_by_name(builder, "width_per_group", kwargs.setdefault("width_per_group", width), width)
    return _resnet(Bottleneck, layers, weights, **kwargs)
