"""PointFeatures: the fused-feature artefact (one safetensors file per scene)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sas3d.errors import InputError
from sas3d.utils.atomic import load_safetensors, save_safetensors_atomic


@dataclass
class PointFeatures:
    """Per-point features in the shared text space.

    ``features`` (N, C) float16, zeros where unseen; ``seen`` (N,) bool; ``weights`` (N, T) float32
    per-teacher fusion weights (guided/linear fusion only); ``metadata`` holds the config, teacher
    names, frame count and scene name that produced the file.
    """

    features: torch.Tensor
    seen: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.seen.shape != (self.features.shape[0],):
            raise ValueError(f"features {tuple(self.features.shape)} and seen {tuple(self.seen.shape)} do not match")

    @property
    def num_points(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def save(self, path: str | Path) -> None:
        tensors = {"features": self.features.to(torch.float16).cpu(), "seen": self.seen.to(torch.bool).cpu()}
        if self.weights is not None:
            tensors["weights"] = self.weights.to(torch.float32).cpu()
        save_safetensors_atomic(path, tensors, self.metadata)

    @classmethod
    def load(cls, path: str | Path) -> "PointFeatures":
        tensors, meta = load_safetensors(path)
        if "features" not in tensors or "seen" not in tensors:
            raise InputError(path, f"not a fused-feature file: has {sorted(tensors)}, needs 'features' and 'seen'")
        return cls(tensors["features"], tensors["seen"], meta, tensors.get("weights"))
