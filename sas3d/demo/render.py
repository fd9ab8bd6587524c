"""Render RGB-D(-label) frames of a mesh along a camera path, in the ScanNet export layout.

Writes, under ``out_dir``: ``color/N.jpg``, ``depth/N.png`` (uint16 millimetres, 0 = no surface),
``pose/N.txt`` (4x4 camera-to-world), ``intrinsic/intrinsic_depth.txt`` and
``intrinsic_color.txt`` (4x4; colour and depth share one resolution here) and, with labels,
``label/N.png`` (uint16 ScanNet20 index, 255 = ignore). Frames are numbered 0, ``frame_step``,
2 * ``frame_step``, ... (default 20, the ScanNet reader's default stride).
Colour is the vertex colour times a head-light shading (ambient + diffuse from face normals).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sas3d.demo.camera_path import CameraPathConfig, camera_path, look_pose
from sas3d.geometry.raster import face_normals, headlight_shading, pixel_labels, rasterize, shade, world_to_camera
from sas3d.scene.types import IGNORE_LABEL
from sas3d.utils.atomic import make_temp_dir

LAYOUT_DIRS = ("color", "depth", "pose", "intrinsic", "label")


@dataclass
class RenderReport:
    """What :func:`render_views` wrote: frame numbers, per-view valid-depth fraction, and the
    fraction of mesh vertices visible (depth-tested) in at least one view."""

    frames: list[int]
    valid_fraction: list[float]
    coverage: float
    intrinsics: np.ndarray
    poses: list[np.ndarray] = field(default_factory=list)


def default_intrinsics(width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics with ScanNet's field of view (fx = fy = 577 at 640 px wide), centred."""
    f = 577.0 / 640.0 * width
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def visible_vertices(vertices: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray,
                     tolerance: float = 0.05, near: float = 0.05) -> np.ndarray:
    """(V,) bool: vertices inside the image whose depth agrees with the rendered depth (occlusion test)."""
    h, w = depth.shape
    cam = world_to_camera(vertices, pose)
    z = cam[:, 2]
    ok = z > near
    zs = np.where(ok, z, 1.0)
    u = np.rint(intrinsics[0, 0] * cam[:, 0] / zs + intrinsics[0, 2]).astype(np.int64)
    v = np.rint(intrinsics[1, 1] * cam[:, 1] / zs + intrinsics[1, 2]).astype(np.int64)
    ok &= (u >= 0) & (u < w) & (v >= 0) & (v < h)
    d = np.zeros_like(z)
    d[ok] = depth[v[ok], u[ok]]
    return ok & (d > 0) & (np.abs(d - z) < tolerance)


def _pose_angles(pose: np.ndarray) -> tuple[float, float]:
    fwd = pose[:3, 2]
    return math.atan2(fwd[1], fwd[0]), -math.asin(float(np.clip(fwd[2], -1, 1)))


def render_views(
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None,
    labels: np.ndarray | None,
    out_dir: str | Path,
    n_views: int = 30,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
    *,
    frame_step: int = 20,
    min_valid: float = 0.7,
    path_cfg: CameraPathConfig | None = None,
    poses: list[np.ndarray] | None = None,
    progress: bool = True,
) -> RenderReport:
    """Render ``n_views`` frames of a mesh (z up, metres) into ``out_dir`` (ScanNet export layout).

    ``labels`` are per-vertex ScanNet20 indices (255 = ignore) or None (no ``label/`` folder).
    Views whose valid-depth fraction is below ``min_valid`` are re-aimed with more pitch down (up
    to 45 degrees) before being kept. The layout folders are built in a temporary directory and
    moved into ``out_dir`` at the end, replacing any previous render there.
    """
    from PIL import Image
    from tqdm import tqdm

    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    colors = np.full((len(vertices), 3), 180, np.uint8) if colors is None else np.asarray(colors, dtype=np.uint8)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = default_intrinsics(width, height)
    poses = list(poses) if poses is not None else camera_path(vertices, n_views, seed, path_cfg)
    normals = face_normals(vertices, faces)
    seen = np.zeros(len(vertices), dtype=bool)
    frames, valid, kept = [], [], []
    tmp = make_temp_dir(out_dir, "render")  # umask mode; a killed run's leftover is swept by the next
    try:
        for name in LAYOUT_DIRS[:4] + (("label",) if labels is not None else ()):
            (tmp / name).mkdir()
        k4 = np.eye(4)
        k4[:3, :3] = k
        for name in ("intrinsic_depth.txt", "intrinsic_color.txt"):
            np.savetxt(tmp / "intrinsic" / name, k4, fmt="%.6f")
        for i, pose in enumerate(tqdm(poses, desc="render views", unit="view", disable=not progress)):
            depth, fid, bary = rasterize(vertices, faces, k, pose, width, height, return_barycentric=True)
            yaw, pitch = _pose_angles(pose)
            while (depth > 0).mean() < min_valid and pitch < math.radians(45):
                pitch += math.radians(5)
                pose = look_pose(pose[:3, 3], yaw, pitch)
                depth, fid, bary = rasterize(vertices, faces, k, pose, width, height, return_barycentric=True)
            n = i * frame_step
            light = headlight_shading(fid, normals, k, pose)
            rgb = shade(fid, faces, colors, bary).astype(np.float32) * light[..., None]
            Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(tmp / "color" / f"{n}.jpg", quality=92)
            mm = np.clip(np.rint(depth * 1000.0), 0, 65534).astype(np.uint16)  # 65535 reads as invalid
            Image.fromarray(mm).save(tmp / "depth" / f"{n}.png")
            np.savetxt(tmp / "pose" / f"{n}.txt", pose, fmt="%.6f")
            if labels is not None:
                lab = pixel_labels(fid, faces, labels, bary, empty=IGNORE_LABEL)
                Image.fromarray(np.clip(lab, 0, IGNORE_LABEL).astype(np.uint16)).save(tmp / "label" / f"{n}.png")
            seen |= visible_vertices(vertices, depth, k, pose)
            frames.append(n)
            valid.append(float((depth > 0).mean()))
            kept.append(pose)
        for name in LAYOUT_DIRS:
            if (out_dir / name).exists():
                shutil.rmtree(out_dir / name)
            if (tmp / name).exists():
                (tmp / name).rename(out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RenderReport(frames, valid, float(seen.mean()) if len(seen) else 0.0, k, kept)
