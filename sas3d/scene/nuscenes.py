"""One nuScenes keyframe: LiDAR ``*.pcd.bin`` + six camera JPEGs + ``calibration.json``.

Points stay in the LiDAR frame (our "world"); each camera's pose is inverse(lidar2cam). There is
no depth: visibility is decided by projection (z > 0, inside the image), so each camera's
``cam2img`` is checked against its image's size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sas3d.errors import InputError
from sas3d.scene.checks import check_intrinsics, check_points, check_pose, intrinsics_for_image, no_options
from sas3d.scene.images import image_size
from sas3d.scene.types import Frame, Scene

CALIBRATION = "calibration.json"


def is_nuscenes(folder: Path) -> bool:
    return (folder / CALIBRATION).is_file() and any(folder.glob("*.pcd.bin"))


def input_files(path: Path) -> list:
    folder = path.parent if path.is_file() else path
    return [folder / CALIBRATION, (folder, "*.pcd.bin"), (folder, "*.jpg"), (folder, "*.png")]


def load(path: Path, **options) -> Scene:
    no_options(path, options)
    folder = path.parent if path.is_file() else path
    calib_path = folder / CALIBRATION
    try:
        calib = json.loads(calib_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(calib_path, f"unreadable calibration JSON ({exc})") from None
    try:
        lidar = calib["lidar"]
        cameras = calib["cameras"]
        bin_path = folder / lidar["path"]
        nfeat = int(lidar.get("num_pts_feats", 5))
    except (KeyError, TypeError) as exc:
        raise InputError(calib_path, f"missing key {exc} (expected 'lidar' with 'path' and 'cameras')") from None
    if not bin_path.is_file():
        raise InputError(bin_path, "LiDAR sweep named in calibration.json not found")
    raw = np.fromfile(bin_path, dtype="<f4")
    if raw.size == 0 or raw.size % nfeat:
        raise InputError(bin_path, f"LiDAR file has {raw.size} floats, not a positive multiple of {nfeat} (truncated?)")
    pts = check_points(bin_path, raw.reshape(-1, nfeat)[:, :3])

    frames = []
    for name, cam in cameras.items():
        try:
            img = folder / cam["path"]
            k = np.asarray(cam["cam2img"], dtype=np.float64)
            lidar2cam = np.asarray(cam["lidar2cam"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(calib_path, f"camera {name}: missing/invalid entry {exc} (need path, cam2img, lidar2cam)") from None
        pose = np.linalg.inv(check_pose(calib_path, lidar2cam))
        size = image_size(img)
        k = intrinsics_for_image(check_intrinsics(calib_path, k), size, calib_path, img)
        frames.append(Frame(color_path=img, intrinsics=k, pose=pose, width=size[0], height=size[1]))
    name = str(calib.get("token", folder.name))
    return Scene(name=name, points=pts, kind="nuscenes", source=folder, frames=frames)
