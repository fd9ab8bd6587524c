"""Scene readers, one per dataset layout, auto-detected by :func:`detect_layout`.

Layouts (see each ``_load_*`` docstring):

* ``scannet``: ``<id>_vh_clean_2.ply`` (+ ``.labels.ply``) with ScanNet SensReader-style frames
  (``color/N.jpg``, ``depth/N.png``, ``pose/N.txt``, ``intrinsic/intrinsic_depth.txt``). Mesh-only
  scans (no ``color/``) load with zero frames.
* ``7scenes``: ``frame-XXXXXX.{color.jpg,depth.png,pose.txt}`` + ``camera-intrinsics.txt``; the
  cloud is ``points.ply`` or is built by back-projecting the depth frames.
* ``nuscenes``: one keyframe, ``*.pcd.bin`` LiDAR sweep + camera JPEGs + ``calibration.json``.
* ``matterport``: an OpenScene-preprocessed region (``<building>_<region>.pth`` or ``.ply``) with
  the building's ``color/ depth/ pose/ intrinsic/`` folders.
* ``ply``: a bare ``.ply`` point cloud / mesh, no frames (inference only).

Resolution rule: a Frame's width/height are those of the depth image whenever there is depth
(the intrinsics in every supported layout are the depth camera's). ScanNet's colour images may
be larger (1296x968 vs 640x480): teacher maps are resampled to the depth resolution downstream,
as OpenScene does. Where one intrinsics matrix must serve both colour and depth (7-Scenes,
Matterport) the two images must have the same size, otherwise the loader raises InputError.
Poses and intrinsics are validated eagerly; depth pixels are checked lazily by
:func:`sas3d.scene.images.read_depth`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from sas3d.errors import ConfigError, InputError
from sas3d.scene.images import image_size, read_color, read_depth
from sas3d.scene.ply import read_ply
from sas3d.scene.types import IGNORE_LABEL, Frame, Scene

log = logging.getLogger(__name__)

LAYOUTS = ("scannet", "7scenes", "nuscenes", "matterport", "ply")
SCANNET_FRAME_STRIDE = 20  # OpenScene/SAS: every 20th ScanNet frame
SCANNET_DEPTH_SCALE = 1000.0  # uint16 millimetres
SEVEN_SCENES_DEPTH_SCALE = 1000.0  # uint16 millimetres
MATTERPORT_DEPTH_SCALE = 4000.0  # OpenScene matterport_openseg.py: depth_scale = 4000
MATTERPORT_NEAREST_VIEWS = 100  # OpenScene: regions with no camera inside use the 100 nearest views
VOXEL_SIZE = 0.02  # metres, default for clouds back-projected from depth
_POSE_DET_EPS = 1e-6
_MATTERPORT_SUFFIXES = (".pth", ".ply")


# --------------------------------------------------------------------------- validation helpers

def _load_matrix(path: Path, what: str, missing: str | None = None) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, missing or f"{what} file not found")
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(path, f"cannot parse {what} as numbers ({exc})") from None
    return m


def _check_pose(path: Path, m: np.ndarray) -> np.ndarray:
    if m.shape != (4, 4):
        raise InputError(path, f"pose must be a 4x4 matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(path, "pose contains NaN/inf values (invalid camera pose)")
    if abs(np.linalg.det(m)) < _POSE_DET_EPS:
        raise InputError(path, f"pose is not invertible (determinant {np.linalg.det(m):.3g})")
    return m.astype(np.float64)


def _check_intrinsics(path: Path, m: np.ndarray) -> np.ndarray:
    if m.shape == (4, 4) or m.shape == (3, 4):
        m = m[:3, :3]
    if m.shape != (3, 3):
        raise InputError(path, f"intrinsics must be 3x3 (or 4x4), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(path, "intrinsics contain NaN/inf values")
    if m[0, 0] <= 0 or m[1, 1] <= 0:
        raise InputError(path, f"intrinsics have non-positive focal length (fx={m[0, 0]}, fy={m[1, 1]})")
    return m.astype(np.float64)


def _read_pose(path: Path, color: Path) -> np.ndarray:
    return _check_pose(path, _load_matrix(path, "pose", missing=f"pose file missing for frame {color.name}"))


def _check_points(path: Path, pts: np.ndarray) -> np.ndarray:
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(path, f"points must be (N, 3), got shape {pts.shape}")
    if len(pts) == 0:
        raise InputError(path, "point cloud has zero points")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise InputError(path, f"{int(bad.sum())} points have NaN/inf coordinates (first at index {int(np.argmax(bad))})")
    return pts


def _stride(frames: list, stride: int | None, default: int) -> list:
    step = default if stride is None else int(stride)
    if step < 1:
        raise ConfigError(f"frame_stride must be >= 1, got {step}")
    return frames[::step]


def _stride_by_number(frames: list[Path], stride: int | None, default: int) -> list[Path]:
    """Keep frames whose number is a multiple of the stride (OpenScene: every 20th ScanNet frame).

    Selecting by frame number rather than list position gives the same frames on a full export and
    keeps every frame of an export already thinned to 0, 20, 40, ... (what render-views writes).
    """
    step = default if stride is None else int(stride)
    if step < 1:
        raise ConfigError(f"frame_stride must be >= 1, got {step}")
    kept = [f for f in frames if _numeric_key(f)[0] % step == 0]
    return kept


def _numeric_key(p: Path) -> tuple:
    m = re.search(r"\d+", p.stem)
    return (int(m.group()) if m else float("inf"), p.name)


# --------------------------------------------------------------------------- layout detection

def _find_scannet_mesh(folder: Path) -> Path | None:
    meshes = sorted(folder.glob("*_vh_clean_2.ply"))
    return meshes[0] if meshes else None


def _matterport_region(folder: Path) -> Path | None:
    """The single region cloud in a Matterport folder layout, if the folder has per-frame intrinsics."""
    intr = folder / "intrinsic"
    if not intr.is_dir() or (intr / "intrinsic_depth.txt").exists() or not (folder / "color").is_dir():
        return None
    regions = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _MATTERPORT_SUFFIXES)
    return regions[0] if len(regions) == 1 else None


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
        if path.name == "calibration.json":
            return "nuscenes"
    else:
        if _find_scannet_mesh(path) is not None:
            return "scannet"
        if (path / "camera-intrinsics.txt").is_file() or any(path.glob("frame-*.pose.txt")):
            return "7scenes"
        if (path / "calibration.json").is_file() and any(path.glob("*.pcd.bin")):
            return "nuscenes"
        if _matterport_region(path) is not None:
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
    Layout options: ``skip_invalid_poses`` (ScanNet: drop frames whose pose is -inf/NaN, as exported
    for tracking-lost frames, instead of failing), ``images`` (Matterport: the building's 2D folder),
    ``label_set`` (ply: name of the label set of a ``label`` vertex property).
    """
    path = Path(path)
    layout = options.pop("layout", None) or detect_layout(path)
    if layout not in LAYOUTS:
        raise InputError(path, f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if points is not None and layout != "7scenes":
        raise InputError(Path(points), f"points= only applies to 7-Scenes folders, not a {layout} scene")
    if layout == "scannet":
        scene = _load_scannet(path, frame_stride, labels, **options)
    elif layout == "7scenes":
        scene = _load_7scenes(path, frame_stride, points, voxel_size, **options)
    elif layout == "nuscenes":
        scene = _load_nuscenes(path, **options)
    elif layout == "matterport":
        scene = _load_matterport(path, frame_stride, labels, **options)
    else:
        scene = _load_ply(path, labels, **options)
    return scene


def _no_options(path: Path, options: dict) -> None:
    if options:
        raise InputError(path, f"unknown load_scene option(s) for this layout: {', '.join(sorted(options))}")


# --------------------------------------------------------------------------- ScanNet

def _load_scannet(folder: Path, frame_stride: int | None, labels: bool, skip_invalid_poses: bool = False, **options) -> Scene:
    """ScanNet scan folder (SensReader export layout, also what render-views writes)."""
    _no_options(folder, options)
    mesh_path = _find_scannet_mesh(folder)
    scene_id = mesh_path.name[: -len("_vh_clean_2.ply")]
    mesh = read_ply(mesh_path)
    pts = _check_points(mesh_path, mesh.points())
    scene = Scene(name=scene_id, points=pts, kind="scannet", source=folder, colors=mesh.colors(), faces=mesh.faces)

    label_path = folder / f"{scene_id}_vh_clean_2.labels.ply"
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
    colors = sorted(color_dir.glob("*.jpg"), key=_numeric_key) if color_dir.is_dir() else []
    colors = _stride_by_number(colors, frame_stride, SCANNET_FRAME_STRIDE)
    if not colors:
        return scene
    intr_path = folder / "intrinsic" / "intrinsic_depth.txt"
    intrinsics = _check_intrinsics(intr_path, _load_matrix(intr_path, "intrinsics", "intrinsics file missing (needed for the frames in color/)"))
    for color in colors:
        n = color.stem
        try:
            pose = _read_pose(folder / "pose" / f"{n}.txt", color)
        except InputError as exc:
            if skip_invalid_poses and (folder / "pose" / f"{n}.txt").is_file():
                log.warning("skipping frame %s: %s", n, exc)
                continue
            raise
        depth = folder / "depth" / f"{n}.png"
        if not depth.is_file():
            raise InputError(depth, f"depth image missing for frame {color.name}")
        width, height = image_size(depth)
        label = folder / "label" / f"{n}.png"
        scene.frames.append(
            Frame(
                color_path=color,
                intrinsics=intrinsics,
                pose=pose,
                width=width,
                height=height,
                depth_path=depth,
                depth_scale=SCANNET_DEPTH_SCALE,
                label_path=label if label.is_file() else None,
            )
        )
    return scene


# --------------------------------------------------------------------------- 7-Scenes

def _load_7scenes(folder: Path, frame_stride: int | None, points: str | Path | None, voxel_size: float, **options) -> Scene:
    """7-Scenes / TSDF-fusion folder: frame-XXXXXX.{color.jpg,depth.png,pose.txt} + camera-intrinsics.txt."""
    _no_options(folder, options)
    intr_path = folder / "camera-intrinsics.txt"
    intrinsics = _check_intrinsics(intr_path, _load_matrix(intr_path, "intrinsics", "intrinsics file missing"))
    colors = sorted(folder.glob("frame-*.color.*"), key=_numeric_key)
    colors = _stride(colors, frame_stride, 1)
    frames: list[Frame] = []
    for color in colors:
        stem = color.name.split(".")[0]
        pose = _read_pose(folder / f"{stem}.pose.txt", color)
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
        frames.append(Frame(color, intrinsics, pose, dsize[0], dsize[1], depth, SEVEN_SCENES_DEPTH_SCALE))

    cloud = Path(points) if points is not None else folder / "points.ply"
    if cloud.is_file() or points is not None:
        ply = read_ply(cloud)
        pts, rgb = _check_points(cloud, ply.points()), ply.colors()
    else:
        if not frames:
            raise InputError(folder, "no frame-*.color.* frames and no points.ply: nothing to build a point cloud from")
        pts, rgb = backproject_frames(frames, voxel_size)
        if len(pts) == 0:
            raise InputError(folder, "back-projecting the depth frames gave zero points (all depth invalid)")
    return Scene(name=folder.name, points=pts, kind="7scenes", source=folder, colors=rgb, frames=frames)


def backproject_frames(frames: list[Frame], voxel_size: float = VOXEL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the depth of ``frames`` into one cloud: back-project valid pixels, average per voxel.

    Returns (points (M,3) float32 voxel centroids, colors (M,3) uint8 mean colour). Colour is
    sampled at the depth pixel when the colour image has the depth resolution.
    """
    from tqdm import tqdm

    if voxel_size <= 0:
        raise ConfigError(f"voxel_size must be > 0, got {voxel_size}")
    keys_all, sums_all, counts_all = [], [], []
    grid = None
    for frame in tqdm(frames, desc="back-projecting depth", unit="frame", leave=False, disable=len(frames) < 20):
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
        _scatter_sum(sums, inv, world, col)
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


def _scatter_sum(out: np.ndarray, inv: np.ndarray, world: np.ndarray, col: np.ndarray) -> None:
    for c in range(3):
        out[:, c] = np.bincount(inv, weights=world[:, c], minlength=len(out))
        out[:, 3 + c] = np.bincount(inv, weights=col[:, c], minlength=len(out))


def _voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """Pack integer voxel coordinates into one int64 (21 bits per axis, +-20 km at 2 cm)."""
    ijk = np.floor(points / voxel_size).astype(np.int64) + (1 << 20)
    if ijk.size and (ijk.min() < 0 or ijk.max() >= (1 << 21)):
        raise InputError(None, f"scene extent too large for voxel size {voxel_size} m")
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


# --------------------------------------------------------------------------- nuScenes

def _load_nuscenes(path: Path, **options) -> Scene:
    """One nuScenes keyframe: LiDAR ``*.pcd.bin`` + 6 camera JPEGs + ``calibration.json``.

    Points stay in the LiDAR frame (our "world"); each camera's pose is inverse(lidar2cam).
    There is no depth: visibility is decided by projection (z > 0, inside the image).
    """
    _no_options(path, options)
    folder = path.parent if path.is_file() else path
    calib_path = folder / "calibration.json"
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
    pts = _check_points(bin_path, raw.reshape(-1, nfeat)[:, :3])

    frames = []
    for name, cam in cameras.items():
        try:
            img = folder / cam["path"]
            k = np.asarray(cam["cam2img"], dtype=np.float64)
            lidar2cam = np.asarray(cam["lidar2cam"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(calib_path, f"camera {name}: missing/invalid entry {exc} (need path, cam2img, lidar2cam)") from None
        k = _check_intrinsics(calib_path, k)
        pose = np.linalg.inv(_check_pose(calib_path, lidar2cam))
        width, height = image_size(img)
        frames.append(Frame(color_path=img, intrinsics=k, pose=pose, width=width, height=height))
    name = str(calib.get("token", folder.name))
    return Scene(name=name, points=pts, kind="nuscenes", source=folder, frames=frames)


# --------------------------------------------------------------------------- Matterport3D

def _load_region_cloud(path: Path, labels: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(points, colours uint8, matterport21 labels) from an OpenScene region .pth or a .ply."""
    if path.suffix == ".ply":
        ply = read_ply(path)
        lab = ply.vertex.get("label")
        return _check_points(path, ply.points()), ply.colors(), (lab.astype(np.int64) if labels and lab is not None else None)
    data = _torch_load_arrays(path)
    if not isinstance(data, (tuple, list)) or len(data) < 1:
        raise InputError(path, "expected a (coords, colors[, labels]) tuple as written by OpenScene's preprocessing")
    pts = _check_points(path, np.asarray(data[0]))
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


def _torch_load_arrays(path: Path) -> Any:
    """torch.load restricted to tensors and plain numpy arrays (weights_only=True, no code runs)."""
    import torch

    allowed = [np.ndarray, np.dtype, np._core.multiarray._reconstruct]
    allowed += [type(np.dtype(t)) for t in ("f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises UnpicklingError/RuntimeError/EOFError...)
        raise InputError(
            path,
            "cannot load as a weights-only torch file (only tensors/numpy arrays are accepted, "
            f"nothing that would run code): {str(exc).splitlines()[0][:200]}",
        ) from None
    if isinstance(data, (tuple, list)):
        data = [d.numpy() if isinstance(d, torch.Tensor) else d for d in data]
    return data


def _matterport_images_dir(region: Path, images: str | Path | None) -> Path:
    if images is not None:
        return Path(images)
    if _matterport_region(region.parent) == region:
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


def _matterport_depth_name(color: Path) -> str:
    # OpenScene naming: colour <pano>_i<cam>_<yaw>.jpg <-> depth <pano>_d<cam>_<yaw>.png
    m = re.fullmatch(r"(.+)_i(\d)_(\d+)", color.stem)
    return f"{m.group(1)}_d{m.group(2)}_{m.group(3)}.png" if m else f"{color.stem}.png"


def _load_matterport(path: Path, frame_stride: int | None, labels: bool, images: str | Path | None = None, **options) -> Scene:
    """Matterport3D region in OpenScene's preprocessed layout.

    Frames are the building's cameras whose centre lies strictly inside the region's bounding
    box, or the 100 nearest to the box centre when none does (OpenScene's rule).
    """
    _no_options(path, options)
    region = path if path.is_file() else _matterport_region(path)
    if region is None:
        raise InputError(path, "no single region point cloud (.pth/.ply) found next to color/ depth/ pose/ intrinsic/")
    pts, rgb, lab = _load_region_cloud(region, labels)
    img_dir = _matterport_images_dir(region, images)
    colors = sorted((img_dir / "color").glob("*.jpg"))
    poses, intrs = [], []
    for color in colors:
        poses.append(_read_pose(img_dir / "pose" / f"{color.stem}.txt", color))
        ipath = img_dir / "intrinsic" / f"{color.stem}.txt"
        intrs.append(_check_intrinsics(ipath, _load_matrix(ipath, "intrinsics", f"intrinsics file missing for frame {color.name}")))
    selected: list[int] = []
    if colors:
        centres = np.stack(poses)[:, :3, 3]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        inside = np.all((centres > lo) & (centres < hi), axis=1)
        if inside.any():
            selected = np.flatnonzero(inside).tolist()
        else:
            dist = np.linalg.norm(centres - (lo + hi) / 2, axis=1)
            selected = sorted(np.argsort(dist, kind="stable")[:MATTERPORT_NEAREST_VIEWS].tolist())
    frames = []
    for i in _stride(selected, frame_stride, 1):
        color = colors[i]
        depth = img_dir / "depth" / _matterport_depth_name(color)
        if not depth.is_file():
            raise InputError(depth, f"depth image missing for frame {color.name}")
        dsize, csize = image_size(depth), image_size(color)
        if dsize != csize:
            raise InputError(color, f"colour is {csize[0]}x{csize[1]} but depth {depth.name} is {dsize[0]}x{dsize[1]} (one intrinsics file for both)")
        frames.append(Frame(color, intrs[i], poses[i], dsize[0], dsize[1], depth, MATTERPORT_DEPTH_SCALE))
    return Scene(
        name=region.stem,
        points=pts,
        kind="matterport",
        source=region,
        colors=rgb,
        labels=lab,
        label_set="matterport21" if lab is not None else None,
        frames=frames,
    )


# --------------------------------------------------------------------------- bare PLY

def _load_ply(path: Path, labels: bool, label_set: str | None = None, **options) -> Scene:
    """A point cloud / mesh PLY on its own (no frames). Optional vertex props ``label``, ``superpoint``."""
    _no_options(path, options)
    ply = read_ply(path)
    pts = _check_points(path, ply.points())
    scene = Scene(name=path.stem, points=pts, kind="ply", source=path, colors=ply.colors(), faces=ply.faces)
    if labels and "label" in ply.vertex:
        scene.labels = ply.vertex["label"].astype(np.int64)
        scene.label_set = label_set
    for key in ("superpoint", "superpoints", "segment"):
        if key in ply.vertex:
            scene.superpoints = ply.vertex[key].astype(np.int64)
            break
    return scene
