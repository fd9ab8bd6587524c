"""Training engine: exact resume, determinism, stage switch, run artefacts, validation mIoU, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from sas3d.distill.config import load_train_config
from sas3d.fusion.features import PointFeatures
from sas3d.scene.ply import write_ply
from sas3d.text.labelsets import NYU40_TO_SCANNET20_IDS

# a small real MinkUNet18A (same architecture, narrow widths, one block per stage)
TINY_MODEL = ["model.options={planes: [8, 8, 8, 8, 8, 8, 8, 8], init_dim: 8, layers: [1, 1, 1, 1, 1, 1, 1, 1]}"]


def _grid_mesh(origin, u, v, nu, nv):
    """A planar triangle grid: vertices (nu*nv, 3), faces."""
    i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    verts = np.asarray(origin) + i.reshape(-1, 1) * np.asarray(u) + j.reshape(-1, 1) * np.asarray(v)
    idx = (i * nv + j)[:-1, :-1].reshape(-1)
    faces = np.concatenate([np.stack([idx, idx + nv, idx + 1], 1), np.stack([idx + 1, idx + nv, idx + nv + 1], 1)])
    return verts.astype(np.float32), faces.astype(np.int64)


def make_scene(root: Path, name: str, seed: int, text: torch.Tensor, fused_dir: Path) -> Path:
    """A ScanNet-layout mesh scene (floor, wall, a box 'table') of ~1500 vertices + a fused-feature file
    whose features are the class text feature plus noise on 85% of the points."""
    rng = np.random.default_rng(seed)
    parts = [
        (_grid_mesh([0, 0, 0], [0.06, 0, 0], [0, 0.06, 0], 25, 25), 1),  # floor (ScanNet20 index 1)
        (_grid_mesh([0, 0, 0], [0.06, 0, 0], [0, 0, 0.06], 25, 15), 0),  # wall (index 0)
        (_grid_mesh([0.5, 0.5, 0.4], [0.05, 0, 0], [0, 0.05, 0], 10, 10), 6),  # table top (index 6)
    ]
    verts, faces, labels, off = [], [], [], 0
    for (v, f), cls in parts:
        verts.append(v + rng.normal(0, 0.003, v.shape).astype(np.float32))
        faces.append(f + off)
        labels.append(np.full(len(v), cls))
        off += len(v)
    pts, faces, sc20 = np.concatenate(verts), np.concatenate(faces), np.concatenate(labels)
    nyu = np.asarray(NYU40_TO_SCANNET20_IDS)[sc20]
    folder = root / name
    folder.mkdir(parents=True)
    # colours: a class tint plus noise (for data.input=rgb)
    tint = np.array([[200, 200, 190], [120, 90, 60], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [60, 120, 200]])[np.minimum(sc20, 6)]
    colors = np.clip(tint + rng.normal(0, 20, (len(pts), 3)), 0, 255).astype(np.uint8)
    write_ply(folder / f"{name}_vh_clean_2.ply", pts, colors=colors, faces=faces)
    write_ply(folder / f"{name}_vh_clean_2.labels.ply", pts, faces=faces, vertex_props={"label": nyu.astype(np.int64)})
    feats = text[torch.from_numpy(sc20)] + 0.3 * torch.from_numpy(rng.normal(size=(len(pts), text.shape[1])).astype(np.float32))
    seen = torch.from_numpy(rng.random(len(pts)) < 0.85)
    feats[~seen] = 0
    PointFeatures(feats.half(), seen, {"scene": name}).save(fused_dir / f"{name}.safetensors")
    return folder


def make_dataset(root: Path, dim: int) -> dict:
    """Two scenes of :func:`make_scene` with random unit text features of width ``dim`` (seeded)."""
    fused = root / "fused"
    fused.mkdir()
    gen = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(20, dim, generator=gen), dim=1)
    scenes = [make_scene(root, f"scene{i:04d}_00", i, text, fused) for i in range(2)]
    return {"root": root, "fused": fused, "text": text, "scenes": scenes, "sp_cache": root / "spcache"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("scenes"), 32)


def _cfg(dataset, recipe="sas", epochs=3, extra=()):
    overrides = [*TINY_MODEL, "data.voxel_size=0.05", "data.max_voxels=300", "optim.batch_size=2",
                 f"data.superpoint_cache={dataset['sp_cache']}", "data.augmentation.elastic=false",
                 "optim.lr=0.01", "optim.final_lr=0.001", *extra]
    return load_train_config(recipe, overrides, epochs=epochs)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from sas3d.utils.atomic import load_safetensors

    tensors, _ = load_safetensors(path)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim.", "extra.ema."))}


def _train(dataset, out, cfg, **kw):
    from sas3d.distill.trainer import train

    return train(cfg, dataset["scenes"], dataset["fused"], out, text_features=dataset["text"], **kw)


@pytest.mark.parametrize("recipe", ["sas", "ggsd"])
def test_resume_after_kill_matches_uninterrupted(dataset, tmp_path, recipe):
    # 3 epochs, stage 2 from epoch 3 (round(3 * 0.7) = 2): the resumed epoch is a self-distillation
    # epoch, so the TESD history / EMA teacher must come back exactly too
    cfg = _cfg(dataset, recipe)
    straight = _train(dataset, tmp_path / "a", cfg)
    assert straight.epochs_done == 3
    _train(dataset, tmp_path / "b", cfg, stop_after=2)  # "killed" after epoch 2's checkpoint
    assert not (tmp_path / "b" / "checkpoints" / "epoch_0003.safetensors").exists()
    resumed = _train(dataset, tmp_path / "b", _cfg(dataset, recipe), resume=True)
    assert resumed.epochs_done == 3
    a, b = _weights(tmp_path / "a" / "last.safetensors"), _weights(tmp_path / "b" / "last.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("model.") for k in a)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k
    # the resumed run also continues the metrics log instead of restarting it
    rows_a = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    if recipe == "ggsd":
        assert any(k.startswith("extra.ema.") for k in a)


def test_seed_determinism_and_stage_switch(dataset, tmp_path):
    cfg = _cfg(dataset, "sas", epochs=4, extra=["seed=3"])  # round(4 * 0.7) = 3 stage-1 epochs
    r1 = _train(dataset, tmp_path / "r1", cfg, val_scenes=dataset["scenes"][:1])
    _train(dataset, tmp_path / "r2", cfg, val_scenes=dataset["scenes"][:1])
    w1, w2 = _weights(tmp_path / "r1" / "last.safetensors"), _weights(tmp_path / "r2" / "last.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    other = _train(dataset, tmp_path / "r3", _cfg(dataset, "sas", epochs=1, extra=["seed=4"]))
    w3 = _weights(tmp_path / "r3" / "checkpoints" / "epoch_0001.safetensors")
    ckpts = sorted(p.name for p in (tmp_path / "r1" / "checkpoints").iterdir())
    assert ckpts == [f"epoch_{e:04d}.safetensors" for e in range(1, 5)]
    assert not torch.equal(w3["model.head.weight"], w1["model.head.weight"])
    assert other.epochs_done == 1

    rows = list(csv.DictReader(open(tmp_path / "r1" / "metrics.csv")))
    assert [int(r["stage"]) for r in rows] == [1, 1, 1, 2]
    assert float(rows[-1]["loss_self"]) > 0 and all(float(r["loss_self"]) == 0 for r in rows[:3])
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and abs(lrs[-1] - 0.001) < 1e-9
    for r in rows:  # validation mIoU logged each epoch, a valid fraction
        assert 0.0 <= float(r["val_miou"]) <= 1.0
    assert r1.metrics[-1]["val_miou"] == pytest.approx(float(rows[-1]["val_miou"]), abs=1e-5)
    assert (tmp_path / "r1" / "config.yaml").is_file() and any((tmp_path / "r1" / "tb").iterdir())


def test_cli_openscene_with_minilm_text_and_validation(tmp_path, capsys):
    """`sas3d train` end to end with the real offline MiniLM text encoder (384-d fused features)."""
    from sas3d.cli import main
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    text = build_text_encoder("minilm").encode(get_label_set("scannet20").prompts())
    fused = tmp_path / "fused"
    fused.mkdir()
    scenes = [make_scene(tmp_path, f"scene{i:04d}_01", 20 + i, text, fused) for i in range(2)]
    listing = tmp_path / "train.txt"
    listing.write_text(f"# training scenes\n{scenes[0].name}\n{scenes[1]}\n")  # relative + absolute entries
    out = tmp_path / "run"
    args = ["train", "--recipe", "openscene", "--scenes", str(listing), "--fused", str(fused), "--out", str(out),
            "--val-scenes", str(scenes[0]), "--epochs", "2", "--seed", "1", "--set", "data.voxel_size=0.05",
            "--set", "data.max_voxels=300", "--set", "optim.lr=0.01", "--set", "data.in_memory=false", "--set", "data.augmentation.elastic=false"]
    for o in TINY_MODEL:
        args += ["--set", o]
    assert main(args) == 0
    assert "val mIoU" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["stage"] for r in rows] == ["1", "1"] and all(r["val_miou"] for r in rows)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # the cosine loss goes down
    import yaml

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["recipe"] == "openscene" and resolved["seed"] == 1 and resolved["schedule"]["epochs"] == 2
    # a second run into the same folder without --resume is refused; a missing fused file is named
    assert main(args) == 1
    (fused / f"{scenes[1].name}.safetensors").unlink()
    assert main([*args[:8], str(tmp_path / "run2"), *args[9:]]) == 1
    assert f"{scenes[1].name}.safetensors" in capsys.readouterr().err


def test_tesd_history_ema_versions_and_exact_restore(tmp_path):
    """H <- a*H + (1-a)*F per update, one file per version; a checkpoint pins a version, work after it
    is discarded by restore, and a version is only ever deleted once it is neither pinned nor newest."""
    from sas3d.distill.history import TESDHistory

    hist = TESDHistory(tmp_path / "tesd", alpha=0.5, init="zeros")
    f1, f2 = torch.tensor([[2.0, 0.0], [0.0, 4.0]]), torch.tensor([[0.0, 2.0], [4.0, 0.0]])
    hist.update("s", 0, f1)
    h = hist.update("s", 1, f2)
    # zero init: H = 0.5 * (0.5 * 0 + 0.5 * f1) + 0.5 * f2
    assert torch.allclose(h, 0.25 * f1 + 0.5 * f2)
    assert hist.versions("s") == [2]  # the version an update read is deleted (nothing pinned)
    assert hist.commit({"s": 2, "never-updated": 0}) == {"s": 2}
    hist.update("s", 2, f1)  # progress after the checkpoint ...
    hist.update("s", 3, f2)
    assert hist.versions("s") == [2, 4]  # ... keeps the pinned version, drops the intermediate one
    fresh = TESDHistory(tmp_path / "tesd", alpha=0.5, init="zeros")
    fresh.restore({"s": 2}, ["s"])  # ... and is discarded by a restore to the checkpoint
    assert fresh.versions("s") == [2]
    h3 = fresh.update("s", 2, f1)
    assert torch.allclose(h3, 0.5 * (0.25 * f1 + 0.5 * f2) + 0.5 * f1)
    with pytest.raises(FileNotFoundError, match="cannot resume exactly"):
        TESDHistory(tmp_path / "tesd", alpha=0.5).restore({"s": 7}, ["s"])
    first = TESDHistory(tmp_path / "tesd_first", alpha=0.9, init="first")
    assert torch.allclose(first.update("s", 0, f1), f1)


def test_tesd_labels_from_stored_class_scores_equal_labels_from_features():
    """SAS Eq. 11-12 are linear in H: labelling the stored H.T (N, K) gives the labels of H (N, C)."""
    from sas3d.distill import losses as L

    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=1)
    preds = [torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1) for _ in range(4)]
    sp = torch.randint(0, 6, (40,), generator=g)
    h = torch.zeros(40, 16)
    hk = torch.zeros(40, 5)
    for f in preds:
        h = L.history_update(h, f, 0.9)
        hk = L.history_update(hk, f @ text.T, 0.9)
    for mode in ("superpoint", "point"):
        a = L.tesd_pseudo_labels(h, sp, text, mode)
        b = L.tesd_pseudo_labels(hk, sp, None, mode)
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_predict_point_features_unit_rows_per_voxel():
    from sas3d.geometry.voxel import voxelize
    from sas3d.models.inference import predict_point_features
    from sas3d.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("minkunet18a", in_channels=1, out_channels=16, planes=[8] * 8, init_dim=8, layers=[1] * 8)
    model.train()
    pts = np.random.default_rng(0).random((500, 3)).astype(np.float32)
    out = predict_point_features(model, pts, 0.2)
    assert out.shape == (500, 16) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(500), atol=1e-5)
    vox = voxelize(pts, 0.2)
    same = np.flatnonzero(vox.point_to_voxel == vox.point_to_voxel[0])
    assert len(same) > 1 and torch.equal(out[same[0]], out[same[1]])  # one feature per voxel
    assert model.training  # the caller's mode is restored


def test_supervised_reference_recipe_uses_ground_truth_only(dataset, tmp_path):
    """`supervised`: CE on ground-truth labels, no fused-feature loss; the labels reach the batch."""
    import shutil

    from sas3d.distill.batching import build_batch
    from sas3d.distill.data import load_scene_data
    from sas3d.errors import InputError

    cfg = _cfg(dataset, "supervised", epochs=2)
    assert cfg.loss.labels == 1.0 and cfg.loss.point == 0 and cfg.loss.superpoint == 0 and cfg.stage1_epochs == 2
    scene = load_scene_data(dataset["scenes"][0], dataset["fused"], cfg.data, dataset["sp_cache"])
    part = build_batch([scene], [0], cfg.data, [np.random.default_rng(0)], train=False, num_classes=20).parts[0]
    rep = part.voxel_to_point[part.label_rows.numpy()]
    assert len(rep) and np.array_equal(part.label_target.numpy(), scene.labels[rep])  # the voxels' own labels
    assert set(part.label_target.tolist()) == {0, 1, 6}  # wall, floor, table of the fixture

    result = _train(dataset, tmp_path / "sup", cfg)
    rows = list(csv.DictReader(open(tmp_path / "sup" / "metrics.csv")))
    assert result.epochs_done == 2 and float(rows[-1]["loss_labels"]) > 0
    assert all(float(r["loss_point"]) == 0 and float(r["loss_superpoint"]) == 0 for r in rows)
    assert float(rows[-1]["loss_labels"]) < float(rows[0]["loss_labels"])

    # a training scene without ground truth is refused before training, naming the scene
    bare = tmp_path / "bare" / dataset["scenes"][0].name
    shutil.copytree(dataset["scenes"][0], bare)
    next(bare.glob("*labels.ply")).unlink()
    with pytest.raises(InputError, match="no ground-truth labels"):
        from sas3d.distill.trainer import train

        train(cfg, [bare], dataset["fused"], tmp_path / "sup2", text_features=dataset["text"])


def test_resume_accepts_a_run_from_before_a_config_field_was_added(dataset, tmp_path):
    """A checkpoint whose config lacks a field added later (at its default) resumes; a real change is refused."""
    from sas3d.errors import ConfigError
    from sas3d.utils.atomic import load_safetensors, save_safetensors_atomic

    cfg = _cfg(dataset, "openscene", epochs=2)
    _train(dataset, tmp_path / "old", cfg, stop_after=1)
    last = tmp_path / "old" / "last.safetensors"
    tensors, meta = load_safetensors(last)
    del meta["config"]["loss"]["labels"]  # as written by a version without the supervised reference
    save_safetensors_atomic(last, tensors, meta)
    assert _train(dataset, tmp_path / "old", cfg, resume=True).epochs_done == 2

    _train(dataset, tmp_path / "other", cfg, stop_after=1)
    with pytest.raises(ConfigError, match="different config"):
        _train(dataset, tmp_path / "other", _cfg(dataset, "openscene", epochs=2, extra=["loss.point=0.5"]), resume=True)


def test_ema_teacher_averages_weights_and_batchnorm_statistics():
    """t <- m*t + (1-m)*s for parameters and BatchNorm running statistics; batch counters are copied."""
    from sas3d.distill.strategies import EMATeacher

    student = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    teacher = EMATeacher(student, momentum=0.75)
    w0, mean0 = student[0].weight.detach().clone(), student[1].running_mean.clone()
    with torch.no_grad():
        student[0].weight.add_(4.0)
    student.train()
    student(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # moves the running statistics, counts one batch
    teacher.update(student)
    t = teacher.model
    assert torch.allclose(t[0].weight, 0.75 * w0 + 0.25 * student[0].weight)
    assert torch.allclose(t[1].running_mean, 0.75 * mean0 + 0.25 * student[1].running_mean)
    assert not torch.allclose(t[1].running_mean, student[1].running_mean)
    assert int(t[1].num_batches_tracked) == int(student[1].num_batches_tracked) == 1


def test_one_scene_per_step_students_normalise_with_the_scene_statistics(dataset, tmp_path):
    """model.norm_stats=auto: a student whose every step held one scene is stored with norm_stats=scene
    (sas3d.models.norm); one trained on two scenes per step keeps the running averages."""
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.models.norm import model_norm_stats

    _train(dataset, tmp_path / "one", _cfg(dataset, "openscene", epochs=1, extra=["optim.batch_size=1"]))
    _train(dataset, tmp_path / "two", _cfg(dataset, "openscene", epochs=1))  # batch 2 of the 2 scenes
    assert model_norm_stats(load_checkpoint(tmp_path / "one" / "last.safetensors")[0]) == "scene"
    assert model_norm_stats(load_checkpoint(tmp_path / "two" / "last.safetensors")[0]) == "running"
    forced = _cfg(dataset, "openscene", epochs=1, extra=["optim.batch_size=1", "model.norm_stats=running"])
    _train(dataset, tmp_path / "forced", forced)
    assert model_norm_stats(load_checkpoint(tmp_path / "forced" / "last.safetensors")[0]) == "running"


@pytest.mark.parametrize("recipe,full_in_stage2", [("sas", True), ("ggsd", False)])
def test_the_head_runs_on_every_voxel_only_in_steps_that_read_it(dataset, tmp_path, recipe, full_in_stage2):
    """A step computes the (M, planes) x (planes, C) head on every voxel only when its losses read the
    full output (TESD's stage-2 class scores); otherwise only on the loss rows."""
    from sas3d.distill.batching import StepBatches
    from sas3d.distill.trainer import Trainer

    cfg = _cfg(dataset, recipe)
    trainer = Trainer(cfg, dataset["scenes"], dataset["fused"], tmp_path / "run", text_features=dataset["text"])
    batch = StepBatches(trainer.scenes, trainer.plan, 0, cfg.data, point_target=cfg.loss.point_target, num_classes=0)[(0, 0)]
    batch.epoch = cfg.stage1_epochs
    head_rows: list[int] = []
    head = trainer.model.head  # GGSD's EMA teacher is a deep copy (hooks included): count the student's only
    head.register_forward_hook(lambda module, args, out: head_rows.append(args[0].shape[0]) if module is head else None)
    for stage in (1, 2):
        head_rows.clear()
        trainer.train_step(batch, stage, 1e-3)
        rows = int(torch.cat(trainer._loss_rows(batch, stage)).unique().numel())
        full = stage == 2 and full_in_stage2
        assert rows < batch.num_voxels
        assert head_rows == ([batch.num_voxels, rows] if full else [rows]), (stage, head_rows)
