"""End to end: the demo pipeline on one tiny generated room, through every stage, and its report."""

import json
import math

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from sas3d.demo.rooms import build_embedded_dataset
    from sas3d.pipeline.config import PipelineConfig
    from sas3d.pipeline.report import write_report
    from sas3d.pipeline.runner import run_pipeline

    out = tmp_path_factory.mktemp("pipeline")
    data = build_embedded_dataset(out / "data", n_train=1, n_val=1, n_views=3, width=96, height=72, progress=False)
    cfg = PipelineConfig(images_per_class=1, epochs=3, voxel_size=0.1, lr=3e-3, final_lr=3e-4, batch_size=1,
                         model_options={"planes": [4, 8, 8, 8, 8, 8, 8, 8], "init_dim": 4}, queries=["something to sit on"],
                         query_renders=1, supervised_reference=True, parallel_runs=2, progress=False,
                         train_overrides=["loss.balance=class"])
    report = run_pipeline(data["train"], data["val"], out, cfg, log=lambda _: None)
    json_path, html_path, _ = write_report(report, out, "tiny")
    return out, report, json.loads(json_path.read_text()), html_path


def test_report_has_every_stage_in_both_splits_and_says_simulated(tiny_run):
    out, report, data, html_path = tiny_run
    assert data["simulated"] is True and "SIMULATED" in data["note"]
    common = {"teacher:simulated-lseg", "teacher:simulated-seem", "fusion:add", "fusion:linear", "fusion:guided", "fusion:confusion",
              "distill:pixel_point", "distill:superpoint", "distill:tesd", "distill:ensemble"}
    # in place: distilled and scored on the training room; the supervised reference only held out
    assert set(data["splits"]["in_place"]["stages"]) == common
    assert set(data["splits"]["held_out"]["stages"]) == common | {"distill:supervised"}
    assert data["splits"]["in_place"]["scenes"] != data["splits"]["held_out"]["scenes"]
    for split in data["splits"].values():
        for stage in split["stages"].values():
            assert 0.0 <= stage["miou"] <= 1.0 and 0.0 <= stage["macc"] <= 1.0
    assert set(data["checks"]) == {"in_place", "held_out"} and all(isinstance(v, bool) for v in data["checks"]["in_place"].values())
    assert "SIMULATED" in html_path.read_text()
    for rel in ("capability.json", "capability.png", "segmentation.ply", data["queries"][0]["ply"], *data["queries"][0]["renders"]):
        assert (out / rel).is_file(), rel
    # the training runs got the pipeline's extra options
    assert "balance: class" in (out / "runs" / "sas" / "config.yaml").read_text()


def test_checks_and_lost_classes_are_computed_from_the_numbers():
    """split_checks / lost_classes on a hand-made split: the +5 target, the stage chain, the 80 % rule."""
    from sas3d.pipeline.report import lost_classes, split_checks

    def stage(label, miou, per_class):
        return {"label": label, "miou": miou, "macc": miou, "per_class_iou": per_class}

    split = {"stages": {
        "teacher:a": stage("2D a", 0.50, {"wall": 0.9, "door": 0.1}),
        "fusion:add": stage("2D add", 0.52, {}), "fusion:linear": stage("2D linear", 0.51, {}),
        "fusion:guided": stage("2D guided", 0.60, {"wall": 0.9, "door": 0.6, "window": 0.3}),
        "distill:pixel_point": stage("pp", 0.40, {}), "distill:superpoint": stage("sp", 0.45, {}),
        "distill:tesd": stage("tesd", 0.66, {"wall": 0.95, "door": 0.47, "window": 0.0}),
    }}
    checks = split_checks(split)
    assert checks["guided 2D >= best single teacher"] and checks["sp >= pp"] and checks["tesd >= sp"]
    assert checks["SAS student >= guided 2D + 5 mIoU"]  # 0.66 >= 0.65
    assert lost_classes(split) == ["door"]  # 0.47 < 0.8 * 0.6; window's guided 0.3 is below 0.5: not counted
    assert not checks["no class lost (>= 80 % of every guided IoU >= 50)"]
    split["stages"]["distill:tesd"]["miou"] = 0.64
    assert not split_checks(split)["SAS student >= guided 2D + 5 mIoU"]


def test_stage_miou_matches_an_independent_recount(tiny_run):
    """Recompute the guided-fusion row from the saved fused file with a plain numpy confusion matrix."""
    import torch

    from sas3d import load_scene
    from sas3d.fusion.features import PointFeatures
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    out, report, data, _ = tiny_run
    scene_dir = next((out / "data" / "val").iterdir())
    scene = load_scene(scene_dir)
    fused = PointFeatures.load(out / "fused" / "guided" / f"{scene.name}.safetensors")
    text = build_text_encoder("minilm").encode(get_label_set("scannet20").prompts())
    scores = torch.nn.functional.normalize(fused.features.float(), dim=1) @ text.T
    pred = np.where(fused.seen.numpy(), scores.argmax(1).numpy(), -1)
    ious = []
    for c in range(20):
        gt_c = scene.labels == c
        if not gt_c.any():
            continue
        pred_c = (pred == c) & (scene.labels != 255)
        ious.append((gt_c & pred_c).sum() / (gt_c | pred_c).sum())
    assert math.isclose(report.split("held_out").row("fusion:guided").miou, float(np.mean(ious)), rel_tol=1e-6)


def test_sas_run_was_paused_after_stage_one(tiny_run):
    out, _, data, _ = tiny_run
    # 3 epochs * 0.7 -> 2 epochs of stage 1 kept as "+ superpoint"; TESD continues from it
    assert (out / "runs" / "sas" / "stage1.safetensors").is_file()
    rows = (out / "runs" / "sas" / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["1", "1", "2"]
    # only the newest per-epoch checkpoint is kept (keep_checkpoints=1)
    assert len(list((out / "runs" / "sas" / "checkpoints").glob("epoch_*.safetensors"))) == 1


def test_runs_trained_in_worker_processes_match_an_in_process_run(tiny_run, tmp_path):
    """The pipeline trains its students side by side in spawned workers; each is the run it would be alone."""
    import torch

    from sas3d.config import from_dict
    from sas3d.pipeline.config import PipelineConfig
    from sas3d.pipeline.students import train_run, training_overrides
    from sas3d.utils.atomic import load_safetensors

    out, _, data, _ = tiny_run
    common = training_overrides(from_dict(PipelineConfig, data["config"]["pipeline"]))
    common += ["engine.procs=1", "engine.loader_workers=0", "engine.threads=1"]  # as in the workers
    train_dirs = [str(p) for p in sorted((out / "data" / "train").iterdir())]
    checkpoints, _ = train_run("supervised", common, 3, 2, train_dirs, str(out / "fused" / "guided"), str(tmp_path / "sup"))
    here, _ = load_safetensors(checkpoints["last"])
    there, _ = load_safetensors(out / data["artefacts"]["checkpoint_supervised"])
    model_keys = [k for k in here if k.startswith("model.")]
    assert model_keys and all(torch.equal(here[k], there[k]) for k in model_keys)


def test_capability_ranking_matches_a_recount_of_the_teachers_on_both_rooms(tiny_run):
    """report.json's capability ranking: capability from capability.json, true IoU recounted from the fused teacher files."""
    import torch
    from scipy.stats import spearmanr

    from sas3d import load_scene
    from sas3d.capability import Capability
    from sas3d.fusion.features import PointFeatures
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    out, _, data, _ = tiny_run
    ranking = data["capability_ranking"]
    classes = get_label_set("scannet20").classes
    cap = Capability.load(out / "capability.json")
    text = build_text_encoder("minilm").encode(get_label_set("scannet20").prompts())
    scenes = [load_scene(d) for split in ("train", "val") for d in sorted((out / "data" / split).iterdir())]
    xs, ys = [], []
    for teacher in ("simulated-lseg", "simulated-seem"):
        inter, union, present = np.zeros(20), np.zeros(20), np.zeros(20, bool)
        for scene in scenes:
            fused = PointFeatures.load(out / "fused" / teacher / f"{scene.name}.safetensors")
            scores = torch.nn.functional.normalize(fused.features.float(), dim=1) @ text.T
            pred = np.where(fused.seen.numpy(), scores.argmax(1).numpy(), -1)
            for c in range(20):
                gt_c, pred_c = scene.labels == c, (pred == c) & (scene.labels != 255)
                inter[c] += (gt_c & pred_c).sum()
                union[c] += (gt_c | pred_c).sum()
                present[c] |= gt_c.any()
        for c, name in enumerate(classes):
            if not present[c] or name == "otherfurniture" or name not in cap.classes:
                assert name not in ranking["classes"]
                continue
            entry = ranking["classes"][name]
            assert math.isclose(entry["true_iou"][teacher], inter[c] / union[c], rel_tol=1e-6), (teacher, name)
            assert math.isclose(entry["capability"][teacher], cap.scores_for([teacher], [name])[0, 0], abs_tol=1e-6)
            xs.append(cap.scores_for([teacher], [name])[0, 0])
            ys.append(inter[c] / union[c])
    assert ranking["cells"] == len(xs)
    assert math.isclose(ranking["spearman"], spearmanr(xs, ys).statistic, abs_tol=1e-6)
