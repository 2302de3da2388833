"""Which algorithm runs each convolution.

Each device has an ordered list of algorithms (fastest first, the always-correct "direct"
kernel last); an operator runs the first that can implement its problem. force() makes every
fastconv convolution use one algorithm, for tests and benchmarks: a problem it cannot
implement then raises NotImplementedError rather than silently running another. The setting
is process-wide (it reaches autograd's threads too); FASTCONV_ALGO sets it at start-up.
"""

import contextlib
import ctypes

from . import _C

_lib = ctypes.CDLL(_C.__file__)
_lib.fastconv_set_forced_algorithm.argtypes = [ctypes.c_char_p]
_lib.fastconv_set_forced_algorithm.restype = None
_lib.fastconv_forced_algorithm.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_lib.fastconv_forced_algorithm.restype = ctypes.c_size_t
_lib.fastconv_algorithm_names.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_lib.fastconv_algorithm_names.restype = ctypes.c_size_t

_DEVICES = {"cpu": 0, "cuda": 1}

__all__ = ["names", "forced", "set_forced", "force", "usable"]


def _read(call, *args):
    size = call(*args, None, 0)
    buffer = ctypes.create_string_buffer(size + 1)
    call(*args, buffer, size + 1)
    return buffer.value.decode()


def names(device="cpu"):
    """The algorithm list of a device ("cpu" or "cuda"), in the order they are tried."""
    if device not in _DEVICES:
        raise ValueError(f"fastconv.algorithms.names: device must be 'cpu' or 'cuda', got {device!r}")
    text = _read(_lib.fastconv_algorithm_names, _DEVICES[device])
    return text.split(",") if text else []


def forced():
    """The forced algorithm's name, or None when each operator chooses."""
    return _read(_lib.fastconv_forced_algorithm) or None


def set_forced(name):
    """Forces one algorithm by name (None restores the choice)."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"fastconv.algorithms.set_forced: name must be a str or None, got {name!r}")
    _lib.fastconv_set_forced_algorithm((name or "").encode())


@contextlib.contextmanager
def force(name):
    """with force("direct"): ... runs every convolution inside on that algorithm."""
    previous = forced()
    set_forced(name)
    try:
        yield
    finally:
        set_forced(previous)


_usable: dict = {}


def usable(device="cpu"):
    """Whether fastconv can run convolutions on `device` ("cpu" or "cuda") in this process.

    The CPU always can. CUDA needs a GPU, a build with the CUDA kernels, and those kernels
    switched on (kernels not yet verified on a GPU are off unless
    FASTCONV_ALLOW_UNVERIFIED_KERNELS=1). Examples use it to pick their device.
    """
    if device not in _DEVICES:
        raise ValueError(f"fastconv.algorithms.usable: device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return True
    if device not in _usable:
        import torch

        ok = torch.cuda.is_available() and bool(names("cuda"))
        if ok:
            # The verified gate lives in C++; one tiny convolution asks it.
            try:
                x = torch.zeros(1, 1, 1, 1, device="cuda")
                torch.ops.fastconv.conv2d(x, x, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
            except (NotImplementedError, RuntimeError):
                ok = False
        _usable[device] = ok
    return _usable[device]
