"""7-Scenes / TSDF-fusion folders: ``frame-XXXXXX.{color.jpg,depth.png,pose.txt}`` + ``camera-intrinsics.txt``.

One intrinsics matrix serves colour and depth, so both images of every frame must have one size,
the size the intrinsics describe (or a uniform resize of it, see
:func:`sas3d.scene.checks.intrinsics_for_image`). The cloud is ``points.ply`` (or ``points=``)
or is built by back-projecting the depth frames (:func:`backproject_frames`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sas3d.errors import ConfigError, InputError
from sas3d.scene.checks import (
    PoseReader,
    check_points,
    check_same_size,
    intrinsics_for_image,
    load_intrinsics,
    no_options,
    numeric_key,
    stride,
)
from sas3d.scene.images import image_size, read_color, read_depth
from sas3d.scene.ply import read_ply
from sas3d.scene.types import Frame, Scene

DEPTH_SCALE = 1000.0  # uint16 millimetres
VOXEL_SIZE = 0.02  # metres, default for clouds back-projected from depth
INTRINSICS = "camera-intrinsics.txt"


def is_7scenes(folder: Path) -> bool:
    return (folder / INTRINSICS).is_file() or any(folder.glob("frame-*.pose.txt"))


def input_files(folder: Path, points: str | Path | None = None) -> list:
    return [folder / INTRINSICS, Path(points) if points is not None else folder / "points.ply", (folder, "frame-*")]


def load(folder: Path, frame_stride: int | None, points: str | Path | None, voxel_size: float,
         skip_invalid_poses: bool = False, **options) -> Scene:
    no_options(folder, options)
    intr_path = folder / INTRINSICS
    k_file = load_intrinsics(intr_path)
    colors = stride(sorted(folder.glob("frame-*.color.*"), key=numeric_key), frame_stride, 1)
    poses = PoseReader(skip_invalid=skip_invalid_poses)
    frames: list[Frame] = []
    intrinsics = None
    for color in colors:
        stem = color.name.split(".")[0]
        pose = poses.read(folder / f"{stem}.pose.txt", color)
        if pose is None:
            continue
        depth = folder / f"{stem}.depth.png"
        if not depth.is_file():
            raise InputError(depth, f"depth image missing for frame {color.name}")
        dsize, csize = image_size(depth), image_size(color)
        if dsize != csize:
            raise InputError(
                color,
                f"colour is {csize[0]}x{csize[1]} but depth {depth.name} is {dsize[0]}x{dsize[1]} and "
                f"{intr_path.name} has one intrinsics matrix for both",
            )
        if intrinsics is None:
            intrinsics = intrinsics_for_image(k_file, dsize, intr_path, depth)
        else:
            check_same_size(depth, dsize, frames[0].depth_path.name, (frames[0].width, frames[0].height),
                            f"all frames share {intr_path.name}")
        frames.append(Frame(color, intrinsics, pose, dsize[0], dsize[1], depth, DEPTH_SCALE))
    poses.report(folder.name, len(colors))

    cloud = Path(points) if points is not None else folder / "points.ply"
    if cloud.is_file() or points is not None:
        ply = read_ply(cloud)
        pts, rgb = check_points(cloud, ply.points()), ply.colors()
    else:
        if not frames:
            raise InputError(folder, "no frame-*.color.* frames and no points.ply: nothing to build a point cloud from")
        pts, rgb = backproject_frames(frames, voxel_size)
        if len(pts) == 0:
            raise InputError(folder, "back-projecting the depth frames gave zero points (all depth invalid)")
    return Scene(name=folder.name, points=pts, kind="7scenes", source=folder, colors=rgb, frames=frames,
                 skipped_frames=poses.skipped)


def _progress_disabled() -> bool:
    # the CLI's --no-progress sets TQDM_DISABLE; read it now (tqdm reads it only when imported)
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def backproject_frames(frames: list[Frame], voxel_size: float = VOXEL_SIZE, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the depth of ``frames`` into one cloud: back-project valid pixels, average per voxel.

    Returns (points (M,3) float32 voxel centroids, colors (M,3) uint8 mean colour). Colour is
    sampled at the depth pixel when the colour image has the depth resolution. ``progress``:
    show a bar (default: for 20+ frames unless ``TQDM_DISABLE`` is set).
    """
    from tqdm import tqdm

    if voxel_size <= 0:
        raise ConfigError(f"voxel_size must be > 0, got {voxel_size}")
    if progress is None:
        progress = len(frames) >= 20 and not _progress_disabled()
    keys_all, sums_all, counts_all = [], [], []
    grid = None
    for frame in tqdm(frames, desc="back-projecting depth", unit="frame", leave=False, disable=not progress):
        depth = read_depth(frame)
        if grid is None or grid[0].shape != depth.shape:
            v, u = np.indices(depth.shape, dtype=np.float32)
            grid = (u, v)
        valid = depth > 0
        z = depth[valid]
        k = frame.intrinsics
        x = (grid[0][valid] - k[0, 2]) * z / k[0, 0]
        y = (grid[1][valid] - k[1, 2]) * z / k[1, 1]
        cam = np.stack([x, y, z], axis=1)
        world = cam @ frame.pose[:3, :3].T.astype(np.float32) + frame.pose[:3, 3].astype(np.float32)
        rgb = read_color(frame.color_path)
        col = rgb[valid].astype(np.float32) if rgb.shape[:2] == depth.shape else np.zeros((len(z), 3), np.float32)
        keys, inv = np.unique(_voxel_keys(world, voxel_size), return_inverse=True)
        sums = np.zeros((len(keys), 6), np.float64)
        for c in range(3):
            sums[:, c] = np.bincount(inv, weights=world[:, c], minlength=len(keys))
            sums[:, 3 + c] = np.bincount(inv, weights=col[:, c], minlength=len(keys))
        keys_all.append(keys)
        sums_all.append(sums)
        counts_all.append(np.bincount(inv, minlength=len(keys)))
    if not keys_all:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    keys, inv = np.unique(np.concatenate(keys_all), return_inverse=True)
    sums = np.zeros((len(keys), 6), np.float64)
    stacked = np.concatenate(sums_all)
    for c in range(6):
        sums[:, c] = np.bincount(inv, weights=stacked[:, c], minlength=len(keys))
    counts = np.bincount(inv, weights=np.concatenate(counts_all), minlength=len(keys))
    mean = sums / counts[:, None]
    return mean[:, :3].astype(np.float32), np.clip(np.round(mean[:, 3:]), 0, 255).astype(np.uint8)


def _voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Pack integer voxel coordinates into one int64 (21 bits per axis, +-20 km at 2 cm)."""
    ijk = np.floor(points / voxel_size).astype(np.int64) + (1 << 20)
    if ijk.size and (ijk.min() < 0 or ijk.max() >= (1 << 21)):
        raise InputError(None, f"scene extent too large for voxel size {voxel_size} m")
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]
