"""Training scenes for distillation: points, fused 2D features, superpoints, held in memory.

Per scene we keep the points (and colours, for ``data.input: rgb``), the fused 2D features (fp16)
with their ``seen`` mask, consecutive superpoint ids, each superpoint's mean fused feature and the
group each superpoint target falls in (its class over the label set's text features, or its k-means
cluster for ``loss.balance: cluster``). The features can instead be re-read per step
(``data.in_memory: false``). Batches are built from these by :mod:`sas3d.distill.batching`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sas3d.distill.config import DataConfig
from sas3d.errors import InputError
from sas3d.identity import TEXT_SPACE, teacher_identities_of
from sas3d.geometry.superpoints import scene_superpoints
from sas3d.scene.types import Scene


@dataclass
class SceneData:
    """One training scene. Fused features stay in memory unless ``data.in_memory`` is false, in
    which case they are re-read from ``fused_path`` at every step (large datasets)."""

    name: str
    points: np.ndarray  # (N, 3) float32
    seen: np.ndarray  # (N,) bool
    superpoints: np.ndarray  # (N,) int64, consecutive 0..S-1
    sp_has_target: np.ndarray  # (S,) bool: the superpoint has at least one seen point
    dim: int  # fused feature width C
    features: torch.Tensor | None = None  # (N, C) float16 fused features, zeros where unseen
    sp_target: torch.Tensor | None = None  # (S, C) float32 mean fused feature of the superpoint's seen points
    fused_path: Path | None = None
    labels: np.ndarray | None = None  # (N,) ground truth: validation, and the supervised reference recipe
    teachers: tuple[str, ...] = ()  # teacher names recorded in the fused file (e.g. "simulated-lseg")
    teacher_identities: tuple[str, ...] = ()  # their identities (sas3d.identity), when the file records them
    text_space: str | None = None  # the fused features' text space, when the file records it
    colors: np.ndarray | None = None  # (N, 3) uint8, for data.input=rgb
    sp_group: np.ndarray | None = None  # (S,) int64 group (class / cluster) of each superpoint target
    group_basis: torch.Tensor | None = None  # (G, C) unit rows that define the groups (text rows or centroids)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_superpoints(self) -> int:
        return int(self.sp_has_target.shape[0])

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, C) float16, superpoint targets (S, C) float32), from memory or from the file."""
        if self.features is not None and self.sp_target is not None:
            return self.features, self.sp_target
        from sas3d.fusion.features import PointFeatures

        assert self.fused_path is not None
        features = PointFeatures.load(self.fused_path).features.to(torch.float16)
        return features, superpoint_targets(features, self.seen, self.superpoints)[0]

    def groups_of(self, targets: torch.Tensor) -> torch.Tensor:
        """(M,) group of each target row: argmax of its cosine to the group basis."""
        assert self.group_basis is not None, "no group basis: loss.balance/data.sampling need one"
        return (torch.nn.functional.normalize(targets.float(), dim=1, eps=1e-8) @ self.group_basis.T).argmax(dim=1)


def read_scene_list(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Scene folders from a text file (one per line, ``#`` comments) or a comma-separated string."""
    if isinstance(spec, (list, tuple)):
        return [Path(s) for s in spec]
    text = str(spec)
    path = Path(text)
    if path.is_file() and path.suffix.lower() not in (".ply", ".pth"):
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
        entries = [ln for ln in lines if ln]
        if not entries:
            raise InputError(path, "scene list is empty")
        # relative entries are relative to the list file when they exist there, else to the cwd
        return [path.parent / e if not Path(e).is_absolute() and (path.parent / e).exists() else Path(e) for e in entries]
    return [Path(s.strip()) for s in text.split(",") if s.strip()]


def superpoint_targets(features: torch.Tensor, seen: np.ndarray, superpoints: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Mean fused feature of the seen points of each superpoint -> ((S, C) float32, has_target (S,))."""
    num_sp = int(superpoints.max()) + 1 if len(superpoints) else 0
    idx = torch.from_numpy(np.flatnonzero(seen))
    sp = torch.from_numpy(superpoints[idx.numpy()])
    sums = torch.zeros((num_sp, features.shape[1]), dtype=torch.float32).index_add_(0, sp, features[idx].float())
    counts = torch.bincount(sp, minlength=num_sp)
    has = counts > 0
    sums[has] /= counts[has].unsqueeze(1).float()
    return sums, has.numpy()


def kmeans_basis(targets: torch.Tensor, weights: torch.Tensor, k: int, seed: int, iterations: int = 20) -> torch.Tensor:
    """Spherical k-means (k-means++ seeding, cosine assignment) of weighted unit target rows -> (k', C)
    unit centroids, k' <= k (fewer when there are fewer distinct targets). Deterministic for a seed."""
    x = torch.nn.functional.normalize(targets.float(), dim=1, eps=1e-8)
    w = weights.float()
    k = max(1, min(k, int(x.shape[0])))
    gen = torch.Generator().manual_seed(seed)
    centres = [x[int(torch.multinomial(w, 1, generator=gen))]]
    for _ in range(1, k):
        dist = (1.0 - (x @ torch.stack(centres).T).max(dim=1).values).clamp_min(0) * w
        if float(dist.sum()) <= 1e-12:
            break
        centres.append(x[int(torch.multinomial(dist, 1, generator=gen))])
    c = torch.stack(centres)
    for _ in range(iterations):
        assign = (x @ c.T).argmax(dim=1)
        sums = torch.zeros_like(c).index_add_(0, assign, x * w.unsqueeze(1))
        keep = sums.norm(dim=1) > 0
        c = torch.where(keep.unsqueeze(1), torch.nn.functional.normalize(sums, dim=1, eps=1e-8), c)
    return c


def load_scene_data(scene_dir: str | Path, fused_dir: str | Path, cfg: DataConfig, cache: Path | None, *,
                    class_text: torch.Tensor | None = None, clusters: int = 0, seed: int = 0) -> SceneData:
    """Load a scene, its fused features ``<fused_dir>/<scene.name>.safetensors`` and its superpoints.

    ``class_text`` (K, C) unit rows: superpoint targets are grouped by class. ``clusters > 0`` groups
    them by k-means clusters of the scene's targets instead (no label set needed).
    """
    from sas3d import load_scene
    from sas3d.fusion.features import PointFeatures

    scene: Scene = load_scene(scene_dir, **cfg.scene_options)
    fused_path = Path(fused_dir) / f"{scene.name}.safetensors"
    if not fused_path.is_file():
        raise InputError(fused_path, f"fused features for scene {scene.name!r} not found (run `sas3d fuse` first)")
    fused = PointFeatures.load(fused_path)
    if fused.num_points != scene.num_points:
        raise InputError(fused_path, f"has {fused.num_points} points but scene {scene.name!r} has {scene.num_points}")
    if not bool(fused.seen.any()):
        raise InputError(fused_path, "no point has a fused feature (seen is all False)")
    if cfg.input == "rgb" and scene.colors is None:
        raise InputError(scene.source, f"data.input=rgb but scene {scene.name!r} has no point colours")
    if scene.superpoints is not None:
        sp = np.asarray(scene.superpoints, dtype=np.int64)
    else:
        sp = scene_superpoints(scene, cfg.superpoints, cache)
    _, sp = np.unique(sp, return_inverse=True)  # consecutive ids
    sp = sp.reshape(-1).astype(np.int64)
    seen = fused.seen.numpy().astype(bool)
    features = fused.features.to(torch.float16)
    sp_target, has = superpoint_targets(features, seen, sp)
    basis = None
    if clusters > 0:
        sizes = torch.from_numpy(np.bincount(sp[seen], minlength=len(has)).astype(np.float32))
        basis = kmeans_basis(sp_target[torch.from_numpy(has)], sizes[torch.from_numpy(has)], clusters, seed)
    elif class_text is not None:
        basis = torch.nn.functional.normalize(class_text.float(), dim=1, eps=1e-8)
    data = SceneData(
        name=scene.name,
        points=np.asarray(scene.points, dtype=np.float32),
        seen=seen,
        superpoints=sp,
        sp_has_target=has,
        dim=int(features.shape[1]),
        features=features if cfg.in_memory else None,
        sp_target=sp_target if cfg.in_memory else None,
        fused_path=fused_path,
        labels=None if scene.labels is None else np.asarray(scene.labels, dtype=np.int64),
        teachers=tuple(str(t) for t in fused.metadata.get("teachers", ())),
        teacher_identities=tuple(teacher_identities_of(fused.metadata)),
        text_space=fused.metadata.get(TEXT_SPACE),
        colors=None if scene.colors is None else np.asarray(scene.colors, dtype=np.uint8),
        group_basis=basis,
    )
    if basis is not None:
        data.sp_group = data.groups_of(sp_target).numpy()
    return data
