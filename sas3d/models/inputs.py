"""What the 3D student sees per voxel (``data.input``), shared by training and inference.

``ones`` (SAS supplement, OpenScene): a constant 1 per voxel, geometry only. ``rgb``: the mean colour
of the voxel's points scaled to [-1, 1] (a window or a door is nearly coplanar with its wall; colour
is what tells them apart). The mode is part of the model spec stored in every checkpoint, so
inference feeds exactly what training fed.
"""

from __future__ import annotations

import numpy as np
import torch

INPUT_CHANNELS = {"ones": 1, "rgb": 3}


def model_input(model: torch.nn.Module) -> str:
    """The input mode a (loaded or freshly built) student expects; ``ones`` for older checkpoints."""
    return str(getattr(model, "sas3d_spec", {}).get("input", "ones"))


def set_model_input(model: torch.nn.Module, mode: str) -> None:
    """Record ``mode`` in the model spec that checkpoints store."""
    if mode not in INPUT_CHANNELS:
        raise ValueError(f"unknown student input {mode!r}; use one of {sorted(INPUT_CHANNELS)}")
    spec = dict(getattr(model, "sas3d_spec", {}))
    spec["input"] = mode
    model.sas3d_spec = spec


def voxel_input(mode: str, colors: np.ndarray | None, point_to_voxel: np.ndarray, num_voxels: int,
                what: str = "the scene") -> torch.Tensor:
    """(M, INPUT_CHANNELS[mode]) float32 voxel features from per-point ``colors`` (N, 3) uint8."""
    if mode == "ones":
        return torch.ones((num_voxels, 1), dtype=torch.float32)
    if mode != "rgb":
        raise ValueError(f"unknown student input {mode!r}; use one of {sorted(INPUT_CHANNELS)}")
    if colors is None:
        raise ValueError(f"the student takes RGB input (data.input=rgb) but {what} has no colours")
    rgb = torch.from_numpy(np.asarray(colors, dtype=np.float32).reshape(-1, 3))
    index = torch.from_numpy(np.asarray(point_to_voxel, dtype=np.int64))
    sums = torch.zeros((num_voxels, 3), dtype=torch.float32).index_add_(0, index, rgb)
    counts = torch.bincount(index, minlength=num_voxels).clamp_min(1).unsqueeze(1).float()
    return sums / counts / 127.5 - 1.0
