"""Fast / Faster / Mask R-CNN heads (the lecture's "Generalized R-CNN" part) on fastconv layers.

A two-stage detector runs a backbone once over the whole image, proposes boxes (the RPN: a
3×3 convolution and two 1×1 convolutions slid over every feature map), then crops a fixed
size feature grid for every proposal (RoIPool in Fast R-CNN, RoIAlign in Mask R-CNN) and runs
small per-box heads on the crops:

- box head: 7×7 crop → `TwoMLPHead` (fc6, fc7) → `FastRCNNPredictor` (class scores and
  class-specific box deltas);
- mask head: 14×14 crop → `MaskRCNNHeads` (3×3 convolutions) → `MaskRCNNPredictor` (2×2
  stride-2 transposed convolution to 28×28, one mask logit map per class);
- keypoint head: 14×14 crop → `KeypointRCNNHeads` (eight 3×3 convolutions of 512) →
  `KeypointRCNNPredictor` (transposed convolution to 28×28, bilinear ×2 to 56×56), one
  heatmap per keypoint.

Class names, constructor arguments and state_dict keys mirror torchvision.models.detection,
so a torchvision head's state_dict (or a whole `model.roi_heads.state_dict()`) loads with
strict=True and gives the same outputs. `RoIPooler` replaces torchvision's MultiScaleRoIAlign:
it pools from one feature map at a given spatial scale, or from FPN levels assigned by box
size as torchvision does, and can use RoIPool instead of RoIAlign so that the lecture's
RoIPool-vs-RoIAlign comparison can be run on identical heads. `RoIHeads` is the second stage
at inference: it takes feature maps, proposals and image sizes and returns boxes, labels,
scores, masks pasted into the image and keypoints. Training-time sampling and losses are
not included (train a head directly on pooled features; see examples/detection_heads.py).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .. import functional as FC
from .. import nn as fnn
from ._checks import positive_int as _positive_int
from ._registry import load_weights, register_model

__all__ = [
    "RPNHead",
    "TwoMLPHead",
    "FastRCNNPredictor",
    "MaskRCNNHeads",
    "MaskRCNNPredictor",
    "KeypointRCNNHeads",
    "KeypointRCNNPredictor",
    "RoIPooler",
    "RoIHeads",
    "BoxCoder",
    "box_area",
    "box_iou",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "nms",
    "batched_nms",
    "paste_masks_in_image",
    "heatmaps_to_keypoints",
    "fasterrcnn_heads",
    "maskrcnn_heads",
    "keypointrcnn_heads",
]

_POOLINGS = ("align", "pool")


# --------------------------------------------------------------------------- argument checks

def _non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _number(name: str, value, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


def _pooling(value) -> str:
    if not isinstance(value, str) or value not in _POOLINGS:
        raise ValueError(f"pooling must be one of {_POOLINGS}, got {value!r}")
    return value


def _int_list(name: str, values) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise TypeError(f"{name} must be a non-empty sequence of ints, got {values!r}")
    return [_positive_int(f"{name}[{i}]", v) for i, v in enumerate(values)]


def _boxes_tensor(name: str, boxes) -> Tensor:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a Tensor[K, 4], got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [K, 4], got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {boxes.dtype}")
    return boxes


def _image_size(name: str, size) -> tuple[int, int]:
    if isinstance(size, Tensor):
        size = size.tolist()
    if not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"{name} must be (height, width), got {size!r}")
    return _positive_int(f"{name}[0] (height)", size[0]), _positive_int(f"{name}[1] (width)", size[1])


def _box_list(name: str, boxes, num_images: Optional[int] = None) -> list[Tensor]:
    if isinstance(boxes, Tensor) or not isinstance(boxes, (list, tuple)):
        raise TypeError(f"{name} must be a list with one Tensor[L, 4] per image, got {type(boxes).__name__}")
    boxes = [_boxes_tensor(f"{name}[{i}]", b) for i, b in enumerate(boxes)]
    if num_images is not None and len(boxes) != num_images:
        raise ValueError(f"{name} holds {len(boxes)} images' boxes, but the features hold {num_images} images")
    return boxes


# --------------------------------------------------------------------------- RPN

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


def _feature_list(name: str, x) -> list[Tensor]:
    if isinstance(x, Tensor):
        x = [x]
    if not isinstance(x, (list, tuple)) or not x:
        raise TypeError(f"{name} must be a Tensor or a non-empty list of Tensor[N, C, H, W], got {type(x).__name__}")
    for i, t in enumerate(x):
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}[{i}] must be a Tensor[N, C, H, W], got {shape}")
    return list(x)


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


# --------------------------------------------------------------------------- box head

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
        x = x.flatten(start_dim=1)
        if x.shape[1] != self.fc6.in_features:
            raise ValueError(
                f"TwoMLPHead: expected {self.fc6.in_features} features per RoI (C·H·W), got {x.shape[1]}"
            )
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
        if x.dim() == 4 and tuple(x.shape[2:]) != (1, 1):
            raise ValueError(
                f"FastRCNNPredictor: a 4-D input must be [K, C, 1, 1], got {tuple(x.shape)}"
            )
        if x.dim() not in (2, 4):
            raise ValueError(f"FastRCNNPredictor: input must be [K, C] or [K, C, 1, 1], got {tuple(x.shape)}")
        x = x.flatten(start_dim=1)
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


# --------------------------------------------------------------------------- RoI pooling

def box_area(boxes: Tensor) -> Tensor:
    """Area of each (x1, y1, x2, y2) box."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


class RoIPooler(nn.Module):
    """Crops a fixed-size feature grid for every box, with RoIAlign or RoIPool.

    Args:
        output_size: int or (height, width) of each crop (7 for box heads, 14 for mask and
            keypoint heads).
        pooling: "align" (fastconv RoIAlign: bilinear samples, no rounding) or "pool"
            (fastconv RoIPool: box and bins rounded to the feature grid, max per bin).
        sampling_ratio: RoIAlign's samples per bin side (<= 0: adaptive); torchvision's
            detectors use 2.
        aligned: RoIAlign's half-pixel shift. The Mask R-CNN paper's RoIAlign is aligned=True;
            torchvision's pretrained detectors were trained with False, the default here.
        spatial_scale: feature size / image size, one float per level. None infers it from
            the image sizes as the nearest power of two, as torchvision does.
        featmap_names: when features come as a dict, the keys to pool from (in the dict's
            order); None uses them all.
        canonical_scale, canonical_level: the FPN rule for several levels: a box of side
            sqrt(area) = canonical_scale pools from level canonical_level, each factor two in
            size moves one level (clamped to the levels given).

    forward(features, boxes, image_sizes=None): features is one Tensor[N, C, H, W], a list of
    them (FPN levels, finest first) or a dict of them; boxes is a list with one Tensor[L, 4]
    of (x1, y1, x2, y2) in image pixels per image; image_sizes is a list of (height, width)
    (needed only when spatial_scale is None). Returns Tensor[sum L, C, *output_size].
    """

    def __init__(self, output_size: Union[int, Sequence[int]], pooling: str = "align",
                 sampling_ratio: int = 2, aligned: bool = False,
                 spatial_scale: Union[None, float, Sequence[float]] = None,
                 featmap_names: Optional[Sequence[str]] = None,
                 canonical_scale: int = 224, canonical_level: int = 4):
        super().__init__()
        if isinstance(output_size, int) and not isinstance(output_size, bool):
            output_size = (output_size, output_size)
        if not isinstance(output_size, Sequence) or len(output_size) != 2:
            raise ValueError(f"output_size must be an int or (height, width), got {output_size!r}")
        self.output_size = tuple(_positive_int("output_size", s) for s in output_size)
        self.pooling = _pooling(pooling)
        if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
            raise TypeError(f"sampling_ratio must be an int, got {type(sampling_ratio).__name__}")
        self.sampling_ratio = sampling_ratio
        if not isinstance(aligned, bool):
            raise TypeError(f"aligned must be a bool, got {type(aligned).__name__}")
        self.aligned = aligned
        if spatial_scale is not None:
            scales = [spatial_scale] if isinstance(spatial_scale, (int, float)) else list(spatial_scale)
            if not scales:
                raise ValueError("spatial_scale must not be empty")
            spatial_scale = [_number("spatial_scale", s, low=1e-12) for s in scales]
        self.spatial_scale = spatial_scale
        if featmap_names is not None:
            if isinstance(featmap_names, str) or not all(isinstance(n, str) for n in featmap_names):
                raise TypeError(f"featmap_names must be a list of str, got {featmap_names!r}")
            featmap_names = list(featmap_names)
        self.featmap_names = featmap_names
        self.canonical_scale = _positive_int("canonical_scale", canonical_scale)
        self.canonical_level = _positive_int("canonical_level", canonical_level)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, pooling={self.pooling!r}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, "
                f"spatial_scale={self.spatial_scale}, featmap_names={self.featmap_names}")

    def _levels(self, features) -> list[Tensor]:
        if isinstance(features, Mapping):
            names = list(features) if self.featmap_names is None else self.featmap_names
            missing = [n for n in names if n not in features]
            if missing:
                raise ValueError(f"RoIPooler: features has no level named {missing}; it has {list(features)}")
            # The dict's order, not featmap_names' order, decides the level order (as torchvision).
            return _feature_list("features", [v for k, v in features.items() if k in names])
        return _feature_list("features", features)

    def _scales(self, levels: list[Tensor], image_sizes) -> list[float]:
        if self.spatial_scale is not None:
            if len(self.spatial_scale) != len(levels):
                raise ValueError(
                    f"RoIPooler: spatial_scale gives {len(self.spatial_scale)} scales for {len(levels)} feature maps"
                )
            return self.spatial_scale
        if image_sizes is None:
            raise ValueError("RoIPooler: give image_sizes, or construct the pooler with a spatial_scale")
        sizes = [_image_size(f"image_sizes[{i}]", s) for i, s in enumerate(image_sizes)]
        if not sizes:
            raise ValueError("RoIPooler: image_sizes is empty")
        # The batch's largest height sets the scale (as torchvision), rounded to a power of two
        # because backbones halve the resolution stage by stage.
        height = max(h for h, _ in sizes)
        return [2.0 ** round(math.log2(level.shape[-2] / height)) for level in levels]

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        if self.pooling == "align":
            return FC.roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)
        return FC.roi_pool(feature, rois, self.output_size, scale)

    def forward(self, features, boxes: Sequence[Tensor], image_sizes=None) -> Tensor:
        levels = self._levels(features)
        boxes = _box_list("boxes", boxes, levels[0].shape[0])
        scales = self._scales(levels, image_sizes)
        first = levels[0]
        rois = torch.cat(
            [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
        ).to(first.dtype)
        if len(levels) == 1:
            return self._pool(first, rois, scales[0])

        k = [-math.log2(s) for s in scales]
        k_min, k_max = round(k[0]), round(k[-1])
        if any(abs(a - round(a)) > 1e-6 for a in k) or [round(a) for a in k] != list(range(k_min, k_max + 1)):
            raise ValueError(f"RoIPooler: several feature maps need consecutive power-of-two scales, got {scales}")
        size = torch.sqrt(box_area(rois[:, 1:]))
        # FPN's rule: a canonical_scale-sized box pools from canonical_level; eps keeps boxes of
        # exactly a power-of-two size on the coarser level despite rounding in log2.
        level = torch.floor(self.canonical_level + torch.log2(size / self.canonical_scale)
                            + torch.tensor(1e-6, dtype=size.dtype))
        level = level.clamp(k_min, k_max).to(torch.int64) - k_min
        out = first.new_zeros((rois.shape[0], first.shape[1]) + self.output_size)
        for i, (feature, scale) in enumerate(zip(levels, scales)):
            index = torch.nonzero(level == i).squeeze(1)
            if index.numel():
                out[index] = self._pool(feature, rois[index], scale).to(out.dtype)
        return out


# --------------------------------------------------------------------------- boxes

class BoxCoder:
    """(dx, dy, dw, dh) box deltas, as in R-CNN: centre shifts in units of the proposal's size
    and log size ratios, each multiplied by a weight (Fast R-CNN's heads use (10, 10, 5, 5),
    the RPN (1, 1, 1, 1)). dw and dh are clamped at bbox_xform_clip before exp so that a wild
    prediction cannot overflow to inf."""

    def __init__(self, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
                 bbox_xform_clip: float = math.log(1000.0 / 16)):
        if not isinstance(weights, Sequence) or len(weights) != 4:
            raise ValueError(f"weights must be four numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(_number("weights", w, low=1e-12) for w in weights)
        self.bbox_xform_clip = _number("bbox_xform_clip", bbox_xform_clip, low=0.0)

    def encode(self, targets: Tensor, proposals: Tensor) -> Tensor:
        """The deltas Tensor[K, 4] that move each proposal onto its target box (both [K, 4])."""
        _boxes_tensor("targets", targets)
        _boxes_tensor("proposals", proposals)
        if targets.shape != proposals.shape:
            raise ValueError(f"targets {tuple(targets.shape)} and proposals {tuple(proposals.shape)} differ in shape")
        wx, wy, ww, wh = self.weights
        pw = proposals[:, 2] - proposals[:, 0]
        ph = proposals[:, 3] - proposals[:, 1]
        px = proposals[:, 0] + 0.5 * pw
        py = proposals[:, 1] + 0.5 * ph
        tw = targets[:, 2] - targets[:, 0]
        th = targets[:, 3] - targets[:, 1]
        tx = targets[:, 0] + 0.5 * tw
        ty = targets[:, 1] + 0.5 * th
        return torch.stack((wx * (tx - px) / pw, wy * (ty - py) / ph,
                            ww * torch.log(tw / pw), wh * torch.log(th / ph)), dim=1)

    def decode(self, deltas: Tensor, proposals: Tensor) -> Tensor:
        """Boxes from deltas Tensor[K, 4·C] (C sets of deltas per proposal, e.g. one per class)
        applied to proposals Tensor[K, 4]; returns Tensor[K, 4·C] laid out like deltas."""
        _boxes_tensor("proposals", proposals)
        if not isinstance(deltas, Tensor) or deltas.dim() != 2 or deltas.shape[1] % 4:
            shape = tuple(deltas.shape) if isinstance(deltas, Tensor) else type(deltas).__name__
            raise ValueError(f"deltas must be a Tensor[K, 4·C], got {shape}")
        if deltas.shape[0] != proposals.shape[0]:
            raise ValueError(f"deltas has {deltas.shape[0]} rows but proposals has {proposals.shape[0]}")
        proposals = proposals.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        pw = (proposals[:, 2] - proposals[:, 0])[:, None]
        ph = (proposals[:, 3] - proposals[:, 1])[:, None]
        px = proposals[:, 0, None] + 0.5 * pw
        py = proposals[:, 1, None] + 0.5 * ph
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        cx, cy = px + dx * pw, py + dy * ph
        half_w, half_h = 0.5 * pw * torch.exp(dw), 0.5 * ph * torch.exp(dh)
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=2).flatten(1)


def clip_boxes_to_image(boxes: Tensor, size) -> Tensor:
    """Boxes [..., 4] with x clamped to [0, width] and y to [0, height]; size is (height, width)."""
    height, width = _image_size("size", size)
    if not isinstance(boxes, Tensor) or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be a Tensor[..., 4], got {getattr(boxes, 'shape', type(boxes).__name__)}")
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the boxes whose width and height are both at least min_size."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return torch.nonzero((w >= min_size) & (h >= min_size)).squeeze(1)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair: Tensor[K1, K2]."""
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter)


_TORCHVISION_OPS: list = []


def _torchvision_ops():
    """torchvision.ops, or None where torchvision is missing or its compiled ops do not load;
    looked up once, on first use, so that importing fastconv does not import torchvision."""
    if not _TORCHVISION_OPS:
        try:
            import torchvision.ops as tv_ops

            tv_ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
        except Exception:  # ImportError, or an ops library built for another torch
            tv_ops = None
        _TORCHVISION_OPS.append(tv_ops)
    return _TORCHVISION_OPS[0]


def _check_nms_args(boxes, scores, iou_threshold, idxs=None):
    _boxes_tensor("boxes", boxes)
    if not isinstance(scores, Tensor) or scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be a Tensor[{boxes.shape[0]}], got {getattr(scores, 'shape', scores)}")
    if idxs is not None and (not isinstance(idxs, Tensor) or idxs.shape != boxes.shape[:1]):
        raise ValueError(f"idxs must be a Tensor[{boxes.shape[0]}], got {getattr(idxs, 'shape', idxs)}")
    _number("iou_threshold", iou_threshold)


def _greedy_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # A stable sort keeps the input order among equal scores, which is what torchvision's CPU
    # kernel does, so ties resolve the same way.
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu()
    keep = torch.ones(order.shape[0], dtype=torch.bool)
    # Greedy in score order: a box survives unless a higher-scoring survivor overlaps it. The
    # IoU matrix is computed once; only this scan over the rows is sequential.
    for i in range(order.shape[0]):
        if keep[i]:
            keep[i + 1:] &= ~overlaps[i, i + 1:]
    return order[keep.to(order.device)]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, use_torchvision: Optional[bool] = None) -> Tensor:
    """Greedy non-maximum suppression: the indices of the kept boxes, by decreasing score.
    A box is dropped when its IoU with a kept, higher-scoring box is > iou_threshold.

    use_torchvision: None takes torchvision.ops.nms where it is importable and the pure torch
    version otherwise; True / False forces one (True raises if torchvision is missing)."""
    _check_nms_args(boxes, scores, iou_threshold)
    tv_ops = _torchvision_ops() if use_torchvision is not False else None
    if use_torchvision and tv_ops is None:
        raise RuntimeError("nms: use_torchvision=True but torchvision.ops is not importable")
    if tv_ops is not None:
        return tv_ops.nms(boxes, scores, float(iou_threshold))
    return _greedy_nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                use_torchvision: Optional[bool] = None) -> Tensor:
    """NMS within each category idxs (boxes of different categories never suppress each other):
    kept indices by decreasing score. use_torchvision as in nms()."""
    _check_nms_args(boxes, scores, iou_threshold, idxs)
    tv_ops = _torchvision_ops() if use_torchvision is not False else None
    if use_torchvision and tv_ops is None:
        raise RuntimeError("batched_nms: use_torchvision=True but torchvision.ops is not importable")
    if tv_ops is not None:
        return tv_ops.batched_nms(boxes, scores, idxs, float(iou_threshold))
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # Moving each category to its own far-away region of the plane makes boxes of different
    # categories disjoint, so one NMS pass does every category at once.
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _greedy_nms(boxes + offsets[:, None], scores, float(iou_threshold))


# --------------------------------------------------------------------------- masks, keypoints

def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_size, threshold: Optional[float] = None) -> Tensor:
    """Resamples each M×M mask into its box of an image-size canvas (the lecture's "soft
    prediction resampled to image coordinates"): Tensor[D, 1, H, W].

    Each image pixel centre inside (or within half a mask cell of) its box takes the bilinear
    value of the mask at that point; the box keeps its fractional coordinates, so nothing is
    rounded. Outside the mask, bilinear sampling sees zeros, so a mask of ones pastes to 0.5
    exactly on the box edge. threshold: None returns probabilities, a number returns
    the bool mask value > threshold (the lecture thresholds at 0.5)."""
    if not isinstance(masks, Tensor) or masks.dim() not in (3, 4) or (masks.dim() == 4 and masks.shape[1] != 1):
        raise ValueError(f"masks must be a Tensor[D, M, M] or [D, 1, M, M], got {getattr(masks, 'shape', masks)}")
    masks = masks.reshape(masks.shape[0], 1, masks.shape[-2], masks.shape[-1])
    _boxes_tensor("boxes", boxes)
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"masks has {masks.shape[0]} masks but boxes has {boxes.shape[0]} boxes")
    height, width = _image_size("image_size", image_size)
    if threshold is not None:
        threshold = _number("threshold", threshold)
    mh, mw = masks.shape[-2:]
    canvas = masks.new_zeros((masks.shape[0], 1, height, width))
    for i, (x1, y1, x2, y2) in enumerate(boxes.detach().to("cpu", torch.float64).tolist()):
        if not (x2 > x1 and y2 > y1):
            continue
        # The zero padding beyond the mask's edge reaches half a mask cell past the box.
        reach_x, reach_y = 0.5 * (x2 - x1) / mw, 0.5 * (y2 - y1) / mh
        c0, c1 = max(math.floor(x1 - reach_x), 0), min(math.ceil(x2 + reach_x), width)
        r0, r1 = max(math.floor(y1 - reach_y), 0), min(math.ceil(y2 + reach_y), height)
        if c1 <= c0 or r1 <= r0:
            continue
        # grid_sample's [-1, 1] spans the mask's outer edges (align_corners=False), which are
        # the box's edges; pixel centres sit at integer + 0.5.
        gx = (torch.arange(c0, c1, dtype=masks.dtype, device=masks.device) + 0.5 - x1) * (2.0 / (x2 - x1)) - 1
        gy = (torch.arange(r0, r1, dtype=masks.dtype, device=masks.device) + 0.5 - y1) * (2.0 / (y2 - y1)) - 1
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]
        canvas[i, :, r0:r1, c0:c1] = TF.grid_sample(masks[i:i + 1], grid, mode="bilinear",
                                                    padding_mode="zeros", align_corners=False)[0]
    return canvas if threshold is None else canvas > threshold


def heatmaps_to_keypoints(maps: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
    """Keypoint coordinates in image pixels from per-RoI heatmaps.

    maps: Tensor[K, N, h, w] (N keypoints per RoI), rois: Tensor[K, 4]. Each heatmap is
    resized bicubically to the box's size in whole pixels, and its argmax pixel centre is
    mapped back into the box. Returns (keypoints [K, N, 3] of (x, y, 1), scores [K, N]: the
    resized heatmap's value at the argmax)."""
    if not isinstance(maps, Tensor) or maps.dim() != 4:
        raise ValueError(f"maps must be a Tensor[K, N, h, w], got {getattr(maps, 'shape', maps)}")
    _boxes_tensor("rois", rois)
    if rois.shape[0] != maps.shape[0]:
        raise ValueError(f"maps has {maps.shape[0]} RoIs but rois has {rois.shape[0]}")
    num_rois, num_kp = maps.shape[:2]
    rois = rois.to(maps.dtype)
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    keypoints = maps.new_zeros((num_rois, num_kp, 3))
    scores = maps.new_zeros((num_rois, num_kp))
    kp = torch.arange(num_kp, device=maps.device)
    for i in range(num_rois):
        # Resizing to the box's whole-pixel size makes the argmax land on an image pixel.
        cols, rows = int(math.ceil(widths[i].item())), int(math.ceil(heights[i].item()))
        resized = TF.interpolate(maps[i:i + 1], size=(rows, cols), mode="bicubic", align_corners=False)[0]
        flat = resized.reshape(num_kp, -1).argmax(dim=1)
        row, col = flat // cols, flat % cols
        keypoints[i, :, 0] = (col.to(maps.dtype) + 0.5) * (widths[i] / cols) + rois[i, 0]
        keypoints[i, :, 1] = (row.to(maps.dtype) + 0.5) * (heights[i] / rows) + rois[i, 1]
        keypoints[i, :, 2] = 1
        scores[i] = resized[kp, row, col]
    return keypoints, scores


# --------------------------------------------------------------------------- second stage

class RoIHeads(nn.Module):
    """The second stage of Faster / Mask / Keypoint R-CNN at inference (the lecture's
    "Mask R-CNN: Inference"):

    1. pool a 7×7 crop per proposal, run the box head, score every class (softmax) and
       refine the box per class (BoxCoder);
    2. clip to the image, drop background and scores <= score_thresh and tiny boxes, NMS per
       class at nms_thresh, keep the detections_per_img best;
    3. on those refined, post-NMS boxes only: pool 14×14, run the mask head, take the mask of
       the predicted class, and paste it into the image; likewise keypoints.

    Submodule names are torchvision's RoIHeads', so `torchvision_model.roi_heads.state_dict()`
    loads with strict=True.

    forward(features, proposals, image_sizes) -> list (one per image) of dicts with
    "boxes" [D, 4], "labels" [D] (int64), "scores" [D], and where there is a mask head
    "masks": [D, 1, H, W] probabilities pasted into the image (bool if mask_threshold is set;
    the 28×28 probabilities [D, 1, 28, 28] if paste_masks=False, as torchvision's RoIHeads
    returns them), and where there is a keypoint head "keypoints" [D, K, 3] and
    "keypoints_scores" [D, K]. features: as RoIPooler takes them; proposals: one Tensor[L, 4]
    per image in image pixels; image_sizes: one (height, width) per image.
    """

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module, *,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 bbox_reg_weights: Optional[Sequence[float]] = None,
                 mask_roi_pool: Optional[nn.Module] = None, mask_head: Optional[nn.Module] = None,
                 mask_predictor: Optional[nn.Module] = None,
                 keypoint_roi_pool: Optional[nn.Module] = None, keypoint_head: Optional[nn.Module] = None,
                 keypoint_predictor: Optional[nn.Module] = None,
                 mask_threshold: Optional[float] = None, paste_masks: bool = True):
        super().__init__()
        for name, part in (("box_roi_pool", box_roi_pool), ("box_head", box_head), ("box_predictor", box_predictor)):
            if not isinstance(part, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(part).__name__}")
        mask_parts = (mask_roi_pool, mask_head, mask_predictor)
        keypoint_parts = (keypoint_roi_pool, keypoint_head, keypoint_predictor)
        for what, parts in (("mask", mask_parts), ("keypoint", keypoint_parts)):
            if any(p is not None for p in parts) and not all(isinstance(p, nn.Module) for p in parts):
                raise ValueError(f"give all of {what}_roi_pool, {what}_head and {what}_predictor, or none")
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0) if bbox_reg_weights is None else bbox_reg_weights)
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.score_thresh = _number("score_thresh", score_thresh, 0.0, 1.0)
        self.nms_thresh = _number("nms_thresh", nms_thresh, 0.0, 1.0)
        self.detections_per_img = _positive_int("detections_per_img", detections_per_img)
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_parts
        self.keypoint_roi_pool, self.keypoint_head, self.keypoint_predictor = keypoint_parts
        self.mask_threshold = None if mask_threshold is None else _number("mask_threshold", mask_threshold, 0.0, 1.0)
        if not isinstance(paste_masks, bool):
            raise TypeError(f"paste_masks must be a bool, got {type(paste_masks).__name__}")
        self.paste_masks = paste_masks

    def has_mask(self) -> bool:
        return self.mask_predictor is not None

    def has_keypoint(self) -> bool:
        return self.keypoint_predictor is not None

    def _detect(self, class_logits, box_deltas, proposals, image_sizes):
        num_classes = class_logits.shape[-1]
        boxes = self.box_coder.decode(box_deltas, torch.cat(proposals)).reshape(-1, num_classes, 4)
        probs = TF.softmax(class_logits, dim=-1)
        per_image = [p.shape[0] for p in proposals]
        results = []
        for img_boxes, img_probs, size in zip(boxes.split(per_image), probs.split(per_image), image_sizes):
            img_boxes = clip_boxes_to_image(img_boxes, size)
            labels = torch.arange(num_classes, device=img_probs.device).expand_as(img_probs)
            # Class 0 is background; every (box, class) pair after it is a candidate detection.
            img_boxes = img_boxes[:, 1:].reshape(-1, 4)
            img_probs = img_probs[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            keep = torch.nonzero(img_probs > self.score_thresh).squeeze(1)
            img_boxes, img_probs, labels = img_boxes[keep], img_probs[keep], labels[keep]
            keep = remove_small_boxes(img_boxes, 1e-2)
            img_boxes, img_probs, labels = img_boxes[keep], img_probs[keep], labels[keep]
            keep = batched_nms(img_boxes, img_probs, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": img_boxes[keep], "labels": labels[keep], "scores": img_probs[keep]})
        return results

    def forward(self, features, proposals: Sequence[Tensor], image_sizes) -> list[dict[str, Tensor]]:
        first = features if isinstance(features, Tensor) else (
            next(iter(features.values())) if isinstance(features, Mapping) and features else
            (features[0] if isinstance(features, (list, tuple)) and features else None))
        if not isinstance(first, Tensor) or first.dim() != 4:
            raise TypeError("features must be a Tensor[N, C, H, W], or a non-empty list or dict of them")
        proposals = _box_list("proposals", proposals, first.shape[0])
        if isinstance(image_sizes, Tensor) or not isinstance(image_sizes, (list, tuple)):
            raise TypeError(f"image_sizes must be a list of (height, width), got {type(image_sizes).__name__}")
        if len(image_sizes) != len(proposals):
            raise ValueError(f"image_sizes has {len(image_sizes)} entries for {len(proposals)} images")
        image_sizes = [_image_size(f"image_sizes[{i}]", s) for i, s in enumerate(image_sizes)]

        crops = self.box_roi_pool(features, proposals, image_sizes)
        class_logits, box_deltas = self.box_predictor(self.box_head(crops))
        results = self._detect(class_logits, box_deltas, proposals, image_sizes)
        detected = [r["boxes"] for r in results]

        if self.has_mask():
            logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, detected, image_sizes)))
            labels = torch.cat([r["labels"] for r in results])
            # A class-agnostic predictor (one mask channel) serves every class.
            channel = labels if logits.shape[1] > 1 else torch.zeros_like(labels)
            probs = logits[torch.arange(logits.shape[0], device=logits.device), channel].sigmoid()[:, None]
            for r, p, size in zip(results, probs.split([b.shape[0] for b in detected]), image_sizes):
                if self.paste_masks:
                    p = paste_masks_in_image(p, r["boxes"], size, self.mask_threshold)
                elif self.mask_threshold is not None:
                    p = p > self.mask_threshold
                r["masks"] = p

        if self.has_keypoint():
            maps = self.keypoint_predictor(self.keypoint_head(self.keypoint_roi_pool(features, detected, image_sizes)))
            for r, m in zip(results, maps.split([b.shape[0] for b in detected])):
                r["keypoints"], r["keypoints_scores"] = heatmaps_to_keypoints(m, r["boxes"])
        return results


# --------------------------------------------------------------------------- builders

def _box_parts(num_classes, in_channels, pooling, representation_size, spatial_scale, sampling_ratio,
               aligned, featmap_names):
    _positive_int("num_classes", num_classes)
    _positive_int("in_channels", in_channels)
    pool = RoIPooler(7, pooling, sampling_ratio, aligned, spatial_scale, featmap_names)
    return dict(
        box_roi_pool=pool,
        box_head=TwoMLPHead(in_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
    )


@register_model
def fasterrcnn_heads(*, num_classes: int = 91, in_channels: int = 256, pooling: str = "align",
                     representation_size: int = 1024, spatial_scale=None, sampling_ratio: int = 2,
                     aligned: bool = False, featmap_names=("0", "1", "2", "3"), score_thresh: float = 0.05,
                     nms_thresh: float = 0.5, detections_per_img: int = 100, weights=None) -> RoIHeads:
    """Fast R-CNN's second stage (box head and predictor) as in torchvision's
    fasterrcnn_resnet50_fpn: loads `model.roi_heads.state_dict()` with strict=True.

    pooling: "align" (RoIAlign) or "pool" (RoIPool). spatial_scale: None infers each level's
    scale from the image sizes; a float pools from one feature map. featmap_names: the FPN
    levels used when features come as a dict (torchvision's "0".."3"; its "pool" level is
    left out)."""
    return load_weights(RoIHeads(
        **_box_parts(num_classes, in_channels, pooling, representation_size, spatial_scale, sampling_ratio,
                     aligned, featmap_names),
        score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
    ), weights)


@register_model
def maskrcnn_heads(*, num_classes: int = 91, in_channels: int = 256, pooling: str = "align",
                   representation_size: int = 1024, mask_layers: Sequence[int] = (256, 256, 256, 256),
                   mask_dilation: int = 1, mask_dim_reduced: int = 256, spatial_scale=None,
                   sampling_ratio: int = 2, aligned: bool = False, featmap_names=("0", "1", "2", "3"),
                   score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                   mask_threshold: Optional[float] = None, paste_masks: bool = True, weights=None) -> RoIHeads:
    """Mask R-CNN's second stage as in torchvision's maskrcnn_resnet50_fpn: the box head, and a
    mask head (14×14 crops, four 3×3 convolutions of 256, transposed convolution to 28×28, one
    mask per class). Loads `model.roi_heads.state_dict()` with strict=True. Arguments as
    fasterrcnn_heads(); mask_threshold=0.5 returns bool masks, paste_masks=False the 28×28
    probabilities."""
    parts = _box_parts(num_classes, in_channels, pooling, representation_size, spatial_scale, sampling_ratio,
                       aligned, featmap_names)
    mask_layers = _int_list("mask_layers", mask_layers)
    return load_weights(RoIHeads(
        **parts,
        mask_roi_pool=RoIPooler(14, pooling, sampling_ratio, aligned, spatial_scale, featmap_names),
        mask_head=MaskRCNNHeads(in_channels, mask_layers, mask_dilation),
        mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_dim_reduced, num_classes),
        score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
        mask_threshold=mask_threshold, paste_masks=paste_masks,
    ), weights)


@register_model
def keypointrcnn_heads(*, num_classes: int = 2, num_keypoints: int = 17, in_channels: int = 256,
                       pooling: str = "align", representation_size: int = 1024,
                       keypoint_layers: Sequence[int] = (512,) * 8, spatial_scale=None, sampling_ratio: int = 2,
                       aligned: bool = False, featmap_names=("0", "1", "2", "3"), score_thresh: float = 0.05,
                       nms_thresh: float = 0.5, detections_per_img: int = 100, weights=None) -> RoIHeads:
    """Keypoint R-CNN's second stage as in torchvision's keypointrcnn_resnet50_fpn (person vs
    background, 17 COCO keypoints): the box head, and a keypoint head (14×14 crops, eight 3×3
    convolutions of 512, heatmaps of 56×56 per keypoint, turned into image coordinates).
    Loads `model.roi_heads.state_dict()` with strict=True. Arguments as fasterrcnn_heads()."""
    parts = _box_parts(num_classes, in_channels, pooling, representation_size, spatial_scale, sampling_ratio,
                       aligned, featmap_names)
    keypoint_layers = _int_list("keypoint_layers", keypoint_layers)
    return load_weights(RoIHeads(
        **parts,
        keypoint_roi_pool=RoIPooler(14, pooling, sampling_ratio, aligned, spatial_scale, featmap_names),
        keypoint_head=KeypointRCNNHeads(in_channels, keypoint_layers),
        keypoint_predictor=KeypointRCNNPredictor(keypoint_layers[-1], num_keypoints),
        score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
    ), weights)
