"""Looking inside a trained CNN: the lecture's "hierarchical filters" (Zeiler & Fergus).

- filter_grid: a layer's filters as an image grid (the first layer's look like edges and
  blobs of colour);
- feature_maps: what a layer computes for an input;
- top_patches: the input patches that most excite one channel over a data set, each patch
  the receptive field of the unit that responded (Zeiler & Fergus, "Visualizing and
  Understanding Convolutional Networks", ECCV 2014, show the top nine for each channel);
- saliency: the gradient of a class score with respect to the input pixels, its largest
  magnitude over the colour channels (Simonyan, Vedaldi & Zisserman, "Deep Inside
  Convolutional Networks: Visualising Image Classification Models and Saliency Maps", ICLR
  workshop 2014).

Every function returns tensors; image_grid lays images out for viewing, and save_png writes
one, which alone needs matplotlib (an ImportError says so where it is missing).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Optional, Union

import torch
from torch import nn

from ._plotting import require
from .receptive_field import ReceptiveField, _module_named, receptive_fields, run_to

__all__ = ["TopPatches", "feature_maps", "filter_grid", "image_grid", "saliency", "save_png", "top_patches"]


def _normalised(images: torch.Tensor, normalize: Optional[str]) -> torch.Tensor:
    x = images.detach().double()
    if normalize is None:
        return x.clamp(0, 1)
    if normalize == "all":
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo) if hi > lo else torch.full_like(x, 0.5)
    flat = x.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    span = hi - lo
    # A constant image has no contrast to stretch: mid-grey.
    return torch.where(span > 0, (x - lo) / span.where(span > 0, torch.ones_like(span)), torch.full_like(x, 0.5))


def image_grid(images: torch.Tensor, *, ncols: Optional[int] = None, padding: int = 1,
               normalize: Optional[str] = "each", pad_value: float = 1.0) -> torch.Tensor:
    """Lay a batch of images [N, C, h, w] (C 1 or 3) out in a grid: [C, H, W] in [0, 1] (float64).

    normalize: "each" stretches every image to [0, 1] by itself, "all" the batch together,
    None clamps values that are already in [0, 1]. ncols defaults to a near-square grid;
    padding pixels of pad_value separate the images."""
    fn = "image_grid()"
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{fn}: images must be a Tensor [N, C, h, w] with C 1 or 3, got "
                         f"{list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if normalize not in ("each", "all", None):
        raise ValueError(f"{fn}: normalize must be 'each', 'all' or None, got {normalize!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"{fn}: padding must be a non-negative int, got {padding!r}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError(f"{fn}: images is empty")
    if ncols is None:
        ncols = max(1, round(n ** 0.5))
    elif isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"{fn}: ncols must be a positive int, got {ncols!r}")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    x = _normalised(images, normalize)
    grid = torch.full((c, nrows * (h + padding) + padding, ncols * (w + padding) + padding), float(pad_value),
                      dtype=torch.float64)
    for i in range(n):
        top, left = padding + (i // ncols) * (h + padding), padding + (i % ncols) * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid


def filter_grid(weights: Union[nn.Module, torch.Tensor], **kwargs) -> torch.Tensor:
    """A convolution's filters [K, C, R, S] as an image grid (see image_grid): in colour for
    C = 3 (the first layer of an RGB network), in grey for C = 1, and otherwise one grey tile
    per (filter, input channel), a row per filter. Takes the layer or its weight."""
    weight = weights.weight if isinstance(weights, nn.Module) else weights
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError("filter_grid(): weights must be a convolution or its weight [K, C, R, S]")
    k, c, r, s = weight.shape
    if c in (1, 3):
        return image_grid(weight, **kwargs)
    kwargs.setdefault("ncols", c)
    return image_grid(weight.reshape(k * c, 1, r, s), **kwargs)


def _batch(fn: str, x) -> tuple[torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        raise ValueError(f"{fn}: the input must be an image [C, H, W] or a batch [N, C, H, W]")
    return (x, True) if x.dim() == 4 else (x.unsqueeze(0), False)


class _Inference:
    """Eval mode, and no gradients kept for the parameters; both put back on exit."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.training = self.model.training
        self.params = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in self.params:
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc):
        for p, flag in self.params:
            p.requires_grad_(flag)
        self.model.train(self.training)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def feature_maps(model: nn.Module, layer, x: torch.Tensor) -> torch.Tensor:
    """The output of `layer` (a submodule's name, or the submodule) for the image or batch x:
    [K, P, Q] for one image [C, H, W], [N, K, P, Q] for a batch. The forward pass stops once
    the layer has run; the model runs in eval mode."""
    fn = "feature_maps()"
    _, module = _module_named(fn, model, layer)
    batch, batched = _batch(fn, x)
    with _Inference(model), torch.no_grad():
        y = run_to(model, module, batch.to(_device(model))).detach()
    return y if batched else y[0]


@dataclasses.dataclass
class TopPatches:
    """The k strongest responses of one channel over a data set, one per image, strongest
    first, and the input patch each unit sees."""

    patches: torch.Tensor
    """[k, C, h, w]: each unit's theoretical receptive field cut from its image, `fill` where
    the field reaches beyond the image."""
    scores: torch.Tensor
    """[k]: the channel's value at the unit."""
    images: torch.Tensor
    """[k]: the images' indices in the data set."""
    units: torch.Tensor
    """[k, 2]: the units' (row, column) in the layer's output."""
    field: ReceptiveField


def _batches(data, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        for start in range(0, len(data), batch_size):
            yield data[start:start + batch_size]
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def top_patches(model: nn.Module, layer, channel: int, data, *, k: int = 9, batch_size: int = 256,
                fill: float = 0.0) -> TopPatches:
    """The k images of `data` in which `channel` of `layer`'s output responds most strongly
    (at its strongest unit), and the patch of each that the unit sees.

    data: a Tensor [N, C, H, W], or an iterable of such batches (or of (images, labels)
    pairs, as a DataLoader gives). The patches are the units' theoretical receptive fields
    (fastconv.receptive_field), so they all have the field's size."""
    fn = "top_patches()"
    name, module = _module_named(fn, model, layer)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{fn}: k must be a positive int, got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be a positive int, got {batch_size!r}")
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise TypeError(f"{fn}: channel must be an int, got {channel!r}")
    # The best k so far: score, image index, unit, image (only k images are ever kept).
    best = (torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, 2, dtype=torch.long), None)
    field, seen = None, 0
    with _Inference(model), torch.no_grad():
        for batch in _batches(data, batch_size):
            if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
                raise ValueError(f"{fn}: data must hold image batches [N, C, H, W]")
            if field is None:
                field = receptive_fields(model, input_data=batch[:1], until=module).layer(name)
                if not field.known or len(field.output_shape) != 4:
                    raise ValueError(f"{fn}: the output of {name!r} is not a feature map with a known receptive field")
            y = run_to(model, module, batch.to(_device(model)))
            if not 0 <= channel < y.shape[1]:
                raise ValueError(f"{fn}: channel {channel} is outside the {y.shape[1]} channels of {name!r}")
            score, where = y[:, channel].flatten(1).max(1)
            units = torch.stack([where // y.shape[3], where % y.shape[3]], 1).cpu()
            index = torch.arange(seen, seen + len(batch))
            images = batch.detach().cpu() if best[3] is None else torch.cat([best[3], batch.detach().cpu()])
            score, index, units = (torch.cat([b, n]) for b, n in zip(best[:3], (score.float().cpu(), index, units)))
            # Strongest first; among equal scores, the earlier image.
            order = torch.argsort(score, descending=True, stable=True)[:k]
            best = (score[order], index[order], units[order], images[order])
            seen += len(batch)
    if field is None or seen == 0:
        raise ValueError(f"{fn}: data holds no images")
    scores, indices, units, images = best
    h, w = field.size
    patches = torch.full((len(scores), images.shape[1], h, w), float(fill), dtype=images.dtype)
    height, width = images.shape[2:]
    for j in range(len(scores)):
        (top, bottom), (left, right) = field.region(*units[j].tolist())
        r0, r1, c0, c1 = max(top, 0), min(bottom, height - 1), max(left, 0), min(right, width - 1)
        if r0 <= r1 and c0 <= c1:
            patches[j, :, r0 - top:r1 - top + 1, c0 - left:c1 - left + 1] = images[j, :, r0:r1 + 1, c0:c1 + 1]
    return TopPatches(patches, scores, indices, units, field)


def saliency(model: nn.Module, x: torch.Tensor, target=None) -> torch.Tensor:
    """The saliency map of Simonyan et al. (2014): |d score / d pixel|, its largest value over
    the input channels; [H, W] for an image [C, H, W], [N, H, W] for a batch. target: the class
    whose score (the model's output, [N, classes], before any softmax) is explained: an int
    for all images, a tensor of one per image, or None for each image's top class."""
    fn = "saliency()"
    batch, batched = _batch(fn, x)
    batch = batch.detach().to(_device(model)).requires_grad_(True)
    with _Inference(model), torch.enable_grad():
        scores = model(batch)
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
            raise ValueError(f"{fn}: the model must return class scores [N, classes]")
        if target is None:
            target = scores.argmax(1)
        elif isinstance(target, int) and not isinstance(target, bool):
            target = torch.full((len(batch),), target, dtype=torch.long)
        elif not isinstance(target, torch.Tensor) or target.shape != (len(batch),):
            raise ValueError(f"{fn}: target must be None, an int or one class per image")
        target = target.to(scores.device)
        if target.min() < 0 or target.max() >= scores.shape[1]:
            raise ValueError(f"{fn}: target has a class outside 0..{scores.shape[1] - 1}")
        (grad,) = torch.autograd.grad(scores.gather(1, target.view(-1, 1)).sum(), batch)
    result = grad.abs().amax(1).detach()
    return result if batched else result[0]


def save_png(image, path, *, cmap: Optional[str] = "gray", scale: Optional[int] = None) -> str:
    """Write an image to a PNG: a Tensor or array [H, W] (drawn with cmap, over its own range)
    or [1 or 3, H, W] / [H, W, 3] in [0, 1]. Each pixel becomes a scale x scale block (by
    default the smallest that makes the longer side at least 256 pixels). Needs matplotlib."""
    matplotlib = require("save_png()")
    array = torch.as_tensor(image).detach().double().cpu()
    if array.dim() == 3 and array.shape[0] in (1, 3):
        array = array.permute(1, 2, 0)
    if array.dim() == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dim() not in (2, 3) or (array.dim() == 3 and array.shape[2] != 3):
        raise ValueError(f"save_png(): image must be [H, W], [C, H, W] or [H, W, C] with C 1 or 3, "
                         f"got {list(torch.as_tensor(image).shape)}")
    if scale is None:
        scale = max(1, -(-256 // max(array.shape[:2])))
    elif isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"save_png(): scale must be a positive int, got {scale!r}")
    array = array.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    path = os.fspath(path)
    if array.dim() == 3:
        matplotlib.image.imsave(path, array.clamp(0, 1).numpy())
    else:
        matplotlib.image.imsave(path, array.numpy(), cmap=cmap)
    return path
