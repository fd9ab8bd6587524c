"""Per-point accumulation of multi-view fusion (:mod:`sas3d.fusion.multiview` drives it).

:class:`Projector` lists a frame's visible (point, pixel) pairs once for every teacher;
:class:`FrameGroup` holds consecutive frames whose row adds run as one pass; :class:`Accumulator` keeps
one teacher's running sum and view count and returns the mean. On the CPU the work is numba kernels
(:mod:`sas3d.fusion.kernels`) handed out as independent tasks (:class:`sas3d.fusion.overlap.Overlap`
runs them on two threads); on a GPU, or with ``FusionConfig.cpu_kernel="torch"``, torch ops. The
conventions (validity, nearest resampling by pixel centres) are in :mod:`sas3d.fusion.multiview`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from sas3d.errors import ConfigError
from sas3d.fusion.kernels import add_group_kernel, divide_kernel, project_kernel, run_boxes
from sas3d.geometry.order import morton_order
from sas3d.geometry.projection import check_depth_shape, pinhole, project_points, world_to_camera
from sas3d.scene.types import Frame

if TYPE_CHECKING:
    from sas3d.fusion.multiview import FusionConfig

ADD_TASKS = 32  # numba path: tasks per frame group and teacher (two threads share them; more evens out their ends)


def map_rows(pixel_idx: torch.Tensor, frame_width: int, frame_height: int, map_width: int, map_height: int) -> torch.Tensor:
    """Frame pixel indices ``v * W + u`` -> row indices ``sv * w + su`` of a (h * w, C) map (nearest, pixel centres)."""
    u = pixel_idx % frame_width
    v = pixel_idx // frame_width
    su = ((2 * u + 1) * map_width) // (2 * frame_width)
    sv = ((2 * v + 1) * map_height) // (2 * frame_height)
    return sv * map_width + su


class Projector:
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
class FrameGroup:
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

    def visibility_tasks(self, projector: Projector, read_depth: Callable[[Frame], np.ndarray] | None) -> list[Callable[[], None]]:
        """One task per frame without pairs yet: decode its depth (``read_depth``; None: no depth test) and
        project the points (independent tasks, for :class:`sas3d.fusion.overlap.Overlap`)."""
        return [partial(self._project, f, projector, read_depth) for f in range(len(self.frames)) if self.point_idx[f] is None]

    def _project(self, f: int, projector: Projector, read_depth: Callable[[Frame], np.ndarray] | None) -> None:
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


class Accumulator:
    """One teacher's running per-point sum (N, C) float32 and view count (N,): the only state kept across frames."""

    def __init__(self, projector: Projector, chunk_size: int):
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
        (:meth:`Projector.visible`), skipping pixels without a prediction (:mod:`sas3d.fusion.multiview`)."""
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
        group = FrameGroup()
        group.append(frame, visible)
        return self.add_group_tasks(group.kernel_arrays(1), [feature_map])

    def add_group_tasks(self, arrays: tuple, feature_maps: list[torch.Tensor], block: int = 512,
                        tasks: int = ADD_TASKS, bounds: list[int] | None = None) -> list[Callable[[], None]]:
        """The numba row adds of a frame group (``arrays``: :meth:`FrameGroup.kernel_arrays`, padded to
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


__all__ = ["ADD_TASKS", "Accumulator", "FrameGroup", "Projector", "map_rows", "pair_balanced_bounds"]
