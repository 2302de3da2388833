"""The lecture's CNN family, built on fastconv layers: every convolution is a fastconv one.

Where torchvision has a model, the builder's keyword arguments and the module names mirror
torchvision's, so a torchvision state_dict loads with strict=True and gives the same outputs.
"""

import importlib
import pkgutil

from ..summary import LayerSummary, ModelSummary, summary  # compatibility: summary lives in fastconv.summary
from ._registry import get_model, list_models, register_model

# Every module of this package registers its builders on import.
__all__ = ["get_model", "list_models", "register_model", "summary", "LayerSummary", "ModelSummary"]
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in getattr(_module, "__all__", ()):
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
