"""Teacher and text-space identities: recorded in every artefact, refused on mismatch (sas3d.identity)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sas3d.errors import ConfigError, InputError
from sas3d.fusion.features import PointFeatures
from sas3d.fusion.guided import fuse_teachers
from sas3d.text.encoders import centred_identity, text_space_for_spec
from tests.test_trainer import TINY_MODEL, make_dataset

MINILM = text_space_for_spec("minilm")


def test_text_space_for_spec_is_the_built_encoders_identity():
    """The identity checked without loading a model is the one the loaded encoder reports."""
    from sas3d.text.encoders import build_text_encoder

    for spec in ("minilm", "minilm:raw"):
        assert build_text_encoder(spec).identity == text_space_for_spec(spec)
    assert MINILM != text_space_for_spec("minilm:raw")  # centring is another space
    # another centring vocabulary is another space too
    assert centred_identity("m", ["a chair", "a table"]) != centred_identity("m", ["a chair", "a door"])
    with pytest.raises(ConfigError, match="unknown text encoder"):
        text_space_for_spec("word2vec")


def test_clip_text_space_and_clip_teachers_default_to_the_same_model():
    """`clip` and `clip-dense` (and sam-clip's CLIP) name the same default model: their spaces agree."""
    from sas3d.teachers.dense_clip import DenseCLIPConfig, DenseCLIPTeacher
    from sas3d.teachers.mask_sam import SamClipConfig
    from sas3d.text.clip import DEFAULT_CLIP_MODEL

    teacher_space = DenseCLIPTeacher.text_space.fget(SimpleNamespace(config=DenseCLIPConfig()))
    assert teacher_space == text_space_for_spec("clip") == text_space_for_spec("clip:") == f"clip:{DEFAULT_CLIP_MODEL}"
    assert SamClipConfig().clip_model_id == DEFAULT_CLIP_MODEL


def _features(space: str | None, identity: str) -> PointFeatures:
    meta = {"teacher_identity": identity} | ({} if space is None else {"text_space": space})
    return PointFeatures(torch.eye(3)[:2].half(), torch.ones(2, dtype=torch.bool), meta)


def test_fusion_refuses_teachers_from_two_text_spaces_and_records_identities():
    text = torch.eye(3)
    with pytest.raises(ConfigError, match="different text spaces.*'clip:a'.*'clip:b'"):
        fuse_teachers([_features("clip:a", "x"), _features("clip:b", "y")], text, "mean")
    out = fuse_teachers([_features("clip:a", "x"), _features(None, "y")], text, "mean")  # an older file records none
    assert out.metadata["text_space"] == "clip:a" and out.metadata["teacher_identities"] == ["x", "y"]


@pytest.fixture(scope="module")
def fused_scenes(tmp_path_factory):
    """Two tiny scenes whose fused files record the MiniLM space and a teacher identity."""
    data = make_dataset(tmp_path_factory.mktemp("identity"), 384)
    for s in data["scenes"]:
        path = data["fused"] / f"{s.name}.safetensors"
        pf = PointFeatures.load(path)
        pf.metadata.update({"text_space": MINILM, "teacher_identity": "precomputed:lseg"})
        pf.save(path)
    return data


def _train(fused_scenes, out, encoder="minilm"):
    from sas3d.distill.config import load_train_config
    from sas3d.distill.trainer import train

    cfg = load_train_config("openscene", [*TINY_MODEL, "data.voxel_size=0.1", "data.max_voxels=200", f"text.encoder={encoder}",
                                          "data.augmentation.elastic=false"], epochs=1)
    return train(cfg, fused_scenes["scenes"], fused_scenes["fused"], out, text_features=fused_scenes["text"])


def test_trainer_refuses_targets_from_another_text_space(fused_scenes, tmp_path):
    with pytest.raises(InputError) as info:
        _train(fused_scenes, tmp_path / "run", encoder="minilm:raw")
    message = str(info.value)
    assert "scene0000_00.safetensors" in message and MINILM in message and text_space_for_spec("minilm:raw") in message


def test_checkpoint_and_eval_carry_the_identities_and_refuse_another_space(fused_scenes, tmp_path):
    from sas3d import load_scene
    from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.query.similarity import load_point_features

    _train(fused_scenes, tmp_path / "run")
    checkpoint = tmp_path / "run" / "last.safetensors"
    model, meta, _ = load_checkpoint(checkpoint)
    assert meta["text_space"] == MINILM and meta["teacher_identities"] == ["precomputed:lseg"]
    scene = load_scene(fused_scenes["scenes"][0])
    pf = load_point_features(checkpoint, scene)
    assert pf.metadata["text_space"] == MINILM

    class RawSpace:  # a stand-in encoder of another space (only its identity is read before the check)
        identity, name, dim = text_space_for_spec("minilm:raw"), "raw", 384

        def encode(self, texts):
            return torch.nn.functional.normalize(torch.ones(len(texts), 384), dim=1)

    for mode, kwargs in (("distill", {"model": model}), ("fusion", {"fused_dir": fused_scenes["fused"]})):
        with pytest.raises(InputError, match="live in the text space"):
            evaluate_scenes([scene], EvalConfig(mode=mode), text_encoder=RawSpace(), progress=False, **kwargs)
    ok = evaluate_scenes([scene], EvalConfig(mode="fusion"), fused_dir=fused_scenes["fused"], class_text=None,
                         text_encoder=_MiniLMSpace(fused_scenes["text"]), progress=False)
    data = ok.to_json()
    assert data["text_space"] == MINILM and data["teacher_identities"] == ["precomputed:lseg"]
    assert np.isfinite(data["miou"])


class _MiniLMSpace:
    """The fixture's text rows, claiming the MiniLM identity the fused files record."""

    identity, name, dim = MINILM, "minilm", 384

    def __init__(self, text):
        self.text = text

    def encode(self, texts):
        return self.text[: len(texts)]
