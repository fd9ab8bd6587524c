"""`sas3d instances` and `sas3d eval --task instance` end to end on a tiny ScanNet-layout scan, and the viewer's instance modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sas3d.cli import main as cli_main
from sas3d.fusion.features import PointFeatures
from sas3d.instances.scannet_gt import write_scannet_annotation
from sas3d.scene.ply import read_ply, write_ply

NAME = "scene0999_00"


def _box(lo, hi, step=0.04):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    g = np.stack(np.meshgrid(*[np.arange(lo[a], hi[a] + 1e-9, step) for a in range(3)], indexing="ij"), -1).reshape(-1, 3)
    on_surface = np.isclose(g[:, :2], lo[:2]).any(1) | np.isclose(g, hi).any(1)  # no bottom face: a scan does not see it
    return g[on_surface]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """Floor + two chairs + a table as a ScanNet scan folder (mesh-less PLY, NYU40 labels, instance annotation)
    and a fused file whose features are the class prompt embeddings plus noise."""
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    root = tmp_path_factory.mktemp("inst")
    d = root / "scans" / NAME
    d.mkdir(parents=True)
    floor = np.stack(np.meshgrid(np.arange(0, 3, 0.04), np.arange(0, 2, 0.04), [0.0], indexing="ij"), -1).reshape(-1, 3)
    objs = [floor, _box((0.3, 0.3, 0.04), (0.78, 0.78, 0.9)), _box((1.0, 0.3, 0.04), (1.8, 1.2, 0.76)), _box((2.2, 0.5, 0.04), (2.68, 1.0, 0.9))]
    names, nyu_of = ["floor", "chair", "table", "chair"], {"floor": 2, "chair": 5, "table": 7}
    pts = np.concatenate(objs).astype(np.float32)
    obj = np.concatenate([np.full(len(o), i) for i, o in enumerate(objs)])
    nyu = np.asarray([nyu_of[names[i]] for i in obj], dtype=np.uint16)
    colors = np.full((len(pts), 3), 150, np.uint8)
    write_ply(d / f"{NAME}_vh_clean_2.ply", pts, colors)
    write_ply(d / f"{NAME}_vh_clean_2.labels.ply", pts, colors, vertex_props={"label": nyu})
    write_scannet_annotation(d, NAME, obj + 1, nyu)
    ls = get_label_set("scannet20")
    text = build_text_encoder("minilm").encode(ls.prompts()).float()
    cls = torch.tensor([ls.index(n) for n in names])[obj]
    gen = torch.Generator().manual_seed(0)
    feats = text[cls] + 0.02 * torch.randn(len(pts), text.shape[1], generator=gen)
    (root / "fused").mkdir()
    PointFeatures(feats.half(), torch.ones(len(pts), dtype=torch.bool), {"note": "test features"}).save(root / "fused" / f"{NAME}.safetensors")
    return root, d, obj


def test_cli_instances_end_to_end(scan, capsys):
    root, d, obj = scan
    out = root / "out"
    rc = cli_main(["instances", str(d), "--fused", str(root / "fused" / f"{NAME}.safetensors"), "--out", str(out),
                   "--query", "chair", "--scannet-export"])
    assert rc == 0
    js = json.loads((out / "instances.json").read_text())
    assert js["labeller"] == "fusion" and js["proposals"]["source"] == "builtin"
    assert all(set(r) >= {"class", "score", "points", "bbox_min", "bbox_max"} for r in js["instances"])
    ply = read_ply(out / "instances.ply")
    ids = ply.vertex["instance"]
    assert ids.shape == obj.shape and (ids >= 0).all()
    classes = {r["id"]: r["class"] for r in js["instances"]}
    scores = {r["id"]: r["score"] for r in js["instances"]}
    for o, name in enumerate(["floor", "chair", "table", "chair"]):
        # each object shows (almost) as one instance of its class (kNN superpoints blur the floor contact a little)
        top = np.bincount(ids[obj == o]).argmax()
        assert np.mean(ids[obj == o] == top) > 0.95
        assert np.mean(obj[ids == top] == o) > 0.95
        if name == "floor":  # a surface, never an instance's class (label.stuff_classes): it takes
            # some object class and ranks last (its points agree with no object)
            assert classes[int(top)] not in ("floor", "wall", "ceiling") and scores[int(top)] == min(scores.values()) < 0.05 * max(scores.values())
        else:
            assert classes[int(top)] == name
    q = json.loads((out / "queries.json").read_text())["queries"][0]
    assert q["instances"][0]["class_name"] == "chair" and q["instances"][1]["class_name"] == "chair"
    from sas3d.instances.readers import load_proposals

    exported = load_proposals(out / "scannet" / f"{NAME}.txt", len(obj))
    assert {5, 7} <= set(exported.labels.tolist()) and 2 not in exported.labels.tolist()  # NYU40 2 = floor


def test_cli_eval_instance_task(scan):
    root, d, _ = scan
    res = {}
    for props in ("builtin", "gt"):
        j = root / f"eval_{props}.json"
        rc = cli_main(["eval", "--task", "instance", "--mode", "fusion", "--fused", str(root / "fused"), "--scenes", str(d),
                       "--proposals", props, "--json", str(j)])
        assert rc == 0
        res[props] = json.loads(j.read_text())
    for r in res.values():  # chairs and tables are cleanly separable: perfect AP; floor is not a benchmark class
        assert r["ap50"] == pytest.approx(1.0) and r["per_class"]["chair"]["ap50"] == pytest.approx(1.0)
        assert r["per_class"]["sofa"]["ap50"] is None
    assert res["gt"]["map"] == pytest.approx(1.0)
    # the proposals' own quality, labels aside: ground-truth masks are perfect (the floor's lies on void: ignored)
    assert res["gt"]["proposals_class_agnostic"]["ap50"] == pytest.approx(1.0)
    assert 0.0 < res["builtin"]["proposals_class_agnostic"]["ap50"] <= 1.0
    assert (root / "eval_gt.png").is_file() and res["gt"]["plot"] == "eval_gt.png"
    # a closed-set prediction folder in the benchmark format, scored as is
    out = root / "out_eval"
    cli_main(["instances", str(d), "--fused", str(root / "fused" / f"{NAME}.safetensors"), "--proposals", "gt", "--out", str(out), "--scannet-export"])
    j = root / "eval_file.json"
    assert cli_main(["eval", "--task", "instance", "--scenes", str(d), "--proposals", str(out / "scannet"), "--proposal-labels", "--json", str(j)]) == 0
    assert json.loads(j.read_text())["map"] == pytest.approx(1.0)


def test_cli_instances_errors(scan, capsys):
    root, d, _ = scan
    assert cli_main(["instances", str(d), "--labeller", "distill", "--out", str(root / "x")]) == 1
    assert "needs --checkpoint" in capsys.readouterr().err
    bad = root / "bad.txt"
    bad.write_text("nope\n")
    assert cli_main(["instances", str(d), "--fused", str(root / "fused" / f"{NAME}.safetensors"), "--proposals", str(bad), "--out", str(root / "x")]) == 1
    assert "bad.txt: line 1" in capsys.readouterr().err


def test_cli_instances_from_checkpoint(scan, tmp_path):
    """The distill labeller runs the student (tiny, untrained: only the plumbing is checked here)."""
    from sas3d.models.checkpoint import save_checkpoint
    from sas3d.models.registry import build_model

    root, d, obj = scan
    torch.manual_seed(0)
    model = build_model("minkunet18a", in_channels=1, out_channels=384, planes=(8,) * 8, init_dim=8, layers=(1,) * 8)
    save_checkpoint(tmp_path / "m.safetensors", model, {"config": {"data": {"voxel_size": 0.1}}})
    rc = cli_main(["instances", str(d), "--checkpoint", str(tmp_path / "m.safetensors"), "--labeller", "ensemble",
                   "--fused", str(root / "fused" / f"{NAME}.safetensors"), "--proposals", "gt", "--out", str(tmp_path / "o")])
    assert rc == 0
    js = json.loads((tmp_path / "o" / "instances.json").read_text())
    assert js["labeller"] == "ensemble" and len(js["instances"]) == 4


def test_viewer_instance_modes(scan):
    from sas3d.instances.labelling import label_proposals
    from sas3d.instances.segment import gt_proposals
    from sas3d.instances.features import labeller_features
    from sas3d.query.viewer import SceneViewer, ViewerData
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    root, d, obj = scan
    pf = PointFeatures.load(root / "fused" / f"{NAME}.safetensors")
    ls = get_label_set("scannet20")
    enc = build_text_encoder("minilm")
    inst = label_proposals(gt_proposals(obj + 1), labeller_features("fusion", fused=pf.features, seen=pf.seen), enc.encode(ls.prompts()).float(), list(ls.classes))
    from sas3d import load_scene
    from sas3d.commands.instances import instance_viewer_data

    data = instance_viewer_data(load_scene(d), inst, pf.features, pf.seen.numpy(), "fused", max_points=len(obj) // 2)
    keep = data.point_index  # a random half, as the viewer sub-samples large scenes
    assert len(keep) == len(obj) // 2 and isinstance(data, ViewerData)
    viewer = SceneViewer(data, text_encoder=enc)
    assert "instances" in viewer.available_modes()
    colors = viewer.set_mode("instances")
    for o in range(4):  # one colour per object
        assert len(np.unique(colors[obj[keep] == o], axis=0)) == 1
    assert len(np.unique(colors, axis=0)) == 4
    ranked = viewer.highlight_instances("table", top_k=1)
    assert ranked[0].class_name == "table"
    table = obj[keep] == 2
    assert (viewer.colors[table] == [230, 30, 30]).all() and not (viewer.colors[~table] == [230, 30, 30]).all(axis=1).any()
