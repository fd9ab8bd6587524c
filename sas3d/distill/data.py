"""Training data for distillation: scenes held in memory, voxelised (and augmented) per step.

Per scene we keep the points, the fused 2D features (fp16) with their ``seen`` mask, consecutive
superpoint ids and each superpoint's mean fused feature (the features can instead be re-read per
step, ``data.in_memory: false``). A step voxelises the (augmented) points,
gives each voxel the mean fused feature of its seen points and the superpoint of its
representative point, and draws at most ``max_voxels`` supervised voxels per scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sas3d.distill.config import DataConfig
from sas3d.errors import InputError
from sas3d.geometry.augment import augment
from sas3d.geometry.superpoints import scene_superpoints
from sas3d.geometry.voxel import batch_coords, voxelize
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


def load_scene_data(scene_dir: str | Path, fused_dir: str | Path, cfg: DataConfig, cache: Path | None) -> SceneData:
    """Load a scene, its fused features ``<fused_dir>/<scene.name>.safetensors`` and its superpoints."""
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
    if scene.superpoints is not None:
        sp = np.asarray(scene.superpoints, dtype=np.int64)
    else:
        sp = scene_superpoints(scene, cfg.superpoints, cache)
    _, sp = np.unique(sp, return_inverse=True)  # consecutive ids
    sp = sp.reshape(-1).astype(np.int64)
    seen = fused.seen.numpy().astype(bool)
    features = fused.features.to(torch.float16)
    sp_target, has = superpoint_targets(features, seen, sp)
    return SceneData(
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
    )


@dataclass
class SceneSlice:
    """Where one scene of a batch sits among the batch's voxels."""

    scene: SceneData
    start: int  # first voxel row of this scene in the batch
    point_to_voxel: np.ndarray  # (N,) local voxel of every point
    voxel_superpoint: np.ndarray  # (M_i,) local superpoint id of every voxel
    voxel_to_point: np.ndarray  # (M_i,) representative point of every voxel
    sp_offset: int  # added to local superpoint ids to make them unique in the batch

    @property
    def num_voxels(self) -> int:
        return int(self.voxel_to_point.shape[0])


@dataclass
class Batch:
    """Network input plus the supervision of one training step."""

    coords: torch.Tensor  # (M, 4) int32 [batch, x, y, z]
    features: torch.Tensor  # (M, 1) ones
    batch_size: int
    slices: list[SceneSlice]
    distill_index: torch.Tensor  # (Md,) voxel rows supervised by fused features
    distill_target: torch.Tensor  # (Md, C) voxel mean fused feature
    distill_sp_target: torch.Tensor  # (Md, C) the voxel superpoint's mean fused feature
    distill_sp: torch.Tensor  # (Md,) batch-unique superpoint ids
    self_index: torch.Tensor  # (Ms,) voxel rows used by self-distillation
    voxel_sp: torch.Tensor  # (M,) batch-unique superpoint id of every voxel
    label_index: torch.Tensor  # (Ml,) voxel rows with a ground-truth label (only when asked for)
    label_target: torch.Tensor  # (Ml,) their class ids

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


def _subsample(candidates: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(candidates) <= limit:
        return candidates
    return np.sort(rng.choice(candidates, size=limit, replace=False))


def build_batch(scenes: Sequence[SceneData], cfg: DataConfig, rng: np.random.Generator, train: bool = True,
                num_classes: int = 0) -> Batch:
    """Voxelise (augmenting when ``train``) a list of scenes into one network batch with its targets.

    ``num_classes > 0`` also draws up to ``max_voxels`` voxels per scene whose representative point
    has a ground-truth label below ``num_classes`` (the supervised reference recipe).
    """
    coords, slices = [], []
    d_index, d_target, d_sp_target, d_sp, s_index, v_sp, l_index, l_target = [], [], [], [], [], [], [], []
    start = sp_offset = 0
    for scene in scenes:
        pts = augment(scene.points, rng, cfg.augmentation) if (train and cfg.augment) else scene.points
        vox = voxelize(pts, cfg.voxel_size)
        m = vox.num_voxels
        features, sp_target = scene.fused()
        # mean fused feature of the seen points of each voxel
        seen_idx = np.flatnonzero(scene.seen)
        vid = torch.from_numpy(vox.point_to_voxel[seen_idx])
        sums = torch.zeros((m, scene.dim), dtype=torch.float32).index_add_(0, vid, features[seen_idx].float())
        counts = torch.bincount(vid, minlength=m)
        voxel_sp = scene.superpoints[vox.voxel_to_point]
        supervised = (counts.numpy() > 0) & scene.sp_has_target[voxel_sp]
        chosen = _subsample(np.flatnonzero(supervised), cfg.max_voxels, rng)
        chosen_t = torch.from_numpy(chosen)
        d_index.append(chosen_t + start)
        d_target.append(sums[chosen_t] / counts[chosen_t].unsqueeze(1).float())
        d_sp_target.append(sp_target[torch.from_numpy(voxel_sp[chosen])])
        d_sp.append(torch.from_numpy(voxel_sp[chosen] + sp_offset))
        s_index.append(torch.from_numpy(_subsample(np.arange(m), cfg.max_voxels, rng)) + start)
        v_sp.append(torch.from_numpy(voxel_sp + sp_offset))
        if num_classes > 0:
            if scene.labels is None:
                raise InputError(scene.fused_path, f"scene {scene.name!r} has no ground-truth labels, which supervised training needs")
            voxel_label = scene.labels[vox.voxel_to_point]
            labelled = _subsample(np.flatnonzero((voxel_label >= 0) & (voxel_label < num_classes)), cfg.max_voxels, rng)
            l_index.append(torch.from_numpy(labelled) + start)
            l_target.append(torch.from_numpy(voxel_label[labelled]))
        coords.append(vox.coords)
        slices.append(SceneSlice(scene, start, vox.point_to_voxel, voxel_sp, vox.voxel_to_point, sp_offset))
        start += m
        sp_offset += scene.num_superpoints
    coords_t = torch.from_numpy(batch_coords(coords))
    return Batch(
        coords=coords_t,
        features=torch.ones((coords_t.shape[0], 1), dtype=torch.float32),
        batch_size=len(scenes),
        slices=slices,
        distill_index=torch.cat(d_index).long(),
        distill_target=torch.cat(d_target),
        distill_sp_target=torch.cat(d_sp_target),
        distill_sp=torch.cat(d_sp).long(),
        self_index=torch.cat(s_index).long(),
        voxel_sp=torch.cat(v_sp).long(),
        label_index=torch.cat(l_index).long() if l_index else torch.zeros(0, dtype=torch.long),
        label_target=torch.cat(l_target).long() if l_target else torch.zeros(0, dtype=torch.long),
    )
