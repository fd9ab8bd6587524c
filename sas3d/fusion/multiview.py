"""Multi-view 2D -> 3D fusion: the mean of per-frame teacher features over the views that see a point.

Streaming: frames are consumed one at a time from an iterable, and the only state kept across
frames is a running sum (N, C) float32 and a view count (N,), so memory does not grow with the
number of frames.

Nearest resampling convention. A teacher map of size (h, w) is resampled to the frame's
(height H, width W) by pixel centres: frame pixel (u, v) reads map cell
``(floor((v + 0.5) * h / H), floor((u + 0.5) * w / W))``, computed exactly in integers as
``((2u + 1) * w) // (2W)``. This is ``torch.nn.functional.interpolate(mode="nearest-exact")`` of
the map to (H, W), but the full-resolution map is never built: only the rows of visible points
are gathered from the (h * w, C) map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from sas3d.config import to_dict
from sas3d.errors import ConfigError, InputError
from sas3d.fusion.features import PointFeatures
from sas3d.geometry.projection import ProjectionConfig, project_points, projection_config_for
from sas3d.scene.types import Frame, Scene
from sas3d.teachers.base import Teacher


@dataclass
class FusionConfig:
    """Multi-view fusion settings. ``projection`` defaults to the indoor (ScanNet) thresholds;
    use :func:`fusion_config_for` for a scene's own kind."""

    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    # GPU path: visible rows are gathered and accumulated in chunks of this many points, so the gather
    # buffer (chunk x C float32) is reused instead of an (M, C) temporary per frame.
    chunk_size: int = 4096
    # CPU accumulation: "numba" = one fused gather-add pass (fastest), "torch" = the chunked
    # index_select/index_add_ path that GPUs use.
    cpu_kernel: str = "numba"


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


def _gather_add_kernel():
    """Numba kernel ``total[p[i]] += table[r[i]]`` for all i, in one pass without temporaries (CPU).

    The torch equivalent (index_select then index_add_) reads and writes every gathered row twice
    more; this loop is the hot spot of CPU fusion. Compiled on first use and cached on disk.
    """
    global _GATHER_ADD
    if _GATHER_ADD is None:
        import numba

        @numba.njit(cache=True, nogil=True, fastmath=True)
        def gather_add(total, table, point_idx, rows):  # pragma: no cover - compiled
            channels = total.shape[1]
            for i in range(point_idx.shape[0]):
                dst = total[point_idx[i]]
                src = table[rows[i]]
                for c in range(channels):
                    dst[c] += src[c]

        _GATHER_ADD = gather_add
    return _GATHER_ADD


_GATHER_ADD = None


class _Accumulator:
    """Running per-point sum (N, C) float32 and view count (N,): the only state kept across frames."""

    def __init__(self, num_points: int, device: torch.device, chunk_size: int, cpu_kernel: str = "numba"):
        if cpu_kernel not in ("numba", "torch"):
            raise ConfigError(f"cpu_kernel must be 'numba' or 'torch', got {cpu_kernel!r}")
        self.num_points = num_points
        self.device = device
        self.chunk_size = max(1, int(chunk_size))
        self.use_numba = device.type == "cpu" and cpu_kernel == "numba"
        self.sum: torch.Tensor | None = None  # allocated when C is known
        self.count = torch.zeros(num_points, dtype=torch.int32, device=device)
        self.buffer: torch.Tensor | None = None  # gather buffer of the torch path

    def add(self, point_idx: torch.Tensor, rows: torch.Tensor, table: torch.Tensor) -> None:
        """``sum[point_idx[i]] += table[rows[i]]``; each point index occurs at most once per frame."""
        if self.sum is None:
            self.sum = torch.zeros(self.num_points, table.shape[1], dtype=torch.float32, device=self.device)
        self.count[point_idx] += 1
        if self.use_numba:
            _gather_add_kernel()(self.sum.numpy(), table.contiguous().numpy(), point_idx.numpy(), rows.numpy())
            return
        if self.buffer is None:
            self.buffer = torch.empty(self.chunk_size, table.shape[1], dtype=torch.float32, device=self.device)
        for start in range(0, point_idx.numel(), self.chunk_size):
            stop = min(start + self.chunk_size, point_idx.numel())
            chunk = torch.index_select(table, 0, rows[start:stop], out=self.buffer[: stop - start])
            self.sum.index_add_(0, point_idx[start:stop], chunk)

    def mean(self, chunk_rows: int = 65536) -> torch.Tensor:
        """The per-view mean as float16 on the CPU, zeros where unseen.

        Computed in row chunks so finishing needs no second (N, C) float32 array. Raises
        ValueError when a mean is NaN/inf (bad teacher values or beyond float16 range).
        """
        assert self.sum is not None
        out = torch.empty(self.sum.shape, dtype=torch.float16)
        for start in range(0, self.num_points, chunk_rows):
            rows = slice(start, start + chunk_rows)
            part = self.sum[rows] / self.count[rows].clamp(min=1).unsqueeze(1).to(torch.float32)
            part = part.to(torch.float16)
            if not torch.isfinite(part).all():
                raise ValueError("non-finite fused feature")
            out[rows] = part.cpu()
        return out


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
    PointFeatures with float16 features (zeros and ``seen=False`` where no view sees the point).
    """
    from tqdm.auto import tqdm

    from sas3d.scene.images import read_depth

    if cfg is None:
        cfg = fusion_config_for(scene.kind)
    elif isinstance(cfg, ProjectionConfig):
        cfg = FusionConfig(projection=cfg)
    device = torch.device(device)
    points = torch.as_tensor(np.asarray(scene.points, dtype=np.float64), device=device)
    acc = _Accumulator(scene.num_points, device, cfg.chunk_size, cfg.cpu_kernel)
    if total is None and hasattr(maps, "__len__"):
        total = len(maps)  # type: ignore[arg-type]
    channels: int | None = None
    frames_used = 0
    bar = tqdm(maps, total=total, desc=f"fuse {scene.name}", unit="frame", disable=not progress)
    for frame, features in bar:
        feature_map = _as_map(features, frame, channels)
        channels = int(feature_map.shape[2])
        depth = None
        if frame.depth_path is not None and cfg.projection.use_depth:
            depth = torch.from_numpy(read_depth(frame))
        point_idx, pixel_idx = project_points(points, frame, depth, cfg.projection)
        h, w = int(feature_map.shape[0]), int(feature_map.shape[1])
        rows = map_rows(pixel_idx, frame.width, frame.height, w, h)
        flat = feature_map.reshape(h * w, channels)
        if flat.device != device:
            flat = flat.to(device)
        acc.add(point_idx, rows, flat)
        frames_used += 1
    bar.close()

    seen = acc.count > 0
    if acc.sum is None:
        features = torch.zeros(scene.num_points, channels or 0, dtype=torch.float16)
    else:
        try:
            features = acc.mean()
        except ValueError:
            raise InputError(scene.source, "teacher outputs contain NaN or inf values (or overflow float16)") from None
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


def fuse_teacher(
    scene: Scene,
    teacher: Teacher,
    cfg: FusionConfig | ProjectionConfig | None = None,
    device: str | torch.device = "cpu",
    *,
    progress: bool = True,
) -> PointFeatures:
    """Run ``teacher.predict`` on every frame of ``scene`` (one at a time) and fuse the outputs."""
    maps = ((frame, teacher.predict(frame)) for frame in scene.frames)
    name = getattr(teacher, "name", type(teacher).__name__)
    return fuse_maps(scene, maps, cfg, device, teacher_names=[name], progress=progress, total=len(scene.frames))


__all__ = ["FusionConfig", "fusion_config_for", "fuse_maps", "fuse_teacher", "map_rows"]
