"""The registered builders: fasterrcnn_heads, maskrcnn_heads, keypointrcnn_heads."""

from __future__ import annotations

from typing import Optional, Sequence

from .._checks import positive_int as _positive_int
from .._registry import load_weights, register_model
from ._utils import _int_list
from .heads import (
    FastRCNNPredictor,
    KeypointRCNNHeads,
    KeypointRCNNPredictor,
    MaskRCNNHeads,
    MaskRCNNPredictor,
    TwoMLPHead,
)
from .poolers import RoIPooler
from .roi_heads import RoIHeads

__all__ = ["fasterrcnn_heads", "maskrcnn_heads", "keypointrcnn_heads"]


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
