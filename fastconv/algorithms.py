"""Which algorithm runs each convolution.

Each device has an ordered list of algorithms (fastest first, the always-correct "direct"
kernel last); an operator runs the first that can implement its problem. force() makes every
fastconv convolution use one algorithm, for tests and benchmarks: a problem it cannot
implement then raises NotImplementedError rather than silently running another. The setting
is process-wide (it reaches autograd's threads too); FASTCONV_ALGO sets it at start-up.
"""

import contextlib

import torch

from . import _C  # noqa: F401  (loads the library and its operators)
from . import selftest

_DEVICES = ("cpu", "cuda")

__all__ = ["names", "forced", "set_forced", "force", "usable", "can_implement", "chosen", "fused_stages",
           "STAGES"]


def names(device="cpu"):
    """The algorithm list of a device ("cpu" or "cuda"), in the order they are tried."""
    if device not in _DEVICES:
        raise ValueError(f"fastconv.algorithms.names: device must be 'cpu' or 'cuda', got {device!r}")
    return list(torch.ops.fastconv._algorithm_names(device))


def forced():
    """The forced algorithm's name, or None when each operator chooses."""
    return torch.ops.fastconv._forced_algorithm() or None


def set_forced(name):
    """Forces one algorithm by name (None restores the choice)."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"fastconv.algorithms.set_forced: name must be a str or None, got {name!r}")
    torch.ops.fastconv._set_forced_algorithm(name or "")


@contextlib.contextmanager
def force(name):
    """with force("direct"): ... runs every convolution inside on that algorithm."""
    previous = forced()
    set_forced(name)
    try:
        yield
    finally:
        set_forced(previous)


def can_implement(algorithm, direction, input, weight, stride=(1, 1), padding=(0, 0, 0, 0),
                  dilation=(1, 1), groups=1, output_padding=None, device=None,
                  compute_capability=-1):
    """Whether `algorithm` can run `direction` ("fprop", "dgrad" or "wgrad") of the
    convolution that fastconv's conv2d operator (output_padding None) or conv_transpose2d
    operator (output_padding given) would run on these tensors: the library's own answer,
    from the request it would make (dtype, layout, alignment, SM version). Arguments are the
    operators' (2-D, per-side padding); device ("cpu" or "cuda") defaults to the tensors',
    and input and weight may be meta tensors. compute_capability (major * 10 + minor) stands
    in for the device's own, to ask about a GPU this machine does not have."""
    if device is None:
        device = input.device.type
    return torch.ops.fastconv._can_implement(
        algorithm, device, direction, input, weight, list(stride), list(padding),
        list(dilation), groups, None if output_padding is None else list(output_padding),
        compute_capability,
    )


# The epilogue stages of fastconv::conv2d_fused, in the order they apply (EpilogueStage in
# csrc/common/algorithms.h).
STAGES = ("bias", "residual", "activation")


def fused_stages(algorithm, direction, input, weight, stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), groups=1, output_padding=None, device=None,
                 compute_capability=-1):
    """The epilogue stages (a tuple drawn from STAGES) that `algorithm`'s kernel applies
    itself for that request, before its one rounding; fastconv's operators apply the others
    after the kernel, with ATen's ops. Arguments as can_implement's. A kernel is given the
    activation only when it is also given every addition the call asks for."""
    if device is None:
        device = input.device.type
    bits = torch.ops.fastconv._fused_stages(
        algorithm, device, direction, input, weight, list(stride), list(padding),
        list(dilation), groups, None if output_padding is None else list(output_padding),
        compute_capability,
    )
    return tuple(name for i, name in enumerate(STAGES) if bits & (1 << i))


def chosen(direction, input, weight, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
           output_padding=None, device=None):
    """The algorithm that fastconv's conv2d operator (output_padding None) or conv_transpose2d
    operator (output_padding given) would run for `direction` on these tensors now: the forced
    one, or the automatic choice, which passes over the kernels that the GPU's gate keeps off
    (fastconv.selftest). Arguments as can_implement's; the operands' values are not read (an
    algorithm that needs finite operands is answered as if they were)."""
    if device is None:
        device = input.device.type
    return torch.ops.fastconv._chosen_algorithm(
        device, direction, input, weight, list(stride), list(padding), list(dilation), groups,
        None if output_padding is None else list(output_padding),
    )


_usable: dict = {}


def usable(device="cpu"):
    """Whether fastconv can run convolutions on `device` ("cpu" or "cuda") in this process.

    The CPU always can. CUDA needs a GPU, a build with the CUDA kernels, and a kernel
    switched on for each convolution (the direct kernel, at least): verified ones are;
    emulated ones once fastconv's self-test has passed them on the GPU (run here if it has
    not); every one with FASTCONV_ALLOW_UNVERIFIED_KERNELS=1. Examples use it to pick their
    device.
    """
    if device not in _DEVICES:
        raise ValueError(f"fastconv.algorithms.usable: device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return True
    if device not in _usable:
        ok = torch.cuda.is_available() and bool(names("cuda"))
        if ok:
            # The gate lives in C++; the self-test may open it, then one tiny convolution asks.
            try:
                selftest.ensure(torch.device("cuda", torch.cuda.current_device()))
                x = torch.zeros(1, 1, 1, 1, device="cuda")
                torch.ops.fastconv.conv2d(x, x, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
            except (NotImplementedError, RuntimeError):
                ok = False
        _usable[device] = ok
    return _usable[device]
