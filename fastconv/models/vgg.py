"""VGG (Simonyan & Zisserman, 2014): stacks of 3×3 convolutions between 2×2 max-pools.

The lecture's point about VGG is that a chain of small filters sees as far as one large
filter with fewer parameters and more non-linearities; VGG-16 has 138,357,544 parameters,
most of them in the first fully connected layer (25088 × 4096).

Module names and indices mirror torchvision.models.vgg*, so a torchvision state_dict loads
with strict=True: `.features` is a Sequential of (conv, [bn,] relu) groups and max-pools,
`.avgpool` pools to 7×7 whatever the input size (so 32×32 inputs work too), and `.classifier`
is Linear(25088, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout,
Linear(4096, num_classes).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from .. import nn as fnn
from ._checks import positive_int as _positive_int, probability as _probability
from ._registry import load_weights, register_model

__all__ = [
    "VGG",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

# Output channels of each 3×3 convolution, "M" for a 2×2 max-pool; the letters are the
# column names of the paper's Table 1 (A = VGG-11, B = VGG-13, D = VGG-16, E = VGG-19).
_CONFIGS: dict[str, list[Union[int, str]]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def _make_features(config: Sequence[Union[int, str]], batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(fnn.Conv2d(channels, item, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU(inplace=True))
        channels = item
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """A VGG network: `features` (any module that ends with 512 channels), then adaptive
    average pooling to 7×7 and the three fully connected layers."""

    def __init__(self, features: nn.Module, num_classes: int = 1000, init_weights: bool = True,
                 dropout: float = 0.5):
        super().__init__()
        _positive_int("num_classes", num_classes)
        _probability("dropout", dropout)
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for the ReLU convolutions and a small normal for the classifier:
        # the scheme torchvision's VGG uses, so that training from scratch behaves alike.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg(config: str, batch_norm: bool, weights, num_classes: int, init_weights: bool,
         dropout: float) -> VGG:
    # Checked here as well as in VGG() so that a bad argument fails before the features are built.
    _positive_int("num_classes", num_classes)
    _probability("dropout", dropout)
    # Loaded weights overwrite every parameter, so the initialisation would be wasted work.
    init_weights = init_weights and weights is None
    model = VGG(_make_features(_CONFIGS[config], batch_norm), num_classes=num_classes,
                init_weights=init_weights, dropout=dropout)
    return load_weights(model, weights)


@register_model
def vgg11(*, weights=None, num_classes: int = 1000, init_weights: bool = True,
          dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A), 132,863,336 parameters for 1000 classes."""
    return _vgg("A", False, weights, num_classes, init_weights, dropout)


@register_model
def vgg11_bn(*, weights=None, num_classes: int = 1000, init_weights: bool = True,
             dropout: float = 0.5) -> VGG:
    """VGG-11 with batch normalisation after every convolution."""
    return _vgg("A", True, weights, num_classes, init_weights, dropout)


@register_model
def vgg13(*, weights=None, num_classes: int = 1000, init_weights: bool = True,
          dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B)."""
    return _vgg("B", False, weights, num_classes, init_weights, dropout)


@register_model
def vgg13_bn(*, weights=None, num_classes: int = 1000, init_weights: bool = True,
             dropout: float = 0.5) -> VGG:
    """VGG-13 with batch normalisation after every convolution."""
    return _vgg("B", True, weights, num_classes, init_weights, dropout)


@register_model
def vgg16(*, weights=None, num_classes: int = 1000, init_weights: bool = True,
          dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D), the lecture's 138,357,544-parameter network."""
    return _vgg("D", False, weights, num_classes, init_weights, dropout)


@register_model
def vgg16_bn(*, weights=None, num_classes: int = 1000, init_weights: bool = True,
             dropout: float = 0.5) -> VGG:
    """VGG-16 with batch normalisation after every convolution."""
    return _vgg("D", True, weights, num_classes, init_weights, dropout)


@register_model
def vgg19(*, weights=None, num_classes: int = 1000, init_weights: bool = True,
          dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E)."""
    return _vgg("E", False, weights, num_classes, init_weights, dropout)


@register_model
def vgg19_bn(*, weights=None, num_classes: int = 1000, init_weights: bool = True,
             dropout: float = 0.5) -> VGG:
    """VGG-19 with batch normalisation after every convolution."""
    return _vgg("E", True, weights, num_classes, init_weights, dropout)
