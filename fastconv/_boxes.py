"""Argument checks for boxes, feature maps and image sizes, and box arithmetic, shared by the
RoI pooler (fastconv.nn.RoIPooler) and the detection models: a clear exception naming the
argument."""

from __future__ import annotations

import math
from typing import Optional, Sequence

from torch import Tensor

from ._checks import positive_int as _positive_int

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


def box_area(boxes: Tensor) -> Tensor:
    """Area of each (x1, y1, x2, y2) box."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
