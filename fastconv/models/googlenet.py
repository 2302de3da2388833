"""GoogLeNet / Inception v1 (Szegedy et al., 2014): nine Inception modules, each running 1×1,
3×3 and "5×5" convolutions and a pooled projection side by side, with 1×1 reductions in front
of the larger filters so that the 22-layer network needs only about 6.6M parameters.

Module names, arguments and outputs mirror torchvision.models.googlenet, so its state_dict
loads with strict=True and gives the same outputs:

* every convolution is a BasicConv2d: convolution without bias, BatchNorm (eps 1e-3), ReLU;
  the batch normalisation is torchvision's addition to the 2014 network;
* the "5×5" branch uses a 3×3 kernel, as torchvision's does (pytorch/vision issue 906):
  the parameter shapes, and so the pretrained weights, depend on it;
* with aux_logits=True the two auxiliary classifiers (after inception 4a and 4d) run in
  training mode only, and forward returns GoogLeNetOutputs(logits, aux_logits2, aux_logits1);
  in eval mode, or without auxiliary heads, it returns the logits tensor.

torchvision's `blocks` argument (swapping in quantisable blocks) has no counterpart here.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import nn as fnn
from ._registry import load_weights, register_model, state_dict_from
from ._checks import positive_int as _positive_int, probability as _probability

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "googlenet"]

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])
GoogLeNetOutputs.__annotations__ = {
    "logits": Tensor,
    "aux_logits2": Optional[Tensor],
    "aux_logits1": Optional[Tensor],
}

# ImageNet's per-channel mean and standard deviation. Weights ported from the original Caffe
# model expect inputs scaled to [-1, 1] instead; transform_input converts the one to the other.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicConv2d(nn.Module):
    """Convolution, batch normalisation, ReLU. The convolution has no bias because the
    normalisation's shift would cancel it."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = fnn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches concatenated along channels: 1×1; 1×1 reduce then 3×3;
    1×1 reduce then the (3×3, see the module docstring) "5×5"; 3×3 max-pool then 1×1 projection."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: pool to 4×4, 1×1 convolution to 128, two fully connected layers.
    Its loss adds gradient to the middle of the network during training."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)
        return self.fc2(self.dropout(x))


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False,
                 init_weights: bool = True, dropout: float = 0.2, dropout_aux: float = 0.7):
        super().__init__()
        _positive_int("num_classes", num_classes)
        _probability("dropout", dropout)
        _probability("dropout_aux", dropout_aux)
        self.aux_logits = bool(aux_logits)
        self.transform_input = bool(transform_input)

        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        # Channel counts are the paper's Table 1: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5,
        # pool proj; a module's input is the sum of the previous one's four outputs.
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)

        if self.aux_logits:
            self.aux1: Optional[InceptionAux] = InceptionAux(512, num_classes, dropout=dropout_aux)
            self.aux2: Optional[InceptionAux] = InceptionAux(528, num_classes, dropout=dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        # A normal of std 0.01 for convolutions and linear layers, as torchvision does; its
        # truncation at ±2 is 200 standard deviations out, so it never cuts anything.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2.0, b=2.0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _transform_input(self, x: Tensor) -> Tensor:
        if not self.transform_input:
            return x
        # x_normalised * std + mean is the [0, 1] image; (that - 0.5) / 0.5 is the [-1, 1] one.
        scale = x.new_tensor([s / 0.5 for s in _IMAGENET_STD]).view(1, 3, 1, 1)
        shift = x.new_tensor([(m - 0.5) / 0.5 for m in _IMAGENET_MEAN]).view(1, 3, 1, 1)
        return x * scale + shift

    def forward(self, x: Tensor):
        x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        with_aux = self.training and self.aux_logits and self.aux1 is not None and self.aux2 is not None
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if with_aux:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


@register_model
def googlenet(*, weights=None, num_classes: int = 1000, aux_logits: bool = True,
              transform_input: bool = False, init_weights: bool = True, dropout: float = 0.2,
              dropout_aux: float = 0.7) -> GoogLeNet:
    """GoogLeNet as torchvision builds it: 6,624,904 parameters for 1000 classes, and
    13,004,888 with the two auxiliary heads (most of them in each head's 2048 × 1024 layer).

    `weights` (a state_dict or the path of a saved one) is loaded with strict=True, except that
    auxiliary-head entries are dropped when aux_logits=False, as torchvision does with its
    pretrained file (whose heads were never trained). Weights ported from the original model,
    like torchvision's, also want transform_input=True.
    """
    model = GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, transform_input=transform_input,
                      init_weights=init_weights and weights is None, dropout=dropout,
                      dropout_aux=dropout_aux)
    if weights is not None and not model.aux_logits:
        state = state_dict_from(weights)
        if isinstance(state, Mapping):
            weights = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    return load_weights(model, weights)
