"""Registry of 3D student backbones, so a new one is one decorated class away."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class/function decorator: ``@register("minkunet18a")``. The factory is called as
    ``factory(in_channels=..., out_channels=..., **kw)`` and must return a module whose
    ``forward(voxel_features, voxel_coords, batch_size)`` maps (M,Cin) -> (M,out_channels)."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS and _MODELS[name] is not factory:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return deco


def _load_builtin() -> None:
    # importing the module runs its @register decorators
    import sas3d.models.minkunet  # noqa: F401


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    _load_builtin()
    return sorted(_MODELS)


def build_model(name: str = "minkunet18a", in_channels: int = 1, out_channels: int = 384, **kw) -> nn.Module:
    """Build a registered backbone by name."""
    from sas3d.errors import ConfigError

    _load_builtin()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {sorted(_MODELS)}")
    model = _MODELS[name](in_channels=in_channels, out_channels=out_channels, **kw)
    # recorded so a checkpoint can rebuild the same model (see sas3d.models.checkpoint)
    model.sas3d_spec = {"name": name, "in_channels": in_channels, "out_channels": out_channels, **kw}
    return model
