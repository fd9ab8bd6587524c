"""Model checkpoints as safetensors (no pickle): weights, optimizer state, extra tensors, metadata.

Layout of the file:
    model.<param/buffer name>        the model's state_dict
    optim.<param index>.<key>        tensor entries of ``optimizer.state_dict()["state"]``
    extra.<name>                     caller tensors (e.g. TESD feature history)
metadata (JSON): the caller's dict plus ``model`` = {"name", "in_channels", "out_channels", ...}
(what :func:`sas3d.models.registry.build_model` needs) and ``optim`` = the non-tensor part of
the optimizer state (param_groups, scalar state entries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sas3d.errors import InputError
from sas3d.utils.atomic import load_safetensors, save_safetensors_atomic


@dataclass
class CheckpointState:
    """Everything besides the model that a checkpoint holds, for resuming training."""

    optimizer: dict[str, Any] | None = None  # a torch optimizer state_dict, or None if none was saved
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The build_model arguments of ``model`` (set by build_model; falls back to its attributes)."""
    spec = getattr(model, "sas3d_spec", None)
    if spec is not None:
        return dict(spec)
    return {"name": "minkunet18a", "in_channels": int(model.in_channels), "out_channels": int(model.out_channels)}


def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict[str, Any], optimizer: torch.optim.Optimizer | None = None,
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model`` (+ optimizer state, extra tensors) and ``metadata`` to ``path`` atomically.

    ``metadata["model"]`` may override/extend the model spec; the spec from the model is the default.
    """
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu()
    meta = dict(metadata)
    meta["model"] = {**model_spec(model), **dict(metadata.get("model", {}))}
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, entries in sd["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value) and value.ndim > 0:
                    tensors[f"optim.{pid}.{key}"] = value.detach().cpu()
                else:
                    # 0-d tensors (Adam's step) are stored as numbers with their dtype
                    scalars.setdefault(str(pid), {})[key] = (
                        {"tensor": value.item(), "dtype": str(value.dtype).removeprefix("torch.")} if torch.is_tensor(value) else value
                    )
        meta["optim"] = {"param_groups": sd["param_groups"], "scalars": scalars, "class": type(optimizer).__name__}
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu()
    save_safetensors_atomic(path, tensors, meta)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any], CheckpointState]:
    """Rebuild the model from ``metadata["model"]`` and load its weights -> (model, metadata, state)."""
    from sas3d.models.registry import build_model

    tensors, meta = load_safetensors(path)
    spec = dict(meta.get("model") or {})
    if "name" not in spec:
        raise InputError(path, "not a sas3d model checkpoint (metadata has no 'model' entry)")
    name = spec.pop("name")
    input_mode = spec.pop("input", "ones")  # what the student sees per voxel (sas3d.models.inputs)
    norm_stats = spec.pop("norm_stats", "running")  # inference BatchNorm statistics (sas3d.models.norm)
    model = build_model(name, **spec)
    from sas3d.models.inputs import set_model_input
    from sas3d.models.norm import set_model_norm_stats

    set_model_input(model, input_mode)
    try:
        set_model_norm_stats(model, norm_stats)
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit model {name!r}: {exc}") from exc
    model.to(device)
    # The student's outputs live in the text space its targets did (sas3d.identity); None in older files.
    model.sas3d_text_space = meta.get("text_space")
    model.sas3d_teacher_identities = meta.get("teacher_identities")
    state = CheckpointState(extra={k[len("extra."):]: v.to(device) for k, v in tensors.items() if k.startswith("extra.")})
    optim_meta = meta.get("optim")
    if optim_meta is not None:
        per_param: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                per_param.setdefault(int(pid), {})[key] = v
        for pid, entries in optim_meta.get("scalars", {}).items():
            for key, value in entries.items():
                if isinstance(value, dict) and "tensor" in value:
                    value = torch.tensor(value["tensor"], dtype=getattr(torch, value["dtype"]))
                per_param.setdefault(int(pid), {})[key] = value
        state.optimizer = {"state": per_param, "param_groups": optim_meta["param_groups"]}
    return model, meta, state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: CheckpointState) -> None:
    """Restore the optimizer state saved in a checkpoint (tensors moved to the params' device by torch)."""
    if state.optimizer is None:
        raise ValueError("the checkpoint holds no optimizer state")
    optimizer.load_state_dict(state.optimizer)
