"""Low-rank decompositions of a trained convolution: the lecture's Guideline 5.

A K×C×R×S filter bank holds far fewer independent directions than it has numbers, and two
factorisations turn that into fewer multiply-adds:

- **spatial** (Jaderberg, Vedaldi & Zisserman, "Speeding up Convolutional Neural Networks
  with Low Rank Expansions", BMVC 2014, their second scheme): an R×1 convolution from C to D
  channels, then a 1×S one from D to K. The filter bank, seen as a (C·R)×(K·S) matrix, is
  replaced by its best rank-D approximation: its truncated singular value decomposition.
- **channel** (Tucker-2, as Kim et al., "Compression of Deep Convolutional Neural Networks for
  Fast and Low Power Mobile Applications", ICLR 2016, apply it): a 1×1 convolution reducing
  C channels to r_in, the R×S convolution from r_in to r_out, and a 1×1 convolution expanding
  to K; the factors are the leading left singular vectors of the filter bank unfolded along
  its output and its input channels (the truncated higher-order SVD), the core the filter
  bank projected onto them.

Both are exact at full rank and approach the original as the rank grows. `decompose` takes a
rank, or the share of the squared singular values ("energy") to keep, and returns the
replacement, a LowRankConv2d of fastconv convolutions, with a report of parameters, FLOPs and
the relative error of its output on given inputs. `decompose_model` decomposes every
eligible convolution of a model, keeping one share of energy in all of them: the largest
share whose FLOPs fit a budget.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from typing import Optional, Sequence, Union

import torch
from torch import nn

from . import nn as fnn
from ._conv_formulas import conv_flops, conv_output_size
from .summary import summary

__all__ = ["LowRankConv2d", "LowRankReport", "ModelDecomposition", "decompose", "decompose_model"]

METHODS = ("spatial", "channel")


@dataclasses.dataclass
class LowRankReport:
    """What one decomposition costs and keeps. FLOPs are per image (multiply-add = 2) at the
    inputs' spatial size; they and the error are None where no inputs were given."""

    method: str
    rank: Union[int, tuple[int, int]]
    """D for spatial; (r_in, r_out) for channel."""
    full_rank: Union[int, tuple[int, int]]
    """The rank at which the decomposition is exact."""
    energy: Union[float, tuple[float, float]]
    """The share of the squared singular values kept (per mode for channel)."""
    params_before: int
    params_after: int
    weight_error: float
    """||W - W'|| / ||W||, W' the filter bank the replacement computes."""
    input_size: Optional[tuple[int, int]] = None
    flops_before: Optional[int] = None
    flops_after: Optional[int] = None
    output_error: Optional[float] = None
    """||y' - y|| / ||y|| on the inputs, y the convolution's output (bias included)."""

    def __str__(self) -> str:
        text = (f"{self.method} rank {self.rank} of {self.full_rank} ({_share(self.energy)} of the energy): "
                f"params {self.params_before:,} -> {self.params_after:,}")
        if self.flops_before is not None:
            text += f", FLOPs {self.flops_before:,} -> {self.flops_after:,} per image"
        if self.output_error is not None:
            text += f", output error {self.output_error:.2e}"
        return text


def _share(energy) -> str:
    return "/".join(f"{100 * e:.1f}%" for e in (energy if isinstance(energy, tuple) else (energy,)))


class LowRankConv2d(nn.Sequential):
    """The replacement of one convolution: its factors, fastconv convolutions run in sequence.
    `report` says what it costs and keeps."""

    def __init__(self, convs: Sequence[nn.Conv2d], method: str, report: LowRankReport):
        super().__init__(*convs)
        self.method = method
        self.report = report

    def equivalent_weight(self) -> torch.Tensor:
        """The K×C×R×S filter bank that the sequence computes (in float64)."""
        if self.method == "spatial":
            vertical, horizontal = (m.weight.detach().double() for m in self)
            # W[k, c, r, s] = sum_d horizontal[k, d, 0, s] * vertical[d, c, r, 0]
            return torch.einsum("kds,dcr->kcrs", horizontal[:, :, 0], vertical[..., 0])
        reduce, core, expand = (m.weight.detach().double() for m in self)
        return torch.einsum("abrs,ka,bc->kcrs", core, expand[:, :, 0, 0], reduce[:, :, 0, 0])

    def extra_repr(self) -> str:
        return f"method={self.method!r}, rank={self.report.rank}"


# ------------------------------------------------------------------------------------------
# Checks and shared arithmetic


def _check_conv(fn: str, conv) -> nn.Conv2d:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{fn}: conv must be a torch.nn.Conv2d (fastconv.Conv2d is one), got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"{fn}: conv has groups={conv.groups}; only ungrouped convolutions (groups=1) "
                         "are decomposed")
    return conv


def _check_method(fn: str, method) -> str:
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {METHODS}, got {method!r}")
    return method


def _check_energy(fn: str, energy) -> float:
    if isinstance(energy, bool) or not isinstance(energy, numbers.Real) or not 0 < energy <= 1:
        raise ValueError(f"{fn}: energy must be a share in (0, 1], got {energy!r}")
    return float(energy)


def _rank_for(cumulative: torch.Tensor, energy: float) -> int:
    """The smallest rank whose leading singular values hold `energy` of the squared total."""
    # A float sum can fall a rounding error short of the share it should reach.
    return int(torch.searchsorted(cumulative, torch.tensor(energy * (1 - 1e-12), dtype=cumulative.dtype))) + 1


def _cumulative(singular: torch.Tensor) -> torch.Tensor:
    energy = singular.square().cumsum(0)
    return energy / energy[-1] if energy[-1] > 0 else torch.ones_like(energy)


def _spectra(conv: nn.Conv2d, method: str) -> list[torch.Tensor]:
    """The singular values that the method truncates: one spectrum (spatial), or those of
    the input-channel and output-channel unfoldings (channel)."""
    w = conv.weight.detach().double().cpu()
    k, c, r, s = w.shape
    if method == "spatial":
        return [torch.linalg.svdvals(w.permute(1, 2, 0, 3).reshape(c * r, k * s))]
    return [torch.linalg.svdvals(w.transpose(0, 1).reshape(c, -1)), torch.linalg.svdvals(w.reshape(k, -1))]


def _pads(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int]]:
    """(begin, end) padding per spatial dimension, as torch applies it ('same' puts the odd
    pixel at the end)."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0), (0, 0)
        totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in conv.padding)


def _flops(convs: Sequence[nn.Conv2d], height: int, width: int) -> int:
    """Per-image FLOPs of a chain of convolutions on a height×width input."""
    total = 0
    for conv in convs:
        (top, bottom), (left, right) = _pads(conv)
        height = conv_output_size(height, conv.kernel_size[0], top, bottom, conv.stride[0], conv.dilation[0])
        width = conv_output_size(width, conv.kernel_size[1], left, right, conv.stride[1], conv.dilation[1])
        total += conv_flops(1, conv.in_channels, conv.out_channels, height, width, *conv.kernel_size,
                            groups=conv.groups)
    return total


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _sub_conv(conv: nn.Conv2d, in_channels: int, out_channels: int, kernel, *, dims, bias: bool,
              weight: torch.Tensor) -> fnn.Conv2d:
    """A fastconv convolution carrying conv's stride, padding and dilation along the spatial
    dimensions in `dims` (0: height, 1: width) and none along the others."""
    def along(values, neutral):
        return tuple(values[d] if d in dims else neutral for d in range(2))

    if isinstance(conv.padding, str):
        padding = conv.padding  # 'same' or 'valid' split along each dimension as torch does
    else:
        padding = along(conv.padding, 0)
    new = fnn.Conv2d(in_channels, out_channels, kernel, stride=along(conv.stride, 1), padding=padding,
                     dilation=along(conv.dilation, 1), bias=bias, padding_mode=conv.padding_mode,
                     device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias:
            new.bias.copy_(conv.bias)
    return new


def _check_rank(fn: str, rank, full, method):
    def one(value, limit, what):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{fn}: rank must be an int{' or a pair (r_in, r_out)' if method == 'channel' else ''}, "
                            f"got {rank!r}")
        if not 1 <= value <= limit:
            raise ValueError(f"{fn}: rank {what}{value} is outside 1..{limit}, the full rank")
        return value

    if method == "spatial":
        return one(rank, full, "")
    pair = tuple(rank) if isinstance(rank, (tuple, list)) else (rank, rank)
    if len(pair) != 2:
        raise ValueError(f"{fn}: rank must be an int or a pair (r_in, r_out), got {rank!r}")
    return one(pair[0], full[0], "r_in="), one(pair[1], full[1], "r_out=")


# ------------------------------------------------------------------------------------------
# One convolution


def decompose(conv: nn.Conv2d, *, method: str = "spatial", rank=None, energy: Optional[float] = None,
              inputs: Optional[torch.Tensor] = None) -> LowRankConv2d:
    """Replace a trained convolution by a low-rank factorisation of it (see the module's
    docstring): give rank (D for spatial; r_in and r_out, or one int for both, for channel)
    or energy (the share of squared singular values to keep, in (0, 1]).

    The replacement keeps the convolution's stride, padding (mode included), dilation, bias,
    dtype and device, and runs on fastconv. With inputs (a batch [N, C, H, W] of what the
    convolution sees), its report gives the FLOPs per image before and after, and the relative
    error of the output."""
    fn = "fastconv.lowrank.decompose()"
    conv = _check_conv(fn, conv)
    method = _check_method(fn, method)
    if (rank is None) == (energy is None):
        raise ValueError(f"{fn}: give exactly one of rank and energy")
    if inputs is not None:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"{fn}: inputs must be a Tensor, got {type(inputs).__name__}")
        if inputs.dim() != 4 or inputs.shape[1] != conv.in_channels:
            raise ValueError(f"{fn}: inputs must be [N, {conv.in_channels}, H, W] for this convolution, "
                             f"got shape {list(inputs.shape)}")
    spectra = _spectra(conv, method)
    full = len(spectra[0]) if method == "spatial" else tuple(len(s) for s in spectra)
    if energy is not None:
        energy = _check_energy(fn, energy)
        ranks = [_rank_for(_cumulative(s), energy) for s in spectra]
        rank = ranks[0] if method == "spatial" else tuple(ranks)
    rank = _check_rank(fn, rank, full, method)

    w = conv.weight.detach().double()
    k, c, r, s = w.shape
    bias = conv.bias is not None
    if method == "spatial":
        u, singular, vh = torch.linalg.svd(w.permute(1, 2, 0, 3).reshape(c * r, k * s), full_matrices=False)
        root = singular[:rank].sqrt()  # split evenly, so the two factors have like scales
        vertical = (u[:, :rank] * root).T.reshape(rank, c, r, 1)
        horizontal = (root[:, None] * vh[:rank]).reshape(rank, k, s).transpose(0, 1).reshape(k, rank, 1, s)
        convs = [
            _sub_conv(conv, c, rank, (r, 1), dims=(0,), bias=False, weight=vertical),
            _sub_conv(conv, rank, k, (1, s), dims=(1,), bias=bias, weight=horizontal),
        ]
        kept = float(_cumulative(spectra[0])[rank - 1])
    else:
        r_in, r_out = rank
        u_in = torch.linalg.svd(w.transpose(0, 1).reshape(c, -1), full_matrices=False)[0][:, :r_in]
        u_out = torch.linalg.svd(w.reshape(k, -1), full_matrices=False)[0][:, :r_out]
        core = torch.einsum("kcrs,ka,cb->abrs", w, u_out, u_in)
        convs = [
            _sub_conv(conv, c, r_in, 1, dims=(), bias=False, weight=u_in.T[:, :, None, None]),
            _sub_conv(conv, r_in, r_out, (r, s), dims=(0, 1), bias=False, weight=core),
            _sub_conv(conv, r_out, k, 1, dims=(), bias=bias, weight=u_out[:, :, None, None]),
        ]
        kept = tuple(float(_cumulative(sv)[n - 1]) for sv, n in zip(spectra, rank))
    report = LowRankReport(method, rank, full, kept, _params(conv), sum(_params(m) for m in convs), 0.0)
    module = LowRankConv2d(convs, method, report)
    report.weight_error = float((module.equivalent_weight() - w).norm() / w.norm()) if w.norm() > 0 else 0.0
    if inputs is not None:
        height, width = inputs.shape[2:]
        report.input_size = (int(height), int(width))
        report.flops_before = _flops([conv], height, width)
        report.flops_after = _flops(convs, height, width)
        with torch.no_grad():
            y = conv(inputs)
            report.output_error = float((module(inputs) - y).norm() / y.norm()) if y.norm() > 0 else 0.0
    return module


# ------------------------------------------------------------------------------------------
# A whole model under a FLOPs budget


@dataclasses.dataclass
class ModelDecomposition:
    """A decomposed copy of a model and what each decomposition did."""

    model: nn.Module
    """The copy, every convolution on fastconv, the chosen ones replaced by LowRankConv2d."""
    energy: float
    """The share of energy kept in every decomposed layer."""
    layers: dict[str, LowRankReport]
    """The decomposed layers' reports (errors: each layer alone, on the inputs it saw in the
    original model)."""
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int

    def __str__(self) -> str:
        lines = [f"{name}: {report}" for name, report in self.layers.items()]
        lines.append(f"model: FLOPs {self.flops_before:,} -> {self.flops_after:,} per image "
                     f"({100 * self.flops_after / self.flops_before:.1f}%), params {self.params_before:,} -> "
                     f"{self.params_after:,}, energy kept {100 * self.energy:.2f}% in every decomposed layer")
        return "\n".join(lines)


def _eligible(conv: nn.Module, method: str) -> bool:
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        return False
    r, s = conv.kernel_size
    # A 1-wide kernel has nothing to split spatially; a 1x1 one has no spatial extent for a core.
    return r > 1 and s > 1 if method == "spatial" else r * s > 1


def decompose_model(model: nn.Module, example_input: torch.Tensor, budget: Union[int, float], *,
                    method: str = "spatial", layers: Optional[Sequence[str]] = None) -> ModelDecomposition:
    """Decompose the convolutions of a copy of `model` so that its FLOPs per image fit `budget`
    (an int: FLOPs; a float in (0, 1]: a share of the model's own), keeping one share of the
    energy in every decomposed layer, the largest that fits. Eligible: ungrouped convolutions
    with a kernel larger than 1 in both dimensions (spatial) or in either (channel), among
    `layers` (names in named_modules()) if given. A layer is replaced only where its
    decomposition is cheaper than itself.

    example_input is a batch [N, C, H, W] the model takes: it fixes the spatial sizes, the FLOPs
    (counted by fastconv.summary) and the inputs each layer's error is measured on. `model` is
    left as it is."""
    fn = "fastconv.lowrank.decompose_model()"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        raise TypeError(f"{fn}: example_input must be a batch of images [N, C, H, W]")
    method = _check_method(fn, method)
    copy_ = fnn.convert(copy.deepcopy(model)).eval()
    names = dict(copy_.named_modules())
    if layers is not None:
        missing = [n for n in layers if n not in names]
        if missing:
            raise ValueError(f"{fn}: layers {missing} are not submodules of the model")
    chosen = {n: m for n, m in names.items() if _eligible(m, method) and (layers is None or n in layers)}
    if not chosen:
        raise ValueError(f"{fn}: the model has no convolution that the {method!r} method can decompose")

    seen: dict[str, torch.Tensor] = {}

    def keep_input(name):
        def hook(module, args, out):
            seen.setdefault(name, args[0].detach())  # returns None: the output stays as it is
        return hook

    handles = [m.register_forward_hook(keep_input(n)) for n, m in chosen.items()]
    try:
        with torch.no_grad():
            copy_(example_input)
    finally:
        for h in handles:
            h.remove()
    flops_before = summary(copy_, input_data=example_input[:1], verbose=False).flops
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(f"{fn}: budget must be FLOPs (an int) or a share of the model's (a float), got {budget!r}")
    if isinstance(budget, numbers.Integral):
        target = int(budget)
    elif 0 < budget <= 1:
        target = budget * flops_before
    else:
        raise ValueError(f"{fn}: budget as a share must be in (0, 1], got {budget!r}")

    plans = {}  # name -> (cumulative energies per mode, FLOPs before, FLOPs at each rank)
    for name, conv in chosen.items():
        if name not in seen:
            continue  # not run by this input
        cumulative = [_cumulative(s) for s in _spectra(conv, method)]
        h, w = seen[name].shape[2:]
        plans[name] = (cumulative, _flops([conv], h, w), (h, w))

    def cost(name, ranks):
        """FLOPs of the layer's decomposition at these ranks, from its sizes alone."""
        conv, (h, w) = chosen[name], plans[name][2]
        k, c, r, s = conv.weight.shape
        (top, bottom), (left, right) = _pads(conv)
        p = conv_output_size(h, r, top, bottom, conv.stride[0], conv.dilation[0])
        q = conv_output_size(w, s, left, right, conv.stride[1], conv.dilation[1])
        if method == "spatial":
            # The R×1 factor keeps every input column; the 1×S one makes the output's.
            return conv_flops(1, c, ranks[0], p, w, r, 1) + conv_flops(1, ranks[0], k, p, q, 1, s)
        r_in, r_out = ranks
        return conv_flops(1, c, r_in, h, w, 1, 1) + conv_flops(1, r_in, r_out, p, q, r, s) + \
            conv_flops(1, r_out, k, p, q, 1, 1)

    def plan(energy):
        """Each layer's ranks at this energy, where decomposing it saves FLOPs; the model's FLOPs."""
        ranks, total = {}, flops_before
        for name, (cumulative, before, _) in plans.items():
            rk = tuple(_rank_for(cum, energy) for cum in cumulative)
            after = cost(name, rk)
            if after < before:
                ranks[name] = rk
                total -= before - after
        return ranks, total

    candidates = sorted({float(e) for cumulative, _, _ in plans.values() for cum in cumulative for e in cum},
                        reverse=True)
    for energy in candidates:
        ranks, total = plan(energy)
        if total <= target:
            break
    else:
        raise ValueError(f"{fn}: budget {budget!r} is out of reach: decomposing every eligible layer at "
                         f"rank 1 leaves {total:,} FLOPs per image of {flops_before:,}")

    reports = {}
    for name, rk in ranks.items():
        parent_name, _, child = name.rpartition(".")
        replacement = decompose(chosen[name], method=method, rank=rk[0] if method == "spatial" else rk,
                                inputs=seen[name])
        setattr(names[parent_name] if parent_name else copy_, child, replacement)
        reports[name] = replacement.report
    flops_after = summary(copy_, input_data=example_input[:1], verbose=False).flops
    return ModelDecomposition(copy_, energy, reports, flops_before, flops_after, _params(model), _params(copy_))
