"""Projection + visibility (OpenScene protocol) against a brute-force per-point loop."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sas3d.errors import ConfigError
from sas3d.geometry.projection import ProjectionConfig, project_points, projection_config_for
from sas3d.scene.types import Frame

W, H = 64, 48
K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])


def look_pose(rng: np.random.Generator) -> np.ndarray:
    """A random camera-to-world pose: small rotation about a random axis plus a translation."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-0.4, 0.4)
    x = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * x + (1 - np.cos(angle)) * x @ x
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = rng.normal(scale=0.3, size=3)
    return pose


def frame(pose: np.ndarray) -> Frame:
    return Frame(Path("f.jpg"), K, pose, W, H)


def brute_force(points, pose, depth, margin, t):
    """Per-point Python loop of the protocol: inverse pose, pinhole, round, margin, depth test."""
    w2c = np.linalg.inv(pose)
    out = set()
    for i, p in enumerate(points.astype(np.float64)):
        x, y, z = w2c[:3, :3] @ p + w2c[:3, 3]
        if z <= 0:
            continue
        u = round(x * K[0, 0] / z + K[0, 2])  # Python round: half to even, like np.round
        v = round(y * K[1, 1] / z + K[1, 2])
        if not (margin <= u < W - margin and margin <= v < H - margin):
            continue
        if depth is not None:
            d = float(depth[v, u])
            if d <= 0 or abs(d - z) > t * d:
                continue
        out.add((i, v * W + u))
    return out


def scene_for(pose, rng, n=400):
    """A depth map with holes and points near/off its surface (some pass the test, some fail)."""
    depth = rng.uniform(1.0, 4.0, size=(H, W)).astype(np.float32)
    depth[rng.random((H, W)) < 0.2] = 0.0
    u = rng.uniform(-8, W + 8, n)  # some land outside the image
    v = rng.uniform(-8, H + 8, n)
    ui = np.clip(np.round(u).astype(int), 0, W - 1)
    vi = np.clip(np.round(v).astype(int), 0, H - 1)
    z = np.where(depth[vi, ui] > 0, depth[vi, ui], 2.0) * rng.uniform(0.6, 1.4, n)
    z[: n // 10] *= -1  # behind the camera
    cam = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], 1)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    return world.astype(np.float32), depth


@pytest.mark.parametrize("use_depth", [True, False])
@pytest.mark.parametrize("margin", [0, 5])
def test_projection_matches_brute_force(use_depth, margin):
    rng = np.random.default_rng(3)
    cfg = ProjectionConfig(border_margin=margin, depth_threshold=0.25)
    total_seen = 0
    for _ in range(3):
        pose = look_pose(rng)
        points, depth = scene_for(pose, rng)
        d = torch.from_numpy(depth) if use_depth else None
        point_idx, pixel_idx = project_points(torch.from_numpy(points), frame(pose), d, cfg)
        got = set(zip(point_idx.tolist(), pixel_idx.tolist()))
        expected = brute_force(points, pose, depth if use_depth else None, margin, 0.25)
        assert got == expected
        assert torch.all(point_idx[1:] > point_idx[:-1])  # ascending, unique
        total_seen += len(got)
    assert total_seen > 50  # the fixture exercises visible points, not only rejections


def test_occlusion_wall():
    """A point on the wall is seen; one behind it (occluded) and one far in front are not."""
    depth = torch.full((H, W), 2.0)
    depth[:, :8] = 0.0  # invalid depth: nothing seen there
    cam_pts = np.array(
        [
            [0.0, 0.0, 2.0],  # on the wall
            [0.0, 0.0, 3.0],  # behind the wall
            [0.0, 0.0, 2.4],  # 0.4 m behind: within t * d = 0.5 -> still seen
            [0.0, 0.0, 1.0],  # far in front: depth disagrees -> not seen
            [(5 - K[0, 2]) * 2.0 / K[0, 0], 0.0, 2.0],  # on the wall at an invalid depth pixel (u = 5)
        ],
        dtype=np.float32,
    )
    point_idx, _ = project_points(torch.from_numpy(cam_pts), frame(np.eye(4)), depth, ProjectionConfig(border_margin=0))
    assert point_idx.tolist() == [0, 2]


def test_no_depth_visibility_nuscenes():
    """Without depth: z > 0 and inside the image minus the margin (nuScenes)."""
    cfg = projection_config_for("nuscenes")
    assert cfg.border_margin == 5
    pts = np.array(
        [
            [0.0, 0.0, 10.0],  # centre, far away: seen (no occlusion test)
            [0.0, 0.0, -10.0],  # behind the camera
            [100.0, 0.0, 10.0],  # far right, outside the image
            [(2 - K[0, 2]) * 10 / K[0, 0], 0.0, 10.0],  # u = 2: inside image, inside the 5 px margin
            [(5 - K[0, 2]) * 10 / K[0, 0], 0.0, 10.0],  # u = 5: first column kept
        ],
        dtype=np.float32,
    )
    point_idx, pixel_idx = project_points(torch.from_numpy(pts), frame(np.eye(4)), None, cfg)
    assert point_idx.tolist() == [0, 4]
    v = round(K[1, 2])
    assert pixel_idx.tolist() == [v * W + round(K[0, 2]), v * W + 5]


def test_config_per_kind():
    for kind in ("scannet", "7scenes", "embedded"):
        cfg = projection_config_for(kind)
        assert (cfg.border_margin, cfg.depth_threshold) == (10, 0.25)
    assert projection_config_for("matterport").depth_threshold == 0.02
    with pytest.raises(ConfigError):
        projection_config_for("kitti")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    pose = look_pose(rng)
    points, depth = scene_for(pose, rng)
    cpu = project_points(torch.from_numpy(points), frame(pose), torch.from_numpy(depth))
    gpu = project_points(torch.from_numpy(points).cuda(), frame(pose), torch.from_numpy(depth).cuda())
    assert gpu[0].is_cuda
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


def test_real_7scenes_backprojection_roundtrip(shared_data):
    """Depth pixels of a real 7-Scenes frame, back-projected to world, project back onto themselves."""
    from sas3d.scene.images import read_depth

    root = shared_data / "7scenes_redkitchen"
    pose = np.loadtxt(root / "frame-000100.pose.txt").reshape(4, 4)
    k = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
    frame = Frame(root / "frame-000100.color.jpg", k, pose, 640, 480, depth_path=root / "frame-000100.depth.png")
    depth = read_depth(frame)
    v, u = np.mgrid[0:480:7, 0:640:7]
    v, u = v.ravel(), u.ravel()
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - 320.0) * z / 585.0, (v - 240.0) * z / 585.0, z], 1)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    point_idx, pixel_idx = project_points(torch.from_numpy(world), frame, torch.from_numpy(depth), projection_config_for("7scenes"))
    expected = np.nonzero((z > 0) & (u >= 10) & (u < 630) & (v >= 10) & (v < 470))[0]
    assert len(expected) > 3000
    np.testing.assert_array_equal(point_idx.numpy(), expected)
    np.testing.assert_array_equal(pixel_idx.numpy(), v[expected] * 640 + u[expected])
