"""Stage-2 strategies as the trainer runs them: TESD and GGSD pseudo-labels against hand-computed cases,
and the class-balanced distillation loss of the trainer against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sas3d.distill.batching import EpochPlan, build_batch
from sas3d.distill.config import load_train_config
from sas3d.distill.data import SceneData
from sas3d.distill.strategies import GGSD, TESD

TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # class 0 = x axis, class 1 = y axis


def _scene() -> SceneData:
    """Six points 1 m apart (one voxel each), superpoints {0, 1, 2} and {3, 4, 5}, every point seen."""
    pts = np.array([[i, 0.0, 0.0] for i in range(6)], dtype=np.float32)
    sp = np.array([0, 0, 0, 1, 1, 1])
    feats = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3, dtype=torch.float16)
    return SceneData("toy", pts, np.ones(6, bool), sp, np.ones(2, bool), 2, features=feats,
                     sp_target=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), sp_group=np.array([0, 1]), group_basis=TEXT)


def _batch(scene: SceneData, cfg, epoch: int, step: int):
    batch = build_batch([scene], [0], cfg.data, [np.random.default_rng(0)], train=False, point_target=cfg.loss.point_target)
    batch.epoch, batch.step = epoch, step
    return batch


def _cfg(extra=()):
    return load_train_config("sas", ["data.voxel_size=0.5", "tesd.alpha=0.5", "schedule.stage1_fraction=0.0", *extra], epochs=4)


def test_tesd_pseudo_labels_in_the_trainer_equal_a_hand_computed_case(tmp_path):
    """Two TESD steps, alpha 0.5, zero init: H2 = 0.25*u(P1).T + 0.5*u(P2).T per point; labels = argmax
    of the superpoint mean of H2, broadcast to the points (official SAS code)."""
    cfg = _cfg()
    scene = _scene()
    tesd = TESD(cfg, TEXT, tmp_path / "tesd", EpochPlan(1, 1, 1, 0))
    # step 1: every point says class 0; step 2: points 0-1 lean to class 1, points 2-5 say class 1
    p1 = torch.tensor([[4.0, 0.0]] * 6)
    p2 = torch.tensor([[1.0, 2.0]] * 2 + [[0.0, 3.0]] * 4)
    for step, pred in enumerate((p1, p2)):
        batch = _batch(scene, cfg, epoch=step, step=0)
        order = batch.parts[0].voxel_to_point  # voxel rows -> points
        tesd.loss(pred[order].requires_grad_(), batch, [scene], "none")
    u = lambda p: torch.nn.functional.normalize(p, dim=1)  # noqa: E731
    h2 = 0.25 * u(p1) @ TEXT.T + 0.5 * u(p2) @ TEXT.T
    sp_mean = torch.stack([h2[:3].mean(0), h2[3:].mean(0)])
    # points 0-1 alone: 0.25 + 0.5*0.447 = 0.474 (class 0) vs 0.5*0.894 = 0.447 (class 1) -> class 0, but
    # their superpoint's mean, with point 2 at (0.25, 0.5), is (0.399, 0.465) -> class 1
    expected_sp = sp_mean.argmax(1)
    assert expected_sp.tolist() == [1, 1] and h2[:2].argmax(1).tolist() == [0, 0]
    labels = tesd.last_labels[0]
    rows_to_points = _batch(scene, cfg, 1, 0).parts[0].voxel_to_point
    assert labels.tolist() == expected_sp[torch.as_tensor(scene.superpoints[rows_to_points])].tolist()
    assert torch.allclose(torch.from_numpy(np.load(tmp_path / "tesd" / "toy.2.npy")), h2, atol=1e-6)


class _Lookup(torch.nn.Module):
    """A 'network' whose output per voxel is a fixed row chosen by the voxel's x coordinate."""

    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.rows = torch.nn.Parameter(rows.clone())

    def forward(self, features, coords, batch_size):
        return self.rows[coords[:, 1].long()]


def test_ggsd_pseudo_labels_in_the_trainer_are_the_majority_vote_of_the_ema_teacher():
    """GGSD 3.4: teacher argmax per voxel, then the majority label of each superpoint."""
    cfg = load_train_config("ggsd", ["data.voxel_size=1.0", "schedule.stage1_fraction=0.0"], epochs=2)
    scene = _scene()
    # teacher says: superpoint {0,1,2} -> classes 1, 0, 1 (majority 1); {3,4,5} -> 0, 0, 1 (majority 0)
    teacher_rows = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    ggsd = GGSD(cfg, TEXT, _Lookup(teacher_rows))
    batch = _batch(scene, cfg, 0, 0)
    rows = batch.parts[0].self_rows
    pred = torch.randn(6, 2, requires_grad=True)
    loss = ggsd.loss(pred, batch, [scene], "none")
    points = batch.parts[0].voxel_to_point[rows.numpy()]
    expected = np.where(scene.superpoints[points] == 0, 1, 0)
    assert ggsd.last_labels[0].tolist() == expected.tolist()
    assert loss.requires_grad and float(loss.detach()) > 0


class _NormalisedLookup(_Lookup):
    """_Lookup followed by a BatchNorm whose running averages belong to some other scene."""

    def __init__(self, rows: torch.Tensor):
        super().__init__(rows)
        self.bn = torch.nn.BatchNorm1d(rows.shape[1])
        self.bn.running_mean.copy_(torch.tensor([0.0, 5.0]))  # eval mode: channel 1 never wins

    def forward(self, features, coords, batch_size):
        return self.bn(super().forward(features, coords, batch_size))


def test_ggsd_teacher_of_a_one_scene_per_step_student_uses_the_scene_statistics():
    """With model.norm_stats=scene the EMA teacher normalises the step's scene with its own statistics,
    as the student did in training; its running averages (another scene's) would label every voxel 0."""
    from sas3d.models.norm import set_model_norm_stats

    cfg = load_train_config("ggsd", ["data.voxel_size=1.0", "schedule.stage1_fraction=0.0"], epochs=2)
    scene = _scene()
    teacher_rows = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    student = _NormalisedLookup(teacher_rows)
    set_model_norm_stats(student, "scene")
    ggsd = GGSD(cfg, TEXT, student)
    batch = _batch(scene, cfg, 0, 0)
    ggsd.loss(torch.randn(6, 2, requires_grad=True), batch, [scene], "none")
    # brute force: batch statistics over the scene's 6 voxels keep each row's argmax (columns are +-1 after
    # normalising), then the majority vote per superpoint: {0,1,2} -> 1, {3,4,5} -> 0
    points = batch.parts[0].voxel_to_point[batch.parts[0].self_rows.numpy()]
    assert ggsd.last_labels[0].tolist() == np.where(scene.superpoints[points] == 0, 1, 0).tolist()
    set_model_norm_stats(ggsd.teacher.model, "running")  # the papers' inference normalisation: all 0
    ggsd.loss(torch.randn(6, 2, requires_grad=True), batch, [scene], "none")
    assert ggsd.last_labels[0].tolist() == [0] * len(points)


def test_trainer_class_balanced_distillation_loss_equals_an_independent_computation(tmp_path):
    """loss.balance=class: the trainer's pixel-point term equals sum_i w_i (1 - cos) with w from the
    targets' classes (argmax over the text), computed here from the batch alone; none is the plain mean."""
    from sas3d.distill import losses as L
    from sas3d.distill.trainer import Trainer

    scene = _scene()
    # 5 rows of class 0, 1 row of class 1
    scene.features = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]], dtype=torch.float16)
    scene.superpoints = np.arange(6)
    scene.sp_has_target = np.ones(6, bool)
    scene.sp_target = scene.features.float()
    scene.sp_group = np.array([0] * 5 + [1])
    trainer = Trainer.__new__(Trainer)  # the loss code only, no scenes on disk
    pred = torch.tensor([[1.0, 0.2]] * 6)
    for balance in ("none", "class"):
        trainer.cfg = load_train_config("openscene", ["data.voxel_size=0.5", f"loss.balance={balance}"])
        trainer.device, trainer.scenes, trainer.strategy, trainer.text = torch.device("cpu"), [scene], None, TEXT
        batch = _batch(scene, trainer.cfg, 0, 0)
        part = batch.parts[0]
        got = trainer._losses(pred[part.voxel_to_point], batch, stage=1)["point"]
        target = scene.features.float()[part.voxel_to_point[part.distill_rows.numpy()]]
        p = pred[part.voxel_to_point][part.distill_rows]
        per_row = 1 - torch.nn.functional.cosine_similarity(p, target, dim=1)
        if balance == "none":
            expected = per_row.mean()
        else:
            classes = (target @ TEXT.T).argmax(1)
            expected = (per_row * L.balance_weights(classes)).sum()
            assert not torch.isclose(expected, per_row.mean())
        assert float(got) == pytest.approx(float(expected), abs=1e-6)


def test_trainer_target_ce_is_the_cross_entropy_on_the_class_of_each_target_hand_computed():
    """loss.target_ce: CE(cos(F3D, T) / tau, argmax_k cos(target, T_k)) over the distilled rows, computed
    here by hand (log-softmax of two logits); absent (0) when the weight is 0, and in the step's total."""
    from sas3d.distill.trainer import Trainer

    scene = _scene()  # points 0-2 target class 0 (x axis), points 3-5 class 1 (y axis)
    trainer = Trainer.__new__(Trainer)
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tau = 0.5
    trainer.cfg = load_train_config("openscene", ["data.voxel_size=0.5", "loss.target_ce=1.0", f"loss.label_temperature={tau}"])
    trainer.device, trainer.scenes, trainer.strategy, trainer.text = torch.device("cpu"), [scene], None, TEXT
    batch = _batch(scene, trainer.cfg, 0, 0)
    part = batch.parts[0]
    got = trainer._losses(pred[part.voxel_to_point], batch, stage=1)["target_ce"]
    # by hand: unit(pred) . T / tau, rows in point order; the target class is 0 for points 0-2, 1 for 3-5
    rows = part.voxel_to_point[part.distill_rows.numpy()]
    expected = []
    for i in rows.tolist():
        p = pred[i] / pred[i].norm()
        logits = [float(p[0]) / tau, float(p[1]) / tau]
        k = 0 if i < 3 else 1
        expected.append(-(logits[k] - np.log(np.exp(logits[0]) + np.exp(logits[1]))))
    assert float(got) == pytest.approx(float(np.mean(expected)), abs=1e-5)
    trainer.cfg = load_train_config("openscene", ["data.voxel_size=0.5"])
    assert float(trainer._losses(pred[part.voxel_to_point], batch, stage=1)["target_ce"]) == 0.0
