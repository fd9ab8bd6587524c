"""Matterport3D regions in OpenScene's preprocessed layout.

A region point cloud (``<building>_<region>.pth`` written by OpenScene's preprocessing, or a
``.ply``) plus the building's ``color/ depth/ pose/ intrinsic/`` folders (per-frame intrinsics).
Frames are the building's cameras whose centre lies strictly inside the region's bounding box, or
the 100 nearest to the box centre when none does (OpenScene's rule). Colour and depth of a frame
share its intrinsics, so they must have one size, the one the intrinsics describe.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.scene.checks import (
    PoseReader,
    check_points,
    intrinsics_for_image,
    load_intrinsics,
    no_options,
    stride,
)
from sas3d.scene.images import image_size
from sas3d.scene.ply import read_ply
from sas3d.scene.types import IGNORE_LABEL, Frame, Scene
from sas3d.utils.torch_io import safe_torch_load

DEPTH_SCALE = 4000.0  # OpenScene matterport_openseg.py: depth_scale = 4000
NEAREST_VIEWS = 100  # OpenScene: regions with no camera inside use the 100 nearest views
REGION_SUFFIXES = (".pth", ".ply")
FRAME_DIRS = ("color", "depth", "pose", "intrinsic")


def find_region(folder: Path) -> Path | None:
    """The single region cloud in a Matterport folder layout, if the folder has per-frame intrinsics."""
    intr = folder / "intrinsic"
    if not intr.is_dir() or (intr / "intrinsic_depth.txt").exists() or not (folder / "color").is_dir():
        return None
    regions = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in REGION_SUFFIXES)
    return regions[0] if len(regions) == 1 else None


def _load_region_cloud(path: Path, labels: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(points, colours uint8, matterport21 labels) from an OpenScene region .pth or a .ply."""
    if path.suffix == ".ply":
        ply = read_ply(path)
        lab = ply.vertex.get("label")
        return check_points(path, ply.points()), ply.colors(), (lab.astype(np.int64) if labels and lab is not None else None)
    data = safe_torch_load(path)
    if not isinstance(data, (tuple, list)) or len(data) < 1:
        raise InputError(path, "expected a (coords, colors[, labels]) tuple as written by OpenScene's preprocessing")
    data = [d.numpy() if hasattr(d, "numpy") else d for d in data]
    pts = check_points(path, np.asarray(data[0]))
    rgb = None
    if len(data) > 1 and data[1] is not None:
        c = np.asarray(data[1], dtype=np.float64)
        if c.shape != pts.shape:
            raise InputError(path, f"colors have shape {c.shape}, points {pts.shape}")
        # OpenScene stores colours as rgb / 127.5 - 1 (range [-1, 1]).
        rgb = np.clip(np.round((c + 1.0) * 127.5), 0, 255).astype(np.uint8)
    lab = None
    if labels and len(data) > 2 and data[2] is not None:
        lab = np.asarray(data[2]).astype(np.int64).reshape(-1)
        if len(lab) != len(pts):
            raise InputError(path, f"{len(lab)} labels for {len(pts)} points")
        lab[(lab < 0) | (lab > IGNORE_LABEL)] = IGNORE_LABEL
    return pts, rgb, lab


def images_dir(region: Path, images: str | Path | None) -> Path:
    if images is not None:
        return Path(images)
    if find_region(region.parent) == region:
        return region.parent
    building = region.stem.split("_")[0]
    # OpenScene: data/matterport_3d/<split>/<building>_<region>.pth, data/matterport_2d/[<split>/]<building>/
    root = region.parent.parent.parent
    split = region.parent.name
    candidates = [root / "matterport_2d" / building, root / "matterport_2d" / split / building, region.parent / building]
    for c in candidates:
        if (c / "color").is_dir():
            return c
    raise InputError(
        region,
        "cannot find the building's 2D folder (color/ depth/ pose/ intrinsic/); looked in "
        + ", ".join(str(c) for c in candidates) + " -- pass images=DIR",
    )


def input_files(path: Path, images: str | Path | None = None) -> list:
    region = path if path.is_file() else find_region(path)
    if region is None:
        return []
    try:
        img_dir = images_dir(region, images)
    except InputError:
        return [region]
    return [region] + [(img_dir / d, "*") for d in FRAME_DIRS]


def _depth_name(color: Path) -> str:
    # OpenScene naming: colour <pano>_i<cam>_<yaw>.jpg <-> depth <pano>_d<cam>_<yaw>.png
    m = re.fullmatch(r"(.+)_i(\d)_(\d+)", color.stem)
    return f"{m.group(1)}_d{m.group(2)}_{m.group(3)}.png" if m else f"{color.stem}.png"


def load(path: Path, frame_stride: int | None, labels: bool, images: str | Path | None = None,
         skip_invalid_poses: bool = False, **options) -> Scene:
    no_options(path, options)
    region = path if path.is_file() else find_region(path)
    if region is None:
        raise InputError(path, "no single region point cloud (.pth/.ply) found next to color/ depth/ pose/ intrinsic/")
    pts, rgb, lab = _load_region_cloud(region, labels)
    img_dir = images_dir(region, images)
    reader = PoseReader(skip_invalid=skip_invalid_poses)
    colors, poses, intrs = [], [], []
    for color in sorted((img_dir / "color").glob("*.jpg")):
        pose = reader.read(img_dir / "pose" / f"{color.stem}.txt", color)
        if pose is None:
            continue
        ipath = img_dir / "intrinsic" / f"{color.stem}.txt"
        colors.append(color)
        poses.append(pose)
        intrs.append((ipath, load_intrinsics(ipath, f"intrinsics file missing for frame {color.name}")))
    reader.report(region.stem, len(colors) + len(reader.skipped))
    selected: list[int] = []
    if colors:
        centres = np.stack(poses)[:, :3, 3]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        inside = np.all((centres > lo) & (centres < hi), axis=1)
        if inside.any():
            selected = np.flatnonzero(inside).tolist()
        else:
            dist = np.linalg.norm(centres - (lo + hi) / 2, axis=1)
            selected = sorted(np.argsort(dist, kind="stable")[:NEAREST_VIEWS].tolist())
    frames = []
    for i in stride(selected, frame_stride, 1):
        color = colors[i]
        depth = img_dir / "depth" / _depth_name(color)
        if not depth.is_file():
            raise InputError(depth, f"depth image missing for frame {color.name}")
        dsize, csize = image_size(depth), image_size(color)
        if dsize != csize:
            raise InputError(color, f"colour is {csize[0]}x{csize[1]} but depth {depth.name} is {dsize[0]}x{dsize[1]} (one intrinsics file for both)")
        k = intrinsics_for_image(intrs[i][1], dsize, intrs[i][0], depth)
        frames.append(Frame(color, k, poses[i], dsize[0], dsize[1], depth, DEPTH_SCALE))
    return Scene(
        name=region.stem,
        points=pts,
        kind="matterport",
        source=region,
        colors=rgb,
        labels=lab,
        label_set="matterport21" if lab is not None else None,
        frames=frames,
        skipped_frames=reader.skipped,
    )
