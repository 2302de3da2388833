"""The Region Proposal Network's head."""

from __future__ import annotations

from typing import Sequence, Union

from torch import Tensor, nn

from ... import nn as fnn
from .._checks import positive_int as _positive_int
from ._utils import _ConvReLU, _feature_list, _non_negative_int

__all__ = ["RPNHead"]


class RPNHead(nn.Module):
    """The Region Proposal Network's head: at every position of every feature map, a 3×3
    convolution + ReLU (repeated `conv_depth` times) and then two sibling 1×1 convolutions,
    `cls_logits` (one objectness logit per anchor) and `bbox_pred` (4 deltas per anchor).

    forward(x: list of Tensor[N, C, H, W]) -> (list of logits [N, A, H, W],
    list of deltas [N, 4A, H, W]), one entry per feature map (FPN level)."""

    # Version 2 is torchvision's layout with `conv` a Sequential of conv blocks; older
    # checkpoints stored the single convolution as `conv.weight`.
    _version = 2

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1) -> None:
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("num_anchors", num_anchors)
        _non_negative_int("conv_depth", conv_depth)
        self.conv = nn.Sequential(*[_ConvReLU(in_channels, in_channels) for _ in range(conv_depth)])
        self.cls_logits = fnn.Conv2d(in_channels, num_anchors, kernel_size=1, stride=1)
        self.bbox_pred = fnn.Conv2d(in_channels, num_anchors * 4, kernel_size=1, stride=1)
        # Small initial weights make every anchor start near "unsure" with no box change.
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        if local_metadata.get("version") is None or local_metadata["version"] < 2:
            for kind in ("weight", "bias"):
                legacy = f"{prefix}conv.{kind}"
                if legacy in state_dict:
                    state_dict[f"{prefix}conv.0.0.{kind}"] = state_dict.pop(legacy)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: Union[Tensor, Sequence[Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for feature in _feature_list("RPNHead input", x):
            t = self.conv(feature)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas
