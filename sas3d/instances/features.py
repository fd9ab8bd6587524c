"""Per-point features that label (and group) instances: the 3D student, fused 2D, or the 2D-3D ensemble."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sas3d.scene.types import Scene

LABELLERS = ("distill", "fusion", "ensemble")  # the modes of `sas3d eval`: 3D student, fused 2D, OpenScene 2D-3D ensemble


@dataclass
class PointFeatureSet:
    """``features`` (N, C) float32 in the text space; ``valid`` (N,) bool: points that have a feature
    (fused 2D has none where no camera saw the point); ``source`` names the labeller."""

    features: torch.Tensor
    valid: np.ndarray
    source: str

    @property
    def num_points(self) -> int:
        return int(self.features.shape[0])


def student_point_features(model: torch.nn.Module, scene: Scene, voxel_size: float, device: str = "cpu") -> torch.Tensor:
    """(N, C) unit features of the 3D student on ``scene``: the one place instance code runs the student,
    so a future input (e.g. colours) is passed here once."""
    from sas3d.models.inference import predict_point_features

    return predict_point_features(model, scene.points, voxel_size, device=device, colors=scene.colors)


def labeller_features(mode: str, *, feat3d: torch.Tensor | None = None, fused: torch.Tensor | None = None,
                      seen: np.ndarray | torch.Tensor | None = None, class_text: torch.Tensor | None = None) -> PointFeatureSet:
    """Point features for a labeller: ``distill`` = ``feat3d``; ``fusion`` = ``fused`` on ``seen`` points;
    ``ensemble`` = per point whichever of the two has the higher max similarity to ``class_text``
    (OpenScene's 2D-3D ensemble; unseen points and ties use the 3D feature)."""
    from sas3d.errors import InputError
    from sas3d.evaluate.predict import cosine_scores

    if mode not in LABELLERS:
        raise InputError(None, f"unknown labeller {mode!r}; use one of {', '.join(LABELLERS)}")
    if mode != "fusion" and feat3d is None:
        raise InputError(None, f"labeller {mode} needs the 3D student's features (a checkpoint)")
    if mode != "distill" and (fused is None or seen is None):
        raise InputError(None, f"labeller {mode} needs fused 2D features")
    if mode == "distill":
        f = feat3d.float()
        return PointFeatureSet(f, np.ones(f.shape[0], dtype=bool), mode)
    seen_np = np.asarray(seen.numpy() if isinstance(seen, torch.Tensor) else seen, dtype=bool).reshape(-1)
    f2 = torch.nn.functional.normalize(fused.float(), dim=1, eps=1e-8)
    if mode == "fusion":
        return PointFeatureSet(f2, seen_np, mode)
    if class_text is None:
        raise InputError(None, "the ensemble labeller needs the class text embeddings")
    if f2.shape != feat3d.shape:
        raise InputError(None, f"fused features {tuple(f2.shape)} and 3D features {tuple(feat3d.shape)} differ in shape")
    best2d = cosine_scores(f2, class_text).max(dim=1).values
    best3d = cosine_scores(feat3d.float(), class_text).max(dim=1).values
    use_2d = torch.from_numpy(seen_np) & (best2d > best3d)
    f = torch.where(use_2d[:, None], f2, feat3d.float())
    return PointFeatureSet(f, np.ones(f.shape[0], dtype=bool), mode)
