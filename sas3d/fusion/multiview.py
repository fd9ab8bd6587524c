"""Multi-view 2D -> 3D fusion: the mean of per-frame teacher features over the views that see a point.

Streaming: frames are consumed one at a time from an iterable, and the only state kept across
frames is, per teacher, a running sum (N, C) float32 and a view count (N,), so memory does not grow
with the number of frames. Several teachers are fused in one pass (:func:`fuse_frames`): a frame's
depth is decoded and its points projected once, then every teacher's map is added from that same
visibility. With the CPU kernels (:mod:`sas3d.fusion.kernels`), the row adds of
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

import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from sas3d.config import to_dict
from sas3d.errors import ConfigError, InputError
from sas3d.fusion.features import PointFeatures
from sas3d.fusion.kernels import add_group_kernel, divide_kernel, project_kernel, run_boxes
from sas3d.fusion.overlap import Overlap
from sas3d.geometry.order import morton_order
from sas3d.geometry.projection import (
    ProjectionConfig,
    check_depth_shape,
    pinhole,
    project_points,
    projection_config_for,
    world_to_camera,
)
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


ADD_TASKS = 32  # numba path: tasks per frame group and teacher (two threads share them; more evens out their ends)


def fusion_config_for(kind: str) -> FusionConfig:
    """FusionConfig with the reference projection thresholds of a scene kind."""
    return FusionConfig(projection=projection_config_for(kind))


def map_rows(pixel_idx: torch.Tensor, frame_width: int, frame_height: int, map_width: int, map_height: int) -> torch.Tensor:
    """Frame pixel indices ``v * W + u`` -> row indices ``sv * w + su`` of a (h * w, C) map (nearest, pixel centres)."""
    u = pixel_idx % frame_width
    v = pixel_idx // frame_width
    su = ((2 * u + 1) * map_width) // (2 * frame_width)
    sv = ((2 * v + 1) * map_height) // (2 * frame_height)
    return sv * map_width + su


class _Projector:
    """The points visible in a frame and their pixels, computed once per frame for every teacher."""

    def __init__(self, points: np.ndarray, device: torch.device, cfg: FusionConfig):
        if cfg.cpu_kernel not in ("numba", "torch"):
            raise ConfigError(f"cpu_kernel must be 'numba' or 'torch', got {cfg.cpu_kernel!r}")
        if cfg.point_order not in ("morton", "input"):
            raise ConfigError(f"point_order must be 'morton' or 'input', got {cfg.point_order!r}")
        self.num_points = len(points)
        self.device = device
        self.projection = cfg.projection
        self.use_numba = device.type == "cpu" and cfg.cpu_kernel == "numba"
        points64 = np.ascontiguousarray(points, dtype=np.float64)
        # Point i of the projector (and of the accumulators' rows) is scene point order[i]; None: the same.
        self.order = torch.from_numpy(morton_order(points64)) if self.use_numba and cfg.point_order == "morton" else None
        if self.order is not None:
            points64 = np.ascontiguousarray(points64[self.order.numpy()])
        self.points = points64 if self.use_numba else torch.as_tensor(points64, device=device)
        # numba path: boxes around runs of consecutive points, so a frame skips the runs outside its frustum
        # (kernels.project_kernel; in Morton order a run is a small patch of the scene). 200k points, 7-Scenes
        # frames seeing a quarter of them: 1.95 -> 1.6 ms of CPU per frame.
        self.run_size = 256
        self.runs = run_boxes(points64, self.run_size) if self.use_numba else None
        # Output buffers of the projection kernel, one per thread, reused by every frame (a frame group keeps copies).
        self._buffers = threading.local()

    def visible(self, frame: Frame, depth: np.ndarray | None) -> tuple:
        """``(point_idx, pixel_idx)`` as :func:`project_points` returns them (on the numba path NumPy
        views of the calling thread's reused buffers, valid until its next call). ``depth`` (H, W) float32 metres, or
        None to test only the image bounds (no depth / use_depth off)."""
        if not self.use_numba:
            return project_points(self.points, frame, None if depth is None else torch.from_numpy(depth), self.projection)
        fx, fy, cx, cy = pinhole(frame)
        w2c = np.ascontiguousarray(world_to_camera(frame)[:3])
        use_depth = depth is not None and self.projection.use_depth
        if use_depth:
            check_depth_shape(depth.shape, frame)
            depth = np.ascontiguousarray(depth, dtype=np.float32)
        else:
            depth = np.zeros((1, 1), dtype=np.float32)  # unread placeholder: the kernel has one signature
        buffers = getattr(self._buffers, "pairs", None)
        if buffers is None:
            buffers = self._buffers.pairs = np.empty((2, self.num_points), dtype=np.int64)
        point_idx, pixel_idx = buffers
        m = project_kernel()(
            self.points, w2c, fx, fy, cx, cy, int(frame.width), int(frame.height), int(self.projection.border_margin),
            depth, use_depth, float(self.projection.depth_threshold), *self.runs, self.run_size, point_idx, pixel_idx,
        )
        return point_idx[:m], pixel_idx[:m]


@dataclass
class _FrameGroup:
    """Consecutive frames whose row adds run as one pass (numba path): their visible pairs, concatenated."""

    frames: list[Frame] = field(default_factory=list)
    point_idx: list[np.ndarray] = field(default_factory=list)
    pixel_idx: list[np.ndarray] = field(default_factory=list)

    def append(self, frame: Frame, visible: tuple | None = None) -> None:
        """Keep ``frame`` and a copy of its pairs (the projector reuses its buffers); None: the pairs
        come later, from :meth:`visibility_tasks`."""
        self.frames.append(frame)
        self.point_idx.append(None if visible is None else np.array(visible[0]))
        self.pixel_idx.append(None if visible is None else np.array(visible[1]))

    def visibility_tasks(self, projector: _Projector, read_depth: Callable[[Frame], np.ndarray] | None) -> list[Callable[[], None]]:
        """One task per frame without pairs yet: decode its depth (``read_depth``; None: no depth test) and
        project the points (independent tasks, for :class:`sas3d.fusion.overlap.Overlap`)."""
        return [partial(self._project, f, projector, read_depth) for f in range(len(self.frames)) if self.point_idx[f] is None]

    def _project(self, f: int, projector: _Projector, read_depth: Callable[[Frame], np.ndarray] | None) -> None:
        frame = self.frames[f]
        depth = read_depth(frame) if read_depth is not None and frame.depth_path is not None else None
        point_idx, pixel_idx = projector.visible(frame, depth)
        self.point_idx[f], self.pixel_idx[f] = np.array(point_idx), np.array(pixel_idx)

    def kernel_arrays(self, size: int) -> tuple:
        """(point_idx, pixel_idx, offsets, widths, heights) for ``add_group``, padded to ``size`` frames
        with empty pair ranges (one compiled kernel per group size)."""
        pad = size - len(self.frames)
        offsets = np.cumsum([0] + [len(p) for p in self.point_idx] + [0] * pad).astype(np.int64)
        widths = np.array([f.width for f in self.frames] + [1] * pad, dtype=np.int64)
        heights = np.array([f.height for f in self.frames] + [1] * pad, dtype=np.int64)
        empty = [np.zeros(0, dtype=np.int64)]
        return (np.concatenate(self.point_idx + empty), np.concatenate(self.pixel_idx + empty), offsets, widths, heights)


class _Accumulator:
    """One teacher's running per-point sum (N, C) float32 and view count (N,): the only state kept across frames."""

    def __init__(self, projector: _Projector, chunk_size: int):
        self.num_points = projector.num_points
        self.device = projector.device
        self.use_numba = projector.use_numba
        self.order = projector.order  # row i of sum / count is scene point order[i] (None: point i)
        self.chunk_size = max(1, int(chunk_size))
        self.sum: torch.Tensor | None = None  # allocated when C is known
        self.count = torch.zeros(self.num_points, dtype=torch.int32, device=self.device)
        self.buffer: torch.Tensor | None = None  # gather buffer of the torch path
        self._mean: torch.Tensor | None = None  # numba path: the float16 mean, once mean_tasks ran
        self._bad: list[int] = []  # numba path: non-finite quotients per row chunk of mean_tasks

    def add(self, frame: Frame, visible: tuple, feature_map: torch.Tensor) -> None:
        """Add ``feature_map`` (h, w, C) at the pixels of the points ``visible`` in ``frame``
        (:meth:`_Projector.visible`), skipping pixels without a prediction (module docstring)."""
        for task in self.add_tasks(frame, visible, feature_map):
            task()

    def add_tasks(self, frame: Frame, visible: tuple, feature_map: torch.Tensor) -> list[Callable[[], None]]:
        """:meth:`add` as independent tasks (numba: one per chunk of visible points, which are
        distinct points, so the tasks may run in any order or at the same time)."""
        h, w, channels = (int(n) for n in feature_map.shape)
        if self.sum is None:
            self.sum = torch.zeros(self.num_points, channels, dtype=torch.float32, device=self.device)
        table = feature_map.reshape(h * w, channels)
        if table.device != self.device:
            table = table.to(self.device)
        if not self.use_numba:
            return [partial(self._add_torch, frame, visible, table, w, h)]
        group = _FrameGroup()
        group.append(frame, visible)
        return self.add_group_tasks(group.kernel_arrays(1), [feature_map])

    def add_group_tasks(self, arrays: tuple, feature_maps: list[torch.Tensor], block: int = 512,
                        tasks: int = ADD_TASKS, bounds: list[int] | None = None) -> list[Callable[[], None]]:
        """The numba row adds of a frame group (``arrays``: :meth:`_FrameGroup.kernel_arrays`, padded to
        its group size; ``feature_maps[f]`` (h, w, C) of frame f), as up to ``tasks`` tasks over disjoint
        point ranges holding about as many (point, pixel) pairs each (:func:`pair_balanced_bounds`), that
        may run in any order or at the same time; each walks its points in blocks of ``block``
        (:func:`sas3d.fusion.kernels.add_group_kernel`). ``bounds``: those ranges, when the caller has them
        (the teachers of a group share them)."""
        channels = int(feature_maps[0].shape[2])
        if self.sum is None:
            self.sum = torch.zeros(self.num_points, channels, dtype=torch.float32, device=self.device)
        tables = [m.reshape(-1, channels).contiguous().numpy() for m in feature_maps]
        map_widths = [int(m.shape[1]) for m in feature_maps]
        map_heights = [int(m.shape[0]) for m in feature_maps]
        pad = len(arrays[2]) - 1 - len(tables)  # offsets hold group size + 1 entries
        tables, map_widths, map_heights = tables + tables[:1] * pad, map_widths + [1] * pad, map_heights + [1] * pad
        kernel = add_group_kernel()
        point_idx, pixel_idx, offsets, widths, heights = arrays
        args = (block, point_idx, pixel_idx, offsets, widths, heights, tuple(tables), np.array(map_widths, dtype=np.int64),
                np.array(map_heights, dtype=np.int64), self.sum.numpy(), self.count.numpy())
        if bounds is None:
            bounds = pair_balanced_bounds(point_idx, self.num_points, tasks)
        return [partial(kernel, lo, hi, *args) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def _add_torch(self, frame: Frame, visible: tuple, table: torch.Tensor, w: int, h: int) -> None:
        point_idx, pixel_idx = visible
        channels = table.shape[1]
        rows = map_rows(pixel_idx, frame.width, frame.height, w, h)
        keep = (table != 0).any(dim=1)[rows]  # the pixel holds a prediction (NaN counts)
        point_idx, rows = point_idx[keep], rows[keep]
        self.count[point_idx] += 1
        if self.buffer is None:
            self.buffer = torch.empty(self.chunk_size, channels, dtype=torch.float32, device=self.device)
        for start in range(0, point_idx.numel(), self.chunk_size):
            stop = min(start + self.chunk_size, point_idx.numel())
            chunk = torch.index_select(table, 0, rows[start:stop], out=self.buffer[: stop - start])
            self.sum.index_add_(0, point_idx[start:stop], chunk)

    def _to_scene_order(self, rows: torch.Tensor, out: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Write accumulator rows ``start..start + len(rows)`` into ``out`` at their scene points' rows
        (``self.order`` is set)."""
        return out.index_copy_(0, self.order[start:start + len(rows)], rows)

    def seen(self) -> torch.Tensor:
        """(N,) bool in the scene's point order: the point has at least one view."""
        seen = self.count > 0
        return seen if self.order is None else self._to_scene_order(seen, torch.empty_like(seen))

    def allocate_tasks(self, channels: int, chunk_rows: int = 16384) -> list[Callable[[], None]]:
        """numba path: allocate the (N, C) float32 running sum and return the tasks that zero it, by row
        chunks (run them before any add; zeroing 400 MB on one thread took 0.1 s)."""
        self.sum = torch.empty(self.num_points, channels, dtype=torch.float32)
        return [self.sum[start:start + chunk_rows].zero_ for start in range(0, self.num_points, chunk_rows)]

    def mean_tasks(self, chunk_rows: int = 8192) -> list[Callable[[], None]]:
        """numba path: :meth:`mean` as independent tasks over row chunks; :meth:`mean` then returns their result."""
        assert self.use_numba and self.sum is not None
        self._mean = torch.empty(self.sum.shape, dtype=torch.float16)
        self._bad = []
        return [partial(self._mean_rows, start, min(start + chunk_rows, self.num_points))
                for start in range(0, self.num_points, chunk_rows)]

    def _mean_rows(self, start: int, stop: int) -> None:
        """Divide rows ``start:stop`` of the sum in place, write them as float16 in the scene's order."""
        rows = self.sum[start:stop]
        self._bad.append(int(divide_kernel()(rows.numpy(), self.count[start:stop].numpy())))
        half = rows.to(torch.float16)
        if self.order is None:
            self._mean[start:stop] = half
        else:
            self._to_scene_order(half, self._mean, start)

    def mean(self, chunk_rows: int = 8192) -> torch.Tensor:
        """The per-view mean as float16 on the CPU, in the scene's point order, zeros where unseen.
        Call once: the numba path divides the sum in place (in :meth:`mean_tasks`' tasks when they ran).

        Needs no second (N, C) float32 array (the work goes in row chunks). Raises ValueError when a
        mean is NaN/inf (bad teacher values or beyond float16 range).
        """
        assert self.sum is not None
        if self.use_numba:
            if self._mean is None:
                for task in self.mean_tasks(chunk_rows):
                    task()
            out, bad, self._mean = self._mean, sum(self._bad), None
            if bad:
                raise ValueError("non-finite fused feature")
            return out
        out = torch.empty(self.sum.shape, dtype=torch.float16)
        for start in range(0, self.num_points, chunk_rows):
            rows = slice(start, start + chunk_rows)
            part = self.sum[rows] / self.count[rows].clamp(min=1).unsqueeze(1).to(torch.float32)
            part = part.to(torch.float16)
            if not torch.isfinite(part).all():
                raise ValueError("non-finite fused feature")
            out[rows] = part.cpu()
        return out


def pair_balanced_bounds(point_idx: np.ndarray, num_points: int, parts: int, samples_per_part: int = 64) -> list[int]:
    """Point ranges ``[bounds[k], bounds[k + 1])`` covering ``0 .. num_points`` that each hold about
    ``len(point_idx) / parts`` of the listed points (a point listed by several frames counts each time;
    from a sorted sample of every s-th entry), at most ``parts`` ranges, none empty of points. Equal point
    ranges are unequal work: in Morton order a group of frames sees a few runs of the points, and the
    last long task kept the other thread waiting at every group (~25 ms per group of 8 frames)."""
    stride = max(1, len(point_idx) // max(1, parts * samples_per_part))
    sample = np.sort(point_idx[::stride])
    inner = sample[(len(sample) * np.arange(1, parts)) // parts] if len(sample) else np.zeros(0, dtype=np.int64)
    return [0] + [int(b) for b in np.unique(inner) if 0 < b < num_points] + [num_points]


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
    projector = _Projector(np.asarray(scene.points), device, cfg)
    accumulators = [_Accumulator(projector, cfg.chunk_size) for _ in names]
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
    group, group_maps, group_size = _FrameGroup(), [], None  # numba: frames whose adds run as one pass
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
                    group, group_maps = _FrameGroup(), []
            del outputs, feature_maps  # the next maps are requested while only the groups hold maps
        if overlap is not None:
            if group.frames:
                _submit_group(overlap, projector, reader, accumulators, group, group_maps, group_size or 1)
                group, group_maps = _FrameGroup(), []
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


def _submit_group(overlap: Overlap, projector: _Projector, read_depth: Callable[[Frame], np.ndarray] | None,
                  accumulators: list[_Accumulator], group: _FrameGroup, group_maps: list[list[torch.Tensor]],
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


def _result(scene: Scene, acc: _Accumulator, channels: int | None, teacher_names: list[str], frames_used: int,
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
