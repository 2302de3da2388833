"""Boxes: areas, IoU, the R-CNN delta coder, clipping, and non-maximum suppression."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..._boxes import box_area  # noqa: F401  (shared with fastconv.nn.RoIPooler)
from ._utils import _boxes_tensor, _image_size, _number

__all__ = [
    "BoxCoder",
    "box_area",
    "box_iou",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "nms",
    "batched_nms",
]


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
