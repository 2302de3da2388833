"""RoIPooler: fixed-size crops per box with fastconv's RoIAlign or RoIPool, from one feature
map or from FPN levels. Public as fastconv.nn.RoIPooler (and fastconv.models.detection's);
it sits below fastconv.nn, which builds MultiScaleRoIAlign on it."""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import functional as FC
from ._boxes import _box_list, _feature_list, _image_size, _number, _pooling, box_area
from ._checks import positive_int as _positive_int

__all__ = ["RoIPooler"]


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
        if self.pooling == "align" and all(f.dtype == first.dtype for f in levels):
            # Every level in one pass (on CUDA, one kernel launch).
            return FC.multi_level_roi_align(levels, rois, level, self.output_size, list(scales),
                                            self.sampling_ratio, self.aligned)
        out = first.new_zeros((rois.shape[0], first.shape[1]) + self.output_size)
        for i, (feature, scale) in enumerate(zip(levels, scales)):
            index = torch.nonzero(level == i).squeeze(1)
            if index.numel():
                out[index] = self._pool(feature, rois[index], scale).to(out.dtype)
        return out
