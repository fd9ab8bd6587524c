"""Frame checks every reader makes: colour / depth / intrinsics sizes against each other, invalid poses, progress bars."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sas3d import load_scene
from sas3d.cli import main
from sas3d.errors import InputError
from sas3d.fusion.features import PointFeatures

from test_scene_io import _make_matterport_building, _pose, _save_jpg, _save_png16, k_centred, make_7scenes, make_scannet


def _write_k4(path, k):
    k4 = np.eye(4)
    k4[:3, :3] = k
    np.savetxt(path, k4)


def _scaled(k, f):
    """The intrinsics of the same camera with its image resized by f, written out by hand (pixel centres at integers)."""
    return np.array([[k[0, 0] * f, 0, (k[0, 2] + 0.5) * f - 0.5], [0, k[1, 1] * f, (k[1, 2] + 0.5) * f - 0.5], [0, 0, 1]])


# ------------------------------------------------------------------ ScanNet sizes


def test_scannet_one_depth_image_of_another_size_is_refused(tmp_path):
    root = make_scannet(tmp_path / "s", frame_ids=(0, 20, 40), depth_wh=(16, 12), color_wh=(32, 24))
    _save_png16(root / "depth" / "20.png", np.full((6, 8), 1500))
    with pytest.raises(InputError) as err:
        load_scene(root)
    assert "20.png" in str(err.value) and "8x6" in str(err.value) and "16x12" in str(err.value)


def test_scannet_depth_at_half_the_intrinsics_resolution_gets_scaled_intrinsics(tmp_path, caplog):
    # OpenScene's 2D ScanNet frames: depth 320x240 next to the 640x480 intrinsic_depth.txt
    root = make_scannet(tmp_path / "s", frame_ids=(0, 20), depth_wh=(8, 6), color_wh=(32, 24))
    k = np.array([[577.59 / 40, 0, 7.5], [0, 578.73 / 40, 5.5], [0, 0, 1]])  # describes 16x12 images
    _write_k4(root / "intrinsic" / "intrinsic_depth.txt", k)
    with caplog.at_level(logging.WARNING, logger="sas3d.scene"):
        scene = load_scene(root)
    np.testing.assert_allclose(scene.frames[0].intrinsics, _scaled(k, 0.5))
    assert (scene.frames[0].width, scene.frames[0].height) == (8, 6)
    assert "describes 16x12 images" in caplog.text and "scaled by 1/2" in caplog.text


def test_scannet_real_sizes_colour_larger_than_depth(tmp_path):
    # ScanNet's SensReader export: colour 1296x968, depth 640x480 with its own intrinsic_depth.txt
    root = make_scannet(tmp_path / "s", frame_ids=(0,), depth_wh=(640, 480), color_wh=(1296, 968))
    _write_k4(root / "intrinsic" / "intrinsic_depth.txt", [[577.59, 0, 318.91], [0, 578.73, 242.68], [0, 0, 1]])
    f = load_scene(root).frames[0]
    assert (f.width, f.height) == (640, 480) and f.intrinsics[0, 2] == pytest.approx(318.91)


def test_scannet_colour_of_another_aspect_is_refused(tmp_path):
    root = make_scannet(tmp_path / "s", frame_ids=(0,), depth_wh=(16, 12), color_wh=(12, 16))  # rotated colour
    with pytest.raises(InputError, match="aspect"):
        load_scene(root)


def test_intrinsics_that_fit_no_resize_are_refused(tmp_path):
    root = make_scannet(tmp_path / "s", frame_ids=(0,), depth_wh=(16, 12), color_wh=(16, 12))
    _write_k4(root / "intrinsic" / "intrinsic_depth.txt", [[20, 0, 15.5], [0, 20, 5.5], [0, 0, 1]])  # 32 wide, 12 high
    with pytest.raises(InputError) as err:
        load_scene(root)
    assert "0.png" in str(err.value) and "intrinsic_depth.txt" in str(err.value) and "principal point" in str(err.value)


def _plane_scan(root, depth_wh, color_wh, k):
    """A ScanNet-layout scan of 400 points on a wall 2 m in front of one camera, depth 2 m everywhere."""
    from sas3d.scene.ply import write_ply

    xs, ys = np.meshgrid(np.linspace(-0.9, 0.9, 20), np.linspace(-0.6, 0.6, 20))
    pts = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 2.0)], axis=1).astype(np.float32)
    root.mkdir(parents=True)
    write_ply(root / "sceneP_00_vh_clean_2.ply", pts, faces=np.array([[0, 1, 2]]))
    (root / "intrinsic").mkdir()
    _write_k4(root / "intrinsic" / "intrinsic_depth.txt", k)
    _save_jpg(root / "color" / "0.jpg", *color_wh)
    _save_png16(root / "depth" / "0.png", np.full(depth_wh[::-1], 2000))
    (root / "pose").mkdir()
    np.savetxt(root / "pose" / "0.txt", _pose())
    return root


def test_fused_coverage_is_the_same_for_depth_stored_at_half_resolution(tmp_path):
    """The issue's case: all depth at half the intrinsics' size. Scaled intrinsics give the coverage of full-size depth."""
    k = k_centred(64, 48, f=40.0)  # at 2 m this camera sees x in [-1.6, 1.6], y in [-1.2, 1.2]: every point
    teacher = tmp_path / "t"
    teacher.mkdir()
    np.save(teacher / "0.npy", np.ones((6, 8, 384), np.float32))  # the MiniLM space is 384-d
    seen = {}
    for name, depth_wh in (("full", (64, 48)), ("half", (32, 24))):
        scan = _plane_scan(tmp_path / name, depth_wh, (64, 48), k)
        out = tmp_path / f"{name}.safetensors"
        assert main(["fuse", str(scan), "--teacher", f"precomputed:{teacher}", "--out", str(out), "--frame-stride", "1",
                     "--set", "border_margin=0", "--no-progress"]) == 0
        seen[name] = PointFeatures.load(out).seen.numpy()
    assert seen["full"].mean() == 1.0
    np.testing.assert_array_equal(seen["half"], seen["full"])


# ------------------------------------------------------------------ 7-Scenes and Matterport sizes


def test_7scenes_uniform_resize_and_mismatch(tmp_path, caplog):
    root = make_7scenes(tmp_path / "seq", n=2, w=8, h=6)
    k = k_centred(16, 12)
    np.savetxt(root / "camera-intrinsics.txt", k)
    with caplog.at_level(logging.WARNING, logger="sas3d.scene"):
        np.testing.assert_allclose(load_scene(root).frames[1].intrinsics, _scaled(k, 0.5))
    assert "scaled by 1/2" in caplog.text
    odd = make_7scenes(tmp_path / "odd", n=2, w=8, h=6)
    _save_jpg(odd / "frame-000001.color.jpg", 4, 3)
    _save_png16(odd / "frame-000001.depth.png", np.full((3, 4), 2000))
    np.savetxt(odd / "camera-intrinsics.txt", k_centred(8, 6))
    with pytest.raises(InputError) as err:
        load_scene(odd)
    assert "frame-000001.depth.png" in str(err.value) and "4x3" in str(err.value) and "8x6" in str(err.value)


def test_matterport_frame_intrinsics_for_another_size(tmp_path, caplog):
    from sas3d.scene.ply import write_ply

    b = tmp_path / "mp"
    write_ply(b / "r.ply", np.array([[0, 0, 0], [1, 1, 1]]))
    _make_matterport_building(b, [(0.5, 0.5, 0.5)], wh=(4, 3))
    k = k_centred(8, 6)
    np.savetxt(next((b / "intrinsic").glob("*.txt")), k)
    with caplog.at_level(logging.WARNING, logger="sas3d.scene"):
        np.testing.assert_allclose(load_scene(b).frames[0].intrinsics, _scaled(k, 0.5))
    np.savetxt(next((b / "intrinsic").glob("*.txt")), [[4, 0, 9], [0, 4, 1], [0, 0, 1]])
    with pytest.raises(InputError, match="principal point"):
        load_scene(b)


# ------------------------------------------------------------------ invalid poses


def test_scannet_tracking_lost_poses_are_skipped_and_reported(tmp_path, caplog):
    root = make_scannet(tmp_path / "s", frame_ids=(0, 20, 40))
    np.savetxt(root / "pose" / "20.txt", np.full((4, 4), -np.inf))  # SensReader's marker for lost tracking
    with caplog.at_level(logging.WARNING, logger="sas3d.scene"):
        scene = load_scene(root)
    assert [f.stem for f in scene.frames] == ["0", "40"]
    assert scene.skipped_frames == ["20.txt: all -inf (tracking lost)"]
    assert "skipped 1 of 3 frames" in caplog.text


def test_a_nan_pose_stops_unless_asked_to_skip(tmp_path):
    root = make_scannet(tmp_path / "s", frame_ids=(0, 20))
    pose = _pose()
    pose[0, 3] = np.nan
    np.savetxt(root / "pose" / "20.txt", pose)
    with pytest.raises(InputError) as err:
        load_scene(root)
    assert "20.txt" in str(err.value) and "--skip-invalid-poses" in str(err.value)
    scene = load_scene(root, skip_invalid_poses=True)
    assert [f.stem for f in scene.frames] == ["0"] and "NaN" in scene.skipped_frames[0]
    seq = make_7scenes(tmp_path / "seq", n=3)
    np.savetxt(seq / "frame-000001.pose.txt", np.zeros((4, 4)))
    with pytest.raises(InputError, match="invertible"):
        load_scene(seq)
    assert [f.color_path.name for f in load_scene(seq, skip_invalid_poses=True).frames] == [
        "frame-000000.color.jpg", "frame-000002.color.jpg"]


def test_fuse_skip_invalid_poses_reports_the_count(tmp_path, capsys, caplog):
    root = make_scannet(tmp_path / "s", frame_ids=(0, 20))
    pose = _pose()
    pose[1, 1] = np.nan
    np.savetxt(root / "pose" / "20.txt", pose)
    teacher = tmp_path / "t"
    teacher.mkdir()
    np.save(teacher / "0.npy", np.ones((6, 8, 384), np.float32))  # the MiniLM space is 384-d
    argv = ["fuse", str(root), "--teacher", f"precomputed:{teacher}", "--out", str(tmp_path / "f.safetensors"), "--no-progress"]
    assert main(argv) == 1 and "--skip-invalid-poses" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING, logger="sas3d.scene"):
        assert main(argv + ["--skip-invalid-poses"]) == 0
    assert "skipped 1 of 2 frames" in caplog.text and "over 1 frames" in capsys.readouterr().out


# ------------------------------------------------------------------ --no-progress


def test_no_progress_hides_the_7scenes_backprojection_bar(tmp_path, capfd):
    root = make_7scenes(tmp_path / "seq", n=20)  # 20+ frames and no points.ply: the cloud is back-projected
    teacher = tmp_path / "t"
    teacher.mkdir()
    for i in range(20):
        np.save(teacher / f"frame-{i:06d}.color.npy", np.ones((3, 4, 384), np.float32))
    argv = ["fuse", str(root), "--teacher", f"precomputed:{teacher}", "--set", "border_margin=0"]
    assert main(argv + ["--out", str(tmp_path / "a.safetensors")]) == 0
    assert "back-projecting depth" in capfd.readouterr().err  # the bar exists ...
    assert main(argv + ["--out", str(tmp_path / "b.safetensors"), "--no-progress"]) == 0
    assert "back-projecting" not in capfd.readouterr().err  # ... and --no-progress hides it
