"""The convolution block that the detection modules share, and their argument checks (from
fastconv._boxes, which fastconv.nn shares)."""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from ... import nn as fnn
from ..._boxes import (  # noqa: F401
    _box_list,
    _boxes_tensor,
    _feature_list,
    _image_size,
    _int_list,
    _non_negative_int,
    _number,
    _pooling,
)


class _ConvReLU(nn.Sequential):
    """3×3 convolution [+ normalisation] + ReLU, indexed as torchvision.ops.Conv2dNormActivation
    (0: conv, then norm, then ReLU) so that its state_dict keys are the same."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1,
                 norm_layer: Optional[Callable[[int], nn.Module]] = None):
        # A normalisation layer's shift makes the convolution's bias redundant.
        layers: list[nn.Module] = [
            fnn.Conv2d(in_channels, out_channels, 3, stride=1, padding=dilation, dilation=dilation,
                       bias=norm_layer is None)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
