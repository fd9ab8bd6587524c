"""Inference BatchNorm statistics (model.norm_stats): the scene's own, exactly as one-scene training steps used."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sas3d.geometry.voxel import batch_coords, voxelize
from sas3d.models.checkpoint import load_checkpoint, save_checkpoint
from sas3d.models.inference import predict_point_features
from sas3d.models.norm import model_norm_stats, resolve_norm_stats, scene_statistics, set_model_norm_stats
from sas3d.models.registry import build_model

VOXEL = 0.05
PLANES = {"planes": [8, 8, 8, 8, 8, 8, 8, 8], "init_dim": 8, "layers": [1] * 8}


def _scene(seed: int, n: int = 2500) -> np.ndarray:
    """Points on two planes, shifted per seed so scenes have different statistics."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.uniform(0, 2, (n, 2)), np.zeros(n)]
    wall = np.c_[rng.uniform(0, 2, n), np.zeros(n), rng.uniform(0, 1 + seed, n)]
    return np.concatenate([floor, wall]).astype(np.float32)


def _trained_model() -> torch.nn.Module:
    """A tiny student whose running statistics come from other scenes than the one it is asked about."""
    torch.manual_seed(0)
    model = build_model("minkunet18a", in_channels=1, out_channels=16, **PLANES)
    model.train()
    with torch.no_grad():
        for seed in (1, 2, 3):  # train-mode passes move the running averages (momentum 0.1)
            vox = voxelize(_scene(seed), VOXEL)
            model(torch.ones((vox.num_voxels, 1)), torch.from_numpy(batch_coords([vox.coords])), 1)
    return model


def _per_point(model: torch.nn.Module, points: np.ndarray, train_mode: bool) -> torch.Tensor:
    """Brute force: the model's forward on the scene in train (batch statistics) or eval mode, per point, unit rows."""
    m = copy.deepcopy(model).train(train_mode)
    vox = voxelize(points, VOXEL)
    with torch.no_grad():
        out = m(torch.ones((vox.num_voxels, 1)), torch.from_numpy(batch_coords([vox.coords])), 1)
    return F.normalize(out[torch.from_numpy(vox.point_to_voxel)], dim=1)


def test_scene_statistics_give_the_training_forward_and_leave_the_running_averages():
    model = _trained_model()
    points = _scene(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    set_model_norm_stats(model, "scene")
    got = predict_point_features(model, points, VOXEL)
    # exactly what a training step on this one scene computes (BatchNorm on the scene's statistics)
    assert torch.allclose(got, _per_point(model, points, train_mode=True), atol=1e-5)
    # nothing of the model changed: running averages, batch counters, mode
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training

    set_model_norm_stats(model, "running")
    running = predict_point_features(model, points, VOXEL)
    assert torch.allclose(running, _per_point(model, points, train_mode=False), atol=1e-5)
    # the two really differ here (so the first check is not vacuous)
    assert (got - running).abs().max() > 1e-2


def test_scene_statistics_context_restores_the_modules_after_an_error():
    model = _trained_model().eval()
    x = torch.randn(50, 8) * 3 + 1
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    with pytest.raises(RuntimeError):
        with scene_statistics(model):
            # batch statistics: each channel comes out with zero mean and unit (biased) variance, before the affine map
            out = (bn(x) - bn.bias) / bn.weight
            assert torch.allclose(out.mean(0), torch.zeros(8), atol=1e-4) and torch.allclose(out.var(0, unbiased=False), torch.ones(8), atol=1e-3)
            raise RuntimeError("boom")
    assert "forward" not in bn.__dict__ and not bn.training
    assert torch.allclose(bn(x), torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


def test_scene_statistics_never_synchronise_a_synchronised_batch_norm(monkeypatch):
    """Inference on one rank (e.g. rank 0 validating) must not wait for the other ranks."""
    from sas3d.distill import distributed

    model = _trained_model()
    distributed.sync_batchnorm(model, torch.device("cpu"))
    assert any(isinstance(m, distributed.SyncBatchNormCPU) for m in model.modules())
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda *a, **k: pytest.fail("inference synchronised with other ranks"))
    set_model_norm_stats(model, "scene")
    points = _scene(0)
    assert torch.allclose(predict_point_features(model, points, VOXEL), _per_point(_plain(model), points, train_mode=True), atol=1e-5)


def _plain(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with every synchronised BatchNorm turned back into a plain one (same buffers)."""
    from sas3d.distill.distributed import SyncBatchNormCPU

    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, SyncBatchNormCPU):
            m.__class__ = torch.nn.BatchNorm1d
    return out


def test_norm_stats_auto_follows_the_scenes_per_step():
    assert resolve_norm_stats("auto", 1) == "scene"
    assert resolve_norm_stats("auto", 12) == "running"
    assert resolve_norm_stats("running", 1) == "running" and resolve_norm_stats("scene", 4) == "scene"
    with pytest.raises(ValueError, match="norm_stats"):
        resolve_norm_stats("batch", 1)


def test_checkpoint_keeps_norm_stats_and_older_checkpoints_use_running(tmp_path):
    model = build_model("minkunet18a", in_channels=1, out_channels=16, **PLANES)
    save_checkpoint(tmp_path / "old.safetensors", model, {})  # spec without the key, as before this option
    assert model_norm_stats(load_checkpoint(tmp_path / "old.safetensors")[0]) == "running"
    set_model_norm_stats(model, "scene")
    save_checkpoint(tmp_path / "new.safetensors", model, {})
    assert model_norm_stats(load_checkpoint(tmp_path / "new.safetensors")[0]) == "scene"
