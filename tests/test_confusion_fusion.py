"""Confusion-aware fusion (beyond SAS): hand-computed weights, a brute-force naive-Bayes reference, the
confusion in capability files (round trip, old files without it) and the ``sas3d fuse`` row."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from sas3d.capability import Capability
from sas3d.errors import ConfigError, InputError
from sas3d.fusion.confusion import accuracy_likelihoods, likelihoods, teacher_weights
from sas3d.fusion.features import PointFeatures
from sas3d.fusion.guided import GuidedFusionConfig, fuse_teachers

TEXT = torch.eye(3)  # classes chair, sofa, table: class k's text feature is e_k
# Mask-pixel counts [true, predicted chair / sofa / table / no prediction], 10 px per class.
# Teacher A: perfect on sofa and table, but calls 6 of 10 chair pixels "sofa" (its "sofa" is often a chair).
# Teacher B: good on chair, weak on sofa (sofa -> table 5, chair 1), perfect on table; 5 chair px without a mask.
CONF_A = [[4, 6, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0]]
CONF_B = [[9, 0, 1, 5], [1, 4, 5, 0], [0, 0, 10, 0]]
CONFUSION = torch.tensor([CONF_A, CONF_B], dtype=torch.float64)
# Their within-image IoUs (no predictions on the background): A = (0.4, 1, 1), B = (0.9, 0.4, 1).
SCORES = torch.tensor([[0.4, 1.0, 1.0], [0.9, 0.4, 1.0]])


def _pf(rows, seen=None):
    rows = torch.tensor(rows, dtype=torch.float16)
    return PointFeatures(rows, torch.ones(len(rows), dtype=torch.bool) if seen is None else torch.tensor(seen))


def test_likelihoods_hand_computed():
    # floor 0.3: L = 0.7 * row / row total (no-prediction column left out) + 0.1
    lik = likelihoods(CONFUSION, floor=0.3)
    torch.testing.assert_close(lik[0], torch.tensor([[0.38, 0.52, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]))
    torch.testing.assert_close(lik[1], torch.tensor([[0.73, 0.1, 0.17], [0.17, 0.38, 0.45], [0.1, 0.1, 0.8]]))
    unseen_class = likelihoods(torch.zeros(1, 2, 3), floor=0.3)  # no probe images: nothing known
    torch.testing.assert_close(unseen_class, torch.full((1, 2, 2), 0.5))


def test_sofa_that_is_usually_a_chair():
    """A says sofa, B says chair. Guided (Eq. 7) sums IoUs, 1.0 + 0.4 for A vs 0.4 + 0.9 for B, and follows
    A's sofa; the posterior knows A's sofa is often a chair and B rarely calls a sofa a chair."""
    a, b = _pf([[0.0, 1.0, 0.0]]), _pf([[1.0, 0.0, 0.0]])
    guided = fuse_teachers([a, b], TEXT, "guided", SCORES)
    assert guided.weights[0, 0] > 0.5 and guided.features[0].float().argmax() == 1  # sofa

    cfg = GuidedFusionConfig(confusion_model="confusion", confusion_floor=0.3, confusion_temperature=1.0)
    out = fuse_teachers([a, b], TEXT, "confusion", SCORES, cfg=cfg, capability_confusion=CONFUSION)
    # P(k | A=sofa, B=chair) ∝ L_A[k, sofa] * L_B[k, chair]: chair 0.52 * 0.73, sofa 0.8 * 0.17, table 0.1 * 0.1.
    p_chair, p_sofa = 0.52 * 0.73, 0.8 * 0.17
    w_b = p_chair / (p_chair + p_sofa)  # the predicted classes' masses, renormalised: 0.736
    torch.testing.assert_close(out.weights, torch.tensor([[1 - w_b, w_b]]))
    assert out.features[0].float().argmax() == 0  # chair
    torch.testing.assert_close(out.features.float(), torch.tensor([[w_b, 1 - w_b, 0.0]]), atol=1e-3, rtol=0)

    precision = fuse_teachers([a, b], TEXT, "confusion", SCORES,
                              cfg=GuidedFusionConfig(confusion_model="confusion", confusion_rule="precision", confusion_floor=0.3,
                                                     confusion_temperature=1.0),
                              capability_confusion=CONFUSION)
    # P(true = c | t predicts c): A's sofa 0.8 / (0.52 + 0.8 + 0.1), B's chair 0.73 / (0.73 + 0.17 + 0.1).
    prec_a, prec_b = 0.8 / 1.42, 0.73 / 1.0
    torch.testing.assert_close(precision.weights, torch.tensor([[prec_a, prec_b]]) / (prec_a + prec_b))
    # A temperature towards 0 keeps the most likely class alone.
    sharp = fuse_teachers([a, b], TEXT, "confusion", SCORES,
                          cfg=GuidedFusionConfig(confusion_model="confusion", confusion_floor=0.3, confusion_temperature=0.01),
                          capability_confusion=CONFUSION)
    torch.testing.assert_close(sharp.weights, torch.tensor([[0.0, 1.0]]), atol=1e-6, rtol=0)


def test_one_teacher_no_prediction_and_nobody():
    # Point 0: only B sees it. Point 1: A has a zero feature (no prediction). Point 2: nobody.
    a = _pf([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [False, True, False])
    b = _pf([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], [True, True, False])
    out = fuse_teachers([a, b], TEXT, "confusion", SCORES, capability_confusion=CONFUSION)
    assert out.weights.tolist() == [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    assert out.seen.tolist() == [True, True, False]
    torch.testing.assert_close(out.features.float(), torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 0]]))


def _brute_force_weights(pred, valid, lik, temperature):
    """Naive Bayes with explicit loops: P(k | preds) ∝ prod over voting t of L[t, k, c_t]; class masses
    P^(1/temperature) over the predicted classes, shared by the teachers predicting each."""
    n_t, k = len(lik), len(lik[0])
    post = [math.prod(lik[t][y][pred[t]] for t in range(n_t) if valid[t]) for y in range(k)]
    predicted = {pred[t] for t in range(n_t) if valid[t]}
    mass = {c: (post[c] / sum(post)) ** (1 / temperature) for c in predicted}
    total = sum(mass.values())
    return [mass[pred[t]] / total / sum(1 for s in range(n_t) if valid[s] and pred[s] == pred[t]) if valid[t] else 0.0
            for t in range(n_t)]


def test_posterior_matches_brute_force_with_three_teachers():
    rng = np.random.default_rng(0)
    confusion = torch.tensor(rng.integers(0, 20, size=(3, 4, 5)), dtype=torch.float64)
    lik = likelihoods(confusion, floor=0.2)
    cases = [(p, v) for p in itertools.product(range(4), repeat=3) for v in ((1, 1, 1), (1, 0, 1), (0, 1, 0))]
    pred = torch.tensor([p for p, _ in cases])
    valid = torch.tensor([v for _, v in cases], dtype=torch.bool)
    for temperature in (1.0, 0.5):
        got = teacher_weights(pred, valid, lik, "posterior", temperature)
        expected = [_brute_force_weights(p, v, lik.tolist(), temperature) for p, v in cases]
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=1e-5)


def test_dense_catch_all_prediction_keeps_its_feature():
    # Class 2 as the catch-all: where the dense teacher (first) predicts it, its feature alone (as guided).
    a, b = _pf([[0.0, 0.0, 1.0]]), _pf([[1.0, 0.0, 0.0]])
    out = fuse_teachers([a, b], TEXT, "confusion", SCORES, catch_all_index=2, capability_confusion=CONFUSION)
    assert out.weights.tolist() == [[1.0, 0.0]]


def test_bad_confusion_inputs():
    a, b = _pf([[1.0, 0.0, 0.0]]), _pf([[0.0, 1.0, 0.0]])
    with pytest.raises(ConfigError, match="confusion fusion needs capability scores"):
        fuse_teachers([a, b], TEXT, "confusion", capability_confusion=CONFUSION)
    with pytest.raises(ConfigError, match="needs the capability's per-class confusion"):
        fuse_teachers([a, b], TEXT, "confusion", SCORES)
    with pytest.raises(ConfigError, match="shape"):
        fuse_teachers([a, b], TEXT, "confusion", SCORES, capability_confusion=CONFUSION[:, :, :3])
    for bad in (GuidedFusionConfig(confusion_floor=0.0), GuidedFusionConfig(confusion_rule="vote"),
                GuidedFusionConfig(confusion_temperature=0.0), GuidedFusionConfig(confusion_model="two-coin"),
                GuidedFusionConfig(confusion_model="confusion", confusion_floor=0.0)):
        with pytest.raises(ConfigError):
            fuse_teachers([a, b], TEXT, "confusion", SCORES, cfg=bad, capability_confusion=CONFUSION)


def test_confusion_json_round_trip_and_reordering(tmp_path):
    cap = Capability(["a", "b"], ["chair", "sofa", "table"], SCORES.numpy(), confusion=CONFUSION.numpy())
    cap.save(tmp_path / "cap.json")
    back = Capability.load(tmp_path / "cap.json")
    np.testing.assert_array_equal(back.confusion, CONFUSION.numpy())
    # Fusion order (b, a) over (table, chair, desk): desk is not scored (zero row); sofa predictions
    # fall outside the fusion classes and join the last column with "no prediction".
    sub = back.confusion_for(["b", "a"], ["table", "chair", "desk"])
    np.testing.assert_array_equal(sub[0], [[10, 0, 0, 0], [1, 9, 0, 5], [0, 0, 0, 0]])
    np.testing.assert_array_equal(sub[1], [[10, 0, 0, 0], [0, 4, 0, 6], [0, 0, 0, 0]])


def test_capability_file_without_confusion(tmp_path):
    """Files written before the confusion existed still load; a rule that needs it names the file."""
    path = tmp_path / "old_cap.json"
    path.write_text(json.dumps({"teachers": ["a", "b"], "classes": ["chair", "sofa", "table"], "scores": SCORES.tolist()}))
    old = Capability.load(path)
    assert old.confusion is None
    np.testing.assert_allclose(old.scores, SCORES.numpy())
    with pytest.raises(InputError, match="no per-class confusion") as err:
        old.confusion_for(["a", "b"], ["chair"])
    assert str(path) in str(err.value)
    bad = tmp_path / "bad_cap.json"
    bad.write_text(json.dumps({"teachers": ["a"], "classes": ["chair"], "scores": [[0.5]], "confusion": [[[1, -2]]]}))
    with pytest.raises(InputError, match="negative"):
        Capability.load(bad)


def test_fuse_cli_confusion_row_and_old_capability_file(tmp_path, monkeypatch, capsys):
    """`sas3d fuse --fusion confusion`: "good" says chair everywhere, "bad" says table. The capability
    IoUs trust good (0.9) over bad (0.1): the default accuracy model follows good.
    A capability file without the confusion is refused with its path, before any fusion, nothing written."""
    import sas3d.text.encoders
    from sas3d.cli import main
    from test_fusion import HashEncoder, write_scannet_scene

    encoder = HashEncoder()
    monkeypatch.setattr(sas3d.text.encoders, "build_text_encoder", lambda spec="minilm", device="cpu": encoder)
    chair, table = encoder.encode(["a chair in a scene", "a table in a scene"]).numpy()
    scene_dir = tmp_path / "scene"
    write_scannet_scene(scene_dir, np.array([[-0.5, -0.25, 1.0], [0.0, 0.0, 1.0], [0.25, 0.25, 1.0]], np.float32), [np.eye(4)], depth_m=1.0)
    for name, vec in (("good", chair), ("bad", table)):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "0.npy", np.broadcast_to(vec, (6, 8, 4)).astype(np.float32))
    (tmp_path / "two.txt").write_text("chair\ntable\n")
    base = ["fuse", str(scene_dir), "--teacher", f"precomputed:{tmp_path / 'good'}", "--teacher", f"precomputed:{tmp_path / 'bad'}",
            "--frame-stride", "1", "--set", "border_margin=0", "--no-progress", "--labelset", str(tmp_path / "two.txt"),
            "--fusion", "confusion"]
    cap = {"teachers": ["bad", "good"], "classes": ["chair", "table"], "scores": [[0.1, 0.1], [0.9, 0.9]]}
    (tmp_path / "old.json").write_text(json.dumps(cap))
    out = tmp_path / "old.safetensors"
    assert main(base + ["--capability", str(tmp_path / "old.json"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "old.json") in err and "no per-class confusion" in err and not out.exists()

    cap["confusion"] = [[[9, 1, 0], [0, 10, 0]], [[10, 0, 0], [10, 0, 0]]]  # rows: bad, good
    (tmp_path / "cap.json").write_text(json.dumps(cap))
    assert main(base + ["--capability", str(tmp_path / "cap.json"), "--out", str(tmp_path / "c.safetensors")]) == 0
    fused = PointFeatures.load(tmp_path / "c.safetensors")
    assert fused.metadata["method"] == "confusion"
    # Defaults: accuracy model, floor 0.05, temperature 0.1, K = 2: accuracy a = 0.95 * IoU + 0.025, good 0.88,
    # bad 0.12; P(chair) ∝ a_good * (1 - a_bad) = 0.88 * 0.88, P(table) ∝ 0.12 * 0.12; masses ∝ P^10.
    ratio = (0.12 * 0.12 / (0.88 * 0.88)) ** 10
    torch.testing.assert_close(fused.weights, torch.tensor([[1 / (1 + ratio), ratio / (1 + ratio)]] * 3))


def test_capability_records_confusion_and_resumes_old_progress(tmp_path):
    """Mask-pixel confusion by hand, with a no-prediction column; a progress.json from before the
    confusion (entries [intersection, union]) is completed by re-scoring only, with the same result."""
    from sas3d.capability import compute_capability
    from test_capability import TEXT, VOCAB, HalfTeacher, SquareGenerator

    class SilentHalf(HalfTeacher):
        """HalfTeacher's prediction on the bottom half, no prediction (zero feature) on the top half."""

        def predict(self, frame):
            out = super().predict(frame)
            out[:2] = 0.0  # rows 0-1 of the 4x4 map = rows 0-3 of the 8x8 image
            return out

    teachers = [HalfTeacher(4), SilentHalf(2)]
    teachers[1].name = "silent2"
    cap = compute_capability(teachers, SquareGenerator(), VOCAB, 2, TEXT, tmp_path / "w", progress=False)
    # Images 0, 1 of a class: masks = the left 1 and 2 columns (8 + 16 px). half4 predicts the class on
    # all of them; silent2 on their bottom halves (4 + 8 px) and nothing on their top halves (4 + 8 px).
    assert cap.confusion[0].tolist() == [[24, 0, 0, 0], [0, 24, 0, 0], [0, 0, 0, 0]]
    assert cap.confusion[1].tolist() == [[12, 0, 0, 12], [0, 12, 0, 12], [0, 0, 0, 0]]
    cap.save(tmp_path / "cap.json")
    assert Capability.load(tmp_path / "cap.json").confusion.tolist() == cap.confusion.tolist()

    progress = tmp_path / "w" / "progress.json"
    data = json.loads(progress.read_text())
    for entry in data["done"].values():
        entry["half4"] = entry["half4"][:2]  # as written before the confusion was recorded
    progress.write_text(json.dumps(data))
    again = [HalfTeacher(4), SilentHalf(2)]
    again[1].name = "silent2"
    resumed = compute_capability(again, SquareGenerator(), VOCAB, 2, TEXT, tmp_path / "w", progress=False)
    assert again[0].calls == 4 and again[1].calls == 0  # only the entries without counts are scored again
    np.testing.assert_array_equal(resumed.confusion, cap.confusion)
    np.testing.assert_array_equal(resumed.scores, cap.scores)


def test_gaussian_lifting_offers_confusion_fusion(tmp_path):
    """`sas3d gaussians lift --fusion confusion` goes through the same rule (the same weights as
    fuse_teachers on a Gaussian seen as "sofa" by A and "chair" by B); a capability file without the
    confusion is refused naming it."""
    from sas3d.gaussians.lift import combine_teachers
    from sas3d.text.labelsets import LabelSet

    class Onehot:  # class k's prompt -> e_k
        identity = name = "onehot"
        dim = 3

        def encode(self, texts):
            return torch.eye(3)[: len(texts)]

    labels = LabelSet("tiny", ("chair", "sofa", "table"))
    cap = Capability(["a", "b"], list(labels.classes), SCORES.numpy().astype(np.float64), confusion=CONFUSION.numpy())
    cap.save(tmp_path / "cap.json")
    cap = Capability.load(tmp_path / "cap.json")
    features = [_pf([[0, 1, 0]]), _pf([[1, 0, 0]])]  # A: sofa, B: chair
    fused = combine_teachers(features, ["a", "b"], "confusion", labels, Onehot(), cap, str(tmp_path / "cap.json"))
    assert fused.metadata["method"] == "confusion"
    direct = fuse_teachers(features, torch.eye(3), "confusion", SCORES, capability_confusion=CONFUSION)
    torch.testing.assert_close(fused.weights, direct.weights)
    assert not torch.allclose(direct.weights, fuse_teachers(features, torch.eye(3), "guided", SCORES).weights)
    old = json.loads((tmp_path / "cap.json").read_text())
    del old["confusion"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="old.json"):
        combine_teachers(features, ["a", "b"], "confusion", labels, Onehot(), Capability.load(tmp_path / "old.json"),
                         str(tmp_path / "old.json"))


def test_accuracy_likelihoods_hand_computed():
    # floor 0.3, K = 3: a = 0.7 * IoU + 0.1 on the diagonal, (1 - a) / 2 elsewhere; a class without
    # probe pixels with a prediction (B's table here) has a uniform row.
    confusion = CONFUSION.clone()
    confusion[1, 2] = 0
    lik = accuracy_likelihoods(SCORES, confusion, floor=0.3)
    torch.testing.assert_close(lik[0], torch.tensor([[0.38, 0.31, 0.31], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]))
    torch.testing.assert_close(lik[1], torch.tensor([[0.73, 0.135, 0.135], [0.31, 0.38, 0.31], [1 / 3, 1 / 3, 1 / 3]]))


def test_accuracy_model_matches_brute_force_with_three_teachers():
    """Per-class one-coin likelihoods written out with loops, fed to the brute-force naive Bayes."""
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 1, size=(3, 4))
    confusion = torch.ones(3, 4, 5, dtype=torch.float64)  # every class scored: no uniform rows
    floor, k = 0.2, 4
    lik = [[[(1 - floor) * scores[t][y] + floor / k if j == y else (1 - ((1 - floor) * scores[t][y] + floor / k)) / (k - 1)
             for j in range(k)] for y in range(k)] for t in range(3)]
    got_lik = accuracy_likelihoods(torch.tensor(scores), confusion, floor)
    torch.testing.assert_close(got_lik, torch.tensor(lik, dtype=torch.float32))
    cases = [(p, v) for p in itertools.product(range(k), repeat=3) for v in ((1, 1, 1), (1, 0, 1))]
    pred = torch.tensor([p for p, _ in cases])
    valid = torch.tensor([v for _, v in cases], dtype=torch.bool)
    got = teacher_weights(pred, valid, got_lik, "posterior", 0.5)
    expected = [_brute_force_weights(p, v, lik, 0.5) for p, v in cases]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=1e-5)


def test_unscored_class_falls_back_to_guided():
    """Table has no probe pixels (a catch-all): where a teacher predicts it the posterior knows nothing,
    and the weights are Eq. 7-8's; elsewhere they are the posterior's."""
    confusion = CONFUSION.clone()
    confusion[:, 2] = 0
    a = _pf([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # chair, sofa
    b = _pf([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # table (unscored), chair
    guided = fuse_teachers([a, b], TEXT, "guided", SCORES)
    for model in ("accuracy", "confusion"):
        out = fuse_teachers([a, b], TEXT, "confusion", SCORES, GuidedFusionConfig(confusion_model=model), capability_confusion=confusion)
        torch.testing.assert_close(out.weights[0], guided.weights[0])
        assert not torch.allclose(out.weights[1], guided.weights[1], atol=1e-3)
