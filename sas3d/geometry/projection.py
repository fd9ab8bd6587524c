"""Vectorised point -> pixel projection with the OpenScene visibility protocol.

All points are projected into one frame at once (torch, on whatever device ``points`` lives):
world -> camera with inverse(camera-to-world pose), pinhole projection, rounding to the nearest
pixel (``torch.round``: half to even, as ``np.round`` in the reference code), a border margin,
and -- where the frame has depth -- a relative occlusion test ``|depth(u,v) - z| <= t * depth(u,v)``
that only passes where ``depth(u,v) > 0`` (invalid depth = not seen). Frames without depth
(nuScenes) only need ``z > 0`` and the pixel inside the image (minus the margin).

Camera coordinates are computed element-wise in a fixed order, ``((r0 x + r1 y) + r2 z) + t``,
each step rounded in float64 (no matrix product, whose summation order and FMA use depend on the
BLAS): any other implementation that evaluates the same expressions in the same order -- the CPU
kernel of :mod:`sas3d.fusion.kernels` -- gets bit-identical pixels and depth-test outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sas3d.errors import ConfigError, InputError
from sas3d.scene.types import Frame


@dataclass
class ProjectionConfig:
    """Visibility thresholds of multi-view fusion (OpenScene's scripts/feature_fusion/*.py: cut_num_pixel_boundary, visibility_threshold)."""

    border_margin: int = 10  # px dropped at every image border; OpenScene code: 10 indoor, 5 nuScenes
    depth_threshold: float = 0.25  # relative occlusion tolerance t; OpenScene code 0.25 ScanNet (SAS paper: 0.2), 0.02 Matterport
    use_depth: bool = True  # False: ignore depth even where it exists (z > 0 and in-image only)


# Scene kind -> config. 7-Scenes and the embedded rooms are indoor RGB-D like ScanNet.
_INDOOR = ProjectionConfig(border_margin=10, depth_threshold=0.25)
_KIND_CONFIGS = {
    "scannet": _INDOOR,
    "7scenes": _INDOOR,
    "embedded": _INDOOR,
    "ply": _INDOOR,
    "matterport": ProjectionConfig(border_margin=10, depth_threshold=0.02),  # OpenScene code and SAS paper
    "nuscenes": ProjectionConfig(border_margin=5, depth_threshold=0.25),  # no depth: threshold unused
}


def projection_config_for(kind: str) -> ProjectionConfig:
    """The reference thresholds for a scene kind (``Scene.kind``)."""
    try:
        base = _KIND_CONFIGS[kind]
    except KeyError:
        raise ConfigError(f"no projection defaults for scene kind {kind!r}; known: {', '.join(sorted(_KIND_CONFIGS))}") from None
    return ProjectionConfig(base.border_margin, base.depth_threshold, base.use_depth)


def world_to_camera(frame: Frame) -> np.ndarray:
    """4x4 world -> camera transform (float64), the inverse of ``frame.pose``."""
    pose = np.asarray(frame.pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        raise InputError(frame.color_path, f"camera pose must be a finite 4x4 matrix, got shape {pose.shape}")
    return np.linalg.inv(pose)


def pinhole(frame: Frame) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` of ``frame.intrinsics`` (checked to be 3x3)."""
    k = np.asarray(frame.intrinsics, dtype=np.float64)
    if k.shape != (3, 3):
        raise InputError(frame.color_path, f"intrinsics must be 3x3, got shape {k.shape}")
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


def check_depth_shape(depth_shape: tuple[int, ...], frame: Frame) -> None:
    """Raise InputError unless a depth map of ``depth_shape`` matches the frame's (height, width)."""
    if tuple(depth_shape) != (int(frame.height), int(frame.width)):
        raise InputError(frame.depth_path, f"depth is {tuple(depth_shape)}, frame says {(frame.height, frame.width)}")


def project_points(
    points: torch.Tensor,
    frame: Frame,
    depth: torch.Tensor | None,
    cfg: ProjectionConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points visible in ``frame`` and the pixel each lands on.

    ``points`` (N, 3) world coordinates (any float dtype; computed in float64 so that rounding to a
    pixel does not depend on the device or on float32 error). ``depth`` (H, W) metres with 0 =
    invalid, at the frame's (height, width), or None for frames without depth.
    Returns ``(point_idx, pixel_idx)``: LongTensors (M,) on the points' device, ``pixel_idx = v * W + u``,
    point indices ascending (each at most once).
    """
    cfg = cfg or ProjectionConfig()
    device = points.device
    width, height, margin = int(frame.width), int(frame.height), int(cfg.border_margin)
    fx, fy, cx, cy = pinhole(frame)
    w2c = world_to_camera(frame).tolist()  # Python floats: scalar operands, exact float64

    # Camera coordinates R p + t, element-wise in the module's fixed order (see the docstring).
    pts = points.to(torch.float64)
    px, py, pz = pts[:, 0], pts[:, 1], pts[:, 2]
    x, y, z = (px * r[0] + py * r[1] + pz * r[2] + r[3] for r in w2c[:3])
    front = z > 0
    # Guard the division: points at or behind the camera get z = 1 and are dropped by `front` anyway.
    z_safe = torch.where(front, z, torch.ones_like(z))
    u = torch.round(x * fx / z_safe + cx)
    v = torch.round(y * fy / z_safe + cy)
    keep = front & (u >= margin) & (v >= margin) & (u < width - margin) & (v < height - margin)

    point_idx = torch.nonzero(keep).squeeze(1)
    pixel_idx = v[point_idx].long() * width + u[point_idx].long()

    if depth is not None and cfg.use_depth:
        check_depth_shape(tuple(depth.shape), frame)
        d = depth.to(device=device).reshape(-1)[pixel_idx].to(torch.float64)
        visible = (d > 0) & ((d - z[point_idx]).abs() <= cfg.depth_threshold * d)
        point_idx, pixel_idx = point_idx[visible], pixel_idx[visible]
    return point_idx, pixel_idx


__all__ = ["ProjectionConfig", "check_depth_shape", "pinhole", "projection_config_for", "project_points", "world_to_camera"]
