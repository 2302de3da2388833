"""summary(model, input_size): a per-layer table of output shapes, parameters, activation memory
and FLOPs, ending with totals, like the lecture's VGG-16 table.

How the figures are counted, so that they can be trusted and compared:
- Activations are every tensor the forward pass allocates, found at the operator level (a
  TorchDispatchMode), not guessed from module types: functional additions and
  concatenations (ResNet, DenseNet) count, while in-place ops (ReLU(inplace=True)), views
  (flatten) and identities (Dropout in eval) add nothing, because they make no new storage.
  Each tensor is charged to the innermost module running when it was made. Temporary buffers
  that a kernel allocates and frees inside one operator are not activations and are not
  counted. The input is counted on its own row, as the lecture's table does.
- FLOPs count a multiply-add as 2, in convolutions (fastconv's operators) and matrix
  products (linear layers); elementwise work, pooling and normalisation are not counted
  (they are small beside these in every model of the lecture), the convention of
  torch.utils.flop_counter.
- Only each operator's primary result counts: the extra outputs an operator makes for its
  own backward (max-pool indices, batch-norm statistics) are not the layer's output.
- For VGG-16 at 224x224 this gives the lecture's per-layer rows exactly (3.2M elements after
  each conv3-64, ...), summing to 15.2M elements (58 MiB) per image. The lecture's own
  "TOTAL memory: 24M" line is larger than the sum of its rows (15.2M); the table here is
  the sum.
- For a model of one image input [N, C, H, W], each row also gives the theoretical receptive
  field of the layer's output (size, jump and start, in input pixels; see
  fastconv.receptive_field, whose receptive_fields() returns the same figures as data and is
  re-exported here). A "*" marks a layer inside which branches of different fields merge
  (ResNet's additions, Inception's concatenations): the field there is their union, the
  largest of them.
- The pass runs in eval mode under torch.no_grad(), so it changes no state (batch-norm
  statistics, dropout) and keeps no autograd graph. A second pass with autograd on measures
  what a training step keeps for its backward: the distinct storages autograd saves,
  parameters excluded (the lecture's "~2x for bwd").
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ._conv_formulas import conv_flops, transposed_as_conv
from .receptive_field import (
    FIELD_NOTES,
    ReceptiveField,
    ReceptiveFields,
    _FieldTracker,
    _record,
    field_columns,
    receptive_fields,
    record_output,
)

__all__ = ["LayerSummary", "ModelSummary", "ReceptiveField", "ReceptiveFields", "receptive_fields", "summary"]


@dataclasses.dataclass
class LayerSummary:
    name: str
    kind: str
    output_shape: list[list[int]]
    params: int
    activation_elements: int
    activation_bytes: int
    flops: int
    receptive_field: Optional[ReceptiveField] = None
    """The theoretical receptive field of the output (for a model of one image input)."""


@dataclasses.dataclass
class ModelSummary:
    """The figures of one forward pass. Totals cover the whole batch; the per_image
    properties divide by the batch size."""

    rows: list[LayerSummary]
    batch_size: int
    input_elements: int
    input_bytes: int
    activation_elements: int
    activation_bytes: int
    total_params: int
    trainable_params: int
    param_bytes: int
    flops: int
    saved_for_backward_bytes: int

    @property
    def activation_elements_per_image(self) -> float:
        """Elements of input plus activations per image: the lecture's "TOTAL memory" count."""
        return (self.input_elements + self.activation_elements) / self.batch_size

    @property
    def forward_bytes_per_image(self) -> float:
        return (self.input_bytes + self.activation_bytes) / self.batch_size

    @property
    def flops_per_image(self) -> float:
        return self.flops / self.batch_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        fields = any(r.receptive_field is not None for r in self.rows)
        header = ("Layer (type)", "Output shape", "Params", "Activations", "Act. memory", "FLOPs")
        header += ("Field", "Jump", "Start") if fields else ()
        body = [
            (
                f"{r.name} ({r.kind})",
                _shapes(r.output_shape),
                f"{r.params:,}",
                _count(r.activation_elements),
                _bytes(r.activation_bytes),
                _count(r.flops),
                *(field_columns(r.receptive_field) if fields else ()),
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

        def fmt(line):
            first = line[0].ljust(widths[0])
            return "  ".join([first, line[1].ljust(widths[1]), *(c.rjust(w) for c, w in zip(line[2:], widths[2:]))])

        rule = "-" * len(fmt(header))
        n = self.batch_size
        totals = [
            f"Total params: {self.total_params:,} ({_count(self.total_params)}, {_bytes(self.param_bytes)})",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"Batch size: {n}",
            f"Input: {_count(self.input_elements / n)} elements per image ({_bytes(self.input_bytes / n)})",
            f"Activations: {_count(self.activation_elements / n)} elements per image ({_bytes(self.activation_bytes / n)})",
            f"Forward memory, input + activations: {_count(self.activation_elements_per_image)} elements "
            f"= {_bytes(self.forward_bytes_per_image)} per image (forward only; see below for a training step)",
            f"Saved for the backward of a training step: {_bytes(self.saved_for_backward_bytes / n)} per image",
            f"FLOPs: {_count(self.flops_per_image)} per image (multiply-add = 2; convolutions and matrix products)",
        ]
        notes = [rule, *FIELD_NOTES] if fields else []
        return "\n".join([rule, fmt(header), rule, *map(fmt, body), rule, *totals, *notes, rule])


def _count(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _bytes(value: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def _shapes(shapes: list[list[int]]) -> str:
    if not shapes:
        return "-"
    text = ", ".join("[" + ", ".join(map(str, s)) + "]" for s in shapes)
    return text


def _conv_flops(op, args, out) -> int:
    """2 * multiply-adds of a fastconv convolution from its operands' shapes."""
    x, w = args[0], args[1]
    if op is torch.ops.fastconv.conv2d.default:
        n, k, p, q = out.shape
        return conv_flops(n, x.shape[1], k, p, q, w.shape[2], w.shape[3], groups=x.shape[1] // w.shape[1])
    # transposed: the dgrad of the convolution from its output (out) to its input (x)
    n, c, h, w_ = x.shape
    k = out.shape[1]
    sizes = transposed_as_conv(n, c, h, w_, k, out.shape[2], out.shape[3])
    return conv_flops(sizes["N"], sizes["C"], sizes["K"], sizes["P"], sizes["Q"], w.shape[2], w.shape[3],
                      groups=k // w.shape[1])


def _matmul_flops(op, args, out) -> int:
    if op in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
        a = args[0] if op is torch.ops.aten.mm.default else args[1]
        return 2 * out.numel() * a.shape[-1]
    if op in (torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default):
        a = args[0] if op is torch.ops.aten.bmm.default else args[1]
        return 2 * out.numel() * a.shape[-1]
    return 0


class _Recorder(TorchDispatchMode):
    """Charges new storages and FLOPs to the innermost running module."""

    def __init__(self, stack: list[int], seen: set, keep: list, elements: dict, nbytes: dict, flops: dict):
        super().__init__()
        self.stack, self.seen, self.keep = stack, seen, keep
        self.elements, self.nbytes, self.flops = elements, nbytes, flops
        self._conv_ops = {torch.ops.fastconv.conv2d.default, torch.ops.fastconv.conv_transpose2d.default}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        owner = self.stack[-1]
        # Only an operator's primary result is an activation; the extra outputs some make for
        # their own backward (max-pool indices, batch-norm statistics) are not the layer's.
        primary = out[0] if isinstance(out, (tuple, list)) and out else out
        for t in [primary]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = (t.device, storage.data_ptr())
            if storage.nbytes() == 0 or key in self.seen:
                continue
            # Keeping every output alive stops the allocator from reusing an address, which
            # would make a new tensor look like an old one.
            self.seen.add(key)
            self.keep.append(t)
            self.elements[owner] = self.elements.get(owner, 0) + t.numel()
            self.nbytes[owner] = self.nbytes.get(owner, 0) + storage.nbytes()
        if isinstance(out, torch.Tensor):
            n = _conv_flops(func, args, out) if func in self._conv_ops else _matmul_flops(func, args, out)
            if n:
                self.flops[owner] = self.flops.get(owner, 0) + n
        return out


def _make_inputs(input_size, input_data, dtype, device):
    if input_data is not None:
        inputs = list(input_data) if isinstance(input_data, (tuple, list)) else [input_data]
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise TypeError("summary(): input_data must be a Tensor or a sequence of Tensors")
        return inputs
    if input_size is None:
        raise ValueError("summary(): give input_size (a shape such as (1, 3, 224, 224)) or input_data")

    def is_shape(s):
        return isinstance(s, Sequence) and not isinstance(s, str) and len(s) > 0 and all(
            isinstance(d, int) and not isinstance(d, bool) for d in s
        )

    shapes = [input_size] if is_shape(input_size) else list(input_size) if isinstance(input_size, Sequence) else None
    if not shapes or not all(is_shape(s) for s in shapes):
        raise TypeError(f"summary(): input_size must be a shape (tuple of ints) or a list of shapes, got {input_size!r}")
    for s in shapes:
        if any(d <= 0 for d in s):
            raise ValueError(f"summary(): input_size has a non-positive dimension: {tuple(s)}")
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(tuple(s), generator=gen, dtype=dtype).to(device) for s in shapes]


def _saved_for_backward_bytes(model: torch.nn.Module, inputs: list[torch.Tensor]) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one forward (eval mode,
    so that no state changes)."""
    seen = {(t.device, t.untyped_storage().data_ptr()) for t in [*model.parameters(), *model.buffers()]}
    total = 0

    def pack(t):
        nonlocal total
        key = (t.device, t.untyped_storage().data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(*inputs)
    finally:
        model.train(was_training)
    del out
    return total


def summary(
    model: torch.nn.Module,
    input_size=None,
    *,
    input_data=None,
    dtype: torch.dtype = torch.float32,
    device=None,
    verbose: bool = True,
) -> ModelSummary:
    """Run one forward pass of `model` and report, per layer, the output shape, parameters,
    activation memory and FLOPs, then the totals.

    input_size is the full input shape including the batch, e.g. (1, 3, 224, 224), or a list
    of shapes for a model with several inputs; or give input_data (a tensor or a sequence of
    tensors) instead, e.g. token ids for a text model. The inputs are random, in `dtype`, on
    `device` (default: where the model's parameters are). Prints the table when verbose and
    returns a ModelSummary either way.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"summary(): model must be a torch.nn.Module, got {type(model).__name__}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    inputs = _make_inputs(input_size, input_data, dtype, device)
    batch_size = inputs[0].shape[0] if inputs[0].dim() > 0 else 1
    if batch_size <= 0:
        raise ValueError("summary(): the batch size (first input dimension) must be positive")

    names = {id(m): name or "(model)" for name, m in model.named_modules()}
    root = id(model)
    # Work outside every module's forward (none, normally) is charged to the model.
    stack: list = [(root, 0)]
    calls: list[tuple[int, torch.nn.Module, object]] = []
    elements: dict = {}
    nbytes: dict = {}
    flops: dict = {}
    seen: set = set()
    keep: list = list(inputs)
    # Inputs, parameters and buffers (and views of them, such as a transposed weight) are not
    # activations.
    for t in [*inputs, *model.parameters(), *model.buffers()]:
        seen.add((t.device, t.untyped_storage().data_ptr()))

    # One key per call, so a module used twice gets two rows.
    call_ids = iter(range(1, 1 << 62))
    # Receptive fields are those of an image input's pixels.
    image = len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].is_floating_point()
    tracker = _FieldTracker() if image else None
    if tracker is not None:
        tracker.seed(inputs[0])
        tracker.stack = stack  # merges are charged to the module calls running
    fields: dict = {}

    def pre_hook(module, args):
        stack.append((id(module), next(call_ids)))

    def post_hook(module, args, output):
        key = stack.pop()
        calls.append((key, module, output))
        if tracker is not None:
            # Now, before a later in-place operator can change the output's field.
            fields[key] = record_output(tracker, names.get(key[0], "?"), type(module).__name__, output,
                                        key in tracker.merged_in)

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _Recorder(stack, seen, keep, elements, nbytes, flops), \
                tracker if tracker is not None else contextlib.nullcontext():
            output = model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    saved_bytes = _saved_for_backward_bytes(model, inputs)

    rows: list[LayerSummary] = []
    charged_params: set[int] = set()
    for key, module, out in calls:
        module_id = key[0]
        is_leaf = next(module.children(), None) is None
        own_params = 0
        if module_id not in charged_params:
            charged_params.add(module_id)
            own_params = sum(p.numel() for p in module.parameters(recurse=False))
        if not (is_leaf or key in elements or key in flops or own_params):
            continue
        shapes = [list(t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        rows.append(
            LayerSummary(
                name=names.get(module_id, "?"),
                kind=type(module).__name__,
                output_shape=shapes,
                params=own_params,
                activation_elements=elements.get(key, 0),
                activation_bytes=nbytes.get(key, 0),
                flops=flops.get(key, 0),
                receptive_field=fields.get(key),
            )
        )
    input_field = _record("input", "Tensor", inputs[0], tracker.field(inputs[0]), False) if tracker else None
    rows.insert(
        0,
        LayerSummary("input", "Tensor", [list(t.shape) for t in inputs], 0,
                     sum(t.numel() for t in inputs), sum(t.untyped_storage().nbytes() for t in inputs), 0,
                     input_field),
    )

    params = list({id(p): p for p in model.parameters()}.values())
    result = ModelSummary(
        rows=rows,
        batch_size=int(batch_size),
        input_elements=sum(t.numel() for t in inputs),
        input_bytes=sum(t.untyped_storage().nbytes() for t in inputs),
        activation_elements=sum(elements.values()),
        activation_bytes=sum(nbytes.values()),
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        flops=sum(flops.values()),
        saved_for_backward_bytes=saved_bytes,
    )
    del keep
    if verbose:
        print(result)
    return result

