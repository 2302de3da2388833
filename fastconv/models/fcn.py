"""Fully convolutional networks (Long, Shelhamer, Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015): FCN-32s, FCN-16s and FCN-8s on a VGG-16 backbone, on
fastconv layers.

The classifier is "made fully convolutional": fc6 becomes a 7x7 convolution with 4096
outputs and fc7 a 1x1 convolution, so the network slides over an image of any size and
scores every position of a coarse (1/32) grid; `score_fr` (1x1) gives the class scores.
Transposed convolutions initialised to bilinear interpolation bring the scores back to the
image's resolution, in one 32x step (32s), or in a 2x step, a fusion with the pool4 scores
and a 16x step (16s), or in two 2x steps fused with pool4 and pool3 and an 8x step (8s).

With padding="paper" (the default), as in the paper's Caffe networks:
* conv1_1 pads by 100 and the max-pools round up (ceil_mode=True). Together they keep the
  coarse map at least as large as fc6's 7x7 window for any input, down to 1x1, and make the
  upsampled map cover the whole image, so the output has the input's size for every H, W.
  (Rounding down would lose up to 31 rows of coverage at the bottom for some sizes.)
* The crop offsets (19; 5 and 27; 9 and 31) align each map with the image. A position of a
  map sits at image coordinate a*i + b (a the map's stride, b its offset): conv1_1 with pad
  100 gives b = -99, each 2x2 pool maps i to 2i + 0.5, fc6's 7x7 window adds 3 positions,
  and a transposed conv of stride s and kernel 2s puts input i at output s*i + s - 0.5.
  So score_fr sits at 32i + 12.5, and FCN-32s's upsampled output j at image j - 19; the
  other offsets follow the same way (derivation in the comments of FCN.forward).

The padding of 100 makes a small image expensive: a 64x64 input is convolved at 262x262 by
conv1. padding="same" is the equivalent for such cases: conv1_1 keeps VGG's padding of 1,
the pools still round up (so pool k is ceil(H / 2**k) rows), fc6 pads by 3 so that it keeps
pool5's size, and each transposed convolution pads by s/2. Then every map already sits at
image coordinate a*i + (a - 1)/2, the maps being fused are aligned without offsets, and the
only crop trims the last map (which covers ceil(H / s) * s >= H rows) to H. The price is that
fc6's border windows see zeros beyond pool5 instead of the backbone's response to the padded
image, a different (not a worse) boundary treatment.

In both modes, as in the paper:
* The class scoring layers are zero-initialised: the paper found random initialisation no
  better, and for the skip layers it means a new FCN-16s/8s starts out adding nothing to the
  coarse prediction it is fine-tuned from.
* The 2x upsampling layers start bilinear and are learned; the last upsampling stays fixed
  bilinear interpolation (its weight has requires_grad=False).

torchvision has no VGG-based FCN, so beyond `features` (torchvision's VGG-16 indices, so a
torchvision VGG-16 state_dict's features load unchanged) the module names are the Caffe
layer names of the paper's reference networks. The model returns the score tensor
[N, num_classes, H, W] (logits).
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

import fastconv.nn as fnn

from . import vgg as _vgg
from ._checks import positive_int as _positive_int, probability as _probability
from ._registry import load_weights, register_model, state_dict_from

__all__ = ["FCN", "fcn32s", "fcn16s", "fcn8s"]

# Per padding mode: conv1_1's padding, fc6's padding, whether each transposed convolution
# pads by s/2, and how far each map is cropped to align it with the image or with the
# upsampled map it is fused with (see FCN.forward for the arithmetic).
_PADDING_MODES = {
    "paper": dict(conv1=100, fc6=0, upsample_padding=False,
                  crop={"32s": 19, "16s": 27, "8s": 31, "pool4": 5, "pool3": 9}),
    "same": dict(conv1=1, fc6=3, upsample_padding=True,
                 crop={"32s": 0, "16s": 0, "8s": 0, "pool4": 0, "pool3": 0}),
}


def bilinear_upsampling_weight(channels: int, kernel_size: int) -> torch.Tensor:
    """Weight [channels, channels, k, k] for a ConvTranspose2d of stride k/2 (k even) that
    upsamples each channel on its own by bilinear interpolation: the 1-D kernel is the "tent"
    1 - |t - c| / s about the kernel's centre c = s - 0.5, and channels do not mix.

    With padding s/2 (or the same crop), the output equals
    F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) wherever both
    neighbours of a sample exist (everywhere but the outermost s/2 pixels)."""
    _positive_int("channels", channels)
    _positive_int("kernel_size", kernel_size)
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 else factor - 0.5
    t = torch.arange(kernel_size, dtype=torch.float64)
    tent = 1 - (t - centre).abs() / factor
    kernel = torch.outer(tent, tent)
    weight = torch.zeros(channels, channels, kernel_size, kernel_size, dtype=torch.float64)
    weight[range(channels), range(channels)] = kernel
    return weight


def _bilinear_upsampler(channels: int, stride: int, learnable: bool, padded: bool) -> fnn.ConvTranspose2d:
    layer = fnn.ConvTranspose2d(channels, channels, kernel_size=2 * stride, stride=stride,
                                padding=stride // 2 if padded else 0, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_upsampling_weight(channels, 2 * stride))
    layer.weight.requires_grad_(learnable)
    return layer


def _crop(x: torch.Tensor, offset: int, height: int, width: int) -> torch.Tensor:
    if x.shape[-2] < offset + height or x.shape[-1] < offset + width:
        raise RuntimeError(
            f"FCN: map {tuple(x.shape[-2:])} too small for a {height}x{width} crop at {offset}; "
            "the backbone does not have the padding and rounding the crops assume"
        )
    return x[:, :, offset:offset + height, offset:offset + width]


def _fuse(up: torch.Tensor, skip: torch.Tensor, offset: int) -> torch.Tensor:
    """up + skip, with skip's position `offset` aligned to up's position 0, over the rows and
    columns both have (the skip is the larger in "paper" mode, the upsampled map in "same")."""
    height = min(up.shape[-2], skip.shape[-2] - offset)
    width = min(up.shape[-1], skip.shape[-1] - offset)
    return _crop(up, 0, height, width) + _crop(skip, offset, height, width)


def _checked_input(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"FCN expects input [N, C, H, W], got shape {tuple(x.shape)}")
    return x


# Leaves for torch.fx (see fastconv.functional): the input check and the crops depend on the
# maps' sizes, so symbolic tracing records one call to each, which runs when the traced
# module runs.
torch.fx.wrap("_checked_input")
torch.fx.wrap("_crop")
torch.fx.wrap("_fuse")


def _conv_out_channels(layers) -> int:
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("features: a stage between two max-pools has no convolution")
    return convs[-1].out_channels


class FCN(nn.Module):
    """FCN-32s/16s/8s (output_stride 32/16/8) on a VGG-16-shaped `features` Sequential
    (torchvision's layout: conv1_1 first, five MaxPool2d, pool3 and pool4 the 3rd and 4th).

    The constructor changes `features` in place: the max-pools round up, and with
    padding="paper" conv1_1 pads by 100 (see the module docstring for "same"). fc6 is a 7x7
    convolution to `fc_channels` outputs (4096 in the paper), fc7 a 1x1 one, each followed by
    ReLU and Dropout(dropout).
    """

    def __init__(
        self,
        features: nn.Sequential,
        num_classes: int = 21,
        output_stride: int = 32,
        dropout: float = 0.5,
        fc_channels: int = 4096,
        padding: str = "paper",
    ):
        super().__init__()
        _positive_int("num_classes", num_classes)
        _positive_int("fc_channels", fc_channels)
        _probability("dropout", dropout)
        if output_stride not in (32, 16, 8):
            raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride!r}")
        if padding not in _PADDING_MODES:
            raise ValueError(f"padding must be one of {sorted(_PADDING_MODES)}, got {padding!r}")
        if not isinstance(features, nn.Sequential):
            raise TypeError(f"features must be an nn.Sequential, got {type(features).__name__}")
        layers = list(features)
        pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        if len(pools) != 5 or pools[-1] != len(layers) - 1 or not isinstance(layers[0], nn.Conv2d):
            raise ValueError("features must be VGG-shaped: a convolution first, five MaxPool2d, "
                             "the last of them closing the Sequential")
        mode = _PADDING_MODES[padding]
        self.output_stride = output_stride
        self.padding = padding
        self._crop_offsets = mode["crop"]
        self._pool3_index, self._pool4_index = pools[2], pools[3]

        layers[0].padding = (mode["conv1"], mode["conv1"])
        for i in pools:
            layers[i].ceil_mode = True
        self.features = features

        pool3_channels = _conv_out_channels(layers[pools[1]:pools[2]])
        pool4_channels = _conv_out_channels(layers[pools[2]:pools[3]])
        pool5_channels = _conv_out_channels(layers[pools[3]:pools[4]])

        self.fc6 = fnn.Conv2d(pool5_channels, fc_channels, kernel_size=7, padding=mode["fc6"])
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(p=dropout)
        self.fc7 = fnn.Conv2d(fc_channels, fc_channels, kernel_size=1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(p=dropout)
        self.score_fr = fnn.Conv2d(fc_channels, num_classes, kernel_size=1)
        zero_init = [self.score_fr]

        padded = mode["upsample_padding"]
        if output_stride == 32:
            self.upscore = _bilinear_upsampler(num_classes, 32, learnable=False, padded=padded)
        else:
            self.upscore2 = _bilinear_upsampler(num_classes, 2, learnable=True, padded=padded)
            self.score_pool4 = fnn.Conv2d(pool4_channels, num_classes, kernel_size=1)
            zero_init.append(self.score_pool4)
            if output_stride == 16:
                self.upscore16 = _bilinear_upsampler(num_classes, 16, learnable=False, padded=padded)
            else:
                self.upscore_pool4 = _bilinear_upsampler(num_classes, 2, learnable=True, padded=padded)
                self.score_pool3 = fnn.Conv2d(pool3_channels, num_classes, kernel_size=1)
                zero_init.append(self.score_pool3)
                self.upscore8 = _bilinear_upsampler(num_classes, 8, learnable=False, padded=padded)

        # He initialisation for fc6/fc7, which feed ReLUs, as VGG's convolutions have; it only
        # matters when training from scratch, since backbone weights replace it.
        for layer in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        for layer in zero_init:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _checked_input(x)
        height, width = x.shape[-2], x.shape[-1]
        pool3 = pool4 = None
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self._pool3_index:
                pool3 = x
            elif i == self._pool4_index:
                pool4 = x
        x = self.drop6(self.relu6(self.fc6(x)))
        x = self.drop7(self.relu7(self.fc7(x)))
        score = self.score_fr(x)
        crop = self._crop_offsets
        # Where map position i sits in the image, as a*i + b. "paper": conv1_1 -99 (pad 100
        # around a 3x3 centre); pool3 8i - 95.5, pool4 16i - 91.5, pool5 32i - 83.5; score
        # 32i + 12.5 (fc6's unpadded 7x7 window moves it by 3 positions). A stride-s, kernel-2s
        # transposed convolution puts its input i at output s*i + s - 0.5. "same": every map
        # sits at a*i + (a - 1)/2 and the s/2 padding of the upsamplers keeps it so.

        if self.output_stride == 32:
            # "paper": output j is image j - 31.5 + 12.5, so crop 19.
            return _crop(self.upscore(score), crop["32s"], height, width)

        # "paper": upscore2 output j is at 16j - 11.5, pool4 position j + 5 at the same place.
        up = _fuse(self.upscore2(score), self.score_pool4(pool4), crop["pool4"])
        if self.output_stride == 16:
            # "paper": upscore16 (stride 16) output j is image j - 15.5 - 11.5, so crop 27.
            return _crop(self.upscore16(up), crop["16s"], height, width)

        # "paper": upscore_pool4 output j is at 8j - 23.5, pool3 position j + 9 there too.
        up = _fuse(self.upscore_pool4(up), self.score_pool3(pool3), crop["pool3"])
        # "paper": upscore8 (stride 8) output j is image j - 7.5 - 23.5, so crop 31.
        return _crop(self.upscore8(up), crop["8s"], height, width)

    @torch.no_grad()
    def load_backbone(self, vgg16_state_dict) -> "FCN":
        """Initialise features, fc6 and fc7 from a torchvision-format VGG-16 state_dict
        (VGG-16-BN for a batch_norm backbone), or the path of a torch.save'd one: the features
        as they are, and the classifier's first two Linear layers reshaped into the 7x7 and 1x1
        convolutions they are equivalent to on a 7x7 pool5 map (torchvision flattens pool5
        channel-major, [512, 7, 7], so the Linear weight [4096, 25088] views as [4096, 512, 7, 7]). The ImageNet classifier
        (classifier.6) is not used. Returns self."""
        try:
            state = state_dict_from(vgg16_state_dict)
        except TypeError:
            raise TypeError("backbone_weights must be a VGG-16 state_dict or the path of a saved "
                            f"one, got {type(vgg16_state_dict).__name__}") from None
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        expected_other = {f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
        other = set(state) - {f"features.{k}" for k in features}
        if other != expected_other:
            raise ValueError(
                "backbone_weights is not a torchvision VGG-16 state_dict: expected features.* and "
                f"{sorted(expected_other)}, got extra {sorted(other - expected_other)} and "
                f"missing {sorted(expected_other - other)}"
            )
        fc6_w, fc7_w = state["classifier.0.weight"], state["classifier.3.weight"]
        if fc6_w.shape != (self.fc6.out_channels, self.fc6.in_channels * 7 * 7):
            raise ValueError(f"backbone_weights: classifier.0.weight has shape {tuple(fc6_w.shape)}, "
                             f"fc6 needs {(self.fc6.out_channels, self.fc6.in_channels * 49)}")
        if fc7_w.shape != (self.fc7.out_channels, self.fc7.in_channels):
            raise ValueError(f"backbone_weights: classifier.3.weight has shape {tuple(fc7_w.shape)}, "
                             f"fc7 needs {(self.fc7.out_channels, self.fc7.in_channels)}")
        self.features.load_state_dict(features, strict=True)
        self.fc6.weight.copy_(fc6_w.reshape(self.fc6.weight.shape))
        self.fc6.bias.copy_(state["classifier.0.bias"])
        self.fc7.weight.copy_(fc7_w.reshape(self.fc7.weight.shape))
        self.fc7.bias.copy_(state["classifier.3.bias"])
        return self


def _fcn(output_stride: int, weights, backbone_weights, num_classes: int, dropout: float,
         width_mult: float, padding: str, batch_norm: bool) -> FCN:
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
    if padding not in _PADDING_MODES:
        # Checked before the (slow, full-width) backbone is built.
        raise ValueError(f"padding must be one of {sorted(_PADDING_MODES)}, got {padding!r}")
    if not isinstance(batch_norm, bool):
        raise TypeError(f"batch_norm must be a bool, got {type(batch_norm).__name__}")
    if weights is not None and backbone_weights is not None:
        raise ValueError("give weights (a whole FCN) or backbone_weights (a VGG-16), not both")
    if backbone_weights is not None and width_mult != 1:
        raise ValueError(f"backbone_weights needs the full-width VGG-16, got width_mult={width_mult}")
    if width_mult == 1:
        # Only the convolutions (with VGG's initialisation) are kept: fc6/fc7 are new
        # convolutions, filled from the VGG's Linear layers only when backbone_weights is given.
        features = (_vgg.vgg16_bn() if batch_norm else _vgg.vgg16()).features
    else:
        # A narrow VGG-16 (every width times width_mult) for runs where the full network is
        # too slow, e.g. the CPU example; same layout, so the FCN wiring is unchanged.
        config = [c if c == "M" else max(1, round(c * width_mult)) for c in _vgg._CONFIGS["D"]]
        features = _vgg._make_features(config, batch_norm=batch_norm)
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    model = FCN(features, num_classes=num_classes, output_stride=output_stride, dropout=dropout,
                fc_channels=max(1, round(4096 * width_mult)), padding=padding)
    if backbone_weights is not None:
        model.load_backbone(backbone_weights)
    return load_weights(model, weights)


@register_model
def fcn32s(*, weights=None, backbone_weights=None, num_classes: int = 21, dropout: float = 0.5,
           width_mult: float = 1.0, padding: str = "paper", batch_norm: bool = False) -> FCN:
    """FCN-32s on VGG-16 (21 classes: PASCAL VOC's 20 and background): the coarse scores
    upsampled 32x.

    `weights`: a whole FCN state_dict of the same configuration, or its path.
    `backbone_weights`: a torchvision-format VGG-16 (VGG-16-BN with batch_norm=True)
    state_dict, or its path, for features, fc6 and fc7. `width_mult` scales every width (the
    paper's is 1). `padding`: "paper" (conv1_1 pads by 100) or "same" (cheaper on small
    images; see the module docstring). `batch_norm`: the VGG-16-BN backbone, which trains
    from scratch much faster; the paper's is without (False)."""
    return _fcn(32, weights, backbone_weights, num_classes, dropout, width_mult, padding, batch_norm)


@register_model
def fcn16s(*, weights=None, backbone_weights=None, num_classes: int = 21, dropout: float = 0.5,
           width_mult: float = 1.0, padding: str = "paper", batch_norm: bool = False) -> FCN:
    """FCN-16s on VGG-16: the coarse scores upsampled 2x, plus the pool4 scores, upsampled
    16x. Arguments as fcn32s."""
    return _fcn(16, weights, backbone_weights, num_classes, dropout, width_mult, padding, batch_norm)


@register_model
def fcn8s(*, weights=None, backbone_weights=None, num_classes: int = 21, dropout: float = 0.5,
          width_mult: float = 1.0, padding: str = "paper", batch_norm: bool = False) -> FCN:
    """FCN-8s on VGG-16: the FCN-16s fusion upsampled 2x, plus the pool3 scores, upsampled
    8x. Arguments as fcn32s."""
    return _fcn(8, weights, backbone_weights, num_classes, dropout, width_mult, padding, batch_norm)

