"""ScanNet instance AP against a brute-force transcription of the benchmark script and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sas3d.evaluate.instance_ap import (SCANNET_INSTANCE_CLASSES, SCANNET_INSTANCE_IDS, InstanceAPConfig,
                                        ScenePredictions, evaluate_instances)
from sas3d.instances.scannet_gt import InstanceGroundTruth
from sas3d.instances.types import masks_from_dense

OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
MIN_SIZE = 100


# ---------------------------------------------------------------------------------------------
# Brute force: the benchmark's evaluate_semantic_instance.py logic, per-vertex boolean masks, dicts.


def _bf_assign(gt_ids, masks, labels, confs):
    gt2pred = {c: [] for c in SCANNET_INSTANCE_CLASSES}
    id_to_label = dict(zip(SCANNET_INSTANCE_IDS, SCANNET_INSTANCE_CLASSES))
    for u in np.unique(gt_ids):
        if u == 0 or u // 1000 not in id_to_label:
            continue
        gt2pred[id_to_label[u // 1000]].append({"instance_id": int(u), "vert_count": int(np.count_nonzero(gt_ids == u)), "matched_pred": []})
    pred2gt = {c: [] for c in SCANNET_INSTANCE_CLASSES}
    bool_void = np.logical_not(np.isin(gt_ids // 1000, SCANNET_INSTANCE_IDS))
    for uid, (mask, label, conf) in enumerate(zip(masks, labels, confs)):
        if label not in id_to_label:
            continue
        name = id_to_label[label]
        mask = mask != 0
        num = int(np.count_nonzero(mask))
        if num < MIN_SIZE:
            continue
        pred = {"uuid": uid, "vert_count": num, "confidence": conf,
                "void_intersection": int(np.count_nonzero(np.logical_and(bool_void, mask)))}
        matched_gt = []
        for gt in gt2pred[name]:
            inter = int(np.count_nonzero(np.logical_and(gt_ids == gt["instance_id"], mask)))
            if inter > 0:
                matched_gt.append({**{k: v for k, v in gt.items() if k != "matched_pred"}, "intersection": inter})
                gt["matched_pred"].append({**pred, "intersection": inter})
        pred["matched_gt"] = matched_gt
        pred2gt[name].append(pred)
    return gt2pred, pred2gt


def _bf_ap(matches):
    ap = np.zeros((len(SCANNET_INSTANCE_CLASSES), len(OVERLAPS)))
    for oi, th in enumerate(OVERLAPS):
        visited = {}
        for m in matches:
            for name in SCANNET_INSTANCE_CLASSES:
                for p in m["pred"][name]:
                    visited[(id(m), p["uuid"])] = False
        for li, name in enumerate(SCANNET_INSTANCE_CLASSES):
            y_true, y_score = np.empty(0), np.empty(0)
            hard_fn, has_gt, has_pred = 0, False, False
            for m in matches:
                preds = m["pred"][name]
                gts = [g for g in m["gt"][name] if g["instance_id"] >= 1000 and g["vert_count"] >= MIN_SIZE]
                has_gt |= bool(gts)
                has_pred |= bool(preds)
                cur_true = np.ones(len(gts))
                cur_score = np.ones(len(gts)) * -math.inf
                cur_match = np.zeros(len(gts), dtype=bool)
                for gti, gt in enumerate(gts):
                    found = False
                    for pred in gt["matched_pred"]:
                        if visited[(id(m), pred["uuid"])]:
                            continue
                        overlap = pred["intersection"] / (gt["vert_count"] + pred["vert_count"] - pred["intersection"])
                        if overlap > th:
                            if cur_match[gti]:
                                hi, lo = max(cur_score[gti], pred["confidence"]), min(cur_score[gti], pred["confidence"])
                                cur_score[gti] = hi
                                cur_true = np.append(cur_true, 0)
                                cur_score = np.append(cur_score, lo)
                                cur_match = np.append(cur_match, True)
                            else:
                                found = True
                                cur_match[gti] = True
                                cur_score[gti] = pred["confidence"]
                                visited[(id(m), pred["uuid"])] = True
                    if not found:
                        hard_fn += 1
                cur_true, cur_score = cur_true[cur_match], cur_score[cur_match]
                for pred in preds:
                    if any(g["intersection"] / (g["vert_count"] + pred["vert_count"] - g["intersection"]) > th for g in pred["matched_gt"]):
                        continue
                    ignore = pred["void_intersection"]
                    for g in pred["matched_gt"]:
                        if g["instance_id"] < 1000:
                            ignore += g["intersection"]
                        if g["vert_count"] < MIN_SIZE:
                            ignore += g["intersection"]
                    if ignore / pred["vert_count"] <= th:
                        cur_true = np.append(cur_true, 0)
                        cur_score = np.append(cur_score, pred["confidence"])
                y_true, y_score = np.append(y_true, cur_true), np.append(y_score, cur_score)
            if has_gt and has_pred:
                order = np.argsort(y_score)
                ys, yt = y_score[order], y_true[order]
                cs = np.cumsum(yt)
                _, uidx = np.unique(ys, return_index=True)
                n_ex, n_true = len(ys), (cs[-1] if len(cs) else 0)
                prec, rec = np.zeros(len(uidx) + 1), np.zeros(len(uidx) + 1)
                cs = np.append(cs, 0)
                for r, ix in enumerate(uidx):
                    c = cs[ix - 1]
                    tp, fp, fn = n_true - c, n_ex - ix - (n_true - c), c + hard_fn
                    prec[r], rec[r] = tp / (tp + fp), tp / (tp + fn)
                prec[-1], rec[-1] = 1.0, 0.0
                rc = np.append(np.append(rec[0], rec), 0.0)
                ap[li, oi] = np.dot(prec, np.convolve(rc, [-0.5, 0, 0.5], "valid"))
            elif has_gt:
                ap[li, oi] = 0.0
            else:
                ap[li, oi] = math.nan
    return ap


def _random_scene(rng, n=900):
    """Blocks of points as instances of random classes (some void, some tiny), and noisy predicted masks."""
    gt = np.zeros(n, dtype=np.int64)
    start, inst = 0, 0
    classes = [5, 5, 5, 7, 3, 1, 2, 39, 0]  # chair x3 weight, table, cabinet, wall (void), floor (void), other, unannotated
    while start < n:
        size = int(rng.choice([40, 80, 120, 160, 220]))
        lab = int(rng.choice(classes))
        inst += 1
        gt[start:start + size] = lab * 1000 + inst if lab else 0
        start += size
    preds, labels, confs = [], [], []
    instances = [u for u in np.unique(gt) if u]
    for _ in range(int(rng.integers(8, 20))):
        mask = np.zeros(n, dtype=np.int64)
        r = rng.random()
        if r < 0.15:  # two neighbouring instances in one mask: at t = 0.25 it can overlap both enough
            k = int(rng.integers(len(instances) - 1))
            idx = np.flatnonzero(np.isin(gt, instances[k:k + 2]))
            mask[idx[0]:idx[-1] + 1] = 1
            lab = instances[k] // 1000 if instances[k] // 1000 else 5
        elif r < 0.65:  # a perturbed copy of an instance (IoU anywhere from ~0.3 to 1), often the right class
            u = int(rng.choice(instances))
            idx = np.flatnonzero(gt == u)
            lo = max(0, idx[0] + int(rng.integers(-60, 40)))
            hi = min(n, idx[-1] + 1 + int(rng.integers(-40, 60)))
            mask[lo:hi] = 1
            lab = u // 1000 if rng.random() < 0.7 else int(rng.choice([5, 7, 3, 39]))
        else:  # anywhere
            c0 = int(rng.integers(0, n - 50))
            mask[c0:c0 + int(rng.integers(60, 300))] = 1
            lab = int(rng.choice([5, 7, 3, 39, 1, 24]))
        mask[rng.random(n) < 0.01] = 1  # stray points
        preds.append(mask)
        labels.append(lab)
        confs.append(float(np.round(rng.random(), 1)))  # rounded: ties in scores happen
    order = np.argsort(-np.asarray(confs), kind="stable")
    return gt, [preds[i] for i in order], [labels[i] for i in order], [confs[i] for i in order]


@pytest.mark.parametrize("seed", range(6))
def test_ap_matches_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    scenes = [_random_scene(rng) for _ in range(3)]
    matches = []
    for gt, masks, labels, confs in scenes:
        g2p, p2g = _bf_assign(gt, masks, labels, confs)
        matches.append({"gt": g2p, "pred": p2g})
    expected = _bf_ap(matches)
    result = evaluate_instances([InstanceGroundTruth(gt) for gt, *_ in scenes],
                                [ScenePredictions(masks_from_dense(np.stack(m)), np.asarray(lab), np.asarray(c)) for _, m, lab, c in scenes])
    np.testing.assert_allclose(result.ap, expected, atol=1e-12, equal_nan=True)
    assert np.isfinite(result.ap).any()
    o = ~np.isclose(OVERLAPS, 0.25)
    assert result.map == pytest.approx(np.nanmean(expected[:, o]))
    assert result.ap50 == pytest.approx(np.nanmean(expected[:, 0]))
    assert result.ap25 == pytest.approx(np.nanmean(expected[:, -1]))


def _one_chair_case(score_good, score_bad):
    n = 1000
    gt = np.zeros(n, dtype=np.int64)
    gt[:200] = 5 * 1000 + 1  # one chair of 200 vertices; the rest is unannotated
    good = np.zeros(n, bool)
    good[:180] = True  # IoU 0.9
    bad = np.zeros(n, bool)
    bad[100:400] = True  # IoU 100/400 = 0.25 with the chair, 200 of its 300 vertices on void
    preds = ScenePredictions(masks_from_dense(np.stack([good, bad])), np.array([5, 5]), np.array([score_good, score_bad]))
    return evaluate_instances([InstanceGroundTruth(gt)], [preds])


def test_ap_known_answers():
    # The good mask (IoU 0.9) scores higher, so AP is 1 at every threshold it passes. The bad mask (IoU
    # 0.25, 2/3 of it on void) is ignored below t = 2/3 and a false positive above, but ranks last.
    r = _one_chair_case(0.9, 0.5)
    chair = SCANNET_INSTANCE_CLASSES.index("chair")
    np.testing.assert_allclose(r.ap[chair, :8], 1.0)  # thresholds 0.50 .. 0.85: IoU 0.9 passes
    assert r.ap[chair, 8] == 0.0  # 0.90: IoU 0.9 is not > 0.9 -> no match, one false negative
    assert r.ap[chair, 9] == 1.0  # 0.25: IoU 0.25 of the bad mask is not > 0.25, it is 2/3 void -> ignored
    assert np.isnan(r.ap[SCANNET_INSTANCE_CLASSES.index("table")]).all()  # no table anywhere
    assert r.ap50 == pytest.approx(1.0) and r.map == pytest.approx(8 / 9)


def test_ap_false_positive_ranked_first():
    # A confident false positive ranked above the true positive: precision 1/2 at recall 1.
    n = 1000
    gt = np.zeros(n, dtype=np.int64)
    gt[:200] = 5 * 1000 + 1
    gt[200:1000] = 7 * 1000 + 2  # a table covers the rest (not void for the chair class: a false positive counts)
    good = np.zeros(n, bool)
    good[:200] = True
    fp = np.zeros(n, bool)
    fp[500:700] = True
    preds = ScenePredictions(masks_from_dense(np.stack([good, fp])), np.array([5, 5]), np.array([0.5, 0.9]))
    r = evaluate_instances([InstanceGroundTruth(gt)], [preds])
    # Benchmark integral by hand: sorted scores [0.5 TP, 0.9 FP] -> (p, r) = (0.5, 1), (0, 0), then (1, 0);
    # step widths from recall [1, 1, 0, 0, 0] convolved with [-0.5, 0, 0.5] = [0.5, 0.5, 0] -> AP 0.25.
    assert r.ap[SCANNET_INSTANCE_CLASSES.index("chair"), 0] == pytest.approx(0.25)
    assert r.ap[SCANNET_INSTANCE_CLASSES.index("table"), 0] == 0.0  # a table instance but no table prediction


def test_small_predictions_and_instances_are_dropped():
    n = 500
    gt = np.zeros(n, dtype=np.int64)
    gt[:90] = 5 * 1000 + 1  # below the 100-vertex minimum: not evaluated
    pred = np.zeros(n, bool)
    pred[:90] = True  # below the minimum too: dropped
    r = evaluate_instances([InstanceGroundTruth(gt)], [ScenePredictions(masks_from_dense(pred[None]), np.array([5]), np.array([1.0]))])
    assert np.isnan(r.ap).all()
    cfg = InstanceAPConfig(min_region_size=50)
    r = evaluate_instances([InstanceGroundTruth(gt)], [ScenePredictions(masks_from_dense(pred[None]), np.array([5]), np.array([1.0]))], cfg)
    assert r.ap50 == pytest.approx(1.0)


def test_class_agnostic_ap_ignores_labels():
    """Proposal quality without classes: a chair and a table found exactly score AP 1 whatever their labels (the
    labelled AP is 0 when the labels are swapped); a fragment ranked first costs precision as in the labelled case."""
    from sas3d.evaluate.instance_ap import evaluate_class_agnostic

    n = 1000
    gt = np.zeros(n, dtype=np.int64)
    gt[:200] = 5 * 1000 + 1  # chair
    gt[200:600] = 7 * 1000 + 1  # table (instance number 1 again: the classes keep them apart)
    gt[600:] = 1 * 1000 + 1  # wall: not a benchmark class, void
    chair, table, fragment = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    chair[:200], table[200:600], fragment[200:320] = True, True, True
    swapped = ScenePredictions(masks_from_dense(np.stack([chair, table])), np.array([7, 5]), np.array([0.9, 0.8]))
    assert evaluate_instances([InstanceGroundTruth(gt)], [swapped]).ap50 == 0.0
    r = evaluate_class_agnostic([InstanceGroundTruth(gt)], [swapped])
    assert r.config.class_names == ("object",) and r.ap50 == pytest.approx(1.0) and r.map == pytest.approx(1.0)
    # the fragment (120 of the table's 400 points, IoU 0.3) ranked first: sorted [TP 0.8, TP 0.9, FP 0.95]
    # -> (p, r) = (2/3, 1), (1/2, 1/2), (0, 0), then (1, 0); step widths from recall [1, 1, 1/2, 0, 0, 0]
    # convolved with [-0.5, 0, 0.5] = [1/4, 1/2, 1/4, 0] -> AP = 2/3 * 1/4 + 1/2 * 1/2 = 5/12
    first = ScenePredictions(masks_from_dense(np.stack([chair, table, fragment])), np.array([0, 0, 0]), np.array([0.9, 0.8, 0.95]))
    assert evaluate_class_agnostic([InstanceGroundTruth(gt)], [first]).ap50 == pytest.approx(5 / 12)
