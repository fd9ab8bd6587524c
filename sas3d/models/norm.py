"""Which BatchNorm statistics the student normalises with at inference (``model.norm_stats``).

BatchNorm trains on the statistics of each batch and, for inference, keeps running averages of them
(momentum 0.1, as MinkowskiEngine). With the papers' batches of 12 scenes the running averages are a
good stand-in for a batch. A student trained one scene per step (``optim.batch_size: 1``: in-place
distillation, the demo) never saw a mixture of scenes: every step normalised one scene with that
scene's own statistics, and the running averages are dominated by the last few scenes it stepped on.
Inference with them feeds each layer activations scaled for another scene (measured: the demo's
in-place SAS student, 3 rooms, 48.1 / 53.0 mIoU with running statistics, 63.2 / 64.7 with each
room's own, after stage 1 / TESD).

``scene``: normalise each inference pass with the statistics of the scene itself (BatchNorm in
training mode on that one scene, running buffers untouched), which is exactly what the network did
in every training step. ``running``: the running averages (the papers). The mode is part of the model
spec stored in every checkpoint, so every consumer (eval, segment, query, instances, Gaussians) uses
what training chose; checkpoints without it use ``running``.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch

NORM_STATS = ("running", "scene")


def model_norm_stats(model: torch.nn.Module) -> str:
    """The inference normalisation a (loaded or freshly built) student uses; ``running`` for older checkpoints."""
    return str(getattr(model, "sas3d_spec", {}).get("norm_stats", "running"))


def set_model_norm_stats(model: torch.nn.Module, mode: str) -> None:
    """Record ``mode`` in the model spec that checkpoints store."""
    if mode not in NORM_STATS:
        raise ValueError(f"unknown norm_stats {mode!r}; use one of {', '.join(NORM_STATS)}")
    spec = dict(getattr(model, "sas3d_spec", {}))
    spec["norm_stats"] = mode
    model.sas3d_spec = spec


def resolve_norm_stats(mode: str, scenes_per_step: int) -> str:
    """``auto`` -> ``scene`` when every training step normalises exactly one scene, else ``running``."""
    if mode == "auto":
        return "scene" if scenes_per_step == 1 else "running"
    if mode not in NORM_STATS:
        raise ValueError(f"unknown model.norm_stats {mode!r}; use auto or one of {', '.join(NORM_STATS)}")
    return mode


def _batch_norms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _with_batch_statistics(norm: torch.nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm`` applied with the statistics of ``x`` alone: no running buffers read or written, and no
    synchronisation with other ranks (a synchronised BatchNorm would wait for ranks that are not
    running inference)."""
    return torch.nn.functional.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)


@contextmanager
def scene_statistics(model: torch.nn.Module) -> Iterator[None]:
    """Inside: every BatchNorm of ``model`` (synchronised ones included) normalises with the statistics
    of its input batch and leaves its running buffers and batch counter untouched; outside, the
    modules are as they were."""
    norms = _batch_norms(model)
    try:
        for m in norms:
            m.forward = partial(_with_batch_statistics, m)  # an instance attribute shadows the class's forward
        yield
    finally:
        for m in norms:
            m.__dict__.pop("forward", None)


def forward_with_norm_stats(model: torch.nn.Module, *args: torch.Tensor | int) -> torch.Tensor:
    """``model(*args)`` in eval mode, normalised as ``model_norm_stats(model)`` says.

    A scene too small for batch statistics (one voxel in a layer: BatchNorm needs two values per
    channel) falls back to the running averages, with a warning."""
    if model_norm_stats(model) != "scene":
        return model(*args)
    try:
        with scene_statistics(model):
            return model(*args)
    except ValueError as exc:
        if "more than 1 value per channel" not in str(exc):
            raise
        warnings.warn("scene too small for its own BatchNorm statistics (a layer holds one voxel): "
                      "normalising with the running averages instead", stacklevel=2)
        return model(*args)
