"""ScanNet scan folders (SensReader export layout, also what ``sas3d render-views`` writes).

``<id>_vh_clean_2.ply`` (+ ``<id>_vh_clean_2.labels.ply``, NYU40 -> ScanNet20), ``color/N.jpg``,
``depth/N.png`` (uint16 mm), ``pose/N.txt`` and ``intrinsic/intrinsic_depth.txt``; mesh-only scans
(no ``color/``) load with zero frames.

Sizes: the intrinsics describe the depth camera, so a frame's resolution is its depth image's,
and every depth image must have the one size ``intrinsic_depth.txt`` is for; depth stored at a
uniform resize of it (OpenScene's 320x240 frames keep the 640x480 intrinsics) gets the intrinsics
scaled (:func:`sas3d.scene.checks.intrinsics_for_image`). Colour may be larger (1296x968 vs
640x480) and has its own ``intrinsic_color.txt``: teacher maps are resampled to the depth
resolution downstream (as OpenScene does), so colour only has to show the same view (aspect ratio).
Frames whose pose is all ``-inf`` (SensReader's marker for lost tracking) are skipped and reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.scene.checks import (
    PoseReader,
    check_aspect,
    check_points,
    check_same_size,
    intrinsics_for_image,
    load_intrinsics,
    no_options,
    numeric_key,
    stride_by_number,
)
from sas3d.scene.images import image_size
from sas3d.scene.ply import read_ply
from sas3d.scene.types import Frame, Scene

FRAME_STRIDE = 20  # OpenScene/SAS: every 20th ScanNet frame
DEPTH_SCALE = 1000.0  # uint16 millimetres
MESH_SUFFIX = "_vh_clean_2.ply"
LABELS_SUFFIX = "_vh_clean_2.labels.ply"
FRAME_DIRS = ("color", "depth", "pose", "intrinsic", "label")


def find_mesh(folder: Path) -> Path | None:
    meshes = sorted(folder.glob(f"*{MESH_SUFFIX}"))
    return meshes[0] if meshes else None


def input_files(folder: Path) -> list:
    """What the reader may read: the mesh, its labels and the frame folders."""
    mesh = find_mesh(folder)
    files: list = [mesh, mesh.with_name(mesh.name[: -len(MESH_SUFFIX)] + LABELS_SUFFIX)] if mesh else []
    return files + [(folder / d, "*") for d in FRAME_DIRS]


def load(folder: Path, frame_stride: int | None, labels: bool, skip_invalid_poses: bool = False, **options) -> Scene:
    no_options(folder, options)
    mesh_path = find_mesh(folder)
    scene_id = mesh_path.name[: -len(MESH_SUFFIX)]
    mesh = read_ply(mesh_path)
    pts = check_points(mesh_path, mesh.points())
    scene = Scene(name=scene_id, points=pts, kind="scannet", source=folder, colors=mesh.colors(), faces=mesh.faces)

    label_path = folder / f"{scene_id}{LABELS_SUFFIX}"
    if labels and label_path.is_file():
        from sas3d.text.labelsets import nyu40_to_scannet20

        lab = read_ply(label_path)
        if "label" not in lab.vertex:
            raise InputError(label_path, "labels PLY has no per-vertex 'label' property")
        if lab.num_vertices != len(pts):
            raise InputError(label_path, f"labels PLY has {lab.num_vertices} vertices, mesh has {len(pts)}")
        scene.labels = nyu40_to_scannet20(lab.vertex["label"].astype(np.int64))
        scene.label_set = "scannet20"

    color_dir = folder / "color"
    colors = sorted(color_dir.glob("*.jpg"), key=numeric_key) if color_dir.is_dir() else []
    colors = stride_by_number(colors, frame_stride, FRAME_STRIDE)
    if not colors:
        return scene
    intr_path = folder / "intrinsic" / "intrinsic_depth.txt"
    k_file = load_intrinsics(intr_path, "intrinsics file missing (needed for the frames in color/)")
    poses = PoseReader(skip_invalid=skip_invalid_poses, skip_neg_inf=True)
    first: tuple[Path, tuple[int, int], np.ndarray] | None = None
    for color in colors:
        n = color.stem
        pose = poses.read(folder / "pose" / f"{n}.txt", color)
        if pose is None:
            continue
        depth = folder / "depth" / f"{n}.png"
        if not depth.is_file():
            raise InputError(depth, f"depth image missing for frame {color.name}")
        dsize = image_size(depth)
        if first is None:
            first = (depth, dsize, intrinsics_for_image(k_file, dsize, intr_path, depth))
        check_same_size(depth, dsize, f"depth/{first[0].name}", first[1], f"all depth images of a scan share {intr_path.name}")
        check_aspect(color, image_size(color), depth, dsize)
        label = folder / "label" / f"{n}.png"
        scene.frames.append(
            Frame(
                color_path=color,
                intrinsics=first[2],
                pose=pose,
                width=dsize[0],
                height=dsize[1],
                depth_path=depth,
                depth_scale=DEPTH_SCALE,
                label_path=label if label.is_file() else None,
            )
        )
    poses.report(scene_id, len(colors))
    scene.skipped_frames = poses.skipped
    return scene
