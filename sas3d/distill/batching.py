"""Training batches: voxelise (and augment) scenes, draw the supervised voxels, attach their targets.

A batch holds the network input of several scenes plus, per scene, a :class:`ScenePart` with what
each loss needs, so every loss is computed per scene and averaged over the scenes: a batch split over
data-parallel ranks then gives exactly the gradient one process computes on the whole batch.

Everything random in a scene's part is drawn from ``default_rng([seed, epoch, step, slot])`` (slot =
the scene's position in the global batch), so a batch does not depend on which process or loader
worker builds it. :class:`StepBatches` serves the batches of a run, step by step, to a
``torch.utils.data.DataLoader`` whose workers build them ahead of the training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from sas3d.distill.config import DataConfig
from sas3d.distill.data import SceneData
from sas3d.errors import InputError
from sas3d.geometry.augment import augment
from sas3d.geometry.voxel import batch_coords, voxelize
from sas3d.models.inputs import voxel_input


@dataclass
class ScenePart:
    """One scene of a batch: where its voxels sit and the supervision of its losses."""

    scene: int  # index into the trainer's scene list
    start: int  # first voxel row of this scene in the batch
    num_voxels: int
    point_to_voxel: np.ndarray  # (N,) local voxel of every point
    voxel_to_point: np.ndarray  # (M_i,) representative (first) point of every voxel
    voxel_sp: torch.Tensor  # (M_i,) local superpoint id of every voxel
    distill_rows: torch.Tensor  # (Md,) local voxel rows supervised by fused features
    distill_target: torch.Tensor  # (Md, C) float16 target of each (voxel mean, or its superpoint's mean)
    distill_sp_target: torch.Tensor  # (Md, C) float16 the voxel superpoint's mean fused feature
    self_rows: torch.Tensor  # (Ms,) local voxel rows used by self-distillation
    label_rows: torch.Tensor  # (Ml,) local voxel rows with a ground-truth label (supervised reference only)
    label_target: torch.Tensor  # (Ml,) their class ids

    @property
    def distill_sp(self) -> torch.Tensor:
        return self.voxel_sp[self.distill_rows]


@dataclass
class Batch:
    """Network input plus the per-scene supervision of one training step."""

    coords: torch.Tensor  # (M, 4) int32 [batch, x, y, z]
    features: torch.Tensor  # (M, Cin) voxel input (ones, or mean colour)
    parts: list[ScenePart]
    epoch: int = 0  # where in the run this batch belongs
    step: int = 0

    @property
    def batch_size(self) -> int:
        return len(self.parts)

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


def _subsample(candidates: np.ndarray, limit: int, rng: np.random.Generator, groups: np.ndarray | None = None) -> np.ndarray:
    """At most ``limit`` of ``candidates``, uniformly, or with an equal share per group (``groups``:
    the group of each candidate; a group with fewer candidates than its share gives all of them and
    the rest of its share goes to the others)."""
    if len(candidates) <= limit:
        return candidates
    if groups is None:
        return np.sort(rng.choice(candidates, size=limit, replace=False))
    ids, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    quota = np.zeros(len(ids), dtype=np.int64)
    left = limit
    for rank, g in enumerate(np.argsort(counts, kind="stable")):  # water-filling, smallest group first
        quota[g] = min(int(counts[g]), left // (len(ids) - rank))
        left -= int(quota[g])
    chosen = [rng.choice(candidates[inverse == g], size=int(q), replace=False) for g, q in enumerate(quota) if q > 0]
    return np.sort(np.concatenate(chosen))


def build_part(scene: SceneData, index: int, cfg: DataConfig, rng: np.random.Generator, *, train: bool, point_target: str,
               num_classes: int = 0) -> tuple[np.ndarray, torch.Tensor, ScenePart]:
    """Voxelise one scene and draw its supervision -> (voxel coords (M, 3), voxel input (M, Cin), part)."""
    pts = augment(scene.points, rng, cfg.augmentation) if (train and cfg.augment) else scene.points
    vox = voxelize(pts, cfg.voxel_size)
    m = vox.num_voxels
    features, sp_target = scene.fused()
    voxel_sp = scene.superpoints[vox.voxel_to_point]
    seen_idx = np.flatnonzero(scene.seen)
    has_seen = np.zeros(m, dtype=bool)
    has_seen[vox.point_to_voxel[seen_idx]] = True
    supervised = np.flatnonzero(has_seen & scene.sp_has_target[voxel_sp])
    groups = scene.sp_group[voxel_sp[supervised]] if cfg.sampling == "class" else None
    chosen = _subsample(supervised, cfg.max_voxels, rng, groups)
    sp_rows = sp_target[torch.from_numpy(voxel_sp[chosen])]
    if point_target == "superpoint":
        target = sp_rows
    else:  # the mean fused feature of the chosen voxels' seen points
        slot = np.full(m, -1, dtype=np.int64)
        slot[chosen] = np.arange(len(chosen))
        pick = seen_idx[slot[vox.point_to_voxel[seen_idx]] >= 0]
        rows = torch.from_numpy(slot[vox.point_to_voxel[pick]])
        sums = torch.zeros((len(chosen), scene.dim), dtype=torch.float32).index_add_(0, rows, features[torch.from_numpy(pick)].float())
        target = sums / torch.bincount(rows, minlength=len(chosen)).clamp_min(1).unsqueeze(1).float()
    label_rows, label_target = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if num_classes > 0:
        if scene.labels is None:
            raise InputError(scene.fused_path, f"scene {scene.name!r} has no ground-truth labels, which supervised training needs")
        voxel_label = scene.labels[vox.voxel_to_point]
        label_rows = _subsample(np.flatnonzero((voxel_label >= 0) & (voxel_label < num_classes)), cfg.max_voxels, rng)
        label_target = voxel_label[label_rows]
    part = ScenePart(
        scene=index, start=0, num_voxels=m, point_to_voxel=vox.point_to_voxel, voxel_to_point=vox.voxel_to_point,
        voxel_sp=torch.from_numpy(voxel_sp),
        distill_rows=torch.from_numpy(chosen).long(),
        distill_target=target.to(torch.float16),
        distill_sp_target=sp_rows.to(torch.float16),
        self_rows=torch.from_numpy(_subsample(np.arange(m), cfg.max_voxels, rng)).long(),
        label_rows=torch.from_numpy(label_rows).long(),
        label_target=torch.from_numpy(label_target).long(),
    )
    inputs = voxel_input(cfg.input, scene.colors, vox.point_to_voxel, m, what=f"scene {scene.name!r}")
    return vox.coords, inputs, part


def build_batch(scenes: Sequence[SceneData], indices: Sequence[int], cfg: DataConfig, rngs: Sequence[np.random.Generator], *,
                train: bool = True, point_target: str = "superpoint", num_classes: int = 0) -> Batch:
    """Voxelise (augmenting when ``train``) scenes ``indices`` of ``scenes`` into one network batch.

    ``num_classes > 0`` also draws up to ``max_voxels`` voxels per scene whose representative point
    has a ground-truth label below ``num_classes`` (the supervised reference recipe).
    """
    coords, inputs, parts = [], [], []
    start = 0
    for index, rng in zip(indices, rngs):
        c, x, part = build_part(scenes[index], index, cfg, rng, train=train, point_target=point_target, num_classes=num_classes)
        part.start = start
        start += part.num_voxels
        coords.append(c)
        inputs.append(x)
        parts.append(part)
    return Batch(torch.from_numpy(batch_coords(coords)), torch.cat(inputs), parts)


@dataclass(frozen=True)
class EpochPlan:
    """Which scenes every step of an epoch trains on, identical on every rank.

    The global batch of step ``s`` is ``order[s*B:(s+1)*B]`` of a per-epoch permutation (wrapped to fill
    the last batch); rank ``r`` of ``W`` takes slots ``r, r+W, ...`` of it.
    """

    num_scenes: int
    global_batch: int
    world_size: int
    seed: int

    @property
    def steps(self) -> int:
        return math.ceil(self.num_scenes / self.global_batch)

    def global_batch_scenes(self, epoch: int, step: int) -> list[int]:
        """Scene indices of the global batch of one step (distinct: the batch is at most the scene count)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_scenes)
        return [int(order[(step * self.global_batch + k) % self.num_scenes]) for k in range(self.global_batch)]

    def step_scenes(self, epoch: int, step: int, rank: int) -> list[tuple[int, int]]:
        """[(slot in the global batch, scene index)] of this rank for one step."""
        scenes = self.global_batch_scenes(epoch, step)
        return [(k, scenes[k]) for k in range(rank, self.global_batch, self.world_size)]

    def visits_before(self, first_epoch: int, epoch: int, step: int) -> np.ndarray:
        """(num_scenes,) how often each scene was in a global batch from ``first_epoch`` up to (not
        including) step ``step`` of ``epoch`` -- e.g. the TESD update count of each scene's history."""
        visits = [self.global_batch_scenes(e, s) for e in range(first_epoch, epoch + 1) for s in range(self.steps if e < epoch else step)]
        return np.bincount(np.concatenate(visits), minlength=self.num_scenes) if visits else np.zeros(self.num_scenes, dtype=np.int64)


class StepBatches(torch.utils.data.Dataset):
    """The batches of a run for one rank, indexed by ``(epoch, step)``; a DataLoader's workers call it."""

    def __init__(self, scenes: Sequence[SceneData], plan: EpochPlan, rank: int, cfg: DataConfig, *, point_target: str,
                 num_classes: int):
        self.scenes, self.plan, self.rank, self.cfg = scenes, plan, rank, cfg
        self.point_target, self.num_classes = point_target, num_classes

    def __getitem__(self, key: tuple[int, int]) -> Batch:
        epoch, step = key
        mine = self.plan.step_scenes(epoch, step, self.rank)
        rngs = [np.random.default_rng([self.plan.seed, epoch, step, slot]) for slot, _ in mine]
        batch = build_batch(self.scenes, [s for _, s in mine], self.cfg, rngs, train=True, point_target=self.point_target,
                            num_classes=self.num_classes)
        batch.epoch, batch.step = epoch, step
        return batch


class StepSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, step)`` from ``first_epoch`` to ``end_epoch`` (exclusive)."""

    def __init__(self, first_epoch: int, end_epoch: int, steps_per_epoch: int):
        self.first, self.end, self.steps = first_epoch, end_epoch, steps_per_epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for epoch in range(self.first, self.end):
            for step in range(self.steps):
                yield epoch, step

    def __len__(self) -> int:
        return max(0, self.end - self.first) * self.steps


def batch_loader(dataset: StepBatches, first_epoch: int, end_epoch: int, workers: int, prefetch: int) -> Iterator[Batch]:
    """Batches of epochs ``first_epoch..end_epoch-1`` in order, built by ``workers`` processes ahead of
    the step (``workers=0``: built on demand in this process)."""
    sampler = StepSampler(first_epoch, end_epoch, dataset.plan.steps)
    if workers == 0:
        return (dataset[key] for key in sampler)
    import multiprocessing

    # fork shares the in-memory scenes with the workers without copying them
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    return iter(torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=workers,
                                            prefetch_factor=prefetch, collate_fn=_identity, multiprocessing_context=context))


def _identity(batch: Batch) -> Batch:
    return batch
