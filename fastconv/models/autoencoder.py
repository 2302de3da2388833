"""Convolutional autoencoders: a plain one and a variational one (Kingma & Welling, 2014).

The lecture's autoencoder squeezes an image through a small code and rebuilds it: the encoder
is a stack of strided convolutions (each halves the resolution, so no pooling is needed), the
decoder mirrors it with transposed convolutions (each doubles it). torchvision has no such
models, so the names here are this package's own:

- `conv_autoencoder` builds `ConvAutoencoder`: `encoder` (stride-2 3×3 convolutions and a
  linear 3×3 bottleneck to `latent_channels`) and `decoder` (a 3×3 transposed convolution out
  of the bottleneck, then stride-2 3×3 transposed convolutions back to `in_channels`). The code
  is a feature map, `latent_channels` × H/2^k × W/2^k for k = len(channels).
- `vae` builds `VAE`: the same kind of encoder, flattened into two linear heads `fc_mu` and
  `fc_logvar`; a sample z = mu + exp(logvar / 2) · eps is decoded by a linear layer back to a
  feature map and transposed convolutions to logits of the image. `vae_loss` is its negative
  ELBO, `kl_divergence` the closed-form KL term.

Every convolution is a fastconv layer.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.fx
from torch import Tensor, nn

from .. import nn as fnn
from ._checks import positive_int as _positive_int
from ._registry import load_weights, register_model

__all__ = [
    "ConvAutoencoder",
    "VAE",
    "conv_autoencoder",
    "kl_divergence",
    "vae",
    "vae_loss",
]

_OUTPUT_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "none": nn.Identity}


def _channel_list(name: str, value) -> Tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(value).__name__}")
    if len(value) == 0:
        raise ValueError(f"{name} must name at least one stage, got an empty sequence")
    return tuple(_positive_int(f"{name}[{i}]", c) for i, c in enumerate(value))


def _size_pair(name: str, value) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (_positive_int(f"{name}[0]", value[0]), _positive_int(f"{name}[1]", value[1]))


def _halvings(size: int, times: int) -> list[int]:
    """The sizes a length goes through under `times` stride-2, 3×3, padding-1 convolutions:
    each maps n to ceil(n / 2)."""
    sizes = [size]
    for _ in range(times):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _check_image(fn: str, x: Tensor, channels: int, argument: str = "in_channels") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: input must be a Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{fn}: input must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{fn}: input has {x.shape[1]} channels, the model was built for {argument}={channels}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{fn}: input must be a floating-point tensor, got {x.dtype}")


def _checked_vae_image(x: Tensor, in_channels: int, image_size: Tuple[int, int]) -> Tensor:
    """x, after checking that VAE.encode can take it."""
    _check_image("VAE.encode", x, in_channels)
    if tuple(x.shape[-2:]) != image_size:
        raise ValueError(
            f"VAE.encode: input is {x.shape[-2]}x{x.shape[-1]}, the model was built for "
            f"image_size={image_size[0]}x{image_size[1]}"
        )
    return x


def _checked_vae_code(z: Tensor, latent_dim: int) -> Tensor:
    """z, after checking that VAE.decode can take it."""
    if z.dim() != 2 or z.shape[1] != latent_dim:
        raise ValueError(f"VAE.decode: z must be [N, {latent_dim}], got shape {tuple(z.shape)}")
    return z


# Leaves for torch.fx (see fastconv.functional): the checks read the input's type and shape, so
# symbolic tracing records one call to each, which runs when the traced module runs.
torch.fx.wrap("_checked_vae_image")
torch.fx.wrap("_checked_vae_code")


class _UpStage(nn.Module):
    """A transposed convolution (with optional BatchNorm and ReLU) that is told the size to
    produce: a stride-2, 3×3, padding-1 transposed convolution can give 2n - 1 or 2n from n,
    which is exactly the two sizes that its encoder twin maps to n."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, batch_norm: bool, relu: bool):
        super().__init__()
        self.conv = fnn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: Tensor, output_size: Optional[Sequence[int]] = None) -> Tensor:
        return self.relu(self.bn(self.conv(x, output_size=output_size)))


def _down_stage(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        fnn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ConvAutoencoder(nn.Module):
    """A convolutional autoencoder whose code is a feature map.

    `encoder`: for each entry c of `channels`, a 3×3 stride-2 convolution to c channels (with
    BatchNorm if `batch_norm`) and ReLU, then a 3×3 convolution to `latent_channels` with no
    activation (the code is linear, so it can take any sign). `decoder`: a 3×3 transposed
    convolution out of the code, then one 3×3 stride-2 transposed convolution per encoder stage,
    the last one to `in_channels`, followed by `output_activation` ("sigmoid" for images in
    [0, 1], "tanh" for [-1, 1], "none" for unbounded values or logits).

    Sizes: the total stride is 2^len(channels). An H × W input gives a code of
    ceil(H / stride) × ceil(W / stride). forward() always returns the input's size: it tells
    the decoder the size to rebuild, and every H, W ≥ 1 is possible because each transposed
    stage can produce either of the two sizes its encoder stage maps to one. decode(z) on its
    own assumes sizes divisible by the stride (it returns stride·h × stride·w); give it
    `output_size` for other sizes, and it raises a ValueError for an `output_size` whose code
    would not have z's size.
    """

    def __init__(
        self,
        in_channels: int = 1,
        latent_channels: int = 16,
        channels: Sequence[int] = (32, 64),
        batch_norm: bool = False,
        output_activation: str = "sigmoid",
    ):
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.latent_channels = _positive_int("latent_channels", latent_channels)
        channels = _channel_list("channels", channels)
        if not isinstance(batch_norm, bool):
            raise TypeError(f"batch_norm must be a bool, got {type(batch_norm).__name__}")
        if output_activation is None:
            output_activation = "none"
        if output_activation not in _OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {sorted(_OUTPUT_ACTIVATIONS)}, got {output_activation!r}"
            )
        self.num_stages = len(channels)
        self.total_stride = 2 ** len(channels)

        widths = (in_channels,) + channels
        self.encoder = nn.Sequential(
            *(_down_stage(widths[i], widths[i + 1], batch_norm) for i in range(len(channels))),
            fnn.Conv2d(channels[-1], latent_channels, kernel_size=3, padding=1),
        )
        stages = [_UpStage(latent_channels, channels[-1], 1, batch_norm, relu=True)]
        for i in range(len(channels), 0, -1):
            last = i == 1
            stages.append(_UpStage(widths[i], widths[i - 1], 2, batch_norm and not last, relu=not last))
        self.decoder = nn.ModuleList(stages)
        self.output_activation = _OUTPUT_ACTIVATIONS[output_activation]()

    def encode(self, x: Tensor) -> Tensor:
        """[N, in_channels, H, W] -> the code [N, latent_channels, ceil(H/s), ceil(W/s)]."""
        _check_image("ConvAutoencoder.encode", x, self.in_channels)
        return self.encoder(x)

    def decode(self, z: Tensor, output_size: Optional[Sequence[int]] = None) -> Tensor:
        """The code [N, latent_channels, h, w] -> an image [N, in_channels, H, W], where
        (H, W) is `output_size` (its last two entries) or (s·h, s·w) when it is None."""
        _check_image("ConvAutoencoder.decode", z, self.latent_channels, "latent_channels")
        h, w = z.shape[-2:]
        if output_size is None:
            height, width = h * self.total_stride, w * self.total_stride
        else:
            if not isinstance(output_size, int):
                output_size = tuple(output_size)[-2:]
            height, width = _size_pair("output_size", output_size)
        heights = _halvings(height, self.num_stages)
        widths = _halvings(width, self.num_stages)
        if (heights[-1], widths[-1]) != (h, w):
            raise ValueError(
                f"ConvAutoencoder.decode: a {height}x{width} image has a "
                f"{heights[-1]}x{widths[-1]} code, but z is {h}x{w}"
            )
        z = self.decoder[0](z)
        for k, stage in enumerate(self.decoder[1:]):
            level = self.num_stages - 1 - k
            z = stage(z, output_size=(heights[level], widths[level]))
        return self.output_activation(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), output_size=x.shape[-2:])


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, in closed form:
    -1/2 · Σ_j (1 + logvar_j - mu_j² - exp(logvar_j)), summed over every dimension but the
    first. Returns a tensor of shape [N]."""
    if mu.shape != logvar.shape:
        raise ValueError(f"kl_divergence: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ in shape")
    terms = 1 + logvar - mu.square() - logvar.exp()
    return -0.5 * terms.flatten(1).sum(1)


_LIKELIHOODS = ("bernoulli", "gaussian")


def vae_loss(
    recon: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
) -> Tensor:
    """The negative ELBO of a VAE, averaged over the batch.

    For each sample, reconstruction error summed over all pixels plus `beta` times the KL term
    summed over the latent dimensions (`kl_divergence`); the result is the mean of that over the
    batch, a scalar. Summing within a sample keeps the two terms on the scale the ELBO gives
    them; `beta` > 1 is the β-VAE.

    `likelihood="bernoulli"` (the default): `recon` are logits (what VAE.forward returns) and
    `x` holds targets in [0, 1]; the error is binary cross-entropy with logits.
    `likelihood="gaussian"`: `recon` are the means of a unit-variance Gaussian; the error is
    half the squared difference (its negative log-likelihood without the constant).
    """
    if likelihood not in _LIKELIHOODS:
        raise ValueError(f"vae_loss: likelihood must be one of {_LIKELIHOODS}, got {likelihood!r}")
    if recon.shape != x.shape:
        raise ValueError(f"vae_loss: recon {tuple(recon.shape)} and x {tuple(x.shape)} differ in shape")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
        raise ValueError(f"vae_loss: beta must be a non-negative number, got {beta!r}")
    if likelihood == "bernoulli":
        error = nn.functional.binary_cross_entropy_with_logits(recon, x, reduction="none")
    else:
        error = 0.5 * (recon - x).square()
    per_sample = error.flatten(1).sum(1) + beta * kl_divergence(mu, logvar)
    return per_sample.mean()


class VAE(nn.Module):
    """A convolutional variational autoencoder for images of one fixed size.

    `encoder`: 3×3 stride-2 convolutions (one per entry of `channels`) with ReLU, flattened;
    `fc_mu` and `fc_logvar`: linear heads to the mean and log-variance of q(z|x), each
    `latent_dim` wide. `decoder`: Linear(latent_dim, C·h·w), ReLU, reshape to [C, h, w], then
    3×3 stride-2 transposed convolutions back to `in_channels` × image_size, returning logits
    (pair them with vae_loss's default Bernoulli likelihood; sigmoid gives pixel means).

    forward(x) returns (recon_logits, mu, logvar). The code z is mu + exp(logvar / 2) · eps,
    eps ~ N(0, I) (the reparameterisation trick, so gradients reach mu and logvar) in training
    mode and mu in eval mode, unless `sample=True` / `False` is passed to forward.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: Union[int, Tuple[int, int]] = 28,
        latent_dim: int = 16,
        channels: Sequence[int] = (32, 64),
    ):
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.image_size = _size_pair("image_size", image_size)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        channels = _channel_list("channels", channels)

        heights = _halvings(self.image_size[0], len(channels))
        widths = _halvings(self.image_size[1], len(channels))
        code_shape = (channels[-1], heights[-1], widths[-1])
        flat = code_shape[0] * code_shape[1] * code_shape[2]

        sizes = (in_channels,) + channels
        encoder: list[nn.Module] = []
        for i in range(len(channels)):
            encoder += [fnn.Conv2d(sizes[i], sizes[i + 1], kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True)]
        encoder.append(nn.Flatten(1))
        self.encoder = nn.Sequential(*encoder)
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)

        # The image size is fixed, so each transposed stage's output_padding (whether it
        # gives 2n - 1 or 2n) is known now and the decoder can be a plain Sequential.
        decoder: list[nn.Module] = [nn.Linear(latent_dim, flat), nn.ReLU(inplace=True), nn.Unflatten(1, code_shape)]
        for i in range(len(channels), 0, -1):
            pad_h = heights[i - 1] - (2 * heights[i] - 1)
            pad_w = widths[i - 1] - (2 * widths[i] - 1)
            decoder.append(
                fnn.ConvTranspose2d(
                    sizes[i], sizes[i - 1], kernel_size=3, stride=2, padding=1, output_padding=(pad_h, pad_w)
                )
            )
            if i > 1:
                decoder.append(nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """[N, in_channels, *image_size] -> (mu, logvar), each [N, latent_dim]."""
        features = self.encoder(_checked_vae_image(x, self.in_channels, self.image_size))
        return self.fc_mu(features), self.fc_logvar(features)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """z = mu + exp(logvar / 2) · eps with eps ~ N(0, I): the randomness sits in eps, so z
        is a differentiable function of mu and logvar."""
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: Tensor) -> Tensor:
        """[N, latent_dim] -> logits [N, in_channels, *image_size]."""
        return self.decoder(_checked_vae_code(z, self.latent_dim))

    def forward(self, x: Tensor, sample: Optional[bool] = None) -> Tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        if sample is None:
            sample = self.training
        z = self.reparameterize(mu, logvar) if sample else mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n images drawn from the prior: z ~ N(0, I), decoded, passed through a sigmoid, so
        pixel values lie in (0, 1). Returns [n, in_channels, *image_size] without a graph."""
        n = _positive_int("n", n)
        weight = self.fc_mu.weight
        z = torch.randn((n, self.latent_dim), dtype=weight.dtype, device=weight.device, generator=generator)
        return torch.sigmoid(self.decode(z))


@register_model
def conv_autoencoder(
    in_channels: int = 1,
    latent_channels: int = 16,
    channels: Sequence[int] = (32, 64),
    batch_norm: bool = False,
    output_activation: str = "sigmoid",
    weights=None,
) -> ConvAutoencoder:
    """A convolutional autoencoder (see ConvAutoencoder). With the defaults, a 1 × 28 × 28
    image becomes a 16 × 7 × 7 code and back."""
    model = ConvAutoencoder(in_channels, latent_channels, channels, batch_norm, output_activation)
    return load_weights(model, weights)


@register_model
def vae(
    in_channels: int = 1,
    image_size: Union[int, Tuple[int, int]] = 28,
    latent_dim: int = 16,
    channels: Sequence[int] = (32, 64),
    weights=None,
) -> VAE:
    """A convolutional VAE (see VAE) for `image_size` images (28 for MNIST, 32 for CIFAR-sized
    ones; any size works, the linear layers are sized from it)."""
    model = VAE(in_channels, image_size, latent_dim, channels)
    return load_weights(model, weights)
