"""Metrics, classification, ensemble, nuScenes name mapping, TTA and the evaluator (hand-computed answers)."""

from __future__ import annotations

import math
import sys
import types
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from sas3d.evaluate.metrics import confusion_matrix, iou_acc
from sas3d.evaluate.predict import NO_PREDICTION, build_class_text, classify, ensemble, predict_3d
from sas3d.text.base import TextEncoder
from sas3d.text.labelsets import get_label_set, prompt_for


class OneHotEncoder(TextEncoder):
    """Stand-in text encoder: each distinct string gets its own basis vector (assigned in first-seen order)."""

    name = "onehot"

    def __init__(self, dim: int = 64):
        self.dim = dim
        self.vocab: dict[str, int] = {}

    def encode(self, texts):
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            out[i, self.vocab.setdefault(t, len(self.vocab))] = 1.0
        return out

    def vec(self, text: str) -> torch.Tensor:
        return self.encode([text])[0]


# 3 classes, 10 points; last point has no ground truth; point 3 has no prediction (-1).
GT = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 255])
PRED = np.array([0, 0, 1, -1, 1, 1, 0, 2, 1, 2])


def test_confusion_matrix_hand_computed():
    conf = confusion_matrix(PRED, GT, 3)
    # rows gt, cols pred 0,1,2, last column "no prediction"
    expected = np.array([[2, 1, 0, 1], [1, 2, 0, 0], [0, 1, 1, 0]])
    np.testing.assert_array_equal(conf, expected)


def test_iou_acc_hand_computed():
    m = iou_acc(confusion_matrix(PRED, GT, 3))
    # IoU = TP / (TP + FP + FN): class0 2/(2+1+2), class1 2/(2+2+1), class2 1/(1+0+1)
    iou = [F(2, 5), F(2, 5), F(1, 2)]
    acc = [F(2, 4), F(2, 3), F(1, 2)]  # TP / (TP + FN); the missing prediction is a FN of class 0
    np.testing.assert_allclose(m["iou"], [float(x) for x in iou])
    np.testing.assert_allclose(m["acc"], [float(x) for x in acc])
    assert m["miou"] == pytest.approx(float(sum(iou) / 3))
    assert m["macc"] == pytest.approx(float(sum(acc) / 3))


def test_ignore_label_and_255_prediction():
    # a point with gt 255 changes nothing, whatever its prediction
    base = confusion_matrix(PRED[:9], GT[:9], 3)
    np.testing.assert_array_equal(confusion_matrix(PRED, GT, 3), base)
    # prediction 255 (another way to say "none") is wrong, exactly like -1
    pred = PRED.copy()
    pred[3] = 255
    np.testing.assert_array_equal(confusion_matrix(pred, GT, 3), base)
    # a custom ignore id
    np.testing.assert_array_equal(confusion_matrix(PRED[:9], np.where(GT[:9] == 2, 7, GT[:9]), 3, ignore=7)[:2], base[:2])


def test_missing_prediction_counts_as_wrong():
    gt = np.array([0, 0, 1, 1])
    with_pred = iou_acc(confusion_matrix(np.array([0, 0, 1, 1]), gt, 2))
    missing = iou_acc(confusion_matrix(np.array([0, -1, 1, 1]), gt, 2))
    assert with_pred["miou"] == 1.0
    assert missing["iou"][0] == pytest.approx(0.5)  # 1 / (1 + 0 + 1)
    assert missing["acc"][0] == pytest.approx(0.5)
    assert missing["iou"][1] == 1.0  # no false positive charged to anybody


def test_absent_class_excluded_from_mean():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])  # class 2 never in gt, predicted once
    m = iou_acc(confusion_matrix(pred, gt, 3))
    assert list(m["present"]) == [True, True, False]
    assert m["iou"][2] == 0.0 and math.isnan(m["acc"][2])
    assert m["miou"] == pytest.approx((1 / 2 + 1) / 2)  # class 0: 1/(1+0+1)
    assert m["macc"] == pytest.approx((1 / 2 + 1) / 2)


def test_gt_outside_label_set_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 1]), np.array([0, 5]), 3)


def _vec(cls: int, cos: float, dim: int = 4) -> torch.Tensor:
    """Unit vector with cosine ``cos`` to basis row ``cls``, the rest along the last (text-free) axis."""
    v = torch.zeros(dim)
    v[cls] = cos
    v[-1] = math.sqrt(1 - cos**2)
    return v


def test_classify_cosine_argmax_and_unseen():
    text = torch.eye(3, 4)
    feats = torch.stack([_vec(2, 0.3), 10 * _vec(1, 0.9), torch.zeros(4)])  # scale must not matter
    np.testing.assert_array_equal(classify(feats, text, seen=torch.tensor([True, True, False])).numpy(), [2, 1, NO_PREDICTION])


def test_ensemble_picks_more_confident_source():
    text = torch.eye(3, 4)
    fused = torch.stack([_vec(0, 0.9), _vec(0, 0.5), torch.zeros(4), _vec(0, 0.99)])
    feat3d = torch.stack([_vec(1, 0.6), _vec(2, 0.95), _vec(1, 0.7), _vec(2, 0.2)])
    seen = torch.tensor([True, True, False, False])
    # 0: 2D more confident; 1: 3D more confident; 2, 3: unseen -> always 3D
    np.testing.assert_array_equal(ensemble(fused, seen, feat3d, text).numpy(), [0, 2, 1, 2])


def test_nuscenes_43_names_map_back_to_16():
    enc = OneHotEncoder()
    ct = build_class_text("nuscenes16", enc)
    ls = get_label_set("nuscenes16")
    assert len(ct.queries) == 43 and ct.embeddings.shape == (43, 64)
    feats = torch.stack([enc.vec(prompt_for(q)) for q in ("person", "tree trunk", "road", "dump truck", "lawn", "truck")])
    labels = classify(feats, ct.embeddings, to_class=ct.to_class)
    expected = ["pedestrian", "vegetation", "driveable surface", "construction vehicle", "terrain", "truck"]
    assert [ls.classes[i] for i in labels] == expected
    # without the detail names it is a plain 16-way classification
    plain = build_class_text("nuscenes16", enc, nuscenes_details=False)
    assert plain.queries == list(ls.classes)


def test_predict_3d_tta_sums_rotated_passes(monkeypatch):
    calls = []

    def fake_predict(model, points, voxel_size, device="cpu", colors=None):
        calls.append(points.copy())
        # a rotation-invariant feature (distance to the centroid, z) so every pass agrees
        c = points - points.mean(axis=0)
        f = torch.tensor(np.stack([np.linalg.norm(c[:, :2], axis=1), c[:, 2], np.ones(len(c))], axis=1), dtype=torch.float32)
        return f / f.norm(dim=1, keepdim=True)

    monkeypatch.setitem(sys.modules, "sas3d.models.inference", types.SimpleNamespace(predict_point_features=fake_predict))
    pts = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    single = predict_3d(None, pts, 0.05, tta=1)
    summed = predict_3d(None, pts, 0.05, tta=5)
    assert len(calls) == 6
    np.testing.assert_allclose(calls[0], pts)  # pass 0 is the identity
    for p in calls[1:]:
        np.testing.assert_allclose(p[:, 2], pts[:, 2], atol=1e-5)  # only rotations/flips about z
        np.testing.assert_allclose(np.linalg.norm(p[:, :2] - pts[:, :2].mean(0), axis=1), np.linalg.norm(pts[:, :2] - pts[:, :2].mean(0), axis=1), atol=1e-4)
    assert not np.allclose(calls[2], pts)
    np.testing.assert_allclose(summed.numpy(), single.numpy(), atol=1e-5)  # invariant feature: sum of 5 units renormalised


def test_predict_3d_tta_differs_from_one_pass_on_a_rotation_sensitive_feature(monkeypatch):
    """A feature that depends on the x/y direction (as a real student's does) changes under the TTA
    transforms: the TTA result must be the renormalised sum of the per-pass features computed by hand
    from tta_rotations, and must differ from the single pass."""
    from sas3d.evaluate.predict import tta_rotations

    def directional(points: np.ndarray) -> torch.Tensor:
        c = points - points.mean(axis=0)
        f = torch.tensor(np.stack([np.tanh(c[:, 0]), np.tanh(c[:, 1]), np.ones(len(c))], axis=1), dtype=torch.float32)
        return f / f.norm(dim=1, keepdim=True)

    monkeypatch.setitem(sys.modules, "sas3d.models.inference", types.SimpleNamespace(
        predict_point_features=lambda model, points, voxel_size, device="cpu", colors=None: directional(points)))
    pts = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    single = predict_3d(None, pts, 0.05, tta=1)
    summed = predict_3d(None, pts, 0.05, tta=4)
    centre = pts.mean(axis=0, keepdims=True)
    by_hand = sum(directional(pts if i == 0 else (pts - centre) @ r.T.astype(np.float32) + centre) for i, r in enumerate(tta_rotations(4)))
    by_hand = by_hand / by_hand.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(summed.numpy(), by_hand.numpy(), atol=1e-5)
    assert float((summed - single).abs().max()) > 0.1  # TTA is not a single pass
    np.testing.assert_allclose(single.numpy(), directional(pts).numpy(), atol=1e-6)


def test_label_set_mapping_and_evaluator(tmp_path, monkeypatch):
    from sas3d.errors import InputError
    from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes, ground_truth, label_set_mapping
    from sas3d.fusion.features import PointFeatures
    from sas3d.scene.types import Scene

    sc, mp = get_label_set("scannet20"), get_label_set("matterport21")
    lut = label_set_mapping(sc, mp)
    assert lut is not None and lut[19] == mp.classes.index("other") and lut[4] == mp.classes.index("chair")
    assert label_set_mapping(mp, sc) is None  # "ceiling" has no scannet20 class
    scene = Scene("s", np.zeros((6, 3), np.float32), "ply", labels=np.array([0, 0, 1, 1, 4, 255]), label_set="scannet20")
    with pytest.raises(InputError, match="nuscenes16"):
        ground_truth(scene, get_label_set("nuscenes16"))

    enc = OneHotEncoder()
    ct = build_class_text(sc, enc)
    wall, floor, chair = (ct.embeddings[i] for i in (0, 1, 4))
    # fused: wall, wall, floor, unseen, chair, (ignored point) -> one missed floor point
    fused = PointFeatures(torch.stack([wall, wall, floor, torch.zeros(64), chair, wall]).half(), torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.bool))
    fused.save(tmp_path / "s.safetensors")
    res = evaluate_scenes([scene], EvalConfig(mode="fusion"), fused_dir=tmp_path, text_encoder=enc)
    # wall 2/2, floor TP1 FN1 -> 1/2, chair 1/1
    assert res.metrics["iou"][0] == 1.0 and res.metrics["iou"][1] == 0.5 and res.metrics["iou"][4] == 1.0
    assert res.metrics["miou"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert res.confusion[1, -1] == 1  # the unseen floor point: no prediction

    # distill with a stand-in 3D model output: everything "floor"
    monkeypatch.setattr("sas3d.evaluate.predict.predict_3d", lambda model, pts, vs, tta=1, device="cpu", colors=None: floor.repeat(len(pts), 1))
    res3d = evaluate_scenes([scene], EvalConfig(mode="distill"), model=torch.nn.Identity(), text_encoder=enc)
    assert res3d.metrics["iou"][1] == pytest.approx(2 / 5)  # TP 2 / (2 + 3 FP)
    # ensemble: 3D floor vs fused; all equally confident (1.0) -> ties keep 3D except unseen anyway
    resens = evaluate_scenes([scene], EvalConfig(mode="ensemble"), model=torch.nn.Identity(), fused_dir=tmp_path, text_encoder=enc)
    np.testing.assert_array_equal(resens.confusion, res3d.confusion)
