"""The model registry behind fastconv.models.list_models() and get_model()."""

from __future__ import annotations

from typing import Callable

import torch

_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {}


def register_model(builder: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    """Decorator: make a model builder reachable by its function name through get_model()."""
    name = builder.__name__
    if name in _BUILDERS and _BUILDERS[name] is not builder:
        raise RuntimeError(f"fastconv.models: two builders are named {name!r}")
    _BUILDERS[name] = builder
    return builder


def list_models() -> list[str]:
    """The names get_model() accepts, sorted."""
    return sorted(_BUILDERS)


def get_model(name: str, **kwargs) -> torch.nn.Module:
    """Build the model called `name` (see list_models()) with the builder's keyword arguments."""
    if not isinstance(name, str):
        raise TypeError(f"get_model(): name must be a str, got {type(name).__name__}")
    try:
        builder = _BUILDERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"get_model(): unknown model name {name!r}; fastconv.models.list_models() gives the known ones"
        ) from None
    return builder(**kwargs)


def state_dict_from(weights):
    """The state_dict that `weights` names: a mapping is returned as it is; a path (str or
    PathLike) is read with torch.load(weights_only=True) onto the CPU."""
    if isinstance(weights, (str, bytes)) or hasattr(weights, "__fspath__"):
        return torch.load(weights, map_location="cpu", weights_only=True)
    if hasattr(weights, "keys") and hasattr(weights, "__getitem__"):
        return weights
    raise TypeError(
        "weights must be None, a state_dict or the path of a saved state_dict, "
        f"got {type(weights).__name__}"
    )


def load_weights(model: torch.nn.Module, weights) -> torch.nn.Module:
    """Load `weights` into `model` with strict=True and return the model.

    `weights` is None (keep the initialisation), a state_dict (for example a torchvision
    model's), or the path of a file that torch.save wrote such a state_dict to. Pretrained
    weights are never downloaded: bring the file.
    """
    if weights is not None:
        model.load_state_dict(state_dict_from(weights), strict=True)
    return model
