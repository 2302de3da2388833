"""The per-RoI heads: box (TwoMLPHead, FastRCNNPredictor), mask (MaskRCNNHeads,
MaskRCNNPredictor) and keypoint (KeypointRCNNHeads, KeypointRCNNPredictor)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional, Sequence

import torch.fx
import torch.nn.functional as TF
from torch import Tensor, nn

from ... import nn as fnn
from .._checks import positive_int as _positive_int
from ._utils import _ConvReLU, _int_list

__all__ = [
    "TwoMLPHead",
    "FastRCNNPredictor",
    "MaskRCNNHeads",
    "MaskRCNNPredictor",
    "KeypointRCNNHeads",
    "KeypointRCNNPredictor",
]


# --------------------------------------------------------------------------- box head

def _checked_roi_features(x: Tensor, features: int) -> Tensor:
    """x [K, C·H·W], after checking that it has the box head's number of features."""
    if x.shape[1] != features:
        raise ValueError(f"TwoMLPHead: expected {features} features per RoI (C·H·W), got {x.shape[1]}")
    return x


def _checked_predictor_input(x: Tensor) -> Tensor:
    """x, after checking that it is [K, C] or [K, C, 1, 1]."""
    if x.dim() == 4 and tuple(x.shape[2:]) != (1, 1):
        raise ValueError(
            f"FastRCNNPredictor: a 4-D input must be [K, C, 1, 1], got {tuple(x.shape)}"
        )
    if x.dim() not in (2, 4):
        raise ValueError(f"FastRCNNPredictor: input must be [K, C] or [K, C, 1, 1], got {tuple(x.shape)}")
    return x


# Leaves for torch.fx (see fastconv.functional): the checks read the input's shape, so symbolic
# tracing records one call to each, which runs when the traced module runs.
torch.fx.wrap("_checked_roi_features")
torch.fx.wrap("_checked_predictor_input")


class TwoMLPHead(nn.Module):
    """Fast R-CNN's box head: the flattened C×7×7 RoI feature through two fully connected
    layers with ReLU (`fc6`, `fc7`)."""

    def __init__(self, in_channels: int, representation_size: int):
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("representation_size", representation_size)
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        x = _checked_roi_features(x.flatten(start_dim=1), self.fc6.in_features)
        return TF.relu(self.fc7(TF.relu(self.fc6(x))))


class FastRCNNPredictor(nn.Module):
    """Per-RoI class scores (`cls_score`, num_classes including background) and class-specific
    box deltas (`bbox_pred`, 4 per class).

    forward(x: Tensor[K, C] or [K, C, 1, 1]) -> (scores [K, num_classes], deltas [K, 4·num_classes])"""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("num_classes", num_classes)
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _checked_predictor_input(x).flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


# --------------------------------------------------------------------------- mask head

class MaskRCNNHeads(nn.Sequential):
    """Mask R-CNN's mask head: one 3×3 convolution + ReLU per entry of `layers` (torchvision
    uses four of 256), optionally normalised (`norm_layer`, e.g. GroupNorm in the v2 model),
    at a fixed 14×14 resolution."""

    # Version 1 checkpoints named the convolutions mask_fcn1..mask_fcnN.
    _version = 2

    def __init__(self, in_channels: int, layers: Sequence[int], dilation: int,
                 norm_layer: Optional[Callable[[int], nn.Module]] = None):
        _positive_int("in_channels", in_channels)
        widths = _int_list("layers", layers)
        _positive_int("dilation", dilation)
        blocks, channels = [], in_channels
        for width in widths:
            blocks.append(_ConvReLU(channels, width, dilation=dilation, norm_layer=norm_layer))
            channels = width
        super().__init__(*blocks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        if local_metadata.get("version") is None or local_metadata["version"] < 2:
            for i in range(len(self)):
                for kind in ("weight", "bias"):
                    legacy = f"{prefix}mask_fcn{i + 1}.{kind}"
                    if legacy in state_dict:
                        state_dict[f"{prefix}{i}.0.{kind}"] = state_dict.pop(legacy)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class MaskRCNNPredictor(nn.Sequential):
    """`conv5_mask`: 2×2 stride-2 transposed convolution (14×14 → 28×28), ReLU, then
    `mask_fcn_logits`: a 1×1 convolution giving one mask logit map per class."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        _positive_int("in_channels", in_channels)
        _positive_int("dim_reduced", dim_reduced)
        _positive_int("num_classes", num_classes)
        super().__init__(OrderedDict([
            ("conv5_mask", fnn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", fnn.Conv2d(dim_reduced, num_classes, 1, 1, 0)),
        ]))
        # The biases keep their PyTorch default initialisation, as in torchvision.
        for name, param in self.named_parameters():
            if name.endswith("weight"):
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")


# --------------------------------------------------------------------------- keypoint head

class KeypointRCNNHeads(nn.Sequential):
    """Keypoint head: 3×3 convolution + ReLU per entry of `layers` (torchvision: eight of 512).
    Indexed conv, relu, conv, relu, ... as torchvision's."""

    def __init__(self, in_channels: int, layers: Sequence[int]):
        _positive_int("in_channels", in_channels)
        widths = _int_list("layers", layers)
        modules: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            modules.append(fnn.Conv2d(channels, width, 3, stride=1, padding=1))
            modules.append(nn.ReLU(inplace=True))
            channels = width
        super().__init__(*modules)
        for module in self.children():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)


class KeypointRCNNPredictor(nn.Module):
    """One heatmap per keypoint: `kps_score_lowres`, a 4×4 stride-2 transposed convolution
    (14×14 → 28×28, the lecture's 28×28×17), then bilinear ×2 upsampling (→ 56×56)."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("num_keypoints", num_keypoints)
        kernel = 4
        self.kps_score_lowres = fnn.ConvTranspose2d(
            in_channels, num_keypoints, kernel, stride=2, padding=kernel // 2 - 1
        )
        nn.init.kaiming_normal_(self.kps_score_lowres.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.kps_score_lowres.bias)
        self.up_scale = 2
        self.out_channels = num_keypoints

    def forward(self, x: Tensor) -> Tensor:
        x = self.kps_score_lowres(x)
        return TF.interpolate(x, scale_factor=float(self.up_scale), mode="bilinear",
                              align_corners=False, recompute_scale_factor=False)
