"""Malformed scene input: each case raises one InputError that names the offending file."""

from __future__ import annotations

import numpy as np
import pytest

from sas3d import load_scene
from sas3d.errors import InputError
from sas3d.scene.images import read_depth
from sas3d.scene.ply import write_ply
from sas3d.scene.readers import detect_layout
from sas3d.scene.types import Frame

from test_scene_io import K_TINY, _make_matterport_building, _save_jpg, make_7scenes, make_scannet


def _raises(fn, name: str) -> InputError:
    with pytest.raises(InputError) as info:
        fn()
    assert name in str(info.value), str(info.value)
    return info.value


def test_missing_pose(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    (root / "frame-000001.pose.txt").unlink()
    err = _raises(lambda: load_scene(root), "frame-000001.pose.txt")
    assert "missing" in str(err)


def test_missing_pose_scannet(tmp_path):
    root = make_scannet(tmp_path / "s", frame_ids=(0,))
    (root / "pose" / "0.txt").unlink()
    _raises(lambda: load_scene(root), "0.txt")


@pytest.mark.parametrize("pose", [np.zeros((4, 4)), np.full((4, 4), np.nan), np.diag([1, 1, np.inf, 1])])
def test_bad_pose(tmp_path, pose):
    root = make_7scenes(tmp_path / "seq")
    np.savetxt(root / "frame-000002.pose.txt", pose)
    err = _raises(lambda: load_scene(root), "frame-000002.pose.txt")
    assert "invertible" in str(err) or "NaN/inf" in str(err)


def test_scannet_invalid_pose_can_be_skipped(tmp_path):
    root = make_scannet(tmp_path / "s", frame_ids=(0, 1))
    np.savetxt(root / "pose" / "1.txt", np.full((4, 4), -np.inf))  # ScanNet's tracking-lost marker: skipped always
    assert [f.stem for f in load_scene(root, frame_stride=1).frames] == ["0"]
    np.savetxt(root / "pose" / "1.txt", np.diag([1, 1, np.inf, 1]))  # any other invalid pose stops, unless asked
    _raises(lambda: load_scene(root, frame_stride=1), "1.txt")
    assert [f.stem for f in load_scene(root, frame_stride=1, skip_invalid_poses=True).frames] == ["0"]


def test_nan_points(tmp_path):
    p = tmp_path / "nanpts.ply"
    pts = np.zeros((5, 3), np.float32)
    pts[3, 1] = np.nan
    write_ply(p, pts)
    err = _raises(lambda: load_scene(p), "nanpts.ply")
    assert "NaN" in str(err)


def test_zero_points(tmp_path):
    p = tmp_path / "empty.ply"
    write_ply(p, np.zeros((0, 3)))
    assert "zero points" in str(_raises(lambda: load_scene(p), "empty.ply"))


def test_nan_intrinsics(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    k = K_TINY.copy()
    k[0, 2] = np.nan
    np.savetxt(root / "camera-intrinsics.txt", k)
    _raises(lambda: load_scene(root), "camera-intrinsics.txt")


def test_missing_intrinsics(tmp_path):
    root = make_scannet(tmp_path / "s", frame_ids=(0,))
    (root / "intrinsic" / "intrinsic_depth.txt").unlink()
    _raises(lambda: load_scene(root), "intrinsic_depth.txt")
    b = tmp_path / "mp"
    write_ply(b / "r.ply", np.array([[0, 0, 0], [1, 1, 1]]))
    _make_matterport_building(b, [(0.5, 0.5, 0.5)])
    next((b / "intrinsic").glob("*.txt")).unlink()
    _raises(lambda: load_scene(b), "pano000_i1_0.txt")


def test_depth_colour_size_mismatch(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    _save_jpg(root / "frame-000001.color.jpg", 8, 6)
    err = _raises(lambda: load_scene(root), "frame-000001.color.jpg")
    assert "8x6" in str(err) and "4x3" in str(err)


def test_scannet_colour_may_differ_from_depth(tmp_path):
    # ScanNet: intrinsic_depth describes the depth resolution; colour is resampled downstream.
    root = make_scannet(tmp_path / "s", frame_ids=(0,), depth_wh=(8, 6), color_wh=(13, 10))  # aspect within 3 %
    assert (load_scene(root).frames[0].width, load_scene(root).frames[0].height) == (8, 6)


def test_truncated_ply(tmp_path):
    p = tmp_path / "cut.ply"
    write_ply(p, np.random.rand(100, 3), faces=np.array([[0, 1, 2]] * 50))
    p.write_bytes(p.read_bytes()[:-40])
    assert "truncated" in str(_raises(lambda: load_scene(p), "cut.ply"))
    p.write_bytes(b"not a ply at all")
    _raises(lambda: load_scene(p), "cut.ply")


def test_unknown_layout(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hello")
    err = _raises(lambda: detect_layout(tmp_path / "junk"), "junk")
    assert "vh_clean_2.ply" in str(err) and "calibration.json" in str(err)
    _raises(lambda: load_scene(tmp_path / "junk"), "junk")


def test_read_depth_checks(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    f = load_scene(root).frames[0]
    wrong = Frame(f.color_path, f.intrinsics, f.pose, 5, 3, f.depth_path)
    assert "4x3" in str(_raises(lambda: read_depth(wrong), "frame-000000.depth.png"))
    npy = tmp_path / "d.npy"
    arr = np.ones((3, 4), np.float32)
    arr[1, 1] = np.nan
    np.save(npy, arr)
    nan_frame = Frame(f.color_path, f.intrinsics, f.pose, 4, 3, npy)
    assert "NaN" in str(_raises(lambda: read_depth(nan_frame), "d.npy"))
    missing = Frame(f.color_path, f.intrinsics, f.pose, 4, 3, tmp_path / "nope.png")
    _raises(lambda: read_depth(missing), "nope.png")


def test_pth_with_code_is_refused(tmp_path):
    import torch

    region = tmp_path / "B_region0.pth"
    torch.save((np.zeros((2, 3)), _Custom()), region)
    err = _raises(lambda: load_scene(region, images=tmp_path), "B_region0.pth")
    assert "weights-only" in str(err)


class _Custom:
    pass
