"""DenseNet-BC (Huang et al., 2017) on fastconv convolutions.

Where ResNet adds a block's output to its input, DenseNet concatenates: inside a dense block
every layer sees the feature maps of all the layers before it and contributes `growth_rate`
new ones. Each layer is BN-ReLU-1×1 conv (the "B"ottleneck, to bn_size·growth_rate
channels) then BN-ReLU-3×3 conv (to growth_rate channels); between blocks a transition
(BN-ReLU-1×1 conv halving the channels, the "C"ompression, then 2×2 average pooling) halves
the resolution.

Module names, constructor arguments and state_dict keys mirror torchvision.models.densenet*,
so a torchvision state_dict loads with strict=True and gives the same outputs. State_dicts in
the older layout that torchvision's own download files use (`norm.1`, `conv.2`, ... inside
each dense layer) load too: the dense layer renames those keys as it loads.

memory_efficient=True recomputes each layer's concatenation + BN + ReLU + 1×1 convolution in
the backward pass (torch.utils.checkpoint) instead of storing it, so activation memory grows
linearly rather than quadratically with depth, at the price of a second forward through the
bottlenecks. The results are the same.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .. import nn as fnn
from ._checks import positive_int as _positive_int
from ._registry import load_weights, register_model

__all__ = ["DenseNet", "densenet121", "densenet161", "densenet169", "densenet201"]


class _DenseLayer(nn.Module):
    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, drop_rate: float,
                 memory_efficient: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = fnn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1,
                                bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = fnn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1,
                                padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def _bottleneck(self, features, update_running_stats: bool = True) -> torch.Tensor:
        x = torch.cat(features, 1)
        norm = self.norm1
        if not update_running_stats and norm.training and norm.running_mean is not None:
            # The checkpoint's backward recomputation must not count the batch in the running
            # statistics a second time. Updating copies gives the same output (training mode
            # normalises with the batch's statistics) and saves the same tensors for backward,
            # which the checkpoint checks, while the module's buffers stay as they were.
            x = F.batch_norm(x, norm.running_mean.clone(), norm.running_var.clone(), norm.weight,
                             norm.bias, True, norm.momentum or 0.0, norm.eps)
        else:
            x = norm(x)
        return self.conv1(self.relu1(x))

    def forward(self, input: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
        # A dense block passes the list of all earlier feature maps; concatenating them here,
        # not in the block, is what lets checkpointing drop the concatenation from memory.
        features = [input] if isinstance(input, torch.Tensor) else list(input)
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in features):
            calls = 0

            def bottleneck(*tensors):
                nonlocal calls
                calls += 1
                return self._bottleneck(tensors, update_running_stats=calls == 1)

            out = torch.utils.checkpoint.checkpoint(bottleneck, *features, use_reentrant=False)
        else:
            out = self._bottleneck(features)
        new_features = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return new_features

    # Older DenseNet checkpoints (torchvision's download files among them) name the layers
    # norm.1, relu.1, conv.1, norm.2, ...: a '.' inside a module name, no longer allowed.
    _LEGACY_NAMES = {"norm.1": "norm1", "conv.1": "conv1", "norm.2": "norm2", "conv.2": "conv2"}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in self._LEGACY_NAMES.items():
                if rest.startswith(old + "."):
                    state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                    break
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class _DenseBlock(nn.ModuleDict):
    # torchvision's version number for this module's state_dict layout; kept equal so that
    # the metadata of a state_dict saved from either model reads the same.
    _version = 2

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int,
                 drop_rate: float, memory_efficient: bool = False) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(
                "denselayer%d" % (i + 1),
                _DenseLayer(num_input_features + i * growth_rate, growth_rate=growth_rate,
                            bn_size=bn_size, drop_rate=drop_rate, memory_efficient=memory_efficient),
            )

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = fnn.Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1,
                               bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """A DenseNet-BC: `features` (7×7 stride-2 stem, max-pool, dense blocks of
    `block_config[i]` layers with transitions between them, final BatchNorm `norm5`), then
    ReLU, global average pooling and the linear `classifier`.

    growth_rate: channels each dense layer adds (k in the paper). bn_size: the 1×1
    bottleneck has bn_size·growth_rate channels. num_init_features: channels of the stem.
    drop_rate: dropout after each dense layer. memory_efficient: checkpoint the bottlenecks
    (see the module docstring). Inputs must be at least 29×29.
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0,
        num_classes: int = 1000,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        _positive_int("growth_rate", growth_rate)
        if (isinstance(block_config, (str, bytes)) or not isinstance(block_config, Sequence)
                or not block_config):
            raise ValueError(
                f"block_config must be a non-empty sequence of layer counts, got {block_config!r}")
        for i, n in enumerate(block_config):
            _positive_int("block_config[%d]" % i, n)
        _positive_int("num_init_features", num_init_features)
        _positive_int("bn_size", bn_size)
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)):
            raise TypeError(f"drop_rate must be a float, got {type(drop_rate).__name__}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        _positive_int("num_classes", num_classes)
        if not isinstance(memory_efficient, bool):
            raise TypeError(f"memory_efficient must be a bool, got {type(memory_efficient).__name__}")

        self.features = nn.Sequential(OrderedDict([
            ("conv0", fnn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(
                "denseblock%d" % (i + 1),
                _DenseBlock(num_layers, channels, bn_size=bn_size, growth_rate=growth_rate,
                            drop_rate=drop_rate, memory_efficient=memory_efficient),
            )
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module("transition%d" % (i + 1), _Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)

        # torchvision's initialisation, so that training from scratch behaves alike.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # norm5 is the last module of `features`; its ReLU lives here, as in torchvision,
        # so that `features` ends on the normalised maps.
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


def _densenet(growth_rate: int, block_config, num_init_features: int, weights, **kwargs) -> DenseNet:
    # As in torchvision, a builder's name fixes growth_rate, block_config and
    # num_init_features, so the builders do not take them (passing one is a TypeError);
    # DenseNet(...) takes them all.
    return load_weights(DenseNet(growth_rate, block_config, num_init_features, **kwargs), weights)


@register_model
def densenet121(*, weights=None, num_classes: int = 1000, bn_size: int = 4, drop_rate: float = 0,
                memory_efficient: bool = False) -> DenseNet:
    """DenseNet-121: growth rate 32, dense blocks (6, 12, 24, 16),
    64 stem channels; 7,978,856 parameters for 1000 classes."""
    return _densenet(32, (6, 12, 24, 16), 64, weights, bn_size=bn_size, drop_rate=drop_rate,
                     num_classes=num_classes, memory_efficient=memory_efficient)


@register_model
def densenet161(*, weights=None, num_classes: int = 1000, bn_size: int = 4, drop_rate: float = 0,
                memory_efficient: bool = False) -> DenseNet:
    """DenseNet-161: growth rate 48, dense blocks (6, 12, 36, 24),
    96 stem channels; 28,681,000 parameters for 1000 classes."""
    return _densenet(48, (6, 12, 36, 24), 96, weights, bn_size=bn_size, drop_rate=drop_rate,
                     num_classes=num_classes, memory_efficient=memory_efficient)


@register_model
def densenet169(*, weights=None, num_classes: int = 1000, bn_size: int = 4, drop_rate: float = 0,
                memory_efficient: bool = False) -> DenseNet:
    """DenseNet-169: growth rate 32, dense blocks (6, 12, 32, 32),
    64 stem channels; 14,149,480 parameters for 1000 classes."""
    return _densenet(32, (6, 12, 32, 32), 64, weights, bn_size=bn_size, drop_rate=drop_rate,
                     num_classes=num_classes, memory_efficient=memory_efficient)


@register_model
def densenet201(*, weights=None, num_classes: int = 1000, bn_size: int = 4, drop_rate: float = 0,
                memory_efficient: bool = False) -> DenseNet:
    """DenseNet-201: growth rate 32, dense blocks (6, 12, 48, 32),
    64 stem channels; 20,013,928 parameters for 1000 classes."""
    return _densenet(32, (6, 12, 48, 32), 64, weights, bn_size=bn_size, drop_rate=drop_rate,
                     num_classes=num_classes, memory_efficient=memory_efficient)
