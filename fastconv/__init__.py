"""fastconv: hand-written CPU and CUDA convolution kernels for PyTorch.

Importing fastconv loads its operators (torch.ops.fastconv.*). Use them through
fastconv.functional (torch.nn.functional's signatures), the drop-in layers of fastconv.nn
(fastconv.Conv2d for torch.nn.Conv2d), or fastconv.convert(model) on an existing model.
"""

import torch  # noqa: F401  (the extension links against torch's libraries)

from . import _C  # noqa: F401  (loads the library, whose registrations define the operators)
from . import _ops  # noqa: F401
from . import _verified
from . import algorithms, errors, functional, nn
from .nn import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, RoIAlign, RoIPool, convert
from .fusion import FuseReport, freeze_filters, frozen_filter_state, fuse, thaw_filters
from .routing import route_functional

__version__ = "0.1.0"

# The committed record of kernels verified on real hardware opens the gate for them.
_verified.load()

__all__ = [
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "RoIAlign",
    "RoIPool",
    "algorithms",
    "convert",
    "errors",
    "FuseReport",
    "freeze_filters",
    "frozen_filter_state",
    "fuse",
    "functional",
    "nn",
    "route_functional",
    "thaw_filters",
]
