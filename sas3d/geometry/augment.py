"""Training-time point-cloud augmentations for the 3D student (rotation, scale, flip, elastic).

Defaults follow the usual ScanNet recipe of OpenScene / Pointcept: random z rotation, a small
x/y tilt, scale 0.9-1.1, random x/y flips and MinkowskiEngine's elastic distortion at
(granularity, magnitude) = (0.2, 0.4) and (0.8, 1.6) metres. Everything draws from the given
``np.random.Generator``, so the same seed gives the same augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AugmentConfig:
    """Which augmentations to apply and their ranges."""

    rotate: bool = True
    rotate_z_max: float = float(np.pi)  # full turn about the up axis (Pointcept ScanNet config)
    rotate_xy_max: float = float(np.pi / 64)  # small tilt about x and y (Pointcept: [-1/64, 1/64] * pi)
    scale: bool = True
    scale_range: tuple[float, float] = (0.9, 1.1)  # OpenScene / Pointcept
    flip: bool = True
    flip_prob: float = 0.5  # per axis, x and y
    elastic: bool = True
    # (granularity, magnitude) in metres, MinkowskiEngine / Pointcept ScanNet values
    elastic_params: list[tuple[float, float]] = field(default_factory=lambda: [(0.2, 0.4), (0.8, 1.6)])


def rotation_matrix(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random rotation R = Rz @ Ry @ Rx with the configured angle ranges."""
    ax, ay = rng.uniform(-cfg.rotate_xy_max, cfg.rotate_xy_max, 2)
    az = rng.uniform(-cfg.rotate_z_max, cfg.rotate_z_max)

    def rot(axis: int, t: float) -> np.ndarray:
        c, s = np.cos(t), np.sin(t)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    return rot(2, az) @ rot(1, ay) @ rot(0, ax)


def elastic_distortion(points: np.ndarray, granularity: float, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """Displace points by a smooth random field: Gaussian noise on a grid of spacing
    ``granularity``, blurred (3-box filter per axis, twice), trilinearly interpolated,
    scaled by ``magnitude``."""
    from scipy.interpolate import RegularGridInterpolator
    from scipy.ndimage import uniform_filter1d

    lo = points.min(axis=0)
    dims = ((points.max(axis=0) - lo) // granularity).astype(int) + 3
    noise = rng.standard_normal((*dims, 3)).astype(np.float32)
    for _ in range(2):
        for axis in range(3):
            noise = uniform_filter1d(noise, size=3, axis=axis, mode="constant", cval=0.0)
    # grid node i sits at lo + (i - 1) * granularity, so the points lie inside the grid
    axes = [np.linspace(lo[d] - granularity, lo[d] + granularity * (dims[d] - 2), dims[d]) for d in range(3)]
    field_at = RegularGridInterpolator(axes, noise, bounds_error=False, fill_value=0.0)
    return points + field_at(points) * magnitude


def augment(points: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """Return an augmented copy of ``points`` (N,3); the input is not modified."""
    cfg = cfg or AugmentConfig()
    pts = np.asarray(points, dtype=np.float64).copy()
    if len(pts) == 0:
        return pts.astype(np.asarray(points).dtype)
    if cfg.elastic:
        for granularity, magnitude in cfg.elastic_params:
            pts = elastic_distortion(pts, granularity, magnitude, rng)
    if cfg.rotate:
        centre = pts.mean(axis=0)
        pts = (pts - centre) @ rotation_matrix(rng, cfg).T + centre
    if cfg.scale:
        pts = pts * rng.uniform(*cfg.scale_range)
    if cfg.flip:
        for axis in (0, 1):
            if rng.random() < cfg.flip_prob:
                pts[:, axis] = -pts[:, axis]
    return pts.astype(np.asarray(points).dtype if np.asarray(points).dtype.kind == "f" else np.float32)
