"""Multi-view 2D -> 3D fusion: the mean of per-frame teacher features over the views that see a point.

Streaming: frames are consumed one at a time from an iterable, and the only state kept across
frames is, per teacher, a running sum (N, C) float32 and a view count (N,), so memory does not grow
with the number of frames. Several teachers are fused in one pass (:func:`fuse_frames`): a frame's
depth is decoded and its points projected once, then every teacher's map is added from that same
visibility (the per-point state and its kernels: :mod:`sas3d.fusion.accumulate`). With the CPU
kernels (:mod:`sas3d.fusion.kernels`), the row adds of
``FusionConfig.frame_group`` consecutive frames run as one pass over the points (each point's sum
row is fetched from memory once per group, not once per frame; the sums are bit-identical), in a
background thread while the caller requests the next group's maps; then both threads decode that
group's depths, project its points and finish the adds (:class:`sas3d.fusion.overlap.Overlap`: the
caller starts on the decoding, the background thread on the adds, and each helps the other). At
most two groups' maps are alive at a time. The CPU kernels see the points in Morton order
(``FusionConfig.point_order``), so the points that read the same map cell are added in the same
block, and a frame skips the runs of points outside its frustum; the results come back in the
scene's order.

Validity. A pixel whose teacher feature is exactly zero in every channel carries no prediction (a
mask teacher paints zeros where it has no mask, or where its segment id has no label): it is not a
view. A point whose every projection lands on such pixels is unseen for that teacher, and a point
with some valid views is the mean over those alone (no zero rows shrinking it).

Nearest resampling convention. A teacher map of size (h, w) is resampled to the frame's
(height H, width W) by pixel centres: frame pixel (u, v) reads map cell
``(floor((v + 0.5) * h / H), floor((u + 0.5) * w / W))``, computed exactly in integers as
``((2u + 1) * w) // (2W)``. This is ``torch.nn.functional.interpolate(mode="nearest-exact")`` of
the map to (H, W), but the full-resolution map is never built: only the rows of visible points
are gathered from the (h * w, C) map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from sas3d.config import to_dict
from sas3d.errors import ConfigError, InputError
from sas3d.fusion.accumulate import ADD_TASKS, Accumulator, FrameGroup, Projector, map_rows, pair_balanced_bounds
from sas3d.fusion.features import PointFeatures
from sas3d.fusion.overlap import Overlap
from sas3d.geometry.projection import ProjectionConfig, projection_config_for
from sas3d.identity import TEACHER, TEXT_SPACE
from sas3d.scene.types import Frame, Scene
from sas3d.teachers.base import Teacher


@dataclass
class FusionConfig:
    """Multi-view fusion settings. ``projection`` defaults to the indoor (ScanNet) thresholds;
    use :func:`fusion_config_for` for a scene's own kind."""

    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    # Visible rows are accumulated in chunks of this many points: on the GPU / torch path the gather
    # buffer (chunk x C float32) is reused instead of an (M, C) temporary per frame.
    chunk_size: int = 4096
    # CPU path: "numba" = sas3d.fusion.kernels (one projection pass per frame into reused buffers, then
    # per teacher row adds over chunks of the visible points, on two threads; fastest), "torch" =
    # project_points + the chunked index_select/index_add_ accumulation that GPUs use. Both give
    # identical seen masks and sums.
    cpu_kernel: str = "numba"
    # numba path: the row adds of this many consecutive frames run as one pass over the points, so each
    # point's sum row is fetched from memory once per group instead of once per frame (bit-identical
    # sums; 512-d rows, 40k pairs per frame, one thread: 19 -> 13 ms per frame with 4). The maps of up to two
    # groups are alive at once (one being added, the next being collected), so a group holds at most
    # `group_bytes` of maps: 8 frames of one teacher's 512-d 240x320 float32 maps (157 MiB each), or 4 of
    # two such teachers, fit, i.e. up to 2.5 GB of maps alive; lower it on a small machine (groups of 2
    # with two such teachers made the second teacher cost 133 % of the first instead of 80 %).
    # benchmarks/fusion.py, one teacher, 3 alternating runs each: 8 frames 2.46-2.48 s, 4 frames 2.64-2.72 s.
    frame_group: int = 8
    group_bytes: int = 1280 << 20
    # numba path: the points are fused in Morton order ("morton", sas3d.geometry.order) and put back in
    # the scene's order at the end, or in the scene's order ("input"); the same sums bit for bit. A
    # 2x2-pixel map cell is usually read by several points (7-Scenes, 240x320 maps: 48k visible points
    # per frame read 29k distinct cells); in Morton order those points sit in the same block of the add
    # pass, so a cell's row comes from memory once, not once per point (benchmarks/fusion.py setting,
    # A/B: 3.08 vs 3.48 s).
    point_order: str = "morton"


def fusion_config_for(kind: str) -> FusionConfig:
    """FusionConfig with the reference projection thresholds of a scene kind."""
    return FusionConfig(projection=projection_config_for(kind))


def _as_map(features, frame: Frame, channels: int | None) -> torch.Tensor:
    """A teacher output as a float32 (h, w, C) CPU/GPU tensor, checked against the first frame's C."""
    if isinstance(features, np.ndarray) and not features.flags.writeable:
        features = np.array(features)  # torch cannot wrap read-only memory (np.load mmap, broadcast views)
    tensor = torch.as_tensor(features)
    if tensor.ndim != 3:
        raise InputError(frame.color_path, f"teacher output must be (h, w, C), got shape {tuple(tensor.shape)}")
    if channels is not None and tensor.shape[2] != channels:
        raise InputError(frame.color_path, f"teacher output has {tensor.shape[2]} channels, earlier frames had {channels}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise InputError(frame.color_path, f"teacher output is empty: shape {tuple(tensor.shape)}")
    return tensor.to(torch.float32)


def fuse_frames(
    scene: Scene,
    frame_maps: Iterable[tuple[Frame, Sequence[np.ndarray | torch.Tensor]]],
    cfg: FusionConfig | ProjectionConfig | None = None,
    device: str | torch.device = "cpu",
    *,
    teacher_names: Sequence[str],
    progress: bool = True,
    total: int | None = None,
) -> list[PointFeatures]:
    """Several teachers' mean fusion in one pass over the frames: one PointFeatures per teacher.

    ``frame_maps`` yields, one frame at a time, the frame and one (h, w, C) map per teacher (in the
    order of ``teacher_names``; map sizes and C may differ between teachers, C is fixed per teacher).
    A frame's depth is decoded and its points projected once; every teacher's map is then added
    from that same visibility. Teacher t's result equals :func:`fuse_maps` of its maps alone.
    """
    return _fuse(scene, frame_maps, cfg, device, [[name] for name in teacher_names], progress, total)


def _fuse(scene: Scene, frame_maps: Iterable[tuple[Frame, Sequence]], cfg: FusionConfig | ProjectionConfig | None,
          device: str | torch.device, names: list[list[str]], progress: bool, total: int | None) -> list[PointFeatures]:
    """:func:`fuse_frames`; ``names[t]``: the teacher names recorded in teacher t's metadata."""
    from tqdm.auto import tqdm

    from sas3d.scene.images import read_depth

    if cfg is None:
        cfg = fusion_config_for(scene.kind)
    elif isinstance(cfg, ProjectionConfig):
        cfg = FusionConfig(projection=cfg)
    device = torch.device(device)
    projector = Projector(np.asarray(scene.points), device, cfg)
    accumulators = [Accumulator(projector, cfg.chunk_size) for _ in names]
    if total is None and hasattr(frame_maps, "__len__"):
        total = len(frame_maps)  # type: ignore[arg-type]
    channels: list[int | None] = [None] * len(names)
    frames_used = 0
    bar = tqdm(frame_maps, total=total, desc=f"fuse {scene.name}", unit="frame", disable=not progress)
    reader = read_depth if cfg.projection.use_depth else None
    # numba: group g's row adds (frame_group frames) run in the background while group g + 1's maps are
    # requested; then both threads decode group g + 1's depths, project its points and finish group g's
    # adds, before group g + 1's adds are submitted (per point, frames in order).
    overlap = Overlap() if projector.use_numba else None
    group, group_maps, group_size = FrameGroup(), [], None  # numba: frames whose adds run as one pass
    try:
        for frame, outputs in bar:
            if len(outputs) != len(names):
                raise ValueError(f"{frame.color_path}: {len(outputs)} teacher outputs for {len(names)} teachers")
            feature_maps = [_as_map(features, frame, c) for features, c in zip(outputs, channels)]
            channels = [int(m.shape[2]) for m in feature_maps]
            frames_used += 1
            if overlap is None:  # torch path: frame by frame
                depth = read_depth(frame) if reader is not None and frame.depth_path is not None else None
                visible = projector.visible(frame, depth)  # once per frame, for every teacher
                for acc, fmap in zip(accumulators, feature_maps):
                    acc.add(frame, visible, fmap)
                del depth, visible
            else:
                group_size = group_size or frames_per_group(cfg, sum(m.numel() * m.element_size() for m in feature_maps))
                group.append(frame)
                group_maps.append(feature_maps)
                if len(group.frames) == group_size:
                    _submit_group(overlap, projector, reader, accumulators, group, group_maps, group_size)
                    group, group_maps = FrameGroup(), []
            del outputs, feature_maps  # the next maps are requested while only the groups hold maps
        if overlap is not None:
            if group.frames:
                _submit_group(overlap, projector, reader, accumulators, group, group_maps, group_size or 1)
                group, group_maps = FrameGroup(), []
            overlap.finish()
        results = []
        for acc, c, teacher_names in zip(accumulators, channels, names):
            if overlap is not None and acc.sum is not None:  # both threads divide, one teacher at a time
                overlap.submit(acc.mean_tasks())
                overlap.finish()
            results.append(_result(scene, acc, c, teacher_names, frames_used, cfg))  # frees the teacher's sum
    finally:
        if overlap is not None:
            overlap.close()
        bar.close()
    return results


def frames_per_group(cfg: FusionConfig, frame_bytes: int) -> int:
    """Frames per add pass for frames whose maps (all teachers) take ``frame_bytes``: ``cfg.frame_group``,
    fewer when a group's maps would exceed ``cfg.group_bytes``."""
    if cfg.frame_group < 1:
        raise ConfigError(f"frame_group must be >= 1, got {cfg.frame_group}")
    return max(1, min(int(cfg.frame_group), int(cfg.group_bytes) // max(1, frame_bytes)))


def _submit_group(overlap: Overlap, projector: Projector, read_depth: Callable[[Frame], np.ndarray] | None,
                  accumulators: list[Accumulator], group: FrameGroup, group_maps: list[list[torch.Tensor]],
                  size: int) -> None:
    """Decode the group's depths and project its points (both threads, beside the previous group's adds),
    wait for all of it (helping), then start this group's adds in the background."""
    zero = [task for acc, maps in zip(accumulators, zip(*group_maps)) if acc.sum is None
            for task in acc.allocate_tasks(int(maps[0].shape[2]))]
    overlap.submit(zero + group.visibility_tasks(projector, read_depth))
    overlap.finish()
    arrays = group.kernel_arrays(size)
    bounds = pair_balanced_bounds(arrays[0], projector.num_points, ADD_TASKS)  # one split for every teacher
    tasks = [task for t, acc in enumerate(accumulators)
             for task in acc.add_group_tasks(arrays, [maps[t] for maps in group_maps], bounds=bounds)]
    overlap.submit(tasks)


def _result(scene: Scene, acc: Accumulator, channels: int | None, teacher_names: list[str], frames_used: int,
            cfg: FusionConfig) -> PointFeatures:
    """One teacher's PointFeatures: the mean over its views, the seen mask and the metadata."""
    seen = acc.seen()
    if acc.sum is None:
        features = torch.zeros(scene.num_points, channels or 0, dtype=torch.float16)
    else:
        try:
            features = acc.mean()
        except ValueError:
            raise InputError(scene.source, "teacher outputs contain NaN or inf values (or overflow float16)") from None
        acc.sum = None  # the mean is the sum, divided in place (numba) or copied: drop the reference
    metadata = {
        "scene": scene.name,
        "fusion": "mean",
        "teachers": list(teacher_names),
        "num_frames": frames_used,
        "config": to_dict(cfg),
        "nearest": "pixel-centre (nearest-exact)",
    }
    if any("simulated" in str(name).lower() for name in teacher_names):
        metadata["note"] = "fused from SIMULATED teacher outputs"
    return PointFeatures(features=features, seen=seen.cpu(), metadata=metadata)


def fuse_maps(
    scene: Scene,
    maps: Iterable[tuple[Frame, np.ndarray | torch.Tensor]],
    cfg: FusionConfig | ProjectionConfig | None = None,
    device: str | torch.device = "cpu",
    *,
    teacher_names: Sequence[str] = (),
    progress: bool = True,
    total: int | None = None,
) -> PointFeatures:
    """Mean of per-frame (h, w, C) feature maps over the views that see each point.

    ``maps`` is consumed lazily, one (frame, map) pair at a time. ``cfg`` None means the reference
    thresholds for ``scene.kind``. Visibility follows :func:`sas3d.geometry.projection.project_points`
    with the frame's depth (``sas3d.scene.images.read_depth``) when it has one. Returns
    PointFeatures with float16 features (zeros and ``seen=False`` where no view sees the point, or
    where every view that does holds no prediction there: an all-zero feature, see the module docstring).
    :func:`fuse_frames` with one teacher.
    """
    if total is None and hasattr(maps, "__len__"):
        total = len(maps)  # type: ignore[arg-type]
    one = ((frame, (features,)) for frame, features in maps)
    (result,) = _fuse(scene, one, cfg, device, [list(teacher_names)], progress, total)
    return result


def fuse_teachers_multiview(
    scene: Scene,
    teachers: Sequence[Teacher],
    cfg: FusionConfig | ProjectionConfig | None = None,
    device: str | torch.device = "cpu",
    *,
    progress: bool = True,
) -> list[PointFeatures]:
    """Run every teacher on every frame of ``scene`` (frame by frame, teachers in order) and fuse
    all of them in one pass (:func:`fuse_frames`): one PointFeatures per teacher."""
    frame_maps = ((frame, [teacher.predict(frame) for teacher in teachers]) for frame in scene.frames)
    names = [getattr(teacher, "name", type(teacher).__name__) for teacher in teachers]
    fused = fuse_frames(scene, frame_maps, cfg, device, teacher_names=names, progress=progress, total=len(scene.frames))
    for teacher, name, pf in zip(teachers, names, fused):  # identities (sas3d.identity)
        pf.metadata[TEACHER] = getattr(teacher, "identity", name)
        if getattr(teacher, "text_space", None) is not None:
            pf.metadata[TEXT_SPACE] = teacher.text_space
    return fused


def fuse_teacher(
    scene: Scene,
    teacher: Teacher,
    cfg: FusionConfig | ProjectionConfig | None = None,
    device: str | torch.device = "cpu",
    *,
    progress: bool = True,
) -> PointFeatures:
    """Run ``teacher.predict`` on every frame of ``scene`` (one at a time) and fuse the outputs."""
    (result,) = fuse_teachers_multiview(scene, [teacher], cfg, device, progress=progress)
    return result


__all__ = ["FusionConfig", "frames_per_group", "fusion_config_for", "fuse_frames", "fuse_maps", "fuse_teacher", "fuse_teachers_multiview", "map_rows"]
