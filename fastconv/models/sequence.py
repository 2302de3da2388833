"""1-D convolutional networks for sequences: text (Kim, 2014) and audio features (a TDNN).

The lecture: "1D convolution ≈ Time Delay Neural Networks (Waibel et al. 1989, Collobert and
Weston 2011)", with two paradigms, sentence modelling (convolve to extract n-grams, pool over
the whole sentence) and context-window modelling; and for audio, MFCC features + TDNNs.
torchvision has neither model, so the names here are this package's own:

- `text_cnn` builds `TextCNN`, Kim's "Convolutional Neural Networks for Sentence
  Classification": word embeddings, parallel convolutions of several widths over the word
  sequence (each filter an n-gram detector), ReLU, max-over-time pooling, dropout, a linear
  classifier. Modules: `embedding` (and `static_embedding` in the multichannel variant),
  `convs` (one fastconv Conv1d per width), `dropout`, `fc`.
- `tdnn` builds `TDNN`, the x-vector network of Snyder et al. (2018): frame-level
  dilated convolutions over feature frames whose temporal context grows layer by layer,
  statistics pooling (mean and standard deviation over time), segment-level linear layers
  and a classifier. Modules: `frames` (one Sequential(conv, BatchNorm1d, ReLU) per layer),
  `pooling`, `embedding` (the x-vector layer), `segment`, `classifier`.

Every convolution is a fastconv layer.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.fx
from torch import Tensor, nn

from .. import nn as fnn
from ._checks import positive_int as _positive_int, probability as _probability
from ._registry import load_weights, register_model

__all__ = [
    "StatsPooling",
    "TDNN",
    "TextCNN",
    "tdnn",
    "text_cnn",
]


def _int_list(name: str, value) -> Tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(value).__name__}")
    if len(value) == 0:
        raise ValueError(f"{name} must not be empty")
    return tuple(_positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))


def _compiling() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _checked_tokens(tokens: Tensor, kernel_sizes: Sequence[int], vocab_size: int) -> Tensor:
    """tokens, after checking that TextCNN can take them."""
    if not isinstance(tokens, Tensor):
        raise TypeError(f"TextCNN: tokens must be a Tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"TextCNN: tokens must be int64 (or int32) token ids, got {tokens.dtype}")
    if tokens.dim() != 2:
        raise ValueError(f"TextCNN: tokens must be 2-D [N, L], got shape {tuple(tokens.shape)}")
    widest = max(kernel_sizes)
    if tokens.shape[1] < widest:
        raise ValueError(
            f"TextCNN: sequences of length {tokens.shape[1]} are shorter than the widest kernel "
            f"({widest}); pad them to at least {widest} tokens with padding_idx"
        )
    # An out-of-range id is an IndexError on the CPU but a device-side assert on a GPU;
    # checking costs a host sync, so it is skipped while compiling or tracing.
    if not _compiling() and tokens.numel() > 0:
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"TextCNN: token ids must be in [0, vocab_size={vocab_size}), got ids in [{low}, {high}]"
            )
    return tokens


def _checked_frames(x: Tensor, in_features: int, receptive_field: int) -> Tensor:
    """x, after checking that TDNN can take it."""
    if not isinstance(x, Tensor):
        raise TypeError(f"TDNN: input must be a Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"TDNN: input must be 3-D [N, in_features, T], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"TDNN: input must be a floating-point tensor, got {x.dtype}")
    if x.shape[1] != in_features:
        raise ValueError(
            f"TDNN: input has {x.shape[1]} features per frame, the model was built for "
            f"in_features={in_features}"
        )
    if x.shape[2] < receptive_field:
        raise ValueError(
            f"TDNN: input has T={x.shape[2]} frames, fewer than the receptive field of "
            f"{receptive_field} frames"
        )
    return x


# Leaves for torch.fx (see fastconv.functional): the checks read the input's type, shape and
# values, so symbolic tracing records one call to each, which runs when the traced module runs.
torch.fx.wrap("_checked_tokens")
torch.fx.wrap("_checked_frames")


_EMBEDDING_MODES = ("non-static", "static", "multichannel")


class TextCNN(nn.Module):
    """Kim's (2014) CNN for sentence classification.

    Input: token ids [N, L], int64 (int32 is accepted too, as by torch.nn.Embedding). Each id is
    embedded ([N, L, E] -> [N, E, L], the embedding dimensions are the channels); for each width
    k in `kernel_sizes` a Conv1d with `num_filters` filters slides over the words, followed by
    ReLU and a max over all positions, so every filter contributes its strongest n-gram match
    and sentences of any length give the same feature size. The len(kernel_sizes)·num_filters
    features go through dropout and `fc` to `num_classes` logits.

    Sentences shorter than the widest kernel raise a ValueError rather than being padded
    silently: pad them with `padding_idx` when batching (Kim pads every sentence by
    max(kernel_sizes) - 1 on each side), so the choice of pad token stays visible.

    `embedding_mode` picks Kim's variants: "non-static" (the embeddings are trained; without
    `pretrained_embeddings` this is his CNN-rand), "static" (the embeddings are frozen), and
    "multichannel" (two copies, `embedding` trained and `static_embedding` frozen, both
    initialised from `pretrained_embeddings`; every filter sees both, which as a convolution is
    one Conv1d over the 2·E concatenated channels). `pretrained_embeddings` is a
    [vocab_size, embed_dim] tensor, e.g. word2vec vectors; the padding row keeps the value given.
    Kim's max-norm constraint on `fc` is a training-loop choice and is left to the caller.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 300,
        num_classes: int = 2,
        kernel_sizes: Sequence[int] = (3, 4, 5),
        num_filters: int = 100,
        dropout: float = 0.5,
        padding_idx: Optional[int] = 0,
        embedding_mode: str = "non-static",
        pretrained_embeddings: Optional[Tensor] = None,
    ):
        super().__init__()
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        self.embed_dim = _positive_int("embed_dim", embed_dim)
        _positive_int("num_classes", num_classes)
        self.kernel_sizes = _int_list("kernel_sizes", kernel_sizes)
        _positive_int("num_filters", num_filters)
        dropout = _probability("dropout", dropout)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
                raise TypeError(f"padding_idx must be an int or None, got {type(padding_idx).__name__}")
            if not 0 <= padding_idx < vocab_size:
                raise ValueError(f"padding_idx must be in [0, vocab_size={vocab_size}), got {padding_idx}")
        if embedding_mode not in _EMBEDDING_MODES:
            raise ValueError(f"embedding_mode must be one of {_EMBEDDING_MODES}, got {embedding_mode!r}")
        if pretrained_embeddings is not None:
            if not isinstance(pretrained_embeddings, Tensor):
                raise TypeError(
                    f"pretrained_embeddings must be a Tensor, got {type(pretrained_embeddings).__name__}"
                )
            if tuple(pretrained_embeddings.shape) != (vocab_size, embed_dim):
                raise ValueError(
                    f"pretrained_embeddings must have shape (vocab_size, embed_dim) = "
                    f"({vocab_size}, {embed_dim}), got {tuple(pretrained_embeddings.shape)}"
                )
        self.embedding_mode = embedding_mode
        self.padding_idx = padding_idx

        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        if embedding_mode == "multichannel":
            self.static_embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        if pretrained_embeddings is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(pretrained_embeddings)
                if embedding_mode == "multichannel":
                    self.static_embedding.weight.copy_(pretrained_embeddings)
        elif embedding_mode == "multichannel":
            # Without pretrained vectors the two channels still start equal, as in Kim's setup,
            # and then drift apart as only one of them is trained.
            with torch.no_grad():
                self.static_embedding.weight.copy_(self.embedding.weight)
        if embedding_mode == "static":
            self.embedding.weight.requires_grad_(False)
        if embedding_mode == "multichannel":
            self.static_embedding.weight.requires_grad_(False)

        conv_in = embed_dim * (2 if embedding_mode == "multichannel" else 1)
        self.convs = nn.ModuleList(fnn.Conv1d(conv_in, num_filters, k) for k in self.kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_filters * len(self.kernel_sizes), num_classes)

    def features(self, tokens: Tensor) -> Tensor:
        """The max-over-time features [N, len(kernel_sizes)·num_filters], before dropout."""
        tokens = _checked_tokens(tokens, self.kernel_sizes, self.vocab_size)
        embedded = self.embedding(tokens)
        if self.embedding_mode == "multichannel":
            embedded = torch.cat([embedded, self.static_embedding(tokens)], dim=2)
        # [N, L, E] -> [N, E, L]: Conv1d slides over the last dimension, the words.
        embedded = embedded.transpose(1, 2)
        pooled = [torch.relu(conv(embedded)).amax(dim=2) for conv in self.convs]
        return torch.cat(pooled, dim=1)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(self.dropout(self.features(tokens)))


def _context(name: str, offsets) -> Tuple[int, int, int]:
    """Frame offsets such as (-2, 0, 2) as (first offset, kernel size, dilation): a context must
    be increasing and evenly spaced, which is what one dilated convolution can see."""
    if isinstance(offsets, (str, bytes)) or not isinstance(offsets, Sequence) or len(offsets) == 0:
        raise TypeError(f"{name} must be a non-empty sequence of int frame offsets, got {offsets!r}")
    for o in offsets:
        if isinstance(o, bool) or not isinstance(o, int):
            raise TypeError(f"{name} must hold int frame offsets, got {offsets!r}")
    if len(offsets) == 1:
        return offsets[0], 1, 1
    step = offsets[1] - offsets[0]
    if step <= 0 or any(b - a != step for a, b in zip(offsets, offsets[1:])):
        raise ValueError(
            f"{name} must be increasing and evenly spaced (one dilated convolution), got {tuple(offsets)}"
        )
    return offsets[0], len(offsets), step


class StatsPooling(nn.Module):
    """Statistics pooling: [N, C, T] -> [N, 2C], the mean over time followed by the standard
    deviation over time (population variance, floored at `eps` before the square root so a
    constant channel gives a finite gradient)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=2)
        var = x.var(dim=2, unbiased=False)
        return torch.cat([mean, var.clamp_min(self.eps).sqrt()], dim=1)


_XVECTOR_CONTEXTS = ((-2, -1, 0, 1, 2), (-2, 0, 2), (-3, 0, 3), (0,), (0,))
_XVECTOR_CHANNELS = (512, 512, 512, 512, 1500)


class TDNN(nn.Module):
    """A time-delay neural network over audio feature frames, x-vector style (Snyder et al.).

    Input: [N, in_features, T] (e.g. 40 filterbank energies or MFCCs per 10 ms frame). Frame
    layer i is a Conv1d whose taps are the frame offsets `contexts[i]` (kernel size = number
    of offsets, dilation = their spacing, no padding), then BatchNorm1d and ReLU; with the
    default contexts [-2..2], {-2, 0, 2}, {-3, 0, 3}, {0}, {0} and channels 512, 512, 512, 512,
    1500, each frame-level output sees input frames t-7..t+7 (a receptive field of 15 frames).
    The frame-level output has T - receptive_field + 1 frames; its frame j is centred on input
    frame j - context[0] (so frame j + 7 by default). Inputs shorter than the receptive field
    raise a ValueError.

    Statistics pooling then turns the frames into one [N, 2·channels[-1]] vector per segment,
    whatever T is; `embedding` (Linear to `embedding_dim`) gives the x-vector, which embed(x)
    returns (before any non-linearity, as Snyder et al. extract it); `segment` (ReLU,
    BatchNorm1d, Linear, ReLU, BatchNorm1d) and `classifier` give the `num_classes` logits.
    As with any BatchNorm1d on [N, C] segment vectors, training mode needs N ≥ 2.
    """

    def __init__(
        self,
        in_features: int = 40,
        *,
        num_classes: int,
        contexts: Sequence[Sequence[int]] = _XVECTOR_CONTEXTS,
        channels: Sequence[int] = _XVECTOR_CHANNELS,
        embedding_dim: int = 512,
    ):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        _positive_int("num_classes", num_classes)
        _positive_int("embedding_dim", embedding_dim)
        if isinstance(contexts, (str, bytes)) or not isinstance(contexts, Sequence) or len(contexts) == 0:
            raise TypeError(f"contexts must be a non-empty sequence of frame-offset sequences, got {contexts!r}")
        channels = _int_list("channels", channels)
        if len(channels) != len(contexts):
            raise ValueError(
                f"channels ({len(channels)} entries) must have one entry per context ({len(contexts)} entries)"
            )
        taps = [_context(f"contexts[{i}]", c) for i, c in enumerate(contexts)]
        self.contexts = tuple(tuple(c) for c in contexts)
        self.context = (sum(c[0] for c in self.contexts), sum(c[-1] for c in self.contexts))
        self.receptive_field = self.context[1] - self.context[0] + 1

        frames = []
        width = in_features
        for (_, kernel_size, dilation), out in zip(taps, channels):
            frames.append(
                nn.Sequential(
                    fnn.Conv1d(width, out, kernel_size, dilation=dilation, bias=False),
                    nn.BatchNorm1d(out),
                    nn.ReLU(inplace=True),
                )
            )
            width = out
        self.frames = nn.Sequential(*frames)
        self.pooling = StatsPooling()
        self.embedding = nn.Linear(2 * width, embedding_dim)
        self.segment = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(embedding_dim),
            nn.Linear(embedding_dim, embedding_dim),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(embedding_dim),
        )
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def frame_features(self, x: Tensor) -> Tensor:
        """The frame-level output [N, channels[-1], T - receptive_field + 1]."""
        return self.frames(_checked_frames(x, self.in_features, self.receptive_field))

    def embed(self, x: Tensor) -> Tensor:
        """The segment embedding (the x-vector) [N, embedding_dim]."""
        return self.embedding(self.pooling(self.frame_features(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.segment(self.embed(x)))


@register_model
def text_cnn(
    vocab_size: int,
    embed_dim: int = 300,
    num_classes: int = 2,
    kernel_sizes: Sequence[int] = (3, 4, 5),
    num_filters: int = 100,
    dropout: float = 0.5,
    padding_idx: Optional[int] = 0,
    embedding_mode: str = "non-static",
    pretrained_embeddings: Optional[Tensor] = None,
    weights=None,
) -> TextCNN:
    """Kim's (2014) sentence CNN (see TextCNN). The defaults are the paper's: 300-d embeddings,
    100 filters each of widths 3, 4, 5, dropout 0.5."""
    model = TextCNN(
        vocab_size, embed_dim, num_classes, kernel_sizes, num_filters, dropout, padding_idx,
        embedding_mode, pretrained_embeddings,
    )
    return load_weights(model, weights)


@register_model
def tdnn(
    in_features: int = 40,
    *,
    num_classes: int,
    contexts: Sequence[Sequence[int]] = _XVECTOR_CONTEXTS,
    channels: Sequence[int] = _XVECTOR_CHANNELS,
    embedding_dim: int = 512,
    weights=None,
) -> TDNN:
    """The x-vector TDNN (see TDNN). The defaults are Snyder et al.'s (2018) layer sizes;
    num_classes (keyword-only and required) is the number of training speakers, languages, ...:
    there is no sensible default."""
    model = TDNN(in_features, num_classes=num_classes, contexts=contexts, channels=channels, embedding_dim=embedding_dim)
    return load_weights(model, weights)
