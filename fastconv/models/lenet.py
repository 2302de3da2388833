"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998), the lecture's first convolutional network.

The layer sizes are the paper's: a 32×32 single-channel image, a 5×5 convolution to 6 maps,
2×2 subsampling, a 5×5 convolution to 16 maps, 2×2 subsampling, then fully connected layers
of 120, 84 and num_classes units: 61,706 parameters for 10 classes.

This is the modern variant: ReLU instead of the scaled tanh, max-pooling instead of the
trainable average subsampling, every one of C3's 16 maps connected to all 6 of S2's (the paper
wires each to a subset, to break symmetry at a time without random initialisation to do it),
and a linear output layer for a cross-entropy loss instead of the Euclidean RBF units.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from .. import nn as fnn
from ._registry import load_weights, register_model
from ._checks import positive_int as _positive_int

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Module):
    """LeNet-5 for [N, 1, 32, 32] inputs; returns [N, num_classes] logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        _positive_int("num_classes", num_classes)
        self.features = nn.Sequential(
            fnn.Conv2d(1, 6, kernel_size=5),     # C1: 32×32 → 28×28
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),         # S2: → 14×14
            fnn.Conv2d(6, 16, kernel_size=5),    # C3: → 10×10
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),         # S4: → 5×5
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),          # C5 is a 5×5 convolution over a 5×5 map: a full layer
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),                  # F6
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(_checked_input(x)), 1))


def _checked_input(x: torch.Tensor) -> torch.Tensor:
    # The fully connected layers fix the input size; say so instead of failing in a matmul.
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 32, 32):
        raise ValueError(f"LeNet5 expects input of shape [N, 1, 32, 32], got {list(x.shape)}")
    return x


# A leaf for torch.fx (see fastconv.functional): symbolic tracing records one call to the
# shape check, which runs when the traced module runs.
torch.fx.wrap("_checked_input")


@register_model
def lenet5(num_classes: int = 10, weights=None) -> LeNet5:
    """LeNet-5 (ReLU and max-pooling variant) for 32×32 grey-scale images."""
    return load_weights(LeNet5(num_classes=num_classes), weights)
