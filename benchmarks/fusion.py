"""Benchmark: streaming multi-view fusion (sas3d.fusion.multiview) vs a per-frame NumPy reference.

Data: the real 7-Scenes redkitchen frames in ../shared/data (640x480 depth, real poses). The point
cloud is the frames' depth back-projected and voxel-downsampled to ``--points`` points. Teacher
outputs are random float32 maps (``--dim`` channels at 240x320, seeded); a fixed pool of
``--pool`` maps is generated before timing and frame i uses map i % pool, so map generation is
not timed and memory does not depend on the frame count.

Both implementations follow the same protocol (OpenScene): inverse pose, pinhole, round to nearest,
border margin, relative depth test, nearest map lookup with pixel centres, plain mean. The
reference is the straightforward NumPy loop: per frame, project all points, mask, gather the
visible points' features, ``sum[idx] += feats``, ``count[idx] += 1``.

Each run happens in its own subprocess so its peak memory is its own: we report the growth of
the process's peak RSS during fusion (``ru_maxrss`` at the end minus the RSS just before fusion
starts). Ours is also run on fewer frames to show the peak does not grow with the frame count,
and with two teachers in one pass (``fuse_frames``; the second teacher reads map i + 1 of the
pool) to show what a second teacher costs: its row adds only, no second depth decode or projection;
as two teachers' maps fill a group in half the frames, the one-teacher pass also runs at that group
size, for the cost at equal group size.
The last line, ``fusion speed-up: X.Xx``, is the NumPy reference's time over ours (one teacher).

Profile (CPU ms per frame, one teacher, this data, the shared 2-core machine under load; thread CPU
time of each step run alone). Before: the validity mask ``(table != 0).any(1)`` over the whole
240x320x512 map took 69 ms of an 85 ms frame, the fused projection + add kernel the rest. Now: depth
PNG decode 3.5-3.8 (PIL, zlib), projection 2.6 (numba, sequential), row adds 15-18 (memory-bound:
per visible point, ~40k per frame, a cold 2 KiB map row and a 2 KiB sum row read and written; the
first line of each cold row was the top stall, hence the prefetch), the final divide + float16
conversion ~0.1-0.3 s once. Two threads share the row adds (the caller's thread after it decoded
and projected the next frames), so a second teacher costs its row adds only. Half of the row-add
time was the sum rows (19.5 vs 10 ms per frame with the sums kept in cache), so the adds of
``FusionConfig.frame_group`` frames run as one pass over the points (13 ms per frame with 4). The
48k visible points of a frame read only 29k distinct map cells, so the points are fused in Morton
order (``FusionConfig.point_order``): points that share a cell are then in the same block and the
cell's row is fetched once (3.48 -> 3.08 s for the run, median of 3 A/B runs).

Later profile (thread CPU seconds for the whole run, one teacher, 200 frames, idle machine): depth
decoding 0.92-1.04 (PIL then; 3.8 ms per PNG, of which zlib inflate 1.5), projection 0.32 (0.39 before
frustum culling of point runs), row adds 2.56 (groups of 8), final divide and float16 0.17, zeroing
the sums 0.11, the start (Morton order and run boxes, before any frame) 0.05 (0.12 before
vectorising both); 4.5-4.7 s of CPU over 2.4 s of wall clock, so both cores are busy, the row adds at the
memory bandwidth. What moved the wall clock (A/B, alternating runs): groups of 8 frames instead of 4
(2.46-2.48 vs 2.64-2.72 s). Within noise each: culling (0.07 s of CPU), both threads sharing the
decoding, add tasks of equal pair counts instead of equal point ranges (median 2.39 vs 2.44 s), the
final divide on both threads; all of them together with groups of 8: 2.39-2.46 s. A bug fixed on the way: numba recompiled the row-add kernel in every process (1-2.5 s
per group size), and the two-teacher run, whose group size the warm-up had not compiled, paid it.
Then the depth PNGs: libdeflate and one compiled unfilter pass instead of PIL (``sas3d.scene.png_depth``;
``benchmarks/depth_decode.py``: 3.2 vs 5.5 ms per frame, 1.7x, the same values), 2.75-3.07 vs 3.02-3.18 s
in 6 alternating A/B runs on a slower day (CPU 5.3-5.9 vs 5.9-6.1 s). The reference reads depth through
the same ``read_depth``, so it gained the same 0.46 s.

Memory: the pool's maps are shared, so the peak reported here does not include the maps a real
teacher produces frame after frame; with those, up to two groups of frames' maps are alive (the
line "maps alive" prints that bound for these maps).

    .venv/bin/python benchmarks/fusion.py [--frames 200] [--points 200000] [--dim 512]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "7scenes_redkitchen"
MAP_H, MAP_W = 240, 320  # OpenScene feature resolution for 640x480 frames
MAX_FP16_DIFF = 0.0  # same float32 additions in the same order, same divide: bit-identical


def seven_scenes_frames(root: Path, count: int):
    """Frames of the 7-Scenes excerpt (depth camera intrinsics, every frame shipped)."""
    from sas3d.scene.types import Frame

    k = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
    frames = []
    for color in sorted(root.glob("frame-*.color.jpg"))[:count]:
        base = color.name[: -len(".color.jpg")]
        pose = np.loadtxt(root / f"{base}.pose.txt").reshape(4, 4)
        frames.append(Frame(color, k, pose, 640, 480, depth_path=root / f"{base}.depth.png", depth_scale=1000.0))
    return frames


def build_points(frames, target: int, seed: int = 0) -> np.ndarray:
    """Back-project every 4th depth pixel of all frames, voxel-downsample, subsample to ``target``."""
    from sas3d.scene.images import read_depth

    clouds = []
    for frame in frames:
        depth = read_depth(frame)[::4, ::4]
        v, u = np.nonzero(depth > 0)
        z = depth[v, u].astype(np.float64)
        k = frame.intrinsics
        x = (u * 4 - k[0, 2]) * z / k[0, 0]
        y = (v * 4 - k[1, 2]) * z / k[1, 1]
        cam = np.stack([x, y, z], 1)
        clouds.append(cam @ frame.pose[:3, :3].T + frame.pose[:3, 3])
    cloud = np.concatenate(clouds)
    for voxel in np.geomspace(0.05, 0.004, 24):  # coarsest grid that still leaves >= target points
        cell = np.floor((cloud - cloud.min(0)) / voxel).astype(np.int64)
        key = (cell[:, 0] * (cell[:, 1].max() + 1) + cell[:, 1]) * (cell[:, 2].max() + 1) + cell[:, 2]
        _, first = np.unique(key, return_index=True)
        if len(first) >= target:
            break
    rng = np.random.default_rng(seed)
    chosen = rng.choice(first, size=min(target, len(first)), replace=False)
    return cloud[np.sort(chosen)].astype(np.float32)


def make_pool(pool: int, dim: int, seed: int) -> list[np.ndarray]:
    maps = []
    for i in range(pool):
        m = np.empty((MAP_H, MAP_W, dim), dtype=np.float32)
        np.random.default_rng(seed + i).random(out=m, dtype=np.float32)  # in place: no temporary copy
        maps.append(m)
    return maps


def numpy_reference(points: np.ndarray, frames, maps, border: int, threshold: float):
    """Straightforward per-frame NumPy fusion (same protocol as OpenScene's fusion scripts)."""
    from sas3d.scene.images import read_depth

    pts = points.astype(np.float64)
    dim = maps[0].shape[2]
    total = np.zeros((len(pts), dim), dtype=np.float32)
    count = np.zeros(len(pts), dtype=np.int32)
    for i, frame in enumerate(frames):
        fmap = maps[i % len(maps)]
        h, w = fmap.shape[:2]
        W, H = frame.width, frame.height
        depth = read_depth(frame)
        w2c = np.linalg.inv(frame.pose)
        cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        k = frame.intrinsics
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(cam[:, 0] * k[0, 0] / z + k[0, 2])
            v = np.round(cam[:, 1] * k[1, 1] / z + k[1, 2])
            inside = (z > 0) & (u >= border) & (v >= border) & (u < W - border) & (v < H - border)
        idx = np.nonzero(inside)[0]
        ui, vi = u[idx].astype(np.int64), v[idx].astype(np.int64)
        d = depth[vi, ui].astype(np.float64)
        visible = (d > 0) & (np.abs(d - z[idx]) <= threshold * d)
        idx, ui, vi = idx[visible], ui[visible], vi[visible]
        total[idx] += fmap[((2 * vi + 1) * h) // (2 * H), ((2 * ui + 1) * w) // (2 * W)]
        count[idx] += 1
    seen = count > 0
    total /= np.maximum(count, 1)[:, None]
    return total.astype(np.float16), seen


def current_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    points = np.load(args.points_file)
    frames = seven_scenes_frames(DATA, args.frames)
    maps = make_pool(args.pool, args.dim, args.seed)
    from sas3d.fusion.multiview import FusionConfig, fuse_frames, fuse_maps
    from sas3d.geometry.projection import projection_config_for
    from sas3d.scene.types import Scene

    proj = projection_config_for("7scenes")
    cfg = FusionConfig(proj, frame_group=args.frame_group) if args.frame_group else FusionConfig(proj)
    # Warm-up on 1000 points and one frame, like the imports not timed: loads numba's cached kernels
    # (a one-off per process, ~0.5 s) and gives NumPy the same first-touch of frame 0.
    if args.worker != "numpy":
        fuse_maps(Scene("warm-up", points[:1000], "7scenes", frames=frames[:1]), [(frames[0], maps[0])], cfg, progress=False)
    else:
        numpy_reference(points[:1000], frames[:1], maps, proj.border_margin, proj.depth_threshold)
    rss_before = current_rss_kib()  # after imports and map generation: only fusion's own memory counts
    start, cpu_start = time.perf_counter(), time.process_time()
    scene = Scene("redkitchen", points, "7scenes", frames=frames)
    if args.worker == "ours":
        out = fuse_maps(scene, ((f, maps[i % len(maps)]) for i, f in enumerate(frames)), cfg, progress=False)
        features, seen = out.features.numpy(), out.seen.numpy()
    elif args.worker == "ours2":  # two teachers, one pass: the first is the one-teacher run's, the second reads map i + 1
        pair = ((f, (maps[i % len(maps)], maps[(i + 1) % len(maps)])) for i, f in enumerate(frames))
        first, second = fuse_frames(scene, pair, cfg, teacher_names=["pool", "pool+1"], progress=False)
        features, seen = first.features.numpy(), first.seen.numpy()
        del second
    else:
        features, seen = numpy_reference(points, frames, maps, proj.border_margin, proj.depth_threshold)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.result:
        np.save(args.result + ".features.npy", features)
        np.save(args.result + ".seen.npy", seen)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_growth_mib": (peak - rss_before) / 1024, "seen": int(seen.sum())}))


def run_worker(kind: str, frames: int, args, points_file: str, result: str | None, frame_group: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--frames", str(frames), "--dim", str(args.dim),
           "--pool", str(args.pool), "--threads", str(args.threads), "--seed", str(args.seed), "--points-file", points_file,
           "--frame-group", str(frame_group)]
    if result:
        cmd += ["--result", result]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--pool", type=int, default=4, help="distinct random maps cycled over the frames")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for ours (1: the NumPy reference is single-threaded too, and the 2 cores here are shared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["ours", "ours2", "numpy"], help=argparse.SUPPRESS)
    parser.add_argument("--points-file", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--frame-group", type=int, default=0, help=argparse.SUPPRESS)  # 0: FusionConfig's default
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.worker:
        worker(args)
        return
    if not DATA.is_dir():
        raise SystemExit(f"benchmark data not found: {DATA}")

    frames = seven_scenes_frames(DATA, args.frames)
    points = build_points(seven_scenes_frames(DATA, 10**6), args.points, args.seed)
    n = len(points)
    print(f"7-Scenes redkitchen: {n} points, {len(frames)} frames, maps {MAP_H}x{MAP_W}x{args.dim} float32, "
          f"torch threads {args.threads} (ours: numba kernels; a background thread adds a group of frames' rows while the "
          f"caller requests the next group's maps, then both threads decode its depths, project its points and finish the adds), load average {os.getloadavg()[0]:.2f}")
    from sas3d.fusion.multiview import FusionConfig, frames_per_group

    cfg, map_bytes = FusionConfig(), MAP_H * MAP_W * args.dim * 4
    with tempfile.TemporaryDirectory() as tmp:
        points_file = os.path.join(tmp, "points.npy")
        np.save(points_file, points)
        small = max(1, len(frames) // 4)
        ours_small = run_worker("ours", small, args, points_file, None)
        ref = run_worker("numpy", len(frames), args, points_file, os.path.join(tmp, "ref"))
        ours = run_worker("ours", len(frames), args, points_file, os.path.join(tmp, "ours"))
        ours2 = run_worker("ours2", len(frames), args, points_file, os.path.join(tmp, "ours2"))
        pair_group = frames_per_group(cfg, 2 * map_bytes)  # two teachers' group size
        ours_pair_group = run_worker("ours", len(frames), args, points_file, None, frame_group=pair_group)
        a_feat, a_seen = np.load(os.path.join(tmp, "ours.features.npy")), np.load(os.path.join(tmp, "ours.seen.npy"))
        b_feat, b_seen = np.load(os.path.join(tmp, "ref.features.npy")), np.load(os.path.join(tmp, "ref.seen.npy"))
        c_feat, c_seen = np.load(os.path.join(tmp, "ours2.features.npy")), np.load(os.path.join(tmp, "ours2.seen.npy"))
        two_same = bool(np.array_equal(a_feat.view(np.uint16), c_feat.view(np.uint16)) and np.array_equal(a_seen, c_seen))

    diff = float(np.abs(a_feat.astype(np.float32) - b_feat.astype(np.float32)).max())
    seen_mismatch = int((a_seen != b_seen).sum())
    work = n * len(frames)
    print(f"seen: ours {ours['seen']} / {n} ({100 * ours['seen'] / n:.1f}%), numpy {ref['seen']}; "
          f"seen-mask mismatches: {seen_mismatch}")
    print(f"max abs difference (fp16 features): {diff:.3g}")
    print(f"numpy reference: {ref['seconds']:.2f} s (CPU {ref['cpu_seconds']:.2f} s), {work / ref['seconds']:.3g} points x views / s, "
          f"peak memory growth {ref['peak_growth_mib']:.0f} MiB")
    print(f"ours (fuse_maps, cpu): {ours['seconds']:.2f} s (CPU {ours['cpu_seconds']:.2f} s), {work / ours['seconds']:.3g} points x views / s, "
          f"peak memory growth {ours['peak_growth_mib']:.0f} MiB")
    print(f"ours peak memory growth: {small} frames {ours_small['peak_growth_mib']:.0f} MiB, "
          f"{len(frames)} frames {ours['peak_growth_mib']:.0f} MiB "
          f"(running sum alone: {n * args.dim * 4 / 2**20:.0f} MiB)")
    for teachers in (1, 2):
        group = frames_per_group(cfg, teachers * map_bytes)
        print(f"maps alive with a teacher making a new map per frame ({teachers} teacher(s)): groups of {group} frames, "
              f"at most {2 * group * teachers * map_bytes / 2**20:.0f} MiB of maps (FusionConfig.frame_group "
              f"{cfg.frame_group}, group_bytes {cfg.group_bytes / 2**20:.0f} MiB)")
    second, second_cpu = ours2["seconds"] - ours["seconds"], ours2["cpu_seconds"] - ours["cpu_seconds"]
    print(f"ours, 2 teachers in one pass (fuse_frames): {ours2['seconds']:.2f} s (CPU {ours2['cpu_seconds']:.2f} s) vs 1 teacher "
          f"{ours['seconds']:.2f} s (CPU {ours['cpu_seconds']:.2f} s): the second teacher costs {second:.2f} s "
          f"({100 * second / ours['seconds']:.0f}% of the one-teacher pass; CPU {second_cpu:.2f} s, "
          f"{100 * second_cpu / ours['cpu_seconds']:.0f}%); peak memory growth {ours2['peak_growth_mib']:.0f} MiB; "
          f"first teacher's features {'bit-identical to' if two_same else 'DIFFERENT from'} the one-teacher pass")
    same_group = ours2["seconds"] - ours_pair_group["seconds"]
    print(f"the same at equal group size (one teacher in groups of {pair_group} too: {ours_pair_group['seconds']:.2f} s): "
          f"the second teacher costs {same_group:.2f} s ({100 * same_group / ours_pair_group['seconds']:.0f}% of that pass)")
    print(f"CPU-time ratio (reference / ours): {ref['cpu_seconds'] / ours['cpu_seconds']:.1f}x; load average at the end {os.getloadavg()[0]:.2f}")
    print(f"fusion speed-up: {ref['seconds'] / ours['seconds']:.1f}x")
    if diff > MAX_FP16_DIFF or seen_mismatch or not two_same:
        raise SystemExit(f"FAIL: fusion disagrees with the NumPy reference (max diff {diff:.3g}, {seen_mismatch} seen mismatches) "
                         f"or the two-teacher pass with the one-teacher pass (identical: {two_same})")


if __name__ == "__main__":
    main()
