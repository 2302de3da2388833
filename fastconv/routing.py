"""Every convolution call on fastconv, wherever it is made: fastconv.route_functional().

fastconv.convert swaps torch.nn's convolution classes, but code that calls
torch.nn.functional.conv2d itself (a weight-standardised conv, a TF-"same"-padding conv, any
custom layer) is out of its reach. A torch.overrides.TorchFunctionMode sees those calls: under
route_functional(), torch.nn.functional.conv1d/conv2d/conv_transpose1d/conv_transpose2d (the
same objects as torch.conv1d, ...) and, when torchvision is loaded, torchvision.ops.roi_align /
roi_pool (through their operators) run on fastconv.functional instead.

A call fastconv refuses, or one whose result torch would give differently (fastconv's
per-side padding and zero-size extensions, tensor subclasses), is handed back to torch: torch
then gives its own answer or its own error, with a RoutingFallbackWarning once per distinct
reason when fastconv had refused it."""

from __future__ import annotations

import threading
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as TF
from torch.overrides import TorchFunctionMode

from . import functional as F
from ._ops import differentiable as _ops
from .errors import ArgumentError, ArgumentTypeError, BoxesError, BoxesTypeError

__all__ = ["FunctionalRouting", "RoutingFallbackWarning", "route_functional", "install", "is_installed"]


class RoutingFallbackWarning(UserWarning):
    """A routed call that fastconv refused ran on torch instead."""


# (fastconv.functional's name, spatial dims)
_CONVS = {
    TF.conv1d: ("conv1d", 1),
    TF.conv2d: ("conv2d", 2),
    TF.conv_transpose1d: ("conv_transpose1d", 1),
    TF.conv_transpose2d: ("conv_transpose2d", 2),
}
_ROI_OPS = {"torchvision::roi_align", "torchvision::roi_pool"}

# What fastconv raises for arguments it does not take; anything else (a kernel's own error)
# propagates, so that a bug is never hidden behind torch's answer.
_REFUSALS = (ArgumentError, ArgumentTypeError, BoxesError, BoxesTypeError, NotImplementedError, TypeError)

_warned = set()
_warned_lock = threading.Lock()


def _warn_once(name: str, error: BaseException):
    reason = f"{type(error).__name__}: {error}"
    with _warned_lock:
        if (name, reason) in _warned:
            return
        _warned.add((name, reason))
    warnings.warn(f"fastconv.route_functional: fastconv refused this {name} call ({reason}); it ran on "
                  "torch instead", RoutingFallbackWarning, stacklevel=4)


def _op_name(func) -> Optional[str]:
    if isinstance(func, torch._ops.OpOverloadPacket):
        return func._qualified_op_name
    if isinstance(func, torch._ops.OpOverload):
        return func._schema.name
    return None


def _plain(types) -> bool:
    return all(t is torch.Tensor or t is torch.nn.Parameter for t in types)


def _torch_decides(dims: int, args, kwargs) -> bool:
    """Calls fastconv would take but torch treats otherwise: torch must answer them itself."""
    padding = kwargs.get("padding", args[4] if len(args) > 4 else 0)
    # fastconv's per-side padding extension, which torch refuses.
    if isinstance(padding, (tuple, list)) and len(padding) != dims:
        return True
    # fastconv gives zeros plus the bias for some empty planes that torch refuses; torch's own
    # handling of empty operands is the reference.
    return any(isinstance(t, torch.Tensor) and t.numel() == 0 for t in list(args[:3]) + list(kwargs.values()))


def _roi_pool(input, rois, spatial_scale, pooled_height, pooled_width):
    fn = "fastconv.functional.roi_pool"
    F._check_tensor(fn, "input", input)
    F._on_gpu(input)
    ph, pw = F._output_size(fn, (pooled_height, pooled_width))
    return tuple(_ops.roi_pool(input, F._rois(fn, rois), F._float(fn, "spatial_scale", spatial_scale), ph, pw))


def _roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return F.roi_align(input, rois, (pooled_height, pooled_width), spatial_scale, sampling_ratio, aligned)


class FunctionalRouting(TorchFunctionMode):
    """The mode behind route_functional(). While it handles a call, torch has popped it from
    the mode stack, so fastconv's own torch calls are not routed again."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            conv = _CONVS.get(func)
        except TypeError:  # an unhashable callable: not one of ours
            conv = None
        if conv is not None:
            name, dims = conv
            if not _plain(types) or _torch_decides(dims, args, kwargs):
                return func(*args, **kwargs)
            # Looked up at call time, so that fastconv.functional's fx stand-ins and test
            # spies apply.
            fast = getattr(F, name)
        else:
            name = _op_name(func)
            if name not in _ROI_OPS or not _plain(types):
                return func(*args, **kwargs)
            fast = _roi_align if name == "torchvision::roi_align" else _roi_pool
        try:
            return fast(*args, **kwargs)
        except _REFUSALS as e:
            refusal = e
        result = func(*args, **kwargs)  # torch's answer, or torch's own error if it refuses too
        _warn_once(name, refusal)
        return result


def route_functional() -> FunctionalRouting:
    """A context manager under which every torch.nn.functional.conv1d, conv2d,
    conv_transpose1d and conv_transpose2d call (so also every torch.nn convolution layer and
    any subclass that calls them), and torchvision.ops.roi_align / roi_pool, runs on
    fastconv.functional, in eager mode:

        with fastconv.route_functional():
            y = timm_model(x)

    Calls fastconv refuses run on torch, with a RoutingFallbackWarning once per reason; calls
    fastconv would answer differently from torch (per-side padding tuples, empty operands,
    tensor subclasses) go to torch directly. Modes are per thread."""
    return FunctionalRouting()


# convert(model, functional=True): the root's forward runs under the mode. A pre-hook enters
# it and an always_call forward hook leaves it, so that an exception in forward cannot leave
# the mode on; module-level functions (no closure over the model) keep the model deepcopy-able
# and picklable, and a per-thread stack keeps nested or re-entrant calls paired.
_active = threading.local()


def _enter(module, args):
    mode = FunctionalRouting()
    mode.__enter__()
    _active.__dict__.setdefault("modes", []).append(mode)


def _exit(module, args, output):
    modes = _active.__dict__.get("modes")
    if modes:
        modes.pop().__exit__(None, None, None)


def is_installed(model: torch.nn.Module) -> bool:
    return any(h is _enter for h in model._forward_pre_hooks.values())


def install(model: torch.nn.Module) -> Tuple:
    """Make model's forward run under route_functional() (once: a second call adds nothing).
    Returns the two hook handles (None if already installed); removing both undoes it."""
    if is_installed(model):
        return None, None
    pre = model.register_forward_pre_hook(_enter, prepend=True)
    post = model.register_forward_hook(_exit, always_call=True)
    return pre, post
