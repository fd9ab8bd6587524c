"""Rasterizer, procedural rooms, rendered ScanNet-layout frames, and `sas3d render-views`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from sas3d.demo.camera_path import camera_path, floor_plan, look_pose
from sas3d.demo.render import default_intrinsics, render_views
from sas3d.demo.rooms import TRAIN_TYPES, _Builder, build_embedded_dataset, generate_room
from sas3d.geometry.raster import pixel_labels, rasterize, shade

K = np.array([[100.0, 0.0, 31.5], [0.0, 100.0, 23.5], [0.0, 0.0, 1.0]])
W, H = 64, 48


def _ray_cast(tris: np.ndarray, k: np.ndarray, w: int, h: int) -> np.ndarray:
    """Brute-force reference: per pixel, intersect the camera ray with every triangle (identity pose)."""
    depth = np.zeros((h, w))
    kinv = np.linalg.inv(k)
    for v in range(h):
        for u in range(w):
            d = kinv @ np.array([u, v, 1.0])  # d_z = 1, so the ray parameter is the depth
            best = np.inf
            for a, b, c in tris:
                n = np.cross(b - a, c - a)
                t = n @ a / (n @ d)
                p = t * d
                # Inside test with 3-D barycentrics.
                s0, s1, s2 = (np.cross(b - a, p - a) @ n, np.cross(c - b, p - b) @ n, np.cross(a - c, p - c) @ n)
                if t > 0 and min(s0, s1, s2) >= 0 and t < best:
                    best = t
            depth[v, u] = best if np.isfinite(best) else 0.0
    return depth


def test_rasterizer_matches_ray_casting_on_tilted_triangles():
    # A tilted triangle (depth varies across it: tests perspective-correct 1/z interpolation)
    # partly occluded by a nearer fronto-parallel one.
    tris = np.array([
        [[-0.5, -0.4, 1.5], [0.6, -0.3, 3.0], [0.0, 0.5, 2.2]],
        [[-0.2, -0.1, 1.2], [0.15, -0.1, 1.2], [0.0, 0.2, 1.2]],
    ])
    verts = tris.reshape(-1, 3)
    faces = np.arange(6).reshape(2, 3)
    depth, fid = rasterize(verts, faces, K, np.eye(4), W, H)
    ref = _ray_cast(tris, K, W, H)
    both = (depth > 0) & (ref > 0)
    # Coverage agrees except possibly on pixels whose centre lies exactly on an edge.
    assert ((depth > 0) != (ref > 0)).sum() <= 3
    assert both.sum() > 300
    np.testing.assert_allclose(depth[both], ref[both], rtol=1e-5)
    # The nearer triangle wins where they overlap, and face ids follow the depth.
    assert (fid[np.isclose(depth, 1.2)] == 1).all() and (fid[(depth > 0) & ~np.isclose(depth, 1.2)] == 0).all()
    assert (fid[depth == 0] == -1).all()


def test_depth_of_known_box_face_with_a_posed_camera():
    b = _Builder(np.random.default_rng(0), edge=0.05)
    b.box((-0.5, 1.0, 0.0), (0.5, 1.6, 1.0), (200, 100, 50), 6)  # front face at y = 1.0
    mesh = b.mesh("test", (1, 1), [])
    # Camera 2 m in front of the face at mid height, looking along +y, level.
    pose = look_pose(np.array([0.0, -1.0, 0.5]), yaw=math.pi / 2, pitch=0.0)
    depth, fid, bary = rasterize(mesh.vertices, mesh.faces, K, pose, W, H, return_barycentric=True)
    assert depth[23, 31] == pytest.approx(2.0, abs=1e-5)
    # The face spans x in [-0.5, 0.5] at 2 m: |u - cx| <= 0.25 * fx = 25 px; rows likewise |v - cy| <= 25.
    face_px = np.isclose(depth, 2.0, atol=1e-4)
    cols = np.where(face_px.any(axis=0))[0]
    assert cols.min() == math.ceil(31.5 - 25) and cols.max() == math.floor(31.5 + 25)
    # Top of the box (z = 1.0) is at the camera's eye level + 0.5: above the image centre (y down).
    assert face_px[0, 31] and face_px[47, 31]
    colors = shade(fid, mesh.faces, mesh.colors, bary)
    assert np.abs(colors[face_px].astype(int) - [200, 100, 50]).max() < 40  # vertex colour noise only
    assert (pixel_labels(fid, mesh.faces, mesh.labels)[face_px] == 6).all()


def test_near_plane_skips_triangles_behind_camera():
    verts = np.array([[-1.0, -1.0, -0.5], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]])
    depth, fid = rasterize(verts, np.array([[0, 1, 2]]), K, np.eye(4), W, H)
    assert (depth == 0).all() and (fid == -1).all()


def test_pixel_labels_majority_vote():
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    labels = np.array([4, 7, 7, 1, 2, 3])
    fid = np.array([[0, 1, -1]])
    bary = np.array([[[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0, 0, 0]]], np.float32)
    out = pixel_labels(fid, faces, labels, bary)
    assert out.tolist() == [[7, 2, 255]]  # majority 7; no majority -> largest weight (vertex 4 -> 2); empty -> 255


def test_generate_room_deterministic_labels_valid_and_dense():
    a, b = generate_room(3, "living"), generate_room(3, "living")
    for x, y in ((a.vertices, b.vertices), (a.faces, b.faces), (a.colors, b.colors), (a.labels, b.labels)):
        np.testing.assert_array_equal(x, y)
    c = generate_room(4, "living")
    assert c.vertices.shape != a.vertices.shape or not np.array_equal(c.vertices, a.vertices)
    assert 25_000 <= len(a.vertices) <= 100_000
    assert a.faces.min() >= 0 and a.faces.max() < len(a.vertices)
    assert set(np.unique(a.labels)) <= set(range(20)) | {255}
    e = a.vertices[a.faces]
    edges = np.linalg.norm(e[:, 0] - e[:, 1], axis=1)
    assert np.median(edges) <= 0.06 and np.percentile(edges, 99) <= 0.1  # dense enough for per-vertex labels
    # Room inside its footprint, floor at z = 0, no ceiling.
    assert a.vertices[:, 2].min() == pytest.approx(0.0, abs=1e-6) and a.vertices[:, 2].max() < 2.7
    floor = a.labels == 1
    assert np.abs(a.vertices[floor, 2]).max() < 1e-6


def test_training_room_types_cover_all_scannet20_classes():
    seen = set()
    for i, t in enumerate(TRAIN_TYPES):
        seen |= set(np.unique(generate_room(i, t).labels).tolist())
    assert set(range(20)) <= seen


def test_camera_path_stays_in_free_floor_area():
    room = generate_room(0, "living")
    plan = floor_plan(room.vertices)
    poses = camera_path(room.vertices, 12, seed=1)
    sx, sy = room.size
    for p in poses:
        x, y, z = p[:3, 3]
        assert 0.2 < x < sx - 0.2 and 0.2 < y < sy - 0.2 and 1.25 < z < 1.65
        # Not above a blocked cell (furniture / walls) near the camera position.
        assert plan.is_free(np.array([x, y])) or plan.is_free(np.array([x, y]) + 0.1) or plan.is_free(np.array([x, y]) - 0.1)
        assert p[2, 2] < -0.2  # looks down
        np.testing.assert_allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-9)


def test_build_embedded_dataset_layout_reuse_and_load(tmp_path):
    out = tmp_path / "data"
    dirs = build_embedded_dataset(out, n_train=1, n_val=1, n_views=3, width=64, height=48, progress=False)
    assert [p.name for p in dirs["train"]] == ["scene9000_00"] and len(dirs["val"]) == 1
    scene = dirs["train"][0]
    for f in ("scene9000_00_vh_clean_2.ply", "scene9000_00_vh_clean_2.labels.ply", "intrinsic/intrinsic_depth.txt"):
        assert (scene / f).is_file()
    assert sorted(int(p.stem) for p in (scene / "color").glob("*.jpg")) == [0, 20, 40]
    for sub, ext in (("depth", "png"), ("pose", "txt"), ("label", "png")):
        assert sorted(int(p.stem) for p in (scene / sub).glob(f"*.{ext}")) == [0, 20, 40]
    depth = np.asarray(Image.open(scene / "depth" / "20.png"))
    assert depth.dtype == np.uint16 and depth.shape == (48, 64) and (depth > 0).mean() > 0.7
    label = np.asarray(Image.open(scene / "label" / "20.png"))
    assert set(np.unique(label)) <= set(range(20)) | {255}

    # Depth + pose + intrinsics are consistent: back-projected pixels land on the mesh.
    from scipy.spatial import cKDTree

    room = generate_room(0, "living")
    k = np.loadtxt(scene / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    pose = np.loadtxt(scene / "pose" / "20.txt")
    vs, us = np.nonzero(depth)
    z = depth[vs, us] / 1000.0
    cam = np.stack([(us - k[0, 2]) * z / k[0, 0], (vs - k[1, 2]) * z / k[1, 1], z], axis=1)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    dist, _ = cKDTree(room.vertices).query(world)
    assert np.median(dist) < 0.03 and np.percentile(dist, 95) < 0.06

    # Second call with the same parameters reuses the build; other parameters rebuild.
    stamp = (out / "embedded.json").stat().st_mtime_ns
    build_embedded_dataset(out, n_train=1, n_val=1, n_views=3, width=64, height=48, progress=False)
    assert (out / "embedded.json").stat().st_mtime_ns == stamp
    build_embedded_dataset(out, n_train=1, n_val=1, n_views=2, width=64, height=48, progress=False)
    assert json.loads((out / "embedded.json").read_text())["params"]["n_views"] == 2
    assert len(list((scene / "color").glob("*.jpg"))) == 2

    from sas3d.scene.readers import load_scene

    loaded = load_scene(scene, frame_stride=1)
    assert len(loaded.frames) == 2 and loaded.num_points == len(room.vertices)
    np.testing.assert_array_equal(loaded.labels, room.labels)  # NYU40 round trip back to ScanNet20
    assert loaded.frames[0].width == 64 and loaded.frames[0].label_path is not None


def test_render_views_on_real_scannet_mesh(shared_data, tmp_path, capsys):
    from sas3d.cli import main

    mesh = shared_data / "scannet_scene0470_00" / "scene0470_00_vh_clean_2.ply"
    out = tmp_path / "scene0470_00"
    assert main(["render-views", str(mesh), "--out", str(out), "--views", "4", "--width", "160", "--height", "120"]) == 0
    printed = capsys.readouterr().out
    assert "vertex coverage" in printed
    assert (out / "scene0470_00_vh_clean_2.ply").is_file() and (out / "scene0470_00_vh_clean_2.labels.ply").is_file()
    for n in (0, 20, 40, 60):
        depth = np.asarray(Image.open(out / "depth" / f"{n}.png"))
        assert depth.shape == (120, 160) and (depth > 0).mean() > 0.7
        label = np.asarray(Image.open(out / "label" / f"{n}.png"))
        assert set(np.unique(label)) <= set(range(20)) | {255}
        assert (label < 255).mean() > 0.5  # the classroom is mostly labelled
        # Camera inside the room's horizontal extent.
        pose = np.loadtxt(out / "pose" / f"{n}.txt")
        assert 0.0 < pose[0, 3] < 3.5 and 0.0 < pose[1, 3] < 2.9

    from sas3d.scene.readers import load_scene

    scene = load_scene(out, frame_stride=1)
    assert len(scene.frames) == 4 and scene.labels is not None


def test_render_views_without_labels_writes_no_label_folder(tmp_path):
    room = generate_room(1, "bathroom")
    rep = render_views(room.vertices, room.faces, room.colors, None, tmp_path, n_views=2, width=48, height=36, progress=False)
    assert rep.frames == [0, 20] and not (tmp_path / "label").exists()
    assert 0.0 < rep.coverage < 1.0
    np.testing.assert_allclose(rep.intrinsics, default_intrinsics(48, 36))
    assert not list(tmp_path.glob(".render-*"))  # temporary folder cleaned up
