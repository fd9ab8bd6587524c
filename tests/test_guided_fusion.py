"""Capability-guided fusion (SAS Eq. 6-8) and the ablation baselines, against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sas3d.errors import ConfigError
from sas3d.fusion.features import PointFeatures
from sas3d.fusion.guided import GuidedFusionConfig, fuse_teachers

TEXT = torch.eye(3)  # class k's text feature is e_k; class 2 is the catch-all
S = torch.tensor([[0.9, 0.2, 0.0], [0.3, 0.6, 0.0]])  # capability of teachers a, b


def _pf(rows, seen, name):
    return PointFeatures(torch.tensor(rows, dtype=torch.float16), torch.tensor(seen), {"teacher": name})


def _two_teachers():
    fa = [[1.0, 0.2, 0.0], [0.2, 0.3, 0.1], [0.0, 0.1, 0.9], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    fb = [[0.125, 0.875, 0.0], [0.0, 0.75, 0.25], [0.5, 0.25, 0.0], [0.25, 0.5, 0.0], [0.0, 0.0, 0.0]]
    seen_a = [True, True, True, False, False]
    seen_b = [True, True, True, True, False]
    return _pf(fa, seen_a, "a"), _pf(fb, seen_b, "b"), torch.tensor(fa).half().float(), torch.tensor(fb).half().float()


def test_guided_hand_computed():
    a, b, fa, fb = _two_teachers()
    out = fuse_teachers([a, b], TEXT, "guided", S, GuidedFusionConfig(temperature=0.05), catch_all_index=2)
    # Point 0: c_a = 0, c_b = 1. w_a = 0.9 + 0.2 = 1.1, w_b = 0.3 + 0.6 = 0.9 -> (0.55, 0.45) -> softmax(/0.05).
    wa0 = math.exp(0.55 / 0.05) / (math.exp(0.55 / 0.05) + math.exp(0.45 / 0.05))
    # Point 1: both predict 1. w_a = 0.2 + 0.2 = 0.4, w_b = 0.6 + 0.6 = 1.2 -> (0.25, 0.75).
    wa1 = math.exp(0.25 / 0.05) / (math.exp(0.25 / 0.05) + math.exp(0.75 / 0.05))
    expected_w = torch.tensor([[wa0, 1 - wa0], [wa1, 1 - wa1], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(out.weights, expected_w, atol=1e-5, rtol=1e-5)
    # Eq. 8 combines unit features: the weights are the w_t themselves, not w_t * |f_t| (issue: a
    # shorter mean over disagreeing views would otherwise lose weight)
    ua, ub = torch.nn.functional.normalize(fa, dim=1), torch.nn.functional.normalize(fb, dim=1)
    expected = torch.stack([
        wa0 * ua[0] + (1 - wa0) * ub[0],
        wa1 * ua[1] + (1 - wa1) * ub[1],
        ua[2],  # point 2: the dense teacher (a, first) predicts the catch-all -> its feature is kept
        ub[3],  # point 3: only b sees it
        torch.zeros(3),  # point 4: nobody sees it
    ])
    torch.testing.assert_close(out.features.float(), expected, atol=2e-3, rtol=2e-3)
    assert out.seen.tolist() == [True, True, True, True, False]
    assert out.metadata["teachers"] == ["a", "b"] and out.metadata["method"] == "guided"
    assert out.metadata["temperature"] == 0.05


def test_catch_all_rule_can_be_switched_off():
    a, b, fa, fb = _two_teachers()
    out = fuse_teachers([a, b], TEXT, "guided", S, GuidedFusionConfig(keep_dense_catch_all=False), catch_all_index=2)
    # Point 2: c_a = 2, c_b = 0. w_a = 0.0 + 0.9, w_b = 0.0 + 0.3 -> (0.75, 0.25).
    wa2 = math.exp(0.75 / 0.05) / (math.exp(0.75 / 0.05) + math.exp(0.25 / 0.05))
    assert out.weights[2, 0].item() == pytest.approx(wa2, rel=1e-5)


def test_two_teachers_reduce_to_paper_formula():
    g = torch.Generator().manual_seed(0)
    n, k, c = 200, 6, 8
    text = torch.nn.functional.normalize(torch.randn(k, c, generator=g), dim=1)
    fa, fb = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)
    scores = torch.rand(2, k, generator=g)
    seen = torch.ones(n, dtype=torch.bool)
    pa, pb = PointFeatures(fa.half(), seen), PointFeatures(fb.half(), seen)
    fa, fb = fa.half().float(), fb.half().float()
    tau = 0.1
    out = fuse_teachers([pa, pb], text, "guided", scores, GuidedFusionConfig(temperature=tau, weight_normalisation="paper"))
    ca, cb = (fa @ text.T).argmax(1), (fb @ text.T).argmax(1)  # Eq. 6
    p_l = (scores[0, ca] + scores[0, cb]) / 2  # Eq. 7
    p_s = (scores[1, ca] + scores[1, cb]) / 2
    wl = torch.exp(p_l / tau) / (torch.exp(p_l / tau) + torch.exp(p_s / tau))  # Eq. 8
    ua, ub = torch.nn.functional.normalize(fa, dim=1), torch.nn.functional.normalize(fb, dim=1)
    expected = wl[:, None] * ua + (1 - wl[:, None]) * ub  # Eq. 8 on unit features
    torch.testing.assert_close(out.features.float(), expected, atol=5e-3, rtol=5e-3)
    # Official-code normalisation: the same sums divided by their total instead of by 2.
    out_code = fuse_teachers([pa, pb], text, "guided", scores, GuidedFusionConfig(temperature=tau))
    tot = (p_l + p_s).clamp_min(1e-12)
    wl_code = torch.exp(p_l / tot / tau) / (torch.exp(p_l / tot / tau) + torch.exp(p_s / tot / tau))
    torch.testing.assert_close(out_code.weights[:, 0], wl_code, atol=1e-5, rtol=1e-5)


def test_three_teachers_trust_the_specialist_and_are_order_free():
    # Three teachers, three classes; teacher t is the only capable one on class t.
    scores = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])
    f = [
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],  # teacher 0 says class 0, then class 2
        [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]],  # teacher 1 says class 1 twice
        [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],  # teacher 2 says class 2 twice
    ]
    pfs = [_pf(rows, [True, True], f"t{i}") for i, rows in enumerate(f)]
    out = fuse_teachers(pfs, TEXT, "guided", scores)
    w = out.weights
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    # Point 0: predictions {0, 1, 2}: every teacher scores 0.9+0.1+0.1 -> equal weights.
    torch.testing.assert_close(w[0], torch.full((3,), 1 / 3))
    # Point 1: predictions {2, 1, 2}: teacher 2 has 0.9+0.1+0.9 = 1.9 vs 0.3 / 1.1 -> dominates; fused says class 2.
    assert w[1].argmax().item() == 2 and w[1, 2] > 0.99
    assert (out.features[1].float() @ TEXT.T).argmax().item() == 2
    perm = [2, 0, 1]
    out_p = fuse_teachers([pfs[i] for i in perm], TEXT, "guided", scores[perm])
    torch.testing.assert_close(out_p.features, out.features)
    torch.testing.assert_close(out_p.weights, out.weights[:, perm])


def test_baselines():
    a, b, fa, fb = _two_teachers()
    add = fuse_teachers([a, b], TEXT, "add")
    torch.testing.assert_close(add.features.float()[:3], (fa + fb)[:3], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(add.features.float()[3], fb[3], atol=2e-3, rtol=2e-3)
    mean = fuse_teachers([a, b], TEXT, "mean")
    torch.testing.assert_close(mean.features.float()[:3], ((fa + fb) / 2)[:3], atol=2e-3, rtol=2e-3)
    lin = fuse_teachers([a, b], TEXT, "linear")
    # Point 0: max cosine of f_a = 1/|f_a|, of f_b = 0.875/|f_b|; weights normalised to sum 1.
    ca = 1.0 / math.sqrt(1.0 + 0.04)
    cb = 0.875 / math.sqrt(0.125**2 + 0.875**2)
    torch.testing.assert_close(lin.weights[0], torch.tensor([ca / (ca + cb), cb / (ca + cb)]), atol=1e-3, rtol=1e-3)
    assert lin.weights[3].tolist() == [0.0, 1.0]
    norm = fuse_teachers([a, b], TEXT, "add", cfg=GuidedFusionConfig(normalize_inputs="all"))
    unit = torch.nn.functional.normalize(fa[0], dim=0) + torch.nn.functional.normalize(fb[0], dim=0)
    torch.testing.assert_close(norm.features.float()[0], unit, atol=2e-3, rtol=2e-3)


def test_bad_inputs(tmp_path):
    a, b, _, _ = _two_teachers()
    with pytest.raises(ConfigError):
        fuse_teachers([a, b], TEXT, "guided", None)
    with pytest.raises(ConfigError):
        fuse_teachers([a, b], TEXT, "guided", S[:1])
    with pytest.raises(ConfigError):
        fuse_teachers([a, b], TEXT, "nope")
    out = fuse_teachers([a, b], TEXT, "guided", S, capability_source="cap.json")
    out.save(tmp_path / "f.safetensors")
    back = PointFeatures.load(tmp_path / "f.safetensors")
    assert back.metadata["capability_source"] == "cap.json"
    np.testing.assert_allclose(back.weights.numpy(), out.weights.numpy())


def test_zero_feature_is_no_vote():
    # Teacher b "sees" the point but has no prediction (zero feature): only a is used, whatever S says.
    a = _pf([[0.2, 0.9, 0.0]], [True], "a")
    b = _pf([[0.0, 0.0, 0.0]], [True], "b")
    scores = torch.tensor([[0.0, 0.1, 0.0], [1.0, 1.0, 0.0]])
    for method in ("guided", "mean", "linear"):
        out = fuse_teachers([a, b], TEXT, method, scores if method == "guided" else None)
        assert out.weights[0].tolist() == [1.0, 0.0], method
        assert out.seen.tolist() == [True]


def test_a_point_no_teacher_predicts_at_is_unseen_after_fusion():
    """Files written before validity reached fusion mark a mask teacher's no-mask points seen with zero
    features. Guided fusion treats a zero feature as no prediction, and a point with none from any
    teacher is unseen in the fused output (not a seen zero vector that decodes as class 0)."""
    seen = torch.ones(2, dtype=torch.bool)
    a = PointFeatures(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).half(), seen)
    b = PointFeatures(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]).half(), seen)
    for method in ("guided", "add", "mean"):
        out = fuse_teachers([a, b], TEXT, method, S if method == "guided" else None)
        assert out.seen.tolist() == [True, False], method
