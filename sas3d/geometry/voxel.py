"""Voxelisation for the sparse 3D student: points -> unique voxels and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np

INDOOR_VOXEL_SIZE = 0.02  # SAS Sec. 4.1 and supplementary Tab. 7, after OpenScene: 2 cm indoor
OUTDOOR_VOXEL_SIZE = 0.05  # SAS Sec. 4.1 and supplementary Tab. 7, after OpenScene: 5 cm outdoor (nuScenes)

_BITS = 21  # per-axis bits of the packed key: 2M voxels per axis (40 km at 2 cm)


@dataclass
class Voxelization:
    """Result of :func:`voxelize`.

    ``coords`` (M,3) int32 non-negative voxel indices (shifted so the minimum is 0);
    ``point_to_voxel`` (N,) int64 voxel of each point; ``voxel_to_point`` (M,) int64 one
    representative point per voxel (its first point in input order).
    """

    coords: np.ndarray
    point_to_voxel: np.ndarray
    voxel_to_point: np.ndarray

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


def voxelize(points: np.ndarray, voxel_size: float) -> Voxelization:
    """Quantise ``points`` (N,3) metres to a grid of ``voxel_size`` and keep the unique voxels."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"expected points (N,3), got {pts.shape}")
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    if len(pts) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Voxelization(np.zeros((0, 3), dtype=np.int32), empty, empty)
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or inf")
    grid = np.floor(pts.astype(np.float64) / voxel_size).astype(np.int64)
    grid -= grid.min(axis=0)
    if grid.max() >= (1 << _BITS):
        raise ValueError(f"scene too large for voxel size {voxel_size}: {grid.max() + 1} voxels along one axis")
    # one int64 key per voxel makes np.unique a 1-D sort instead of a row-wise lexsort
    keys = (grid[:, 0] << (2 * _BITS)) | (grid[:, 1] << _BITS) | grid[:, 2]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return Voxelization(
        coords=grid[first].astype(np.int32),
        point_to_voxel=inverse.reshape(-1).astype(np.int64),
        voxel_to_point=first.astype(np.int64),
    )


A = TypeVar("A")


def devoxelize(voxel_values: A, vox: Voxelization) -> A:
    """Per-voxel values (M, ...) -> per-point values (N, ...) (numpy array or torch tensor)."""
    index = vox.point_to_voxel
    if not isinstance(voxel_values, np.ndarray):  # torch tensor: index with a tensor on its device
        import torch

        index = torch.as_tensor(index, device=voxel_values.device)
    return voxel_values[index]


def batch_coords(coords: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-scene voxel coords (M_i,3) into (sum M_i, 4) int32 rows ``[batch, x, y, z]``."""
    parts = []
    for b, c in enumerate(coords):
        c = np.asarray(c)
        if c.ndim != 2 or c.shape[1] != 3:
            raise ValueError(f"coords {b}: expected (M,3), got {c.shape}")
        parts.append(np.concatenate([np.full((len(c), 1), b, dtype=np.int32), c.astype(np.int32)], axis=1))
    if not parts:
        return np.zeros((0, 4), dtype=np.int32)
    return np.concatenate(parts, axis=0)
