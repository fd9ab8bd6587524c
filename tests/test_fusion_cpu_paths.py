"""The CPU fusion path's speed devices give the results they replace: frustum culling of point runs,
pair-balanced add tasks, the shared task queue, and numba's on-disk cache of the kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sas3d.fusion.kernels import project_kernel, run_boxes
from sas3d.fusion.accumulate import Projector, pair_balanced_bounds
from sas3d.fusion.multiview import FusionConfig
from sas3d.fusion.overlap import Overlap
from sas3d.geometry.projection import ProjectionConfig, project_points
from sas3d.scene.types import Frame

REPO = Path(__file__).resolve().parents[1]
W, H = 64, 48
K = np.array([[4.0, 0, 32.0], [0, 4.0, 24.0], [0, 0, 1]])  # u = 4 x / z + 32: dyadic, exact pixel coordinates


def border_points(margin: int, rng: np.random.Generator) -> np.ndarray:
    """Points whose pixel coordinates sit on, just inside and just outside every rounding threshold of the
    margin (u = margin - 0.5 rounds to even, ...), at depth 1 in the camera frame of the identity pose, in
    runs of 4 nearly coincident points (so their boxes are tiny), plus points near the camera plane."""
    edges_u = [margin - 0.5, W - margin - 0.5, margin - 1.5, W - margin + 0.5]
    edges_v = [margin - 0.5, H - margin - 0.5, margin - 1.5, H - margin + 0.5]
    pts = []
    for eps in (0.0, 1e-9, -1e-9, 1e-4, -1e-4, 0.49, -0.49):
        for u in edges_u:
            pts.append(((u + eps - 32.0) / 4.0, rng.uniform(-5, 5), 1.0))
        for v in edges_v:
            pts.append((rng.uniform(-7, 7), (v + eps - 24.0) / 4.0, 1.0))
    for z in (1e-12, -1e-12, 1e-6, -1e-6):  # at the camera plane: huge or undefined pixels
        pts.append((0.0, 0.0, z))
        pts.append((1e-13, -1e-13, z))
    runs = np.repeat(np.array(pts), 4, axis=0)
    return runs + rng.normal(scale=1e-12, size=runs.shape)


@pytest.mark.parametrize("margin", [0, 3])
def test_culling_keeps_every_visible_point(margin):
    """With boxes around runs of 4 points (many runs wholly outside, many straddling a border by a hair)
    the numba projection lists exactly the pairs of the torch path, which projects every point."""
    rng = np.random.default_rng(margin)
    points = np.concatenate([border_points(margin, rng), rng.uniform(-30, 30, size=(400, 3))])  # and far off-frustum points
    frames = [Frame(Path("f.jpg"), K, np.eye(4), W, H)]
    for _ in range(3):  # random poses of the same points
        angle = rng.uniform(-0.3, 0.3)
        pose = np.eye(4)
        pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
        frames.append(Frame(Path("f.jpg"), K, pose, W, H))
    cfg = ProjectionConfig(border_margin=margin, use_depth=False)
    projector = Projector(points, torch.device("cpu"), FusionConfig(cfg, point_order="input"))
    projector.run_size = 4
    projector.runs = run_boxes(projector.points, 4)
    invisible_runs = 0
    for frame in frames:
        point_idx, pixel_idx = projector.visible(frame, None)
        ref_points, ref_pixels = project_points(torch.from_numpy(points.astype(np.float64)), frame, None, cfg)
        assert np.array_equal(point_idx, ref_points.numpy()) and np.array_equal(pixel_idx, ref_pixels.numpy())
        invisible_runs += len(points) // 4 - len(set((point_idx // 4).tolist()))
    assert invisible_runs > 100  # runs without a visible point: the ones culling may skip


def test_a_run_whose_box_lies_outside_the_frustum_is_not_projected():
    """The kernel trusts the boxes: a run given a box behind the camera is skipped although its points are
    visible, so the boxes are what decides (and the test above checks they never drop a visible point)."""
    points = np.array([[0.0, 0.0, 1.0]] * 4 + [[0.5, 0.5, 1.0]] * 4)
    centre, half = run_boxes(points, 4)
    assert np.allclose(centre, [[0, 0, 1], [0.5, 0.5, 1]]) and np.allclose(half, 0)
    lying = centre.copy()
    lying[0] = (0.0, 0.0, -5.0)
    buffers = np.empty((2, len(points)), dtype=np.int64)
    kernel = project_kernel()
    args = (points, np.eye(4)[:3].copy(), 4.0, 4.0, 32.0, 24.0, W, H, 0, np.zeros((1, 1), np.float32), False, 0.1)
    assert kernel(*args, centre, half, 4, *buffers) == 8
    assert kernel(*args, lying, half, 4, *buffers) == 4 and buffers[0, :4].tolist() == [4, 5, 6, 7]


def test_run_boxes_hold_their_points_and_ignore_non_finite_ones():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(37, 3)) * 100
    points[5] = np.nan
    points[32:] = np.inf  # the last run has no finite point
    centre, half = run_boxes(points, 8)
    assert centre.shape == (5, 3)
    for r in range(4):
        run = points[8 * r:8 * r + 8]
        run = run[np.isfinite(run).all(axis=1)]
        assert np.all(run >= centre[r] - half[r] - 1e-9) and np.all(run <= centre[r] + half[r] + 1e-9)
        assert np.allclose(centre[r] - half[r], run.min(axis=0)) and np.allclose(centre[r] + half[r], run.max(axis=0))
    assert np.isnan(centre[4]).all()


def test_pair_balanced_bounds_split_the_pairs_evenly():
    """The add tasks' point ranges cover every point once and hold about equal numbers of (point, pixel)
    pairs, where equal point ranges would not: here all pairs sit in two narrow runs of the points."""
    rng = np.random.default_rng(1)
    n = 100_000
    frames = [np.sort(np.concatenate([rng.choice(np.arange(1000, 6000), 3000, replace=False),
                                      rng.choice(np.arange(90_000, 91_000), 500, replace=False)])) for _ in range(8)]
    point_idx = np.concatenate(frames)
    bounds = pair_balanced_bounds(point_idx, n, 32)
    assert bounds[0] == 0 and bounds[-1] == n and all(a < b for a, b in zip(bounds, bounds[1:]))
    assert len(bounds) - 1 <= 32
    counts = np.histogram(point_idx, bins=bounds)[0]  # brute force: pairs per range
    assert counts.max() <= 2 * len(point_idx) / 32
    equal = np.histogram(point_idx, bins=np.linspace(0, n, 33))[0]
    assert equal.max() > 10 * counts.max()  # equal point ranges: one task gets nearly everything
    assert pair_balanced_bounds(np.zeros(0, np.int64), n, 32) == [0, n]


def test_overlap_takes_tasks_submitted_while_busy_and_the_caller_takes_the_newest():
    """A second batch may be submitted while the background thread works on the first; finish() runs the
    newest tasks in the caller's thread first and returns only when both batches have run."""
    overlap = Overlap()
    try:
        started = threading.Event()
        release = threading.Event()
        ran: list[tuple[str, str]] = []

        def slow():
            started.set()
            release.wait(5)
            ran.append(("slow", threading.current_thread().name))

        overlap.submit([slow])
        assert started.wait(5)  # the background thread holds the first batch
        overlap.submit([lambda k=k: ran.append((f"new{k}", threading.current_thread().name)) for k in range(3)])
        threading.Timer(0.2, release.set).start()
        overlap.finish()
        assert sorted(name for name, _ in ran) == ["new0", "new1", "new2", "slow"]
        assert [name for name, thread in ran if thread == threading.current_thread().name] == ["new2", "new1", "new0"]
    finally:
        overlap.close()


def test_add_kernel_is_loaded_from_numbas_cache_in_a_new_process(tmp_path):
    """The row-add kernel compiles once and later processes load it from disk. Before, its prefetch
    intrinsic sat in the kernel's closure, numba keyed the cache by the pickled closure, which differs in
    every process: each process compiled again (1-2.5 s) and added another cache entry."""
    code = (
        "import numpy as np, json\n"
        "from sas3d.fusion.kernels import add_group_kernel\n"
        "k = add_group_kernel()\n"
        "tables = (np.zeros((10, 4), np.float32),) * 2\n"
        "one = np.ones(2, np.int64)\n"
        "k(0, 1, 512, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(3, np.int64), one, one, tables, one, one,"
        " np.zeros((10, 4), np.float32), np.zeros(10, np.int32))\n"
        "print(json.dumps({'hits': sum(k.stats.cache_hits.values()), 'misses': sum(k.stats.cache_misses.values())}))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first == {"hits": 0, "misses": 1}
    assert second == {"hits": 1, "misses": 0}
    assert len(list(tmp_path.rglob("*add_group*.nbc"))) == 1


def test_a_bad_depth_png_decoded_by_either_thread_stops_fusion_naming_it(tmp_path):
    """Depth PNGs are decoded in tasks that either fusion thread may run: a corrupt one still stops
    fusion with an InputError naming the file, and fusion works again afterwards (no thread left hanging)."""
    from sas3d.errors import InputError
    from sas3d.fusion.multiview import fuse_teachers_multiview
    from tests.test_fusion_multiteacher import PROJECTION, random_scene

    scene, teachers = random_scene(tmp_path)
    cfg = FusionConfig(PROJECTION, frame_group=2)
    good = fuse_teachers_multiview(scene, teachers, cfg, progress=False)
    bad = scene.frames[2].depth_path
    original = bad.read_bytes()
    bad.write_bytes(original[:40])  # a truncated PNG
    with pytest.raises(InputError) as err:
        fuse_teachers_multiview(scene, teachers, cfg, progress=False)
    assert str(bad) in str(err.value)
    assert not any(t.name == "sas3d-fuse" for t in threading.enumerate())  # the background thread was stopped
    bad.write_bytes(original)
    again = fuse_teachers_multiview(scene, teachers, cfg, progress=False)
    for a, b in zip(good, again):
        assert torch.equal(a.features, b.features) and torch.equal(a.seen, b.seen)
