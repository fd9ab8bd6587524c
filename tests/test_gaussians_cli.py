"""`sas3d gaussians` end to end on one tiny generated room (SIMULATED teachers), and the splat viewer."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from sas3d.cli import main
from sas3d.fusion.features import PointFeatures


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    from sas3d.demo.rooms import build_embedded_dataset

    root = tmp_path_factory.mktemp("gaussians")
    scan = build_embedded_dataset(root / "data", n_train=1, n_val=0, n_views=4, width=128, height=96, progress=False)["train"][0]
    g = root / "g.ply"
    assert main(["gaussians", "from-mesh", str(scan), "--out", str(g)]) == 0
    return root, scan, g


def _gt_features(g, path):
    """Each Gaussian's ground-truth class prompt embedding: a known-answer feature file."""
    from sas3d.gaussians.ply import read_gaussian_ply
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    gs = read_gaussian_ply(g)
    text = build_text_encoder("minilm").encode(get_label_set("scannet20").prompts())
    ok = gs.labels < len(text)
    feats = torch.zeros(gs.num_gaussians, text.shape[1])
    feats[torch.from_numpy(ok)] = text[torch.from_numpy(gs.labels[ok])]
    PointFeatures(feats.half(), torch.from_numpy(ok), {"gaussians": gs.identity(), "note": "ground-truth test features"}).save(path)
    return gs


def test_eval_of_ground_truth_features_is_near_perfect(room, tmp_path):
    root, scan, g = room
    _gt_features(g, tmp_path / "gt.safetensors")
    out = tmp_path / "eval.json"
    assert main(["gaussians", "eval", str(g), "--views", str(scan), "--features", str(tmp_path / "gt.safetensors"),
                 "--holdout-every", "2", "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert len(res["views"]) == 2 and res["miou"] > 0.85 and res["predicted_fraction"] > 0.95


def test_lift_guided_then_eval_render_distil(room, tmp_path):
    from sas3d.capability import Capability
    from sas3d.text.labelsets import get_label_set

    root, scan, g = room
    classes = list(get_label_set("scannet20").classes)
    scores = np.full((2, len(classes)), 0.5)
    scores[1, classes.index("chair")] = 0.9
    Capability(["simulated-lseg", "simulated-seem"], classes, scores).save(tmp_path / "cap.json")
    fused = tmp_path / "guided.safetensors"
    assert main(["gaussians", "lift", str(g), "--views", str(scan), "--teacher", "simulated:lseg", "--teacher", "simulated:seem",
                 "--capability", str(tmp_path / "cap.json"), "--holdout-every", "2", "--per-teacher-dir", str(tmp_path / "per"),
                 "--out", str(fused), "--no-progress"]) == 0
    pf = PointFeatures.load(fused)
    assert pf.metadata["method"] == "guided" and pf.metadata["teachers"] == ["simulated-lseg", "simulated-seem"]
    assert pf.metadata["views"]["frames"] == ["0", "40"] and "SIMULATED" in pf.metadata["note"]
    per = [PointFeatures.load(tmp_path / "per" / f"simulated-{t}.safetensors") for t in ("lseg", "seem")]
    assert pf.weights.shape == (pf.num_points, 2) and pf.seen.any()
    assert torch.equal(pf.seen, per[0].seen | per[1].seen)  # fuse_teachers: seen by any teacher

    assert main(["gaussians", "eval", str(g), "--views", str(scan), "--features", str(fused), "--holdout-every", "2",
                 "--json", str(tmp_path / "e.json"), "--no-progress"]) == 0
    assert 0.0 <= json.loads((tmp_path / "e.json").read_text())["miou"] <= 1.0

    assert main(["gaussians", "render", str(g), "--views", str(scan), "--features", str(fused), "--query", "a chair",
                 "--holdout-every", "2", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [f"{n}_{k}.png" for n in ("20", "60") for k in ("labels", "query0", "rgb")]

    run = tmp_path / "run"
    assert main(["gaussians", "distil", str(g), "--features", str(fused), "--out", str(run), "--epochs", "1",
                 "--set", "model.options.planes=[4,8,8,8,8,8,8,8]", "--set", "model.options.init_dim=4",
                 "--set", "data.voxel_size=0.1", "--set", "optim.batch_size=1"]) == 0
    assert main(["gaussians", "eval", str(g), "--views", str(scan), "--checkpoint", str(run / "last.safetensors"),
                 "--holdout-every", "2", "--no-progress"]) == 0


def test_features_of_another_scene_are_refused(room, tmp_path, capsys):
    from sas3d.gaussians.ply import read_gaussian_ply, write_gaussian_ply

    root, scan, g = room
    gs = _gt_features(g, tmp_path / "gt.safetensors")
    other = gs.subset(np.arange(gs.num_gaussians))
    other.means = other.means + np.float32(0.01)
    write_gaussian_ply(tmp_path / "other.ply", other)
    assert main(["gaussians", "eval", str(tmp_path / "other.ply"), "--views", str(scan), "--features",
                 str(tmp_path / "gt.safetensors"), "--no-progress"]) == 1
    assert "fingerprint" in capsys.readouterr().err
    assert read_gaussian_ply(tmp_path / "other.ply").num_gaussians == gs.num_gaussians


def test_splat_viewer_colours_by_class_and_query(room, tmp_path):
    from sas3d.gaussians.display import viewer_data
    from sas3d.query.viewer import SceneViewer

    root, scan, g = room
    gs = _gt_features(g, tmp_path / "gt.safetensors")
    data = viewer_data(gs, PointFeatures.load(tmp_path / "gt.safetensors"), source="gt")
    viewer = SceneViewer(data)
    assert viewer.available_modes() == ["rgb", "ground truth", "prediction", "query"]
    seen = data.seen
    pred = viewer.predictions()
    assert (pred[seen] == gs.labels[seen]).mean() > 0.99  # GT prompt features decode to their own class
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    viewer.start(port=port)
    try:
        assert "splats" in viewer._handles and "cloud" not in viewer._handles
        sim = viewer.set_query("chair")
        chair = gs.labels == 4  # scannet20 index of chair
        assert sim[chair & seen].mean() > sim[~chair & seen].mean()
        np.testing.assert_array_equal(viewer._handles["splats"].rgbs, viewer.colors)  # the query colours reached the splats
    finally:
        viewer.stop()
