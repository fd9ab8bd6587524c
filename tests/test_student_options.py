"""The student options of loss.balance / data.sampling / data.input, each against a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sas3d.distill.batching import _subsample
from sas3d.distill.config import load_train_config
from sas3d.errors import ConfigError
from sas3d.models.inputs import model_input, set_model_input, voxel_input


def test_class_sampling_gives_each_group_an_equal_share_water_filled():
    """limit 10 over groups of 2, 100, 100 candidates: the small group gives all 2, the others 4 each."""
    candidates = np.arange(202)
    groups = np.array([7] * 2 + [3] * 100 + [5] * 100)
    picked = _subsample(candidates, 10, np.random.default_rng(0), groups)
    assert len(picked) == 10 and len(set(picked)) == 10 and np.all(np.diff(picked) > 0)
    counts = {g: int((groups[picked] == g).sum()) for g in (7, 3, 5)}
    assert counts == {7: 2, 3: 4, 5: 4}
    uniform = _subsample(candidates, 10, np.random.default_rng(0))
    assert len(uniform) == 10  # without groups: uniform, no guarantee for the small group
    assert np.array_equal(_subsample(candidates[:5], 10, np.random.default_rng(0), groups[:5]), candidates[:5])


def test_rgb_voxel_input_is_the_mean_colour_scaled_to_minus_one_one():
    colors = np.array([[255, 0, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8)
    point_to_voxel = np.array([0, 0, 1])
    x = voxel_input("rgb", colors, point_to_voxel, 2)
    expected = torch.tensor([[127.5, 0.0, 127.5], [255.0, 255.0, 255.0]]) / 127.5 - 1.0
    assert torch.allclose(x, expected)
    assert torch.equal(voxel_input("ones", None, point_to_voxel, 2), torch.ones(2, 1))
    with pytest.raises(ValueError, match="no colours"):
        voxel_input("rgb", None, point_to_voxel, 2)


def test_input_mode_sets_the_channels_and_is_stored_in_the_checkpoint(tmp_path):
    from sas3d.models.checkpoint import load_checkpoint, save_checkpoint
    from sas3d.models.inference import predict_point_features
    from sas3d.models.registry import build_model

    cfg = load_train_config("sas", ["data.input=rgb"])
    assert cfg.model.in_channels == 3 and load_train_config("sas").model.in_channels == 1
    with pytest.raises(ConfigError, match="in_channels"):
        load_train_config("sas", ["data.input=rgb", "model.in_channels=1"])
    with pytest.raises(ConfigError, match="loss.balance"):
        load_train_config("sas", ["loss.balance=often"])
    model = build_model("minkunet18a", in_channels=3, out_channels=8, planes=[4] * 8, init_dim=4, layers=[1] * 8)
    set_model_input(model, "rgb")
    save_checkpoint(tmp_path / "m.safetensors", model, {})
    loaded, meta, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert model_input(loaded) == "rgb" and meta["model"]["input"] == "rgb"
    pts = np.random.default_rng(0).random((200, 3)).astype(np.float32)
    red = np.tile(np.array([[255, 0, 0]], dtype=np.uint8), (200, 1))
    blue = np.tile(np.array([[0, 0, 255]], dtype=np.uint8), (200, 1))
    # inference feeds the colours: a different colour gives a different feature
    assert not torch.allclose(predict_point_features(loaded, pts, 0.2, colors=red), predict_point_features(loaded, pts, 0.2, colors=blue))
    with pytest.raises(ValueError, match="RGB input"):
        predict_point_features(loaded, pts, 0.2)
