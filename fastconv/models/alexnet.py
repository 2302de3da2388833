"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012), the network that opened the lecture's
"revolution of depth": five convolutions, three fully connected layers, ReLU and dropout.

This is the single-GPU variant torchvision ships (from Krizhevsky's 2014 "one weird trick"
paper): 64-192-384-256-256 convolution channels, no local response normalisation and no
filter groups, unlike the two-GPU 96-256-384-384-256 network of the 2012 paper that the
lecture draws. Keeping torchvision's layout means its state_dict loads with strict=True;
adaptive average pooling to 6×6 lets inputs from 63×63 up run unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import nn as fnn
from ._registry import load_weights, register_model
from ._checks import positive_int as _positive_int, probability as _probability

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        _positive_int("num_classes", num_classes)
        _probability("dropout", dropout)
        self.features = nn.Sequential(
            fnn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            fnn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            fnn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            fnn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            fnn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model
def alexnet(*, weights=None, num_classes: int = 1000, dropout: float = 0.5) -> AlexNet:
    """AlexNet as torchvision builds it: 61,100,840 parameters for 1000 classes."""
    return load_weights(AlexNet(num_classes=num_classes, dropout=dropout), weights)
