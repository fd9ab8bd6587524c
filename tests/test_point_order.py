"""Morton order of points (sas3d.geometry.order) and fusion in that order (FusionConfig.point_order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sas3d.fusion.multiview import FusionConfig, fuse_maps, map_rows
from sas3d.geometry.order import morton_codes, morton_order
from sas3d.geometry.projection import ProjectionConfig, project_points
from sas3d.scene.types import Frame, Scene


def _interleave(x: int, y: int, z: int) -> int:
    """Brute-force Morton code: bit b of x, y, z to bits 3b, 3b + 1, 3b + 2."""
    return sum(((x >> b) & 1) << (3 * b) | ((y >> b) & 1) << (3 * b + 1) | ((z >> b) & 1) << (3 * b + 2) for b in range(21))


def test_morton_codes_interleave_the_bits():
    assert morton_codes(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [2, 0, 0]])).tolist() == [1, 2, 4, 7, 8]
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 1 << 21, size=(200, 3))
    assert morton_codes(cells).tolist() == [_interleave(*map(int, c)) for c in cells]
    with pytest.raises(ValueError, match="2\\^21"):
        morton_codes(np.array([[1 << 21, 0, 0]]))


def test_morton_order_groups_octree_cells_and_is_scale_free():
    rng = np.random.default_rng(1)
    # 8 clusters at the corners of a cube, points shuffled: in Morton order each cluster is one run
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
    cluster = rng.integers(0, 8, size=400)
    points = corners[cluster] * 10 + rng.uniform(0, 1, size=(400, 3))
    order = morton_order(points)
    assert sorted(order.tolist()) == list(range(400))
    runs = 1 + int(np.count_nonzero(np.diff(cluster[order])))
    assert runs == 8
    np.testing.assert_array_equal(morton_order(points * 1000.0 - 5.0), order)
    points[[3, 7]] = [np.nan, 0.0, 0.0], [np.inf, 1.0, 1.0]  # non-finite points last, in input order
    assert morton_order(points)[-2:].tolist() == [3, 7]


def _brute_force_mean(points, frames, maps, cfg):
    """Per point: the float64 mean of the map rows of the frames that see it (project_points)."""
    total = np.zeros((len(points), maps[0].shape[2]))
    count = np.zeros(len(points), dtype=np.int64)
    for frame, fmap in zip(frames, maps):
        idx, pix = project_points(torch.from_numpy(points), frame, None, cfg)
        rows = map_rows(pix, frame.width, frame.height, fmap.shape[1], fmap.shape[0]).numpy()
        for i, r in zip(idx.numpy(), rows):
            total[i] += fmap.reshape(-1, fmap.shape[2])[r]
            count[i] += 1
    return total / np.maximum(count, 1)[:, None], count > 0


def test_fusion_in_morton_order_returns_the_scene_order():
    """Fused in Morton order (the default) and in the scene's order: the same float16 features and seen
    mask bit for bit, each point's own (brute force), although the orders differ."""
    rng = np.random.default_rng(2)
    points = rng.uniform([-1, -1, 1.0], [1, 1, 3], size=(700, 3)).astype(np.float32)
    k = np.array([[30.0, 0, 32.0], [0, 30.0, 24.0], [0, 0, 1]])
    frames = []
    for i in range(5):
        pose = np.eye(4)
        pose[:3, 3] = [0.1 * i - 0.2, 0.05 * i, 0.0]
        frames.append(Frame(Path(f"{i}.jpg"), k, pose, 64, 48))
    maps = [rng.normal(size=(12, 16, 5)).astype(np.float32) for _ in frames]
    scene = Scene("shuffled", points, "scannet", frames=frames)
    proj = ProjectionConfig(border_margin=0)
    assert not np.array_equal(morton_order(points), np.arange(len(points)))
    out = {o: fuse_maps(scene, zip(frames, maps), FusionConfig(proj, point_order=o), progress=False) for o in ("morton", "input")}
    assert torch.equal(out["morton"].features, out["input"].features) and torch.equal(out["morton"].seen, out["input"].seen)
    mean, seen = _brute_force_mean(points, frames, maps, proj)
    assert 100 < seen.sum() < len(points)
    np.testing.assert_array_equal(out["morton"].seen.numpy(), seen)
    np.testing.assert_allclose(out["morton"].features.float().numpy(), mean, atol=2e-3, rtol=1e-3)


def test_point_order_is_checked():
    from sas3d.errors import ConfigError

    scene = Scene("s", np.zeros((3, 3), np.float32), "scannet", frames=[])
    with pytest.raises(ConfigError, match="point_order"):
        fuse_maps(scene, [], FusionConfig(point_order="hilbert"), progress=False)
