"""Scene readers, one module per dataset layout, auto-detected by :func:`detect_layout`.

* ``scannet`` (:mod:`sas3d.scene.scannet`): ``<id>_vh_clean_2.ply`` (+ ``.labels.ply``) with
  SensReader-style frames (``color/N.jpg``, ``depth/N.png``, ``pose/N.txt``,
  ``intrinsic/intrinsic_depth.txt``).
* ``7scenes`` (:mod:`sas3d.scene.sevenscenes`): ``frame-XXXXXX.{color.jpg,depth.png,pose.txt}`` +
  ``camera-intrinsics.txt``; the cloud is ``points.ply`` or back-projected depth.
* ``nuscenes`` (:mod:`sas3d.scene.nuscenes`): one keyframe, ``*.pcd.bin`` + camera JPEGs + ``calibration.json``.
* ``matterport`` (:mod:`sas3d.scene.matterport`): an OpenScene-preprocessed region with the
  building's ``color/ depth/ pose/ intrinsic/`` folders.
* ``ply``: a bare ``.ply`` point cloud / mesh, no frames (inference only).

Resolution rule: a Frame's width/height are those of the depth image whenever there is depth (the
intrinsics in every supported layout are the depth camera's), and every reader checks each
frame's colour, depth and intrinsics against each other (:mod:`sas3d.scene.checks`). Poses and
intrinsics are validated eagerly; depth pixels lazily by :func:`sas3d.scene.images.read_depth`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sas3d.errors import InputError
from sas3d.scene import matterport, nuscenes, scannet, sevenscenes
from sas3d.scene.checks import check_points, no_options
from sas3d.scene.ply import read_ply
from sas3d.scene.sevenscenes import VOXEL_SIZE, backproject_frames  # noqa: F401  (public: sas3d.scene.readers.backproject_frames)
from sas3d.scene.types import Scene

LAYOUTS = ("scannet", "7scenes", "nuscenes", "matterport", "ply")


def detect_layout(path: str | Path) -> str:
    """Return ``scannet`` | ``7scenes`` | ``nuscenes`` | ``matterport`` | ``ply`` for a scene path.

    Raises InputError listing what was looked for when nothing matches.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "scene path does not exist")
    if path.is_file():
        if path.suffix.lower() == ".ply":
            return "ply"
        if path.suffix == ".pth":
            return "matterport"
        if path.name == nuscenes.CALIBRATION:
            return "nuscenes"
    else:
        if scannet.find_mesh(path) is not None:
            return "scannet"
        if sevenscenes.is_7scenes(path):
            return "7scenes"
        if nuscenes.is_nuscenes(path):
            return "nuscenes"
        if matterport.find_region(path) is not None:
            return "matterport"
    raise InputError(
        path,
        "unknown scene layout; looked for: a .ply file (point cloud/mesh), a Matterport region .pth, "
        "a folder with <id>_vh_clean_2.ply (ScanNet), camera-intrinsics.txt or frame-*.pose.txt (7-Scenes), "
        "calibration.json + *.pcd.bin (nuScenes), or color/ depth/ pose/ intrinsic/ + one region .pth/.ply (Matterport)",
    )


def load_scene(
    path: str | Path,
    *,
    frame_stride: int | None = None,
    points: str | Path | None = None,
    voxel_size: float = VOXEL_SIZE,
    labels: bool = True,
    **options: Any,
) -> Scene:
    """Load a scene from any supported layout (auto-detected; ``layout=`` forces one).

    ``frame_stride``: keep every k-th frame; None = the layout's default (ScanNet 20, otherwise 1).
    ``points``: 7-Scenes only, a PLY to use as the cloud instead of ``points.ply``/back-projection.
    ``voxel_size``: voxel (m) for clouds back-projected from depth. ``labels``: load ground truth.
    Layout options: ``skip_invalid_poses`` (frame layouts: leave out frames whose pose is NaN/inf or
    singular instead of failing; ScanNet's all ``-inf`` tracking-lost poses are always left out;
    skipped frames are logged and listed in ``Scene.skipped_frames``), ``images`` (Matterport: the
    building's 2D folder), ``label_set`` (ply: name of the label set of a ``label`` vertex property).
    """
    path = Path(path)
    layout = options.pop("layout", None) or detect_layout(path)
    if layout not in LAYOUTS:
        raise InputError(path, f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if points is not None and layout != "7scenes":
        raise InputError(Path(points), f"points= only applies to 7-Scenes folders, not a {layout} scene")
    if layout == "scannet":
        return scannet.load(path, frame_stride, labels, **options)
    if layout == "7scenes":
        return sevenscenes.load(path, frame_stride, points, voxel_size, **options)
    if layout == "nuscenes":
        options.pop("skip_invalid_poses", None)  # poses come from the calibration, checked always
        return nuscenes.load(path, **options)
    if layout == "matterport":
        return matterport.load(path, frame_stride, labels, **options)
    options.pop("skip_invalid_poses", None)  # no frames
    return _load_ply(path, labels, **options)


def scene_input_files(path: str | Path, **options: Any) -> list:
    """The files :func:`load_scene` may read for ``path``, without reading them.

    Entries are file paths or ``(folder, glob pattern)`` pairs for frame folders; commands use it
    to refuse an output that would overwrite one of them. Raises InputError for an unknown layout.
    """
    path = Path(path)
    layout = options.get("layout") or detect_layout(path)
    if layout == "scannet":
        return scannet.input_files(path)
    if layout == "7scenes":
        return sevenscenes.input_files(path, options.get("points"))
    if layout == "nuscenes":
        return nuscenes.input_files(path)
    if layout == "matterport":
        return matterport.input_files(path, options.get("images"))
    return [path]


# --------------------------------------------------------------------------- bare PLY

def _load_ply(path: Path, labels: bool, label_set: str | None = None, **options) -> Scene:
    """A point cloud / mesh PLY on its own (no frames). Optional vertex props ``label``, ``superpoint``."""
    no_options(path, options)
    ply = read_ply(path)
    pts = check_points(path, ply.points())
    scene = Scene(name=path.stem, points=pts, kind="ply", source=path, colors=ply.colors(), faces=ply.faces)
    if labels and "label" in ply.vertex:
        scene.labels = ply.vertex["label"].astype(np.int64)
        scene.label_set = label_set
    for key in ("superpoint", "superpoints", "segment"):
        if key in ply.vertex:
            scene.superpoints = ply.vertex[key].astype(np.int64)
            break
    return scene
