"""The exceptions fastconv raises for bad arguments.

torch raises RuntimeError where an argument is wrong (a channel mismatch, a bad stride, a
dtype mismatch), torchvision's RoI operators AssertionError for boxes of the wrong format, and
Python code conventionally ValueError and TypeError. fastconv's errors are all of these at
once, so that code written for any of them catches fastconv's:

    ArgumentError       ValueError and RuntimeError: a bad value, shape, size or device
    ArgumentTypeError   TypeError and RuntimeError: an argument of the wrong type or dtype
    BoxesError          ArgumentError and AssertionError: boxes of the wrong shape
    BoxesTypeError      ArgumentTypeError and AssertionError: boxes that are neither a
                        Tensor[K, 5] nor a list of Tensor[L, 4]

The raw operators (torch.ops.fastconv.*) raise ArgumentError and ArgumentTypeError too: their
C++ argument checks are routed here (csrc/python_module.cpp). Every message names the
function or operator and the argument.

This module imports nothing of fastconv's: the extension module looks it up when a check fails.
"""

__all__ = ["ArgumentError", "ArgumentTypeError", "BoxesError", "BoxesTypeError"]


class ArgumentError(ValueError, RuntimeError):
    """A bad argument value, shape, size or device."""


class ArgumentTypeError(TypeError, RuntimeError):
    """An argument of the wrong type or dtype."""


class BoxesError(ArgumentError, AssertionError):
    """RoI boxes of the wrong shape (torchvision asserts on these)."""


class BoxesTypeError(ArgumentTypeError, AssertionError):
    """RoI boxes that are neither a Tensor[K, 5] nor a list of Tensor[L, 4]."""
