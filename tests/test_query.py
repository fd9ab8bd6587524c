"""Text queries and segmentation exports, checked against brute-force cosine / argmax."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

from sas3d.cli import main
from sas3d.evaluate.predict import classify
from sas3d.fusion.features import PointFeatures
from sas3d.query.export import NO_LABEL, write_heatmap_ply, write_label_ply
from sas3d.query.similarity import load_point_features, query_prompt, source_kind, text_similarity
from sas3d.scene.ply import read_ply, write_ply
from sas3d.scene.types import Scene


def _grid_scene(n_side: int = 6) -> Scene:
    """A flat n x n vertex grid mesh (so faces must survive the export)."""
    ij = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij"), -1).reshape(-1, 2)
    pts = np.concatenate([ij * 0.1, np.zeros((len(ij), 1))], 1).astype(np.float32)
    faces = []
    for i in range(n_side - 1):
        for j in range(n_side - 1):
            a = i * n_side + j
            faces += [[a, a + 1, a + n_side], [a + 1, a + n_side + 1, a + n_side]]
    return Scene("grid", pts, "ply", faces=np.asarray(faces, np.int64), colors=np.full((len(pts), 3), 200, np.uint8))


def _features_near(scene: Scene, text: torch.Tensor, centre: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Random features, pulled towards ``text`` for points within 0.15 of ``centre``."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(scene.num_points, text.shape[0], generator=g)
    near = torch.from_numpy(np.linalg.norm(scene.points - centre, axis=1) < 0.15)
    f[near] = 0.2 * f[near] + 3 * text
    return f


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b))


def test_heatmap_ply_matches_brute_force(tmp_path):
    scene = _grid_scene()
    text = torch.nn.functional.normalize(torch.randn(16, generator=torch.Generator().manual_seed(1)), dim=0)
    centre = np.array([0.2, 0.2, 0.0])
    feats = _features_near(scene, text, centre).half()
    sim = text_similarity(feats, text)
    expected = _cos(feats.float().numpy().astype(np.float64), text.numpy().astype(np.float64))
    np.testing.assert_allclose(sim.numpy(), expected, atol=1e-5)
    # the points near the centre light up
    near = np.linalg.norm(scene.points - centre, axis=1) < 0.15
    assert sim[torch.from_numpy(near)].min() > sim[torch.from_numpy(~near)].max()

    write_heatmap_ply(tmp_path / "heat.ply", scene, sim.numpy(), cmap="gray")
    ply = read_ply(tmp_path / "heat.ply")
    np.testing.assert_allclose(ply.vertex["similarity"], expected, atol=1e-5)
    np.testing.assert_array_equal(ply.faces, scene.faces)
    red = ply.colors()[:, 0].astype(int)
    order = np.argsort(expected)
    assert (np.diff(red[order]) >= 0).all()  # grey level monotonic in similarity
    assert red[order[0]] == 0 and red[order[-1]] == 255  # min-max scaled

    write_heatmap_ply(tmp_path / "turbo.ply", scene, sim.numpy())
    t = (expected - expected.min()) / (expected.max() - expected.min())
    want = np.round(matplotlib.colormaps["turbo"](t)[:, :3] * 255)
    assert np.abs(read_ply(tmp_path / "turbo.ply").colors().astype(int) - want).max() <= 1


def test_label_ply_matches_brute_force_argmax(tmp_path):
    scene = _grid_scene()
    g = torch.Generator().manual_seed(2)
    feats, text = torch.randn(scene.num_points, 8, generator=g), torch.randn(5, 8, generator=g)
    seen = torch.ones(scene.num_points, dtype=torch.bool)
    seen[3] = False
    labels = classify(feats, text, seen=seen)
    fn = feats.numpy() / np.linalg.norm(feats.numpy(), axis=1, keepdims=True)
    tn = text.numpy() / np.linalg.norm(text.numpy(), axis=1, keepdims=True)
    brute = np.argmax(fn @ tn.T, axis=1)
    legend = write_label_ply(tmp_path / "labels.ply", scene, labels.numpy(), ["a", "b", "c", "d", "e"])
    lab = read_ply(tmp_path / "labels.ply").vertex["label"]
    assert lab.dtype == np.uint16 and lab[3] == NO_LABEL
    keep = np.arange(scene.num_points) != 3
    np.testing.assert_array_equal(lab[keep], brute[keep])
    leg = json.loads(legend.read_text())
    assert [c["name"] for c in leg["classes"]] == ["a", "b", "c", "d", "e"]
    assert [c["points"] for c in leg["classes"]] == np.bincount(brute[keep], minlength=5).tolist()
    assert leg["no_prediction_points"] == 1


def test_prompt_rule():
    assert query_prompt("chair") == "a chair in a scene"
    assert query_prompt("shower curtain") == "a shower curtain in a scene"
    assert query_prompt("a soft place to sleep at night") == "a soft place to sleep at night"
    assert query_prompt("chair", "raw") == "chair"
    with pytest.raises(Exception, match="empty"):
        query_prompt("  ")


def test_cli_query_and_segment_end_to_end(tmp_path, capsys):
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import prompt_for

    scene = _grid_scene()
    write_ply(tmp_path / "grid.ply", scene.points, colors=scene.colors, faces=scene.faces)
    enc = build_text_encoder("minilm")
    chair, table = enc.encode([prompt_for("chair"), prompt_for("table")])
    centre = np.array([0.4, 0.4, 0.0])
    near = np.linalg.norm(scene.points - centre, axis=1) < 0.15
    feats = torch.where(torch.from_numpy(near)[:, None], chair, table)
    feats = feats + 0.01 * torch.randn(feats.shape, generator=torch.Generator().manual_seed(3))
    seen = torch.ones(scene.num_points, dtype=torch.bool)
    fused = tmp_path / "grid.safetensors"
    PointFeatures(feats.half(), seen, {"scene": "grid"}).save(fused)
    assert source_kind(fused) == "fused"
    assert load_point_features(fused, scene).num_points == scene.num_points

    assert main(["query", str(fused), str(tmp_path / "grid.ply"), "chair", "--out", str(tmp_path / "heat.ply")]) == 0
    heat = read_ply(tmp_path / "heat.ply")
    sim = heat.vertex["similarity"]
    assert sim[near].min() > sim[~near].max()
    assert heat.faces is not None and len(heat.faces) == len(scene.faces)

    out = tmp_path / "seg.ply"
    assert main(["segment", str(fused), str(tmp_path / "grid.ply"), "--classes", "chair, table,spaceship", "--out", str(out)]) == 0
    lab = read_ply(out).vertex["label"]
    np.testing.assert_array_equal(lab, np.where(near, 0, 1))
    assert json.loads(out.with_suffix(".legend.json").read_text())["classes"][2]["name"] == "spaceship"

    capsys.readouterr()
    assert main(["segment", str(fused), str(tmp_path / "grid.ply"), "--classes", " , ", "--out", str(tmp_path / "x.ply")]) == 1
    assert "no class names" in capsys.readouterr().err
    assert not (tmp_path / "x.ply").exists()

    # eval CLI on the same scene with ground-truth labels (scannet20 chair=4, table=6)
    gt = np.where(near, 4, 6)
    gt[0] = 5  # one sofa point predicted "table": sofa IoU 0, table loses precision
    write_ply(tmp_path / "lab.ply", scene.points, faces=scene.faces, vertex_props={"label": gt.astype(np.uint16)})
    fused_dir = tmp_path / "fused"
    fused_dir.mkdir()
    PointFeatures(feats.half(), seen, {}).save(fused_dir / "lab.safetensors")
    res = tmp_path / "eval.json"
    assert main(["eval", "--mode", "fusion", "--fused", str(fused_dir), "--scenes", str(tmp_path / "lab.ply"), "--labelset", "scannet20", "--json", str(res)]) == 0
    r = json.loads(res.read_text())
    n_table = int((~near).sum()) - 1
    assert r["per_class"]["chair"]["iou"] == 1.0
    assert r["per_class"]["table"]["iou"] == pytest.approx(n_table / (n_table + 1))
    assert r["per_class"]["sofa"]["iou"] == 0.0
    assert r["miou"] == pytest.approx((1 + n_table / (n_table + 1) + 0) / 3)
    assert res.with_suffix(".png").stat().st_size > 0
    assert "mIoU" in capsys.readouterr().out


def test_cli_query_from_checkpoint(tmp_path):
    from sas3d.models.checkpoint import load_checkpoint, save_checkpoint
    from sas3d.models.inference import predict_point_features
    from sas3d.models.registry import build_model
    from sas3d.text.encoders import build_text_encoder

    torch.manual_seed(0)
    model = build_model("minkunet18a", in_channels=1, out_channels=384, planes=(8,) * 8, init_dim=8, layers=(1,) * 8)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, model, {"config": {"data": {"voxel_size": 0.1}}})
    assert source_kind(ckpt) == "checkpoint"
    scene = _grid_scene()
    write_ply(tmp_path / "grid.ply", scene.points, faces=scene.faces)
    assert main(["query", str(ckpt), str(tmp_path / "grid.ply"), "a chair to sit on", "--out", str(tmp_path / "h.ply")]) == 0
    # brute force: the checkpoint's model at its recorded voxel size, cosine to the typed sentence
    loaded, _, _ = load_checkpoint(ckpt)
    feats = predict_point_features(loaded, scene.points, 0.1).numpy().astype(np.float64)
    text = build_text_encoder("minilm").encode(["a chair to sit on"])[0].numpy().astype(np.float64)
    np.testing.assert_allclose(read_ply(tmp_path / "h.ply").vertex["similarity"], _cos(feats, text), atol=1e-4)


# ------------------------------------------------------------------ queries longer than the text encoder reads


def test_long_query_warns_with_the_tokens_kept(tmp_path, capsys):
    from sas3d.text.encoders import build_text_encoder, token_counts

    enc = build_text_encoder("minilm")
    long_query = "a chair " + "very " * 300 + "close to the window"
    total, kept = token_counts(enc, long_query)
    assert kept == 256 and total == 2 + 2 + 300 + 4  # [CLS] a chair, 300 x very, close to the window [SEP]
    # the claim of the warning: words beyond the kept tokens do not change the embedding
    assert torch.equal(enc.encode([long_query]), enc.encode([long_query + " and a sofa"]))
    assert token_counts(enc, "a chair") == (4, 4)

    scene = _grid_scene()
    write_ply(tmp_path / "grid.ply", scene.points, colors=scene.colors, faces=scene.faces)
    feats = torch.randn(scene.num_points, 384)
    PointFeatures(feats.half(), torch.ones(scene.num_points, dtype=torch.bool), {}).save(tmp_path / "f.safetensors")
    assert main(["query", str(tmp_path / "f.safetensors"), str(tmp_path / "grid.ply"), long_query,
                 "--out", str(tmp_path / "q.ply")]) == 0
    err = capsys.readouterr().err
    assert f"is {total} tokens long" in err and "reads only the first 256" in err and f"last {total - 256} tokens" in err
    assert main(["query", str(tmp_path / "f.safetensors"), str(tmp_path / "grid.ply"), "a chair",
                 "--out", str(tmp_path / "q.ply")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_long_query_warning_for_clip_and_in_the_viewer(tmp_path):
    from test_teachers import tiny_clip

    from sas3d.query.similarity import truncation_warning
    from sas3d.query.viewer import SceneViewer, ViewerData
    from sas3d.text.clip import CLIPTextEncoder
    from sas3d.text.encoders import token_counts

    model, tokenizer = tiny_clip()
    enc = CLIPTextEncoder(model=model, tokenizer=tokenizer)
    text = "abc " * 40  # the tiny tokenizer has single letters only: 120 tokens + 2 special
    assert token_counts(enc, text) == (122, 64)
    assert torch.equal(enc.encode([text]), enc.encode([text + "zzz"]))
    assert "is 122 tokens long" in truncation_warning(enc, text)
    data = ViewerData("t", np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8), features=torch.randn(3, 16))
    viewer = SceneViewer(data, text_encoder=enc)
    viewer.set_query(text)
    assert "reads only the first 64" in viewer.query_warning and "warning:" in viewer._status()
    viewer.set_query("abc")
    assert viewer.query_warning is None
