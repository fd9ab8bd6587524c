"""How well capability ranks the teachers' true per-class IoU: Spearman + per-class order, against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sas3d.capability.ranking import capability_ranking, format_ranking

NAN = math.nan
TEACHERS = ["A", "B", "C"]
CLASSES = ["x", "y", "z", "w"]
# z is absent from the scenes (no true IoU); A has no capability on w (e.g. the catch-all).
CAP = np.array([[0.9, 0.2, 0.5, NAN], [0.1, 0.8, 0.6, 0.3], [0.5, 0.4, 0.7, 0.15]])
IOU = np.array([[0.7, 0.1, NAN, 0.2], [0.3, 0.9, NAN, 0.5], [0.2, 0.6, NAN, 0.4]])


def test_spearman_and_pairwise_order_by_hand():
    r = capability_ranking(CAP, IOU, TEACHERS, CLASSES)
    # 8 cells. Capability ranks (A x, A y, B x, B y, B w, C x, C y, C w) = 8 3 1 7 4 6 5 2, true IoU ranks
    # = 7 1 3 8 5 2 6 4; sum d^2 = 1+4+4+1+1+16+1+4 = 32; rho = 1 - 6*32 / (8*63) = 13/21.
    assert r["cells"] == 8
    assert r["spearman"] == pytest.approx(13 / 21)
    # x: true A > B > C, capability A > C > B: (B, C) wrong -> 2/3; y: B > C > A both -> 3/3; w: B > C both -> 1/1.
    assert r["classes"]["x"]["agreement"] == pytest.approx(2 / 3)
    assert r["classes"]["y"]["agreement"] == 1.0 and r["classes"]["w"]["agreement"] == 1.0
    assert "z" not in r["classes"] and set(r["classes"]["w"]["capability"]) == {"B", "C"}
    assert (r["agreeing_pairs"], r["ordered_pairs"]) == (6, 7) and r["pairwise_agreement"] == pytest.approx(6 / 7)
    assert r["wrong_order_classes"] == ["x"]
    text = "\n".join(format_ranking(r, simulated=True))
    assert "SIMULATED" in text and "0.619" in text and "6/7 pairs (85.7 %)" in text
    assert "x: A 0.90/0.70, B 0.10/0.30, C 0.50/0.20" in text


def test_ties_and_degenerate_cases():
    # v: true IoUs differ but capability ties -> a wrong order; u: true IoUs tie -> the pair says nothing.
    cap = np.array([[0.5, 0.2], [0.5, 0.9]])
    iou = np.array([[0.5, 0.4], [0.3, 0.4]])
    r = capability_ranking(cap, iou, ["A", "B"], ["v", "u"])
    assert r["classes"]["v"]["agreement"] == 0.0 and r["classes"]["u"]["agreement"] is None
    assert r["wrong_order_classes"] == ["v"] and (r["agreeing_pairs"], r["ordered_pairs"]) == (0, 1)
    constant = capability_ranking(np.full((2, 2), 0.3), iou, ["A", "B"], ["v", "u"])
    assert constant["spearman"] is None  # undefined when one side is constant
    empty = capability_ranking(np.full((2, 2), NAN), iou, ["A", "B"], ["v", "u"])
    assert empty["cells"] == 0 and empty["spearman"] is None and empty["pairwise_agreement"] is None
    assert "n/a" in "\n".join(format_ranking(empty, simulated=False))
    with pytest.raises(ValueError):
        capability_ranking(cap, iou[:, :1], ["A", "B"], ["v", "u"])


def test_report_prints_and_stores_the_ranking():
    from sas3d.pipeline.config import PipelineReport, SplitResult, StageResult
    from sas3d.pipeline.report import format_tables

    ranking = capability_ranking(CAP, IOU, TEACHERS, CLASSES)
    rows = [StageResult("fusion:guided", "2D guided (SAS)", 0.5, 0.6, [0.5, 0.5, NAN, 0.5], 1.0)]
    report = PipelineReport([SplitResult("in_place", ["room"], rows)], {}, CLASSES, True, {}, [], {}, ranking)
    data = report.to_json()
    assert data["capability_ranking"]["spearman"] == pytest.approx(13 / 21)
    text = format_tables(data, "t")
    assert "Spearman rank correlation over 8 (teacher, class) cells: 0.619" in text and "    x: A 0.90/0.70" in text
    assert "Spearman" not in format_tables(PipelineReport([SplitResult("in_place", ["room"], rows)], {}, CLASSES, True, {}, [], {}).to_json(), "t")
