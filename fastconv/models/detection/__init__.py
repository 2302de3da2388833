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

The package follows torchvision.models.detection's split: `rpn` (RPNHead), `heads` (box, mask
and keypoint heads), `poolers` (RoIPooler), `box_ops` (BoxCoder, IoU, NMS), `roi_heads`
(RoIHeads, mask pasting, keypoint decoding) and `builders`; every public name is re-exported
here.
"""

from .box_ops import BoxCoder, batched_nms, box_area, box_iou, clip_boxes_to_image, nms, remove_small_boxes
from .builders import fasterrcnn_heads, keypointrcnn_heads, maskrcnn_heads
from .heads import (
    FastRCNNPredictor,
    KeypointRCNNHeads,
    KeypointRCNNPredictor,
    MaskRCNNHeads,
    MaskRCNNPredictor,
    TwoMLPHead,
)
from .poolers import RoIPooler
from .roi_heads import RoIHeads, heatmaps_to_keypoints, paste_masks_in_image
from .rpn import RPNHead

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
