"""Scene I/O: PLY reader/writer, the five layout readers, depth/colour reading and input validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sas3d import load_scene
from sas3d.scene.images import read_color, read_depth
from sas3d.scene.ply import read_ply, write_ply
from sas3d.scene.readers import detect_layout
from sas3d.scene.types import IGNORE_LABEL

# --------------------------------------------------------------------------- fixture writers


def _save_png16(path: Path, depth_raw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(depth_raw.astype(np.uint16)).save(path)


def _save_jpg(path: Path, w: int, h: int, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _pose(t=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


K_TINY = np.array([[4.0, 0, 2.0], [0, 4.0, 1.5], [0, 0, 1]])


def k_centred(w: int, h: int, f: float | None = None) -> np.ndarray:
    """Intrinsics of a w x h camera with its principal point at the image centre (pixel centres at integers)."""
    f = float(w) if f is None else f
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])


def make_7scenes(root: Path, n: int = 3, w: int = 4, h: int = 3, depth_mm: int = 2000) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "camera-intrinsics.txt", K_TINY)
    for i in range(n):
        stem = f"frame-{i:06d}"
        _save_jpg(root / f"{stem}.color.jpg", w, h)
        raw = np.full((h, w), depth_mm, np.uint16)
        raw[0, 0] = 0  # invalid
        raw[0, 1] = 65535  # 7-Scenes invalid marker
        _save_png16(root / f"{stem}.depth.png", raw)
        np.savetxt(root / f"{stem}.pose.txt", _pose((float(i), 0.0, 0.0)))
    return root


def make_scannet(root: Path, frame_ids=(), depth_wh=(8, 6), color_wh=(16, 12), labels_for=()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3]])
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    write_ply(root / "sceneX_00_vh_clean_2.ply", pts, rgb, faces)
    nyu = np.array([1, 5, 0, 39], np.uint16)  # wall, chair, unlabeled, otherfurniture
    write_ply(root / "sceneX_00_vh_clean_2.labels.ply", pts, rgb, faces, {"label": nyu})
    if frame_ids:
        k4 = np.eye(4)
        k4[:3, :3] = k_centred(*depth_wh)
        (root / "intrinsic").mkdir(exist_ok=True)
        np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", k4)
    for n in frame_ids:
        _save_jpg(root / "color" / f"{n}.jpg", *color_wh)
        _save_png16(root / "depth" / f"{n}.png", np.full(depth_wh[::-1], 1500))
        (root / "pose").mkdir(exist_ok=True)
        np.savetxt(root / "pose" / f"{n}.txt", _pose((n, 0, 0)))
        if n in labels_for:
            _save_png16(root / "label" / f"{n}.png", np.zeros(depth_wh[::-1]))
    return root


# --------------------------------------------------------------------------- PLY

TINY_ASCII = """ply
format ascii 1.0
comment hand written
element vertex 4
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
property ushort label
element face 2
property list uchar int vertex_indices
end_header
0 0 0 255 0 0 3
1.5 0 0 0 255 0 7
0 2 0 0 0 255 65535
0 0 -3.25 10 20 30 0
3 0 1 2
4 0 1 2 3
"""


def test_read_hand_written_ascii_ply(tmp_path):
    p = tmp_path / "tiny.ply"
    p.write_text(TINY_ASCII)
    d = read_ply(p)
    np.testing.assert_array_equal(d.points(), [[0, 0, 0], [1.5, 0, 0], [0, 2, 0], [0, 0, -3.25]])
    np.testing.assert_array_equal(d.colors(), [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]])
    assert d.vertex["label"].dtype == np.uint16
    np.testing.assert_array_equal(d.vertex["label"], [3, 7, 65535, 0])
    # triangle + quad (fan-triangulated into two triangles)
    np.testing.assert_array_equal(d.faces, [[0, 1, 2], [0, 1, 2], [0, 2, 3]])
    assert d.comments == ["hand written"]


def test_read_hand_built_binary_ply_int_counts(tmp_path):
    import struct

    header = (
        "ply\nformat binary_big_endian 1.0\nelement vertex 3\nproperty double x\nproperty double y\n"
        "property double z\nproperty short temp\nelement face 1\nproperty list int uint vertex_index\n"
        "element edge 1\nproperty int vertex1\nproperty int vertex2\nend_header\n"
    )
    body = b"".join(struct.pack(">dddh", *row) for row in [(1, 2, 3, -7), (4, 5, 6, 8), (7, 8, 9.5, 300)])
    body += struct.pack(">iIII", 3, 2, 0, 1) + struct.pack(">ii", 0, 2)
    p = tmp_path / "be.ply"
    p.write_bytes(header.encode() + body)
    d = read_ply(p)
    np.testing.assert_array_equal(d.points(), [[1, 2, 3], [4, 5, 6], [7, 8, 9.5]])
    np.testing.assert_array_equal(d.vertex["temp"], [-7, 8, 300])
    np.testing.assert_array_equal(d.faces, [[2, 0, 1]])


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
def test_ply_round_trip(tmp_path, fmt):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    faces = rng.integers(0, 50, (30, 3))
    props = {
        "label": rng.integers(0, 300, 50).astype(np.uint16),
        "superpoint": rng.integers(-5, 10**6, 50).astype(np.int64),
        "score": rng.random(50).astype(np.float32),
        "dist": rng.random(50),
    }
    p = tmp_path / f"rt_{fmt}.ply"
    write_ply(p, pts, rgb, faces, props, format=fmt)
    header = p.read_bytes().split(b"end_header")[0].decode()
    assert f"format {fmt} 1.0" in header and "property ushort label" in header and "property int superpoint" in header
    d = read_ply(p)
    np.testing.assert_array_equal(d.points(), pts)
    np.testing.assert_array_equal(d.colors(), rgb)
    np.testing.assert_array_equal(d.faces, faces)
    for k, v in props.items():
        np.testing.assert_array_equal(d.vertex[k], v)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_ply_point_cloud_without_faces(tmp_path):
    p = tmp_path / "cloud.ply"
    write_ply(p, np.ones((3, 3)))
    d = read_ply(p)
    assert d.faces is None and d.colors() is None and d.num_vertices == 3


def test_ply_scannet_mesh_fast(shared_data):
    import time

    t = time.perf_counter()
    d = read_ply(shared_data / "scannet_scene0470_00" / "scene0470_00_vh_clean_2.ply")
    assert time.perf_counter() - t < 2.0  # vectorised: a Python loop over 127k faces would take far longer
    assert d.num_vertices == 67465 and d.faces.shape == (127003, 3)
    assert set(d.vertex) >= {"x", "y", "z", "red", "green", "blue", "alpha"}


# --------------------------------------------------------------------------- real data readers


def test_scannet_real_mesh_only(shared_data):
    s = load_scene(shared_data / "scannet_scene0470_00")
    assert s.kind == "scannet" and s.name == "scene0470_00"
    assert s.points.shape == (67465, 3) and s.points.dtype == np.float32
    assert s.faces.shape == (127003, 3) and s.colors.shape == (67465, 3)
    assert s.frames == [] and s.label_set == "scannet20"
    hist = np.bincount(s.labels, minlength=256)
    # README: wall 24353, floor 14939, chair 15712, table 2572, door 2777, window 1924, otherfurniture 998;
    # whiteboard 3172 + bag 251 + unlabeled 767 are not ScanNet20 classes -> ignore.
    expected = {0: 24353, 1: 14939, 4: 15712, 6: 2572, 7: 2777, 8: 1924, 19: 998, IGNORE_LABEL: 3172 + 251 + 767}
    for idx, count in expected.items():
        assert hist[idx] == count, idx
    assert hist.sum() == sum(expected.values())


def test_7scenes_real(shared_data):
    root = shared_data / "7scenes_redkitchen"
    s = load_scene(root, frame_stride=40)
    assert s.kind == "7scenes" and len(s.frames) == 5  # 200 frames, every 40th
    f = s.frames[1]
    assert f.color_path.name == "frame-000200.color.jpg"  # numeric order, 5th-frame spacing in the excerpt
    np.testing.assert_allclose(f.pose, np.loadtxt(root / "frame-000200.pose.txt"))
    np.testing.assert_allclose(f.intrinsics, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    assert (f.width, f.height) == (640, 480) and f.depth_scale == 1000.0
    depth = read_depth(f)
    assert depth.shape == (480, 640) and depth.dtype == np.float32
    assert 0.3 < np.median(depth[depth > 0]) < 5.0  # a kitchen seen by a Kinect
    pts = s.points
    assert len(pts) > 10_000 and np.isfinite(pts).all()
    extent = pts.max(0) - pts.min(0)
    assert (extent > 1.0).all() and (extent < 15.0).all()
    # one point (the centroid) per 2 cm voxel; float32 rounding may push a rare centroid lying
    # exactly on a voxel face into its neighbour, hence the 0.1% slack
    keys = np.floor(pts / 0.02).astype(np.int64)
    assert len(np.unique(keys, axis=0)) > 0.999 * len(pts)
    # re-projecting the fused cloud into a frame lands on surfaces its own depth map measured
    cam = (pts - f.pose[:3, 3]) @ f.pose[:3, :3]  # world -> camera (inverse rigid transform)
    z = cam[:, 2]
    front = z > 0.1
    u = np.round(cam[front, 0] * 585 / z[front] + 320).astype(int)
    v = np.round(cam[front, 1] * 585 / z[front] + 240).astype(int)
    ok = (u >= 0) & (u < 640) & (v >= 0) & (v < 480)
    d = depth[v[ok], u[ok]]
    zz = z[front][ok]
    valid = d > 0
    assert valid.sum() > 1000
    assert np.mean(np.abs(d[valid] - zz[valid]) < 0.05) > 0.6  # the rest: occluded surfaces, voxel jitter


def test_nuscenes_real(shared_data):
    s = load_scene(shared_data / "nuscenes_keyframe")
    assert s.kind == "nuscenes" and s.points.shape == (34688, 3) and len(s.frames) == 6
    assert all(f.depth_path is None and (f.width, f.height) == (1600, 900) for f in s.frames)
    seen = np.zeros(len(s.points), bool)
    pts_h = np.concatenate([s.points.astype(np.float64), np.ones((len(s.points), 1))], axis=1)
    for f in s.frames:
        cam = pts_h @ np.linalg.inv(f.pose).T
        z = cam[:, 2]
        front = z > 0.5
        uv = cam[front, :3] @ f.intrinsics.T
        u, v = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
        inside = (u >= 0) & (u < f.width) & (v >= 0) & (v < f.height)
        idx = np.flatnonzero(front)[inside]
        seen[idx] = True
    # six cameras cover 360 degrees; points below/above their vertical FOV or very close are unseen
    assert seen.mean() > 0.3
    # the front camera sees points ahead of the car (lidar +y is forward in nuScenes LIDAR_TOP)
    front_cam = next(f for f in s.frames if "__CAM_FRONT__" in f.color_path.name)
    assert front_cam.pose[:3, 2] @ [0, 1, 0] > 0.9  # its optical axis, in lidar coordinates


# --------------------------------------------------------------------------- generated layouts


def test_scannet_with_frames(tmp_path):
    root = make_scannet(tmp_path / "sceneX_00", frame_ids=(0, 5, 10, 100, 20), labels_for=(10,))
    assert detect_layout(root) == "scannet"
    s = load_scene(root, frame_stride=2)
    # frames whose number is a multiple of the stride, in numeric order (5 is dropped)
    assert [f.stem for f in s.frames] == ["0", "10", "20", "100"]
    f = s.frames[1]
    assert (f.width, f.height) == (8, 6)  # depth resolution, colour is 16x12
    np.testing.assert_allclose(f.intrinsics, k_centred(8, 6))
    np.testing.assert_allclose(f.pose, _pose((10, 0, 0)))
    assert f.label_path == root / "label" / "10.png" and s.frames[0].label_path is None
    np.testing.assert_allclose(read_depth(f), 1.5)
    assert read_color(f.color_path).shape == (12, 16, 3)
    np.testing.assert_array_equal(s.labels, [0, 4, IGNORE_LABEL, 19])
    assert [f.stem for f in load_scene(root).frames] == ["0", "20", "100"]  # default stride 20
    assert load_scene(root, labels=False).labels is None


def test_7scenes_backprojection_brute_force(tmp_path):
    root = make_7scenes(tmp_path / "seq", n=2)
    s = load_scene(root, voxel_size=1e-4)  # voxels smaller than pixel spacing: one point per pixel
    expected = []
    for i in range(2):
        for v in range(3):
            for u in range(4):
                if (v, u) in ((0, 0), (0, 1)):  # raw 0 and 65535 are invalid
                    continue
                z = 2.0
                expected.append([(u - 2.0) * z / 4.0 + i, (v - 1.5) * z / 4.0, z])
    # frame 1 is shifted by 1 m = 2 pixels at 2 m depth: coincident points merge into one voxel
    exp = np.unique(np.array(expected, np.float32), axis=0)
    got = np.unique(s.points, axis=0)
    assert len(got) == len(s.points)
    np.testing.assert_allclose(got, exp, atol=1e-5)
    assert (s.colors == 128).all()
    # coarse voxels: each output point is the mean of the pixels' points falling in its voxel
    groups: dict = {}
    for q in expected:
        groups.setdefault(tuple(np.floor(np.array(q) / 1.0).astype(int)), []).append(q)
    exp_coarse = np.unique(np.array([np.mean(g, axis=0) for g in groups.values()], np.float32), axis=0)
    coarse = load_scene(root, voxel_size=1.0)
    np.testing.assert_allclose(np.unique(coarse.points, axis=0), exp_coarse, atol=1e-5)


def test_7scenes_points_file(tmp_path):
    root = make_7scenes(tmp_path / "seq", n=2)
    pts = np.array([[3, 2, 1], [0, 0, 0], [1, 1, 1]], np.float32)
    write_ply(root / "points.ply", pts)
    np.testing.assert_array_equal(load_scene(root).points, pts)  # file order kept
    other = tmp_path / "other.ply"
    write_ply(other, pts[:2])
    assert load_scene(root, points=other).num_points == 2


def _make_matterport_building(b: Path, centres: list, wh=(4, 3)) -> None:
    for i, c in enumerate(centres):
        stem = f"pano{i:03d}_i1_{i % 6}"
        _save_jpg(b / "color" / f"{stem}.jpg", *wh)
        _save_png16(b / "depth" / f"pano{i:03d}_d1_{i % 6}.png", np.full(wh[::-1], 4000))
        (b / "pose").mkdir(exist_ok=True)
        (b / "intrinsic").mkdir(exist_ok=True)
        np.savetxt(b / "pose" / f"{stem}.txt", _pose(c))
        np.savetxt(b / "intrinsic" / f"{stem}.txt", K_TINY * [[1 + i, 1, 1], [1, 1 + i, 1], [1, 1, 1]])  # focal length per frame


def _save_region_pth(path: Path, coords: np.ndarray) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    colors = np.zeros(coords.shape)  # OpenScene stores rgb / 127.5 - 1: -1 -> 0, 0 -> 128 (127.5 rounded), 1 -> 255
    colors[0], colors[-1] = -1.0, 1.0
    labels = np.array([0, 20, 255] + [5] * (len(coords) - 3))
    torch.save((coords, colors, labels), path)


def test_matterport_openscene_layout_bbox(tmp_path):
    data = tmp_path / "data"
    coords = np.array([[0, 0, 0], [4, 4, 3], [2, 2, 1], [1, 3, 2]], np.float64)
    region = data / "matterport_3d" / "test" / "B1_region0.pth"
    _save_region_pth(region, coords)
    inside = [(1, 1, 1), (3, 3, 2)]
    outside = [(5, 1, 1), (1, 1, 3.5), (-1, 2, 1)]
    _make_matterport_building(data / "matterport_2d" / "B1", outside[:1] + inside + outside[1:])
    assert detect_layout(region) == "matterport"
    s = load_scene(region)
    assert s.kind == "matterport" and s.num_points == 4
    assert [tuple(f.pose[:3, 3]) for f in s.frames] == inside
    f = s.frames[0]
    assert f.color_path.name == "pano001_i1_1.jpg" and f.depth_path.name == "pano001_d1_1.png"
    np.testing.assert_allclose(f.intrinsics, K_TINY * [[2, 1, 1], [1, 2, 1], [1, 1, 1]])  # per-frame intrinsics
    np.testing.assert_allclose(read_depth(f), 1.0)  # 4000 / 4000
    assert f.depth_scale == 4000.0
    assert s.label_set == "matterport21"
    np.testing.assert_array_equal(s.labels[:3], [0, 20, IGNORE_LABEL])
    assert s.colors[0].tolist() == [0, 0, 0] and s.colors[1].tolist() == [128] * 3 and s.colors[-1].tolist() == [255] * 3


def test_matterport_nearest_100_fallback(tmp_path):
    b = tmp_path / "region_dir"
    coords = np.array([[0, 0, 0], [1, 1, 1]], np.float64)
    write_ply(b / "region7.ply", coords)
    # 105 cameras, none inside the unit box; distance to the centre grows with the index
    centres = [(0.5 + 2 + 0.1 * i, 0.5, 0.5) for i in range(105)]
    order = np.random.default_rng(1).permutation(105)
    _make_matterport_building(b, [centres[j] for j in order])
    assert detect_layout(b) == "matterport"
    s = load_scene(b)
    assert len(s.frames) == 100
    kept = sorted(round(f.pose[0, 3], 6) for f in s.frames)
    np.testing.assert_allclose(kept, [c[0] for c in centres[:100]])
    assert len(load_scene(b, frame_stride=10).frames) == 10


def test_ply_alone(tmp_path):
    p = tmp_path / "cloud.ply"
    pts = np.random.default_rng(2).random((20, 3)).astype(np.float32)
    write_ply(p, pts, vertex_props={"label": np.arange(20) % 3, "superpoint": np.arange(20) // 5})
    assert detect_layout(p) == "ply"
    s = load_scene(p, label_set="scannet20")
    assert s.kind == "ply" and s.frames == [] and s.faces is None
    np.testing.assert_array_equal(s.points, pts)
    np.testing.assert_array_equal(s.labels, np.arange(20) % 3)
    np.testing.assert_array_equal(s.superpoints, np.arange(20) // 5)
    assert s.label_set == "scannet20"


def test_ascii_ply_rows_with_wrong_value_counts_are_refused(tmp_path):
    """Each row is parsed on its own (plyfile): a row with an extra value and one with a missing value
    must not be read as two valid rows (the former hand-written parser reshaped all values at once)."""
    from sas3d.errors import InputError

    p = tmp_path / "rows.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                 "end_header\n0 0 0 5\n1 1\n")
    with pytest.raises(InputError) as err:
        read_ply(p)
    assert "rows.ply" in str(err.value) and "element 'vertex' row 0" in str(err.value)


def test_binary_polygon_mesh_is_fan_triangulated(tmp_path):
    import struct

    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
              "property float z\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n")
    body = b"".join(struct.pack("<fff", *v) for v in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)])
    body += struct.pack("<B4i", 4, 0, 1, 2, 3) + struct.pack("<B3i", 3, 0, 2, 3)
    p = tmp_path / "quad.ply"
    p.write_bytes(header.encode() + body)
    np.testing.assert_array_equal(read_ply(p).faces, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    p.write_bytes(header.encode() + body[:-6])
    with pytest.raises(Exception) as err:
        read_ply(p)
    assert "truncated PLY" in str(err.value) and "quad.ply" in str(err.value)


def _swap_numpy_module_names(src: Path, dst: Path) -> str:
    """Rewrite a torch zip pickle as the other numpy major version would have written it; returns the name now used."""
    import zipfile

    new, old = (b"numpy.core.multiarray", b"numpy._core.multiarray")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                if old not in data:  # written under numpy 1.x: make it a numpy 2 file
                    new, old = old, new
                assert old in data
                data = data.replace(old, new)
            zout.writestr(info, data)
    return new.decode()


def test_region_pth_from_either_numpy_major_version(tmp_path):
    """OpenScene .pth files name numpy's rebuild function after the numpy that wrote them; both must load."""
    coords = np.array([[0, 0, 0], [4, 4, 3], [2, 2, 1], [1, 3, 2]], np.float64)
    here = tmp_path / "here" / "B1_region0.pth"
    _save_region_pth(here, coords)
    other = tmp_path / "other" / "B1_region0.pth"
    other.parent.mkdir()
    _swap_numpy_module_names(here, other)
    for region in (here, other):
        _make_matterport_building(region.parent, [(1, 1, 1)])
        s = load_scene(region)
        np.testing.assert_array_equal(s.points, coords.astype(np.float32))
        np.testing.assert_array_equal(s.labels[:3], [0, 20, IGNORE_LABEL])
