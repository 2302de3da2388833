"""U-Net (Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015) on fastconv layers.

Two deliberate departures from the paper, both common practice:

* The 3x3 convolutions are padded by 1, so a stage keeps its size and the skip connections
  concatenate without cropping; the output then has the input's resolution (the paper's
  unpadded network returns a smaller map and needs overlap-tiling). Each of the `depth`
  2x2 max-pools halves H and W exactly, so H and W must be divisible by 2**depth (16 by
  default); other sizes are refused rather than silently cropped or padded.
* batch_norm=True by default puts a BatchNorm after every 3x3 convolution. The paper has none
  (it relies on careful He initialisation); without it a from-scratch U-Net of 23
  convolutions trains much more slowly, and batch_norm=False gives the paper's network.

torchvision has no U-Net, so the module names are this file's own.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

import fastconv.nn as fnn

from ._checks import positive_int as _positive_int
from ._registry import load_weights, register_model

__all__ = ["UNet", "unet"]


class DoubleConv(nn.Sequential):
    """The paper's stage: two 3x3 convolutions, each followed by ReLU (and BatchNorm if asked)."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True):
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # A bias before BatchNorm is cancelled by its mean subtraction.
            layers.append(fnn.Conv2d(c_in, out_channels, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net: a contracting path of `depth` (DoubleConv, 2x2 max-pool) steps, a bottleneck
    DoubleConv, and an expanding path of `depth` (2x2 stride-2 up-convolution that halves the
    channels, concatenation with the same-resolution encoder map, DoubleConv) steps; a 1x1
    convolution gives `num_classes` scores per pixel. Widths are base_width * 2**level
    (64 ... 1024 in the paper).

    Input [N, in_channels, H, W] with H and W divisible by 2**depth; output
    [N, num_classes, H, W] (logits).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        base_width: int = 64,
        depth: int = 4,
        batch_norm: bool = True,
    ):
        super().__init__()
        _positive_int("in_channels", in_channels)
        _positive_int("num_classes", num_classes)
        _positive_int("base_width", base_width)
        _positive_int("depth", depth)
        if not isinstance(batch_norm, bool):
            raise TypeError(f"batch_norm must be a bool, got {type(batch_norm).__name__}")
        self.depth = depth

        widths = [base_width * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for width in widths[:-1]:
            self.encoder.append(DoubleConv(c_in, width, batch_norm))
            c_in = width
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], batch_norm)

        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            wide, narrow = widths[level + 1], widths[level]
            self.up.append(fnn.ConvTranspose2d(wide, narrow, kernel_size=2, stride=2))
            # The up-convolution's `narrow` channels plus the skip's `narrow` channels.
            self.decoder.append(DoubleConv(2 * narrow, narrow, batch_norm))
        self.head = fnn.Conv2d(base_width, num_classes, kernel_size=1)

        # The paper draws weights from N(0, sqrt(2 / fan_in)) so that each ReLU layer keeps
        # unit variance; torch's default (kaiming-uniform with a=sqrt(5)) is smaller by ~sqrt(3)
        # and lets the signal fade through the 18 plain convolutions when batch_norm=False.
        for m in self.modules():
            if isinstance(m, fnn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _checked_input(x, self.depth)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, stage, skip in zip(self.up, self.decoder, reversed(skips)):
            x = stage(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def _checked_input(x: torch.Tensor, depth: int) -> torch.Tensor:
    """x, after checking that UNet of this depth can take it."""
    if x.dim() != 4:
        raise ValueError(f"UNet expects input [N, C, H, W], got shape {tuple(x.shape)}")
    multiple = 2**depth
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"UNet with depth={depth} needs H and W divisible by {multiple}; "
            f"got input size {h}x{w} (HxW)"
        )
    return x


# A leaf for torch.fx (see fastconv.functional): the checks depend on the input's shape, so
# symbolic tracing records one call to them, which runs when the traced module runs.
torch.fx.wrap("_checked_input")


@register_model
def unet(
    *,
    weights=None,
    in_channels: int = 3,
    num_classes: int = 2,
    base_width: int = 64,
    depth: int = 4,
    batch_norm: bool = True,
) -> UNet:
    """U-Net with padded convolutions. Defaults: RGB input, 2 classes (the paper's
    foreground/background), base width 64 and depth 4 as in the paper (31.0 M parameters),
    BatchNorm on. `weights`: None, a state_dict of this model, or a path to one."""
    model = UNet(in_channels=in_channels, num_classes=num_classes, base_width=base_width,
                 depth=depth, batch_norm=batch_norm)
    return load_weights(model, weights)
