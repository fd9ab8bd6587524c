"""Outputs never replace a command's inputs or a file of another kind, and are checked before any work.

Every CLI case runs the real verb; the expensive step it must not reach is replaced by a function
that fails the test, so "checked before computing" is what is asserted.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sas3d.cli import main
from sas3d.fusion.features import PointFeatures
from sas3d.scene.ply import write_ply

from test_scene_io import make_scannet

MESH = "sceneX_00_vh_clean_2.ply"
LABELS = "sceneX_00_vh_clean_2.labels.ply"


@pytest.fixture
def scan(tmp_path) -> Path:
    """A ScanNet-layout scan (4-vertex mesh + labels + 2 frames) and fused features for it."""
    root = make_scannet(tmp_path / "scan", frame_ids=(0, 20))
    PointFeatures(torch.randn(4, 384).half(), torch.ones(4, dtype=torch.bool), {"note": "test"}).save(tmp_path / "fused.safetensors")
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    for n in (0, 20):
        np.save(teacher / f"{n}.npy", np.ones((6, 8, 384), np.float32))  # the MiniLM space is 384-d
    return root


@pytest.fixture
def no_compute(monkeypatch):
    """Make every expensive first step fail the test if it is reached."""
    def reached(*args, **kwargs):
        raise AssertionError("the command started computing before it checked its arguments")

    import sas3d.commands.capability  # noqa: F401
    import sas3d.distill.trainer
    import sas3d.evaluate.evaluator
    import sas3d.fusion.multiview
    import sas3d.query.similarity

    monkeypatch.setattr(sas3d.query.similarity, "load_point_features", reached)
    monkeypatch.setattr(sas3d.fusion.multiview, "fuse_teacher", reached)
    monkeypatch.setattr(sas3d.fusion.multiview, "fuse_teachers_multiview", reached)
    monkeypatch.setattr(sas3d.evaluate.evaluator, "evaluate_scenes", reached)
    monkeypatch.setattr(sas3d.distill.trainer, "train", reached)
    monkeypatch.setattr("sas3d.capability.capability.compute_capability", reached)
    monkeypatch.setattr("sas3d.demo.rooms.build_embedded_dataset", reached)
    monkeypatch.setattr("sas3d.geometry.superpoints.scene_superpoints", reached)
    monkeypatch.setattr("sas3d.demo.render.render_views", reached)
    return reached


def _refused(argv, capsys, *needles) -> str:
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------ 1. never over an input


@pytest.mark.parametrize("verb", ["segment", "query"])
@pytest.mark.parametrize("target", [MESH, LABELS])
def test_segment_and_query_never_overwrite_the_scan(scan, capsys, no_compute, verb, target):
    before = (scan / target).read_bytes()
    extra = ["chair"] if verb == "query" else []
    _refused([verb, scan.parent / "fused.safetensors", scan, *extra, "--out", scan / target, "--overwrite"],
             capsys, str(scan / target), "is an input of this command")
    assert (scan / target).read_bytes() == before


def test_fuse_never_overwrites_the_mesh_it_reads(scan, capsys, no_compute):
    before = (scan / MESH).read_bytes()
    _refused(["fuse", scan, "--teacher", f"precomputed:{scan.parent / 'teacher'}", "--out", scan / MESH, "--frame-stride", "1"],
             capsys, "is an input of this command")
    assert (scan / MESH).read_bytes() == before


@pytest.mark.parametrize("how", ["symlink", "hardlink", "dotdot"])
def test_other_names_of_an_input_are_recognised(scan, capsys, no_compute, how, tmp_path):
    alias = tmp_path / "alias.ply"
    if how == "symlink":
        alias.symlink_to(scan / MESH)
    elif how == "hardlink":
        os.link(scan / MESH, alias)
    else:
        alias = scan / "color" / ".." / MESH
    before = (scan / MESH).read_bytes()
    _refused(["segment", tmp_path / "fused.safetensors", scan, "--out", alias], capsys, "is an input of this command")
    assert (scan / MESH).read_bytes() == before


def test_a_frame_reached_through_a_symlinked_folder_is_an_input(scan, capsys, no_compute, tmp_path):
    """The scan's color/ is a link into a dataset store: writing over a store file is writing over an input."""
    store = tmp_path / "store"
    (scan / "color").rename(store)
    (scan / "color").symlink_to(store)
    _refused(["query", tmp_path / "fused.safetensors", scan, "chair", "--out", store / "0.jpg", "--overwrite"],
             capsys, "is an input of this command")


def test_superpoints_never_overwrite_the_mesh(scan, capsys, no_compute):
    _refused(["superpoints", scan, "--out", scan / MESH, "--overwrite"], capsys, "is an input")


def test_eval_outputs_are_distinct_and_not_inputs(scan, capsys, no_compute, tmp_path):
    _refused(["eval", "--mode", "fusion", "--fused", tmp_path, "--scenes", scan, "--json", tmp_path / "fused.safetensors"],
             capsys, "is an input")
    _refused(["eval", "--mode", "fusion", "--fused", tmp_path, "--scenes", scan, "--json", tmp_path / "r.png"],
             capsys, "two outputs")


def test_render_views_never_replaces_a_real_scans_frames(scan, capsys, no_compute):
    before = sorted(p.name for p in (scan / "color").iterdir())
    _refused(["render-views", scan / MESH, "--out", scan], capsys, "did not write", "color", "--overwrite")
    assert sorted(p.name for p in (scan / "color").iterdir()) == before


def test_render_views_rerenders_its_own_output(tmp_path, capsys):
    pts = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [4, 4, 0], [0, 0, 2.5], [4, 0, 2.5]], np.float32)
    mesh = tmp_path / "room_vh_clean_2.ply"
    write_ply(mesh, pts, faces=np.array([[0, 1, 2], [1, 3, 2], [0, 1, 4], [1, 5, 4]]))
    argv = ["render-views", str(mesh), "--out", str(tmp_path / "scan"), "--views", "2", "--width", "16", "--height", "12"]
    assert main(argv) == 0 and main(argv) == 0  # the second run replaces frames the first one wrote
    # rendering in place: the mesh is inside --out and is neither copied onto itself nor refused
    assert main(["render-views", str(tmp_path / "scan" / mesh.name), "--out", str(tmp_path / "scan"), "--views", "2",
                 "--width", "16", "--height", "12"]) == 0


# ------------------------------------------------------------------ 1. files of another kind


def test_fuse_does_not_replace_a_file_of_another_kind_without_overwrite(scan, capsys, tmp_path):
    other = tmp_path / "notes.ply"
    write_ply(other, np.zeros((2, 3)))
    argv = ["fuse", scan, "--teacher", f"precomputed:{tmp_path / 'teacher'}", "--out", other, "--frame-stride", "1", "--no-progress"]
    _refused(argv, capsys, "is a PLY file, not a safetensors file", "--overwrite")
    assert other.read_bytes().startswith(b"ply")
    assert main([str(a) for a in argv] + ["--overwrite"]) == 0
    assert PointFeatures.load(other).num_points == 4
    assert main([str(a) for a in argv]) == 0  # now a safetensors file: a re-run replaces it without asking


def test_segment_does_not_replace_json_with_a_legend_silently(scan, capsys, no_compute, tmp_path):
    (tmp_path / "labels.legend.json").write_bytes(b"\x89PNG\r\n\x1a\n....")  # a PNG named like the legend
    _refused(["segment", tmp_path / "fused.safetensors", scan, "--out", tmp_path / "labels.ply"], capsys,
             "labels.legend.json", "is a PNG image, not a JSON file")


# ------------------------------------------------------------------ 4. the output location, before computing


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        d = tmp_path / "locked"
        d.mkdir()
        d.chmod(0o500)
        return d
    for d in (Path("/sys"),):
        try:
            fd, p = tempfile.mkstemp(dir=d)
        except OSError:
            return d
        os.close(fd)
        os.unlink(p)
    pytest.skip("no folder this (root) user cannot write")


def test_unwritable_out_fails_before_computing(scan, capsys, no_compute, tmp_path):
    locked = _unwritable_dir(tmp_path)
    _refused(["segment", tmp_path / "fused.safetensors", scan, "--out", locked / "sub" / "labels.ply"], capsys, "cannot be written")
    _refused(["fuse", scan, "--teacher", f"precomputed:{tmp_path / 'teacher'}", "--out", locked / "f.safetensors"],
             capsys, "cannot be written")


def test_directory_out_fails_before_computing(scan, capsys, no_compute, tmp_path):
    _refused(["query", tmp_path / "fused.safetensors", scan, "chair", "--out", tmp_path], capsys, "is a folder; give a file name")
    _refused(["eval", "--mode", "fusion", "--fused", tmp_path, "--scenes", scan, "--json", tmp_path / "teacher"],
             capsys, "is a folder")


def test_out_below_a_file_fails_before_computing(scan, capsys, no_compute, tmp_path):
    _refused(["superpoints", scan, "--out", scan / MESH / "sp.npy"], capsys, "is a file, not a folder")


def test_folder_outputs_of_train_and_demo(scan, capsys, no_compute, tmp_path):
    (tmp_path / "runfile").write_text("x")
    _refused(["train", "--scenes", scan, "--fused", tmp_path, "--out", tmp_path / "runfile"], capsys, "is a file, not a folder")
    foreign = tmp_path / "mine"
    (foreign / "checkpoints").mkdir(parents=True)
    _refused(["train", "--scenes", scan, "--fused", tmp_path, "--out", foreign], capsys, "did not write", "checkpoints")
    # --fresh would delete the folder: a folder the demo did not write is refused outright
    home = tmp_path / "home"
    (home / "thesis").mkdir(parents=True)
    _refused(["demo", "--out", home, "--fresh"], capsys, "did not write")
    assert (home / "thesis").is_dir()


# ------------------------------------------------------------------ 5. every argument before the first expensive step


def test_fuse_checks_the_label_set_before_fusing(scan, capsys, no_compute, tmp_path):
    # two bring-your-own teachers: nothing reads the label set until the fused features are combined
    (tmp_path / "teacher2").symlink_to(tmp_path / "teacher")
    _refused(["fuse", scan, "--teacher", f"precomputed:{tmp_path / 'teacher'}", "--teacher", f"precomputed:{tmp_path / 'teacher2'}",
              "--fusion", "linear", "--labelset", "nosuchset", "--out", tmp_path / "f.safetensors"],
             capsys, "unknown label set 'nosuchset'")


@pytest.mark.parametrize("argv, needle", [
    (["fuse", "{scan}", "--teacher", "nosuch:x", "--out", "{tmp}/f.safetensors"], "unknown teacher"),
    (["fuse", "{scan}", "--teacher", "precomputed:{tmp}/missing", "--out", "{tmp}/f.safetensors"], "missing"),
    (["fuse", "{scan}", "--teacher", "precomputed:{tmp}/teacher", "--text-encoder", "bert", "--out", "{tmp}/f.safetensors"],
     "unknown text encoder"),
    (["fuse", "{scan}", "--teacher", "precomputed:{tmp}/teacher", "--capability", "{tmp}/nocap.json", "--out", "{tmp}/f.safetensors"],
     "nocap.json"),
    (["segment", "{tmp}/fused.safetensors", "{scan}", "--labelset", "nosuchset", "--out", "{tmp}/l.ply"], "unknown label set"),
    (["segment", "{tmp}/fused.safetensors", "{scan}", "--tta", "0", "--out", "{tmp}/l.ply"], "--tta"),
    (["query", "{tmp}/fused.safetensors", "{scan}", "chair", "--text-encoder", "minilm:big", "--out", "{tmp}/q.ply"], "MiniLM"),
    (["query", "{tmp}/missing.safetensors", "{scan}", "chair", "--out", "{tmp}/q.ply"], "missing.safetensors"),
    (["eval", "--mode", "fusion", "--fused", "{tmp}", "--scenes", "{scan}", "--labelset", "nosuchset", "--json", "{tmp}/e.json"],
     "unknown label set"),
    (["eval", "--mode", "fusion", "--fused", "{tmp}", "--scenes", "{tmp}/nowhere", "--json", "{tmp}/e.json"], "nowhere"),
    (["capability", "--teacher", "simulated:lseg", "--label-set", "nosuchset", "--out", "{tmp}/cap.json"], "unknown label set"),
    (["train", "--scenes", "{scan}", "--fused", "{tmp}/nofused", "--out", "{tmp}/run"], "nofused"),
])
def test_bad_arguments_fail_before_any_work(scan, capsys, no_compute, tmp_path, argv, needle):
    argv = [a.format(scan=scan, tmp=tmp_path) for a in argv]
    _refused(argv, capsys, needle)
