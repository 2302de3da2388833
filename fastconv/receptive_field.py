"""Receptive fields: the theoretical one of every layer, and the effective one of a unit.

The theoretical receptive field of a unit is the set of input pixels that can change it (the
lecture's "image region influencing a neuron"). Along each spatial axis three figures describe
a layer: the *size* of a unit's field, in input pixels; the *jump*, the distance in input
pixels between the fields of neighbouring units (the product of the strides so far); and the
*start*, the input pixel where the field of unit 0 begins (negative where it reaches into the
padding). Unit i then sees pixels start + i * jump up to start + i * jump + size - 1. The
figures are those of the usual convention: a padded position is given the field it would have
if the image went on, so that they do not depend on the image size.

How they are found, so that any model works, not only a chain of layers: one forward pass, on
the "meta" device by default (shapes only, nothing computed), under a TorchDispatchMode that
follows every tensor made from the input and gives it its field. Convolutions (stride,
padding, dilation, transposed), pooling (max, average, adaptive), slicing, padding and
upsampling map fields through their windows; pointwise operators, batch normalisation in eval
mode, and concatenation along channels take the union of their operands' fields. A union of
different fields (a ResNet shortcut, an Inception module) is where branches merge; there the
field is their union, which is the largest of them, and the record says so (`merged`). A
flattened map or a global pooling makes every unit see one region of the image ("global").
An operator that changes the spatial layout in a way not listed here leaves the field unknown
(None) from that point, and names itself in `ReceptiveFields.unsupported`.

Within one period of units the fields are kept exactly, so after a transposed convolution (or
an upsampling), whose units do not all see as much, `size` is the largest field and `uniform`
is False; `ReceptiveField.region(i, j)` gives any unit's field. Alongside, the tracker follows
the real windows of the actual map, where padding reads nothing: `ReceptiveField.pixels(i, j)`
is the box of image pixels unit (i, j) depends on, what a gradient probe finds. It is the
theoretical field clipped to the image, except at units whose windows read only padding (an
output_padding row of a transposed convolution, or the border of a map padded by hand), which
read fewer pixels or none.

The effective receptive field (Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive
Field in Deep Convolutional Neural Networks", NIPS 2016) is how much each of those pixels
actually contributes: the gradient of a central output unit with respect to the input,
averaged over random inputs and, for a model builder, over weights drawn at initialisation.
It is concentrated in the middle of the theoretical field and grows more slowly with depth.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Optional, Union

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ._plotting import figure

__all__ = [
    "EffectiveReceptiveField",
    "ReceptiveField",
    "ReceptiveFields",
    "effective_receptive_field",
    "receptive_fields",
]


# --------------------------------------------------------------------------------------------
# The field of every unit along one axis


@dataclasses.dataclass(frozen=True)
class _Window:
    """Which input units each output unit of a layer reads, along one axis: unit o, for
    0 <= o < period, reads the units reads[o]; unit o + period reads the same moved by `step`.
    A convolution has period 1 and step = its stride; a transposed one, period = its stride and
    step 1; layers whose windows follow no stride list every unit of their map (period = the
    output's length, step = the input's)."""

    period: int
    step: int
    reads: tuple[tuple[int, ...], ...]

    def of(self, o: int) -> tuple[int, ...]:
        q, r = divmod(o, self.period)
        return tuple(i + q * self.step for i in self.reads[r])


def _conv_window(kernel: int, stride: int, pad_begin: int, dilation: int) -> _Window:
    return _Window(1, stride, (tuple(t * dilation - pad_begin for t in range(kernel)),))


def _transposed_window(kernel: int, stride: int, pad_begin: int, dilation: int) -> _Window:
    # Input unit i sends to output units i * stride - pad_begin + t * dilation; output units
    # `stride` apart receive from input units one apart, through the same taps.
    reads = tuple(tuple((r + pad_begin - t * dilation) // stride for t in range(kernel)
                        if (r + pad_begin - t * dilation) % stride == 0) for r in range(stride))
    return _Window(stride, 1, reads)


def _tabulated_window(n_in: int, n_out: int, reads_of: Callable[[int], Sequence[int]]) -> _Window:
    return _Window(n_out, n_in, tuple(tuple(reads_of(o)) for o in range(n_out)))


def _shift_window(first: int, step: int = 1) -> _Window:
    """Output unit o reads input unit first + o * step: padding (first < 0) and slicing."""
    return _Window(1, step, ((first,),))


_BROADCAST = _Window(1, 0, ((0,),))


class _Axis:
    """Along one spatial axis, the theoretical field of every unit of a map: unit o sees input
    pixels lo(o)..hi(o), inclusive, or nothing (None: a transposed convolution whose kernel is
    smaller than its stride has such units). The tables hold one period of units; each next
    period is the same moved by period * jump pixels (a whole number), so every integer o has
    a field, beyond the map too: a padded position gets the field it would have if the image
    went on, the convention that makes the figures independent of the image size."""

    __slots__ = ("jump", "lo", "hi", "_shift")

    def __init__(self, jump: Fraction, lo: Sequence[Optional[int]], hi: Sequence[Optional[int]]):
        shift = Fraction(jump) * len(lo)
        if shift.denominator != 1:
            raise AssertionError(f"receptive field period {len(lo)} x jump {jump} is not whole pixels")
        self.jump = Fraction(jump)
        self.lo = tuple(lo)
        self.hi = tuple(hi)
        self._shift = int(shift)

    def at(self, o: int) -> Optional[tuple[int, int]]:
        q, r = divmod(o, len(self.lo))
        lo = self.lo[r]
        if lo is None:
            return None
        return lo + q * self._shift, self.hi[r] + q * self._shift

    def through(self, window: _Window) -> "_Axis":
        """The fields after a layer that reads through `window`."""
        p_in = len(self.lo)
        # Enough periods of the layer to come back to a whole number of the input's periods.
        repeats = p_in // math.gcd(window.step, p_in)
        spans = [_span_union(self.at(i) for i in window.of(o)) for o in range(window.period * repeats)]
        return _Axis(self.jump * window.step / window.period, *_columns(spans)).reduced()

    def reduced(self) -> "_Axis":
        """The same fields with the shortest period that describes them."""
        n = len(self.lo)
        for p in range(1, n):
            if n % p or (self.jump * p).denominator != 1:
                continue
            s = int(self.jump * p)
            if all(_moved(self.lo[o], s) == self.lo[o + p] and _moved(self.hi[o], s) == self.hi[o + p]
                   for o in range(n - p)):
                return _Axis(self.jump, self.lo[:p], self.hi[:p])
        return self

    @property
    def constant(self) -> bool:
        return self.jump == 0

    def sizes(self) -> list[int]:
        return [h - l + 1 for l, h in zip(self.lo, self.hi) if l is not None]

    def __eq__(self, other) -> bool:
        return isinstance(other, _Axis) and (self.jump, self.lo, self.hi) == (other.jump, other.lo, other.hi)

    def __hash__(self) -> int:
        return hash((self.jump, self.lo, self.hi))


def _moved(value, shift):
    return None if value is None else value + shift


def _span_union(spans) -> Optional[tuple[int, int]]:
    seen = [s for s in spans if s is not None]
    return (min(s[0] for s in seen), max(s[1] for s in seen)) if seen else None


def _columns(spans):
    return [s and s[0] for s in spans], [s and s[1] for s in spans]


def _global_axis(axis: _Axis, n: int) -> _Axis:
    """One region for every unit, the union of the fields of a map's n units (a flatten, a
    global reduction): jump 0."""
    span = _span_union(axis.at(o) for o in range(n))
    return _Axis(Fraction(0), (span and span[0],), (span and span[1],))


def _union_axes(axes: list[_Axis], length: int) -> Optional[_Axis]:
    """The union of several operands' theoretical fields along one axis of a map `length`
    units long, or None where no description covers it."""
    first = axes[0]
    if all(a.jump == first.jump for a in axes):
        period = math.lcm(*(len(a.lo) for a in axes))
        spans = [_span_union(a.at(o) for a in axes) for o in range(period)]
        return _Axis(first.jump, *_columns(spans)).reduced()
    # Different jumps (a broadcast global branch, say): exact on the map if one of the
    # fields holds every other at every unit of it.
    for candidate in axes:
        if all(_holds(candidate.at(o), a.at(o)) for a in axes for o in range(length)):
            return candidate
    return None


def _holds(outer, inner) -> bool:
    if inner is None:
        return True
    return outer is not None and outer[0] <= inner[0] and inner[1] <= outer[1]


# --------------------------------------------------------------------------------------------
# Fields of tensors, followed through a forward pass


@dataclasses.dataclass(frozen=True)
class _Field:
    """A tensor's field: per spatial axis (height, width), the theoretical fields (`axes`) and,
    for each unit of the actual map, the bounding span of the input pixels it reads (`exact`,
    None for a unit that reads none: one that sees only padding). `exact` follows the real
    windows, padding reading nothing, so it is what a gradient probe finds; it lies inside the
    theoretical field clipped to the image. A tensor without spatial axes (after a flatten)
    has constant axes and one exact span per axis."""

    axes: tuple[_Axis, _Axis]
    exact: tuple[tuple[Optional[tuple[int, int]], ...], tuple[Optional[tuple[int, int]], ...]]

    @classmethod
    def of_input(cls, height: int, width: int) -> "_Field":
        identity = _Axis(Fraction(1), (0,), (0,))
        return cls((identity, identity), (tuple((i, i) for i in range(height)), tuple((i, i) for i in range(width))))

    @property
    def constant(self) -> bool:
        return all(a.constant for a in self.axes)

    def through(self, windows: Sequence[_Window], lengths: Sequence[int]) -> "_Field":
        """The field after a layer that reads through windows[d] along axis d, its output
        lengths[d] units long."""
        axes = tuple(ax.through(w) for ax, w in zip(self.axes, windows))
        exact = tuple(tuple(_span_union(spans[i] for i in w.of(o) if 0 <= i < len(spans)) for o in range(n))
                      for spans, w, n in zip(self.exact, windows, lengths))
        return _Field(axes, exact)

    def flattened(self) -> "_Field":
        """Every unit sees every unit of the map."""
        axes = tuple(_global_axis(ax, len(spans)) for ax, spans in zip(self.axes, self.exact))
        return _Field(axes, tuple((_span_union(spans),) for spans in self.exact))


_UNKNOWN = object()  # a field that no rule here describes; every field made from it is unknown too

_aten = torch.ops.aten


def _packets(*names):
    return {getattr(_aten, n) for n in names if hasattr(_aten, n)}


# Operators whose result does not depend on their operands' values.
_CREATION = _packets("empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
                     "randint_like", "new_empty", "new_zeros", "new_ones", "new_full", "new_empty_strided",
                     "empty_strided", "scalar_tensor", "fill_", "zero_", "fill", "zeros", "ones", "empty")
# Operators that act on each position by itself, besides those tagged pointwise.
_PER_POSITION = _packets("_to_copy", "detach", "alias", "lift_fresh", "lift_fresh_copy", "contiguous",
                         "native_dropout", "_softmax", "_log_softmax", "softmax", "log_softmax", "to",
                         "_native_batch_norm_legit_no_training", "native_batch_norm",
                         "_native_batch_norm_legit", "cudnn_batch_norm", "miopen_batch_norm", "clone")
_SOFTMAX = _packets("_softmax", "_log_softmax", "softmax", "log_softmax")
_VIEWS = _packets("view", "_unsafe_view", "reshape", "flatten", "squeeze", "unsqueeze", "expand",
                  "permute", "transpose", "t", "select")
_REDUCTIONS = _packets("mean", "sum", "amax", "amin", "max", "min", "logsumexp")
_UPSAMPLING = _packets("upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_bilinear2d")


def _bind(func, args, kwargs) -> dict:
    """The operator's arguments by their schema names, defaults filled in."""
    bound = {}
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        else:
            bound[arg.name] = arg.default_value if arg.has_default_value() else None
    return bound


def _pair(value, default=None):
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return default
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1])) if len(value) in (1, 2) else tuple(int(v) for v in value)
    return int(value), int(value)


class _FieldTracker(TorchDispatchMode):
    """Gives every tensor made from the seeded input its receptive field."""

    def __init__(self):
        super().__init__()
        self._fields: dict[int, tuple[torch.Tensor, object]] = {}  # id -> (tensor, field)
        self.unsupported: dict[str, int] = {}
        # The module calls running now (kept by the caller's hooks), and those in which
        # branches of different fields merged.
        self.stack: list = []
        self.merged_in: set = set()

    def seed(self, x: torch.Tensor) -> None:
        self._fields[id(x)] = (x, _Field.of_input(*x.shape[2:]))

    def field(self, t) -> object:
        """The tensor's field, _UNKNOWN, or None if it is not made from the input."""
        entry = self._fields.get(id(t)) if isinstance(t, torch.Tensor) else None
        # The tensor is kept alive with its entry, so no other tensor can have its id.
        return entry[1] if entry is not None and entry[0] is t else None

    def first_field(self, output) -> tuple[Optional[torch.Tensor], object]:
        for t in tree_flatten(output)[0]:
            f = self.field(t)
            if f is not None:
                return t, f
        return None, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if packet in _CREATION:
            for t in tree_flatten(out)[0]:
                self._fields.pop(id(t), None)
            return out
        tracked = [(t, f) for t in tree_flatten((args, kwargs))[0] if (f := self.field(t)) is not None]
        primary = out[0] if isinstance(out, (tuple, list)) and out else out
        if not tracked or not isinstance(primary, torch.Tensor):
            return out
        if packet is _aten.copy_:
            field = self.field(args[1])
        elif any(f is _UNKNOWN for _, f in tracked):
            field = _UNKNOWN
        else:
            result = self._propagate(func, packet, args, kwargs, tracked, primary)
            # The unions say whether their operands' fields differed: branches merging.
            field, merged = result if isinstance(result, tuple) else (result, False)
            if merged:
                self.merged_in.update(self.stack)
            if field is _UNKNOWN:
                self.unsupported[str(func)] = self.unsupported.get(str(func), 0) + 1
        if field is None:
            self._fields.pop(id(primary), None)
        else:
            self._fields[id(primary)] = (primary, field)
        return out

    def _propagate(self, func, packet, args, kwargs, tracked, out):
        fields = [f for _, f in tracked]
        if all(f.constant for f in fields):
            # Every operand sees one region of the image, whatever it holds where: so does
            # the result, whatever the operator (a linear layer after a flatten, say).
            return _union(fields, None)
        a = _bind(func, args, kwargs)
        if packet is _aten.cat:
            if out.dim() == 4 and int(a["dim"]) % 4 >= 2:
                return _UNKNOWN  # maps side by side: a unit's position no longer says its field
            return _union_spatial(tracked, out)
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        xf = self.field(x) if x is not None else None
        if xf is None or x.dim() != 4:
            return self._pointwise(func, packet, a, tracked, out)
        n = tuple(x.shape[2:])
        m = tuple(out.shape[2:]) if out.dim() == 4 else None

        def through(window_of):
            return xf.through([window_of(d) for d in range(2)], m)

        if packet is torch.ops.fastconv.conv2d:
            pad = a["padding"]  # (top, bottom, left, right)
            return through(lambda d: _conv_window(a["weight"].shape[2 + d], a["stride"][d], pad[2 * d],
                                                  a["dilation"][d]))
        if packet is torch.ops.fastconv.conv_transpose2d:
            pad = a["padding"]
            return through(lambda d: _transposed_window(a["weight"].shape[2 + d], a["stride"][d], pad[2 * d],
                                                        a["dilation"][d]))
        if packet is _aten.convolution and len(a["stride"]) == 2:
            window = _transposed_window if a["transposed"] else _conv_window
            return through(lambda d: window(a["weight"].shape[2 + d], a["stride"][d], a["padding"][d],
                                            a["dilation"][d]))
        if packet in (_aten.max_pool2d_with_indices, _aten.max_pool2d, _aten.avg_pool2d):
            kernel = _pair(a["kernel_size"])
            stride = _pair(a["stride"], kernel)
            padding = _pair(a["padding"], (0, 0))
            dilation = _pair(a.get("dilation"), (1, 1))
            return through(lambda d: _conv_window(kernel[d], stride[d], padding[d], dilation[d]))
        if packet in (_aten._adaptive_avg_pool2d, _aten.adaptive_avg_pool2d, _aten.adaptive_max_pool2d) and m:
            return through(lambda d: _tabulated_window(
                n[d], m[d], lambda o: range(o * n[d] // m[d], -(-(o + 1) * n[d] // m[d]))))
        if packet in _REDUCTIONS:
            dims = a.get("dim")
            dims = {0, 1, 2, 3} if dims is None or dims == [] else (
                {int(d) % 4 for d in dims} if isinstance(dims, (list, tuple)) else {int(dims) % 4})
            if {2, 3} <= dims:
                if m:  # kept as a 1x1 map: a pooling whose window is the whole map
                    return through(lambda d: _tabulated_window(n[d], 1, lambda o: range(n[d])))
                return xf.flattened()
            if not dims & {2, 3} and m == n:
                return xf
            return _UNKNOWN
        if packet is _aten.slice:
            dim = int(a["dim"]) % 4
            if dim < 2:
                return xf
            start = 0 if a["start"] is None else int(a["start"])
            start = min(max(start + n[dim - 2] if start < 0 else start, 0), n[dim - 2])
            return through(lambda d: _shift_window(start, int(a["step"])) if d == dim - 2 else _shift_window(0))
        if packet in (_aten.constant_pad_nd, _aten.reflection_pad2d, _aten.replication_pad2d):
            pad = list(a["pad"] if packet is _aten.constant_pad_nd else a["padding"])
            pad += [0] * (4 - len(pad))
            begins = (pad[2], pad[0])  # the list runs from the last dimension: (left, right, top, bottom)
            if packet is _aten.constant_pad_nd:
                return through(lambda d: _shift_window(-begins[d]))

            # A reflected or replicated border reads the pixels next to it. In the theoretical
            # fields, padding is padding (as a convolution's own); the exact spans read them.
            def source(o, d):
                i, size = o - begins[d], n[d]
                if packet is _aten.replication_pad2d:
                    return min(max(i, 0), size - 1)
                i = -i if i < 0 else i
                return 2 * (size - 1) - i if i >= size else i

            shifted = xf.through([_shift_window(-b) for b in begins], m)
            read = xf.through([_tabulated_window(n[d], m[d], lambda o, d=d: [source(o, d)]) for d in range(2)], m)
            return _Field(shifted.axes, read.exact)
        if packet in _UPSAMPLING and m:
            return through(lambda d: _upsampling_window(packet, a, d, n[d], m[d]))
        if packet in _VIEWS:
            if m and out.shape[0] == x.shape[0] and m == n and packet not in (_aten.permute, _aten.transpose):
                return xf
            if out.dim() in (1, 2, 3) and out.shape[0] == x.shape[0] \
                    and packet in (_aten.view, _aten._unsafe_view, _aten.reshape, _aten.flatten):
                # Flattened per image: every feature of the result may read every unit.
                return xf.flattened()
            return _UNKNOWN
        return self._pointwise(func, packet, a, tracked, out)

    def _pointwise(self, func, packet, a, tracked, out):
        if a.get("training"):
            # Batch statistics: every output reads every position of every image.
            return _UNKNOWN
        if packet in _SOFTMAX and out.dim() == 4 and int(a["dim"]) % 4 >= 2:
            return _UNKNOWN  # normalised along a spatial axis: every unit reads that whole axis
        if torch.Tag.pointwise in func.tags or packet in _PER_POSITION:
            return _union_spatial(tracked, out)
        return _UNKNOWN


def _upsampling_window(packet, a: dict, d: int, n: int, m: int) -> _Window:
    """torch's source units for each output unit of nearest and bilinear upsampling."""
    scale_given = None
    if a.get("scale_factors"):
        scale_given = a["scale_factors"][d]
    elif a.get("scales_h" if d == 0 else "scales_w") is not None:
        scale_given = a["scales_h" if d == 0 else "scales_w"]
    # torch reads output unit o from o * scale, scale being 1 / scale_factor where one is
    # given and in / out otherwise ((in - 1) / (out - 1) with align_corners).
    scale = 1 / Fraction(scale_given) if scale_given else Fraction(n, m)
    if packet is _aten.upsample_bilinear2d:
        corners = bool(a.get("align_corners"))
        if corners:
            scale = Fraction(n - 1, m - 1) if m > 1 else Fraction(0)

        def reads(o):
            src = o * scale if corners else max((o + Fraction(1, 2)) * scale - Fraction(1, 2), Fraction(0))
            i0 = min(math.floor(src), n - 1)
            # The second neighbour's weight is src - i0: nothing read when that is zero.
            return [i0, i0 + 1] if src > i0 and i0 + 1 < n else [i0]
        return _tabulated_window(n, m, reads)
    offset = Fraction(1, 2) if packet is _aten._upsample_nearest_exact2d else Fraction(0)
    return _tabulated_window(n, m, lambda o: [min(math.floor((o + offset) * scale), n - 1)])


def _union(fields: list[_Field], lengths) -> tuple[object, bool]:
    """The union of operands' fields (aligned to one map, or all constant), and whether they
    differed: branches merging."""
    distinct = list(dict.fromkeys(fields))
    if len(distinct) == 1:
        return fields[0], False
    axes, exact = [], []
    for d in range(2):
        ax = _union_axes([f.axes[d] for f in distinct], lengths[d] if lengths else 1)
        if ax is None:
            return _UNKNOWN, True
        axes.append(ax)
        exact.append(tuple(_span_union(spans) for spans in zip(*(f.exact[d] for f in distinct))))
    merged = len(dict.fromkeys(f.axes for f in distinct)) > 1
    return _Field(tuple(axes), tuple(exact)), merged


def _union_spatial(tracked, out) -> tuple[object, bool]:
    """The union of operands' fields at an operator that keeps positions apart; an operand's
    size-1 axes, and a constant field, broadcast against the result's map."""
    if out.dim() != 4:
        return _UNKNOWN, False
    lengths = tuple(out.shape[2:])
    aligned = []
    for t, f in tracked:
        if not f.constant and t.dim() != 4:
            return _UNKNOWN, False
        axes, exact = [], []
        for d in range(2):
            have = len(f.exact[d])
            if have == lengths[d] and not f.constant:
                axes.append(f.axes[d])
                exact.append(f.exact[d])
            elif have == 1:
                axes.append(f.axes[d] if f.constant else f.axes[d].through(_BROADCAST))
                exact.append(f.exact[d] * lengths[d])
            else:
                return _UNKNOWN, False
        aligned.append(_Field(tuple(axes), tuple(exact)))
    return _union(aligned, lengths)


# --------------------------------------------------------------------------------------------
# The figures of each layer


def _figure(value: Fraction):
    return int(value) if value.denominator == 1 else value


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of the units of one layer's output, in input pixels, per spatial
    axis as (height, width). None where the field is not known (see `known`)."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    size: Optional[tuple[int, int]]
    """The largest field of any unit (every unit's where `uniform`)."""
    jump: Optional[tuple[Union[int, Fraction], Union[int, Fraction]]]
    """Input pixels between neighbouring units' fields: the product of the strides (a
    Fraction after upsampling; 0 for a global output, whose units all see one region)."""
    start: Optional[tuple[Optional[int], Optional[int]]]
    """The input pixel where unit 0's field begins; negative where it reaches into padding."""
    merged: bool
    """Branches with different fields merge inside this layer (a residual addition, an
    Inception concatenation): there the field is their union, the largest of them."""
    uniform: bool
    """Every unit's field has the same size."""
    _field: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def known(self) -> bool:
        return self.size is not None

    @property
    def is_global(self) -> bool:
        """Every unit sees the same region: after a flatten or a global pooling."""
        return self.known and self.jump == (0, 0)

    def region(self, row: int = 0, col: int = 0) -> tuple[tuple[int, int], tuple[int, int]]:
        """The input pixels that unit (row, col) of this output sees: ((top, bottom), (left,
        right)), inclusive; they may reach beyond the image, into the padding."""
        if not self.known:
            raise ValueError(f"the receptive field of {self.name!r} is not known (an operator that "
                             "fastconv.receptive_field does not follow came before it)")
        spans = tuple(ax.at(o) for ax, o in zip(self._field.axes, (row, col)))
        if None in spans:
            raise ValueError(f"unit ({row}, {col}) of {self.name!r} sees no input pixel")
        return spans

    def center(self, row: int = 0, col: int = 0) -> tuple[float, float]:
        """The centre of unit (row, col)'s field, in input pixel coordinates."""
        (top, bottom), (left, right) = self.region(row, col)
        return (top + bottom) / 2, (left + right) / 2

    def pixels(self, row: int = 0, col: int = 0) -> Optional[tuple[tuple[int, int], tuple[int, int]]]:
        """The bounding box ((top, bottom), (left, right)), inclusive, of the image pixels that
        unit (row, col) reads, or None where it reads none (it sees only padding): the pixels a
        gradient reaches. It lies inside region(row, col) clipped to the image, and equals it
        except at units whose windows read only padding (an output_padding row of a transposed
        convolution, or the border of a map padded by hand)."""
        if not self.known:
            raise ValueError(f"the receptive field of {self.name!r} is not known")
        spans = []
        for spans_d, o, axis in zip(self._field.exact, (row, col), ("row", "col")):
            if len(spans_d) == 1:  # a global output: one region for every unit
                o = 0
            if not 0 <= o < len(spans_d):
                raise ValueError(f"{axis} {o} is outside the {len(spans_d)} units of {self.name!r}")
            spans.append(spans_d[o])
        return None if None in spans else tuple(spans)


def _record(name: str, kind: str, tensor: Optional[torch.Tensor], field, merged: bool) -> ReceptiveField:
    shape = tuple(tensor.shape) if tensor is not None else ()
    if not isinstance(field, _Field):
        return ReceptiveField(name, kind, shape, None, None, None, merged, False)
    sizes = [ax.sizes() for ax in field.axes]
    if not all(sizes):
        return ReceptiveField(name, kind, shape, None, None, None, merged, False)
    starts = tuple(None if ax.lo[0] is None else ax.lo[0] for ax in field.axes)
    uniform = all(len(set(s)) == 1 and None not in ax.lo for s, ax in zip(sizes, field.axes))
    return ReceptiveField(
        name, kind, shape,
        size=tuple(max(s) for s in sizes),
        jump=tuple(_figure(ax.jump) for ax in field.axes),
        start=starts,
        merged=merged,
        uniform=uniform,
        _field=field,
    )


def record_output(tracker: _FieldTracker, name: str, kind: str, output, merged: bool) -> ReceptiveField:
    """The record of a module call's output: the field of its first tensor made from the input."""
    t, f = tracker.first_field(output)
    if t is None:
        tensors = [o for o in tree_flatten(output)[0] if isinstance(o, torch.Tensor)]
        t = tensors[0] if tensors else None
    return _record(name, kind, t, f, merged)


def _pair_text(values) -> str:
    if values is None:
        return "?"
    a, b = (str(v) for v in values)
    return a if a == b else f"{a}x{b}"


def field_columns(rf: Optional[ReceptiveField]) -> tuple[str, str, str]:
    """The size, jump and start of a record as table cells, with the marks that the
    footnotes of FIELD_NOTES explain."""
    if rf is None:
        return "", "", ""
    if not rf.known:
        return "?", "?", "?"
    size = _pair_text(rf.size) + ("*" if rf.merged else "") + ("" if rf.uniform else "+")
    jump = "global" if rf.is_global else _pair_text(rf.jump)
    return size, jump, _pair_text(rf.start)


FIELD_NOTES = [
    "Field: receptive field size in input pixels (height x width where they differ); Jump: input "
    "pixels between neighbouring units' fields; Start: where unit 0's field begins (negative: in "
    "the padding)",
    "* branches of different fields merge inside this layer: the field there is their union, the largest",
    "+ units' fields differ in size (after upsampling): the largest is shown",
    "? the field is not known past an operator that the tracker does not follow",
]


@dataclasses.dataclass
class ReceptiveFields:
    """The receptive field of every module call's output, in the order the calls finished
    (a module's children before it), after the input's; `output` is the model's."""

    rows: list[ReceptiveField]
    unsupported: dict[str, int]
    """Operators that left a field unknown, and how often each ran."""

    @property
    def output(self) -> ReceptiveField:
        return self.rows[-1]

    def layer(self, name: str) -> ReceptiveField:
        """The first call of the module of that name ("(model)" for the whole model)."""
        for row in self.rows:
            if row.name == name:
                return row
        names = [r.name for r in self.rows]
        raise ValueError(f"layer {name!r} did not run in the forward pass; the layers that did: "
                         f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''}")

    def __str__(self) -> str:
        header = ("Layer (type)", "Output shape", "Field", "Jump", "Start")
        body = [(f"{r.name} ({r.kind})", "[" + ", ".join(map(str, r.output_shape)) + "]", *field_columns(r))
                for r in self.rows]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        fmt = lambda line: "  ".join([line[0].ljust(widths[0]), line[1].ljust(widths[1]),  # noqa: E731
                                      *(c.rjust(w) for c, w in zip(line[2:], widths[2:]))])
        rule = "-" * len(fmt(header))
        notes = list(FIELD_NOTES)
        if self.unsupported:
            notes.append("not followed: " + ", ".join(sorted(self.unsupported)))
        return "\n".join([rule, fmt(header), rule, *map(fmt, body), rule, *notes])


def _input_shape(fn: str, input_size, input_data) -> tuple[int, ...]:
    if input_data is not None:
        if not isinstance(input_data, torch.Tensor):
            raise TypeError(f"{fn}: input_data must be a Tensor, got {type(input_data).__name__}")
        shape = tuple(input_data.shape)
    elif input_size is None:
        raise ValueError(f"{fn}: give input_size (a shape such as (1, 3, 224, 224)) or input_data")
    else:
        if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence) or not all(
                isinstance(d, int) and not isinstance(d, bool) for d in input_size):
            raise TypeError(f"{fn}: input_size must be a shape (a tuple of ints), got {input_size!r}")
        shape = tuple(input_size)
    if len(shape) != 4:
        raise ValueError(f"{fn}: the input must be a batch of images [N, C, H, W], got shape {shape}")
    if any(d <= 0 for d in shape):
        raise ValueError(f"{fn}: input_size has a non-positive dimension: {shape}")
    return shape


def _trace_fields(model: torch.nn.Module, x: torch.Tensor, params=None, until=None):
    """One forward pass of model on x under the tracker (stopped once the module `until` has
    run): the tracker, and each module call as (name, kind, output, whether branches merged
    inside it), in the order they finished."""
    from torch.func import functional_call

    tracker = _FieldTracker()
    tracker.seed(x)
    names = {id(m): name or "(model)" for name, m in model.named_modules()}
    calls = []
    call_ids = iter(range(1 << 62))

    def pre_hook(module, args):
        tracker.stack.append(next(call_ids))

    def post_hook(module, args, out):
        key = tracker.stack.pop()
        calls.append((names.get(id(module), "?"), type(module).__name__, out, key in tracker.merged_in))

    def stop(module, args, out):
        raise _Stop

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))
    if until is not None:
        handles.append(until.register_forward_hook(stop))  # after its post_hook has recorded it
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tracker:
            if params is None:
                model(x)
            else:
                functional_call(model, params, (x,))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return tracker, calls


def receptive_fields(model: torch.nn.Module, input_size=None, *, input_data=None, until=None, device="meta",
                     verbose: bool = False) -> ReceptiveFields:
    """The receptive field (size, jump, start) of every layer of `model` for an input of
    input_size [N, C, H, W] (or of input_data's shape), as data; prints the table when verbose.
    until: a layer (name or submodule) after which the pass stops, for an input too small for
    the rest of the model.

    The pass runs on the meta device by default: shapes only, so VGG-16 at 224x224 costs
    nothing. A model whose forward needs real values (it reads them, or calls an operator
    without a meta kernel) runs with device="cpu" (random inputs, real arithmetic)."""
    fn = "receptive_fields()"
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _input_shape(fn, input_size, input_data)
    stop = None if until is None else _module_named(fn, model, until, "until")[1]
    device = torch.device(device)
    first = next(model.parameters(), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    params = None
    if device.type == "meta":
        params = {k: torch.empty_like(v, device="meta")
                  for k, v in [*model.named_parameters(), *model.named_buffers()]}
        x = torch.empty(shape, dtype=dtype, device="meta")
    else:
        x = (input_data.to(device) if input_data is not None
             else torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device))
    try:
        tracker, calls = _trace_fields(model, x, params, stop)
    except (NotImplementedError, RuntimeError) as error:
        if device.type == "meta" and hasattr(error, "add_note"):
            error.add_note(f"{fn} ran the model on the meta device (shapes only); a model that "
                           "needs real values runs with device='cpu'")
        raise
    rows = [_record("input", "Tensor", x, tracker.field(x), False)]
    for name, kind, out, merged in calls:
        rows.append(record_output(tracker, name, kind, out, merged))
    result = ReceptiveFields(rows, dict(tracker.unsupported))
    if verbose:
        print(result)
    return result


# --------------------------------------------------------------------------------------------
# The effective receptive field


class _Stop(Exception):
    """Raised by a forward hook once the layer of interest has run: the rest of the model is
    not needed."""


def _module_named(fn: str, model: torch.nn.Module, layer, argument: str = "layer") -> tuple[str, torch.nn.Module]:
    modules = dict(model.named_modules())
    if layer is None:
        return "(model)", model
    if isinstance(layer, torch.nn.Module):
        for name, m in modules.items():
            if m is layer:
                return name or "(model)", m
        raise ValueError(f"{fn}: {argument} is a module that is not part of the model")
    if not isinstance(layer, str):
        raise TypeError(f"{fn}: {argument} must be a submodule's name (str), a submodule or None, "
                        f"got {type(layer).__name__}")
    if layer not in modules:
        raise ValueError(f"{fn}: {argument} {layer!r} is not a submodule of the model "
                         "(names as in model.named_modules())")
    return layer or "(model)", modules[layer]


def run_to(model: torch.nn.Module, module: torch.nn.Module, *inputs) -> torch.Tensor:
    """model(*inputs), stopped as soon as `module` has run, and that module's output (the
    first tensor of it)."""
    captured = []

    def hook(m, args, out):
        captured.append(out)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        out = model(*inputs)
        captured.append(out)
    except _Stop:
        pass
    finally:
        handle.remove()
    tensors = [t for t in tree_flatten(captured[0])[0] if isinstance(t, torch.Tensor)]
    if not tensors:
        raise ValueError("the layer's output holds no tensor")
    return tensors[0]


@dataclasses.dataclass
class EffectiveReceptiveField:
    """The effective receptive field of one unit: how its gradient spreads over the input."""

    map: torch.Tensor
    """[H, W] float64 on the CPU, summing to 1: the mean absolute gradient of the unit with
    respect to each input pixel (channels summed), normalised."""
    unit: tuple[int, int]
    """The unit's (row, column) in the layer's output."""
    layer: str
    theoretical: ReceptiveField
    """The layer's theoretical field; `theoretical.region(*unit)` is the unit's."""
    samples: int
    """Gradients averaged: random inputs times weight draws."""

    @property
    def center(self) -> tuple[float, float]:
        """The centre of the unit's theoretical field, where the radii are measured from."""
        return self.theoretical.center(*self.unit)

    def _distances(self) -> torch.Tensor:
        h, w = self.map.shape
        cy, cx = self.center
        ys = torch.arange(h, dtype=torch.float64).view(-1, 1) - cy
        xs = torch.arange(w, dtype=torch.float64).view(1, -1) - cx
        return (ys.square() + xs.square()).sqrt()

    def radius(self, share: float = 0.95) -> float:
        """The smallest distance from the centre, in input pixels, within which pixels hold
        `share` of the mass (Euclidean: a disc)."""
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise ValueError(f"radius(): share must be in (0, 1], got {share!r}")
        d = self._distances().flatten()
        order = torch.argsort(d)
        mass = self.map.flatten()[order].cumsum(0)
        # A float sum of the whole map can fall a rounding error short of 1.
        index = int(torch.searchsorted(mass, torch.tensor(share * float(mass[-1]) * (1 - 1e-12),
                                                          dtype=torch.float64)))
        return float(d[order][min(index, len(d) - 1)])

    def std(self) -> tuple[float, float]:
        """Standard deviations of the mass about the centre along rows and columns, in input
        pixels: the width of the near-Gaussian that Luo et al. describe."""
        h, w = self.map.shape
        cy, cx = self.center
        ys = torch.arange(h, dtype=torch.float64) - cy
        xs = torch.arange(w, dtype=torch.float64) - cx
        return (float((self.map.sum(1) * ys.square()).sum().sqrt()),
                float((self.map.sum(0) * xs.square()).sum().sqrt()))

    def share_inside_theoretical(self) -> float:
        """The mass inside the unit's theoretical field: 1 up to rounding, by definition."""
        (top, bottom), (left, right) = self.theoretical.region(*self.unit)
        h, w = self.map.shape
        return float(self.map[max(top, 0):min(bottom, h - 1) + 1, max(left, 0):min(right, w - 1) + 1].sum())

    def save_png(self, path, *, share: float = 0.95, title: Optional[str] = None) -> str:
        """Draw the theoretical field beside the effective one, and both profiles, to a PNG."""
        import os

        fig = figure("EffectiveReceptiveField.save_png()", figsize=(12, 4.2))
        from matplotlib.patches import Circle, Rectangle

        axes = fig.subplots(1, 3)
        h, w = self.map.shape
        (top, bottom), (left, right) = self.theoretical.region(*self.unit)
        cy, cx = self.center
        trf = torch.zeros(h, w)
        trf[max(top, 0):min(bottom, h - 1) + 1, max(left, 0):min(right, w - 1) + 1] = 1
        size = _pair_text(self.theoretical.size)
        axes[0].imshow(trf.numpy(), cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
        axes[0].set_title(f"theoretical field: {size} px")
        image = axes[1].imshow(self.map.numpy(), cmap="magma", interpolation="nearest")
        fig.colorbar(image, ax=axes[1], fraction=0.046, pad=0.04)
        r = self.radius(share)
        axes[1].add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                                    edgecolor="deepskyblue", linewidth=1.2))
        axes[1].add_patch(Circle((cx, cy), r, fill=False, edgecolor="lime", linewidth=1.2, linestyle="--"))
        axes[1].set_title(f"effective field: {int(100 * share)}% of mass within r = {r:.1f} px")
        for ax in axes[:2]:
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        axes[2].plot(range(w), self.map.sum(0).numpy(), label="columns (summed over rows)")
        axes[2].plot(range(h), self.map.sum(1).numpy(), label="rows (summed over columns)", linestyle="--")
        for edge in (left, right):
            axes[2].axvline(edge, color="deepskyblue", linewidth=0.8)
        axes[2].set(xlabel="input pixel", ylabel="share of the mass", title="profiles; the theoretical field's edges")
        axes[2].legend(fontsize=8)
        fig.suptitle(title or f"{self.layer}, unit {self.unit}: {self.samples} gradients averaged")
        fig.tight_layout()
        path = os.fspath(path)
        fig.savefig(path, dpi=100)
        return path


def effective_receptive_field(
    model: Union[torch.nn.Module, Callable[[], torch.nn.Module]],
    input_size=None,
    *,
    input_data: Optional[torch.Tensor] = None,
    layer=None,
    unit: Optional[tuple[int, int]] = None,
    draws: int = 1,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> EffectiveReceptiveField:
    """The effective receptive field (Luo et al., 2016) of a unit of `layer`'s output.

    For each image of a random batch of input_size [N, C, H, W] (standard normal; or the
    images of input_data), the gradient of the unit (its channels summed) with respect to the
    image; the absolute values, summed over the input channels and averaged, normalised to
    sum to 1. `model` is a module, whose weights are used as they are, or a function that
    builds one: then `draws` models are built (seeded from `seed`, the global random state left
    as it was) and their gradients averaged too, which gives the field at initialisation.

    layer: a submodule's name (as in named_modules()) or the submodule; None for the model's
    output, which must then be a feature map [N, K, P, Q]. unit: (row, column) in that map,
    its middle by default. The forward pass stops once the layer has run. The model runs in
    eval mode (batch normalisation with its running statistics, so images do not mix); its
    parameters get no gradients and are left as they were.
    """
    fn = "effective_receptive_field()"
    builder = None if isinstance(model, torch.nn.Module) else model
    if builder is not None and not callable(builder):
        raise TypeError(f"{fn}: model must be a torch.nn.Module or a function that builds one, "
                        f"got {type(model).__name__}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"{fn}: draws must be a positive int, got {draws!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{fn}: seed must be an int, got {seed!r}")
    if builder is None and draws != 1:
        raise ValueError(f"{fn}: draws={draws} needs a function that builds the model; a module's "
                         "weights are what they are")
    shape = _input_shape(fn, input_size, input_data)

    def build(draw: int) -> torch.nn.Module:
        if builder is None:
            return model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + draw)
            built = builder()
        if not isinstance(built, torch.nn.Module):
            raise TypeError(f"{fn}: the model builder returned {type(built).__name__}, not a torch.nn.Module")
        return built

    first = build(0)
    name, _ = _module_named(fn, first, layer)
    theoretical = receptive_fields(first, shape, until=layer).layer(name)
    if len(theoretical.output_shape) != 4:
        raise ValueError(f"{fn}: the output of {name!r} has shape {list(theoretical.output_shape)}, "
                         "not a feature map [N, K, P, Q]")
    p, q = theoretical.output_shape[2:]
    if unit is None:
        unit = (p // 2, q // 2)
    if (not isinstance(unit, (tuple, list)) or len(unit) != 2
            or not all(isinstance(u, int) and not isinstance(u, bool) for u in unit)
            or not (0 <= unit[0] < p and 0 <= unit[1] < q)):
        raise ValueError(f"{fn}: unit must be a (row, column) inside the {p}x{q} output of {name!r}, got {unit!r}")
    unit = (int(unit[0]), int(unit[1]))
    if not theoretical.known:
        raise ValueError(f"{fn}: the theoretical field of {name!r} is not known, so neither is the unit's centre")

    total = torch.zeros(shape[2:], dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    for draw in range(draws):
        net = first if draw == 0 else build(draw)
        _, module = _module_named(fn, net, layer)
        dev = device if device is not None else next((t.device for t in net.parameters()), torch.device("cpu"))
        if input_data is not None:
            x = input_data.detach().to(device=dev, dtype=dtype)
        else:
            x = torch.randn(shape, generator=generator, dtype=dtype).to(dev)
        x.requires_grad_(True)
        params = list(net.parameters())
        flags = [t.requires_grad for t in params]
        was_training = net.training
        net.eval()
        try:
            for t in params:
                t.requires_grad_(False)
            with torch.enable_grad():
                y = run_to(net, module, x)
                y[:, :, unit[0], unit[1]].sum().backward()
        finally:
            for t, flag in zip(params, flags):
                t.requires_grad_(flag)
            net.train(was_training)
        total += x.grad.detach().abs().sum(1).sum(0).double().cpu()
    mass = float(total.sum())
    if not mass > 0:
        raise ValueError(f"{fn}: the unit's gradient is zero for every input: no effective field "
                         "(a dead unit, or weights all zero)")
    return EffectiveReceptiveField(total / mass, unit, name, theoretical, shape[0] * draws)
