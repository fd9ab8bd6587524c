"""``sas3d superpoints SCENE``: compute (and cache) a scene's superpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from sas3d.commands.preflight import Output, add_overwrite_option, add_skip_invalid_poses_option, preflight

HELP = "segment a scene into superpoints (ScanNet mesh segmentator / kNN graph)"
DESCRIPTION = """\
Over-segment a scene into superpoints, as SAS uses for its superpoint losses: Felzenszwalb
graph segmentation on surface normals (ScanNet's segmentator: k-threshold 0.01, minimum 60
vertices) on the mesh when the scene has faces, on a k-nearest-neighbour graph otherwise;
outdoor lidar (nuScenes) scans get one superpoint per point.

The result is an (N,) int64 .npy of segment ids. Without --out it is cached in
<scene folder>/sas3d/ (the scene path itself when it is a folder, else its parent),
keyed by scene name, geometry and config, and re-used on the next run.

Examples:
  sas3d superpoints scans/scene0470_00 --out sp.npy
  sas3d superpoints scans/scene0470_00 --set k_threshold=0.02 --set min_size=20
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, help="scene folder or file (any layout sas3d can read)")
    parser.add_argument("--out", type=Path, default=None, help="write the (N,) int64 ids here (.npy)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a SuperpointConfig field (k_threshold, min_size, knn, normal_knn)",
    )
    add_skip_invalid_poses_option(parser)
    add_overwrite_option(parser)


def default_cache_dir(scene_path: Path) -> Path:
    """Where superpoints are cached when --out is omitted: <scene folder>/sas3d/."""
    base = scene_path if scene_path.is_dir() else scene_path.parent
    return base / "sas3d"


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from sas3d.config import apply_overrides, from_dict
    from sas3d.geometry.superpoints import SuperpointConfig, scene_superpoints, superpoint_cache_path
    from sas3d.scene.readers import load_scene
    from sas3d.utils.atomic import atomic_path

    cfg = from_dict(SuperpointConfig, apply_overrides({}, args.overrides), "superpoints")
    target = Output(args.out, "npy") if args.out is not None else Output(default_cache_dir(args.scene), "folder")
    preflight(args, scenes=[args.scene], writes=[target])
    scene = load_scene(args.scene, labels=False, skip_invalid_poses=args.skip_invalid_poses)
    t0 = time.perf_counter()
    if args.out is None:
        cache = default_cache_dir(args.scene)
        sp = scene_superpoints(scene, cfg, cache)
        out = superpoint_cache_path(scene, cfg, cache)
    else:
        sp = scene_superpoints(scene, cfg, None)
        out = args.out
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, sp, allow_pickle=False)
    dt = time.perf_counter() - t0
    sizes = np.bincount(sp) if len(sp) else np.zeros(0, dtype=np.int64)
    print(
        f"{scene.name}: {len(sizes)} superpoints over {len(sp)} points "
        f"(median size {int(np.median(sizes)) if len(sizes) else 0}, {dt:.2f} s) -> {out}"
    )
    return 0
