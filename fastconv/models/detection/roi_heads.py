"""The second stage at inference (RoIHeads), and turning its mask and keypoint outputs into
image coordinates."""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from .._checks import positive_int as _positive_int
from ._utils import _box_list, _boxes_tensor, _image_size, _number
from .box_ops import BoxCoder, batched_nms, clip_boxes_to_image, remove_small_boxes

__all__ = ["RoIHeads", "paste_masks_in_image", "heatmaps_to_keypoints"]


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
