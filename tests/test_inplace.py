"""`sas3d inplace`: distil on the user's scans and label them, end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import torch

from test_trainer import TINY_MODEL, make_scene


def test_inplace_labels_scans_writes_student_and_ensemble_and_scores(tmp_path, capsys):
    from sas3d.cli import main
    from sas3d.scene.ply import read_ply

    text = torch.nn.functional.normalize(torch.randn(20, 384, generator=torch.Generator().manual_seed(2)), dim=1)
    fused = tmp_path / "fused"
    fused.mkdir()
    scans = [make_scene(tmp_path, f"scene{i:04d}_02", 30 + i, text, fused) for i in range(2)]
    out = tmp_path / "labelled"
    argv = ["inplace", *map(str, scans), "--fused", str(fused), "--out", str(out), "--epochs", "3", "--no-progress",
            "--set", "data.max_voxels=300", "--set", "data.voxel_size=0.05", "--set", "schedule.stage1_fraction=0.5"]
    for o in TINY_MODEL:
        argv += ["--set", o]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 epochs = 6 steps" in printed and "scores on the scans' ground truth" in printed
    for scan in scans:
        for kind in ("student", "ensemble"):
            ply = read_ply(out / scan.name / f"labels_{kind}.ply")
            labels = np.asarray(ply.vertex["label"])
            assert len(labels) > 1000 and labels.max() < 20
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) >= {"fused 2D", "3D student", "2D-3D ensemble"} and scores["labels_used_for"] == "scoring only"
    assert all(0.0 <= scores[k]["miou"] <= 1.0 for k in ("fused 2D", "3D student", "2D-3D ensemble"))
    # the student was trained on RGB (the scans have colour) with class-balanced losses: the in-place recipe
    import yaml

    resolved = yaml.safe_load((out / "run" / "config.yaml").read_text())
    assert resolved["data"]["input"] == "rgb" and resolved["loss"]["balance"] == "class" and resolved["schedule"]["epochs"] == 3
    # a missing fused folder, or a scan without fused features, is named before any training
    assert main(["inplace", str(scans[0]), "--fused", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 1
    assert "nowhere: not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["inplace", str(scans[0]), "--fused", str(tmp_path / "empty"), "--out", str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err
    assert scans[0].name in err and "sas3d fuse" in err
