"""How well capability scores (SAS 3.2, measured on generated images) rank the teachers' true per-class IoU.

SAS weights each teacher per class by its capability (Eq. 8), so what matters is the ORDER it gives the
teachers on each class of the scenes. Two diagnostics, both over (teacher, class) cells where the
capability is defined (not NaN: the catch-all and classes the capability file does not score are left
out by the caller) and the class is present in the scenes (true IoU not NaN):

* Spearman rank correlation of capability vs true IoU over all such cells (scipy.stats.spearmanr);
* per class, pairwise agreement: over teacher pairs whose true IoUs differ, the share that capability
  orders the same way (a tie in capability counts as a wrong order); classes with a wrong pair are listed.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Sequence

import numpy as np
from scipy.stats import spearmanr


def capability_ranking(capability: np.ndarray, true_iou: np.ndarray, teachers: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Spearman and per-class pairwise order agreement of ``capability`` vs ``true_iou`` (both (T, K), NaN = undefined)."""
    cap = np.asarray(capability, dtype=np.float64)
    iou = np.asarray(true_iou, dtype=np.float64)
    if cap.shape != iou.shape or cap.shape != (len(teachers), len(classes)):
        raise ValueError(f"capability {cap.shape} and true IoU {iou.shape} must both be ({len(teachers)} teachers, {len(classes)} classes)")
    both = np.isfinite(cap) & np.isfinite(iou)
    x, y = cap[both], iou[both]
    rho = None
    if len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:  # undefined for a constant side
        rho = float(spearmanr(x, y).statistic)
    per_class: dict[str, Any] = {}
    wrong: list[str] = []
    agreeing = ordered = 0
    for k, cls in enumerate(classes):
        rows = np.nonzero(both[:, k])[0]
        if len(rows) < 2:
            continue
        pairs = [(i, j) for i, j in combinations(rows, 2) if iou[i, k] != iou[j, k]]
        ok = sum(int(np.sign(cap[i, k] - cap[j, k]) == np.sign(iou[i, k] - iou[j, k])) for i, j in pairs)
        per_class[cls] = {
            "agreement": ok / len(pairs) if pairs else None,
            "pairs": len(pairs),
            "capability": {teachers[i]: float(cap[i, k]) for i in rows},
            "true_iou": {teachers[i]: float(iou[i, k]) for i in rows},
        }
        agreeing, ordered = agreeing + ok, ordered + len(pairs)
        if ok < len(pairs):
            wrong.append(cls)
    return {
        "spearman": rho,
        "cells": int(both.sum()),
        "pairwise_agreement": agreeing / ordered if ordered else None,
        "agreeing_pairs": agreeing,
        "ordered_pairs": ordered,
        "wrong_order_classes": wrong,
        "classes": per_class,
    }


def format_ranking(ranking: dict[str, Any], simulated: bool) -> list[str]:
    """Terminal lines for a :func:`capability_ranking` dict; every figure comes from it."""

    def num(v: float | None, fmt: str) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    tag = " (SIMULATED teachers)" if simulated else ""
    agreement = ranking["pairwise_agreement"]
    lines = [f"capability vs true per-class IoU on the scenes{tag}:",
             f"  Spearman rank correlation over {ranking['cells']} (teacher, class) cells: {num(ranking['spearman'], '.3f')}",
             f"  teacher order per class agrees on {ranking['agreeing_pairs']}/{ranking['ordered_pairs']} pairs "
             f"({num(None if agreement is None else 100 * agreement, '.1f')} %)"]
    wrong = ranking["wrong_order_classes"]
    if not wrong:
        lines.append("  classes in the wrong order: none")
        return lines
    lines.append("  classes in the wrong order (capability / true IoU per teacher):")
    for cls in wrong:
        entry = ranking["classes"][cls]
        cells = ", ".join(f"{t} {entry['capability'][t]:.2f}/{entry['true_iou'][t]:.2f}" for t in entry["capability"])
        lines.append(f"    {cls}: {cells}")
    return lines
