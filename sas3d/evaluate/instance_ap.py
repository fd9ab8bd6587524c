"""ScanNet instance segmentation AP, as the ScanNet benchmark's ``evaluate_semantic_instance.py`` computes it.

Protocol (ScanNet benchmark scripts, copied unchanged by Mask3D / OpenMask3D / OpenIns3D):

* 18 classes = NYU40 ids 3..39 without wall and floor; ground truth per vertex is
  ``nyu40_id * 1000 + instance``; vertices of other classes (and 0 = unannotated) are "void";
* predictions: a mask over the vertices, an NYU40 label id and a confidence; masks with fewer than
  ``min_region_size`` (100) vertices are dropped, as are labels outside the 18 classes;
* per class and IoU threshold ``t`` (0.50, 0.55, ..., 0.90 and 0.25): every ground-truth instance of at
  least 100 vertices takes the first not yet used prediction with IoU > t; further predictions with
  IoU > t on the same instance are false positives (the lower score of the two), instances without a
  match are false negatives; a prediction matching nothing is a false positive unless more than
  ``t`` of its vertices lie on void or on instances below the minimum size;
* AP per class = the benchmark's integral of the precision-recall curve over unique scores; the
  class is NaN where it has neither ground truth nor predictions in any scene, 0 with ground truth
  but no predictions; mAP = mean over classes and the nine thresholds 0.50..0.90 (``np.arange(0.5,
  0.95, 0.05)`` stops before 0.95), AP50 / AP25 at 0.50 / 0.25.

One deliberate choice: the script matches predictions in the order of its prediction file; we sort
each scene's predictions by descending confidence first (stable), which is that order whenever the
file lists them by confidence (Mask3D's export does) and makes the greedy matching "by confidence"
whatever order a file uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from sas3d.instances.scannet_gt import INSTANCE_DIVISOR, InstanceGroundTruth

# ScanNet benchmark: the 18 instance classes and their NYU40 ids (wall and floor are not evaluated).
SCANNET_INSTANCE_CLASSES = ("cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
                            "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
                            "otherfurniture")
SCANNET_INSTANCE_IDS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET_OVERLAPS = tuple(float(x) for x in np.append(np.arange(0.5, 0.95, 0.05), 0.25))  # benchmark opt['overlaps']


@dataclass
class InstanceAPConfig:
    """Benchmark parameters (ScanNet ``evaluate_semantic_instance.py`` values)."""

    overlaps: tuple[float, ...] = SCANNET_OVERLAPS
    min_region_size: int = 100  # ScanNet: minimum instance / prediction size in vertices
    class_ids: tuple[int, ...] = SCANNET_INSTANCE_IDS
    class_names: tuple[str, ...] = SCANNET_INSTANCE_CLASSES


@dataclass
class ScenePredictions:
    """Labelled instance predictions of one scene: ``masks`` (P, N) bool CSR, NYU40 ``label_ids`` (P,), ``scores`` (P,)."""

    masks: sp.csr_matrix
    label_ids: np.ndarray
    scores: np.ndarray
    name: str = ""


@dataclass
class _ClassMatch:
    """One (scene, class): predictions in matching order, ground-truth instances in id order, intersections."""

    conf: np.ndarray  # (P,)
    pred_size: np.ndarray  # (P,)
    void_inter: np.ndarray  # (P,)
    gt_ids: np.ndarray  # (G,) encoded ids
    gt_size: np.ndarray  # (G,)
    inter: np.ndarray  # (P, G)


@dataclass
class InstanceAPResult:
    config: InstanceAPConfig
    ap: np.ndarray  # (K, O) AP per class and overlap (NaN: class absent everywhere)
    scenes: list[str] = field(default_factory=list)

    def _cols(self, mode: str) -> np.ndarray:
        o = np.asarray(self.config.overlaps)
        if mode == "all":
            return np.flatnonzero(~np.isclose(o, 0.25))
        return np.flatnonzero(np.isclose(o, 0.5 if mode == "50" else 0.25))

    def _mean(self, rows: np.ndarray) -> float:
        rows = rows[~np.isnan(rows)]
        return float(rows.mean()) if rows.size else float("nan")

    @property
    def map(self) -> float:
        return self._mean(self.ap[:, self._cols("all")].reshape(-1))

    @property
    def ap50(self) -> float:
        return self._mean(self.ap[:, self._cols("50")].reshape(-1))

    @property
    def ap25(self) -> float:
        return self._mean(self.ap[:, self._cols("25")].reshape(-1))

    def per_class(self) -> dict[str, dict[str, float | None]]:
        out = {}
        for k, name in enumerate(self.config.class_names):
            row = self.ap[k]
            vals = {"ap": np.nanmean(row[self._cols("all")]) if not np.isnan(row).all() else math.nan,
                    "ap50": row[self._cols("50")][0], "ap25": row[self._cols("25")][0]}
            out[name] = {key: None if math.isnan(v) else float(v) for key, v in vals.items()}
        return out

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {"map": num(self.map), "ap50": num(self.ap50), "ap25": num(self.ap25), "per_class": self.per_class(),
                "overlaps": list(self.config.overlaps), "min_region_size": self.config.min_region_size, "scenes": self.scenes,
                "protocol": "ScanNet benchmark evaluate_semantic_instance.py (mAP over IoU 0.50:0.90, AP50, AP25; 18 classes)"}


def match_scene(gt: InstanceGroundTruth, pred: ScenePredictions, cfg: InstanceAPConfig) -> list[_ClassMatch]:
    """Per class: the scene's predictions (>= min size, sorted by confidence) and their overlaps with its instances."""
    ids = np.asarray(gt.ids, dtype=np.int64)
    masks = sp.csr_matrix(pred.masks, dtype=bool, copy=True)
    masks.sum_duplicates()
    masks.eliminate_zeros()
    if masks.shape[1] != len(ids):
        raise ValueError(f"{pred.name or 'predictions'}: masks cover {masks.shape[1]} points, ground truth {len(ids)}")
    labels = np.asarray(pred.label_ids, dtype=np.int64).reshape(-1)
    scores = np.asarray(pred.scores, dtype=np.float64).reshape(-1)
    sizes = np.diff(masks.indptr).astype(np.int64)
    annotated = np.flatnonzero(ids != 0)
    uniq, col = np.unique(ids[annotated], return_inverse=True)  # instances in id order, as the benchmark lists them
    gt_size = np.bincount(col, minlength=len(uniq)).astype(np.int64)
    m_int = masks.astype(np.int64)
    void = ~np.isin(ids // INSTANCE_DIVISOR, cfg.class_ids)
    void_inter = np.asarray(m_int @ void.astype(np.int64)).reshape(-1)
    # (N, G) one-hot point -> instance; intersections of every prediction with every instance in one product
    onehot = sp.csr_matrix((np.ones(len(annotated), np.int64), (annotated, col.reshape(-1))), shape=(len(ids), len(uniq)))
    out = []
    for cid in cfg.class_ids:
        keep = np.flatnonzero((labels == cid) & (sizes >= cfg.min_region_size))
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        g = np.flatnonzero(uniq // INSTANCE_DIVISOR == cid)
        inter = (m_int[keep] @ onehot[:, g]).toarray() if len(keep) and len(g) else np.zeros((len(keep), len(g)), np.int64)
        out.append(_ClassMatch(scores[keep], sizes[keep], void_inter[keep], uniq[g], gt_size[g], inter))
    return out


def _average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int) -> float:
    """The benchmark's AP: precision/recall at each unique score, integrated with its step widths."""
    order = np.argsort(y_score)
    y_score_sorted = y_score[order]
    cumsum = np.cumsum(y_true[order])
    _, unique_indices = np.unique(y_score_sorted, return_index=True)
    n = len(unique_indices) + 1
    num_examples = len(y_score_sorted)
    num_true = cumsum[-1] if len(cumsum) else 0
    precision, recall = np.zeros(n), np.zeros(n)
    cumsum = np.append(cumsum, 0)
    for i, idx in enumerate(unique_indices):
        c = cumsum[idx - 1]  # idx 0 reads the appended 0
        tp = num_true - c
        fp = num_examples - idx - tp
        fn = c + hard_false_negatives
        precision[i] = tp / (tp + fp)
        recall[i] = tp / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0
    r = np.concatenate([[recall[0]], recall, [0.0]])
    step = np.convolve(r, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, step))


def _collect(m: _ClassMatch, th: float, min_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(y_true, y_score, hard false negatives) of one scene and class at IoU threshold ``th``."""
    visited = np.zeros(len(m.conf), dtype=bool)
    big = np.flatnonzero(m.gt_size >= min_size)  # encoded ids of valid classes are all >= 1000
    true = [1.0] * len(big)
    score = [-math.inf] * len(big)
    matched = [False] * len(big)
    hard_fn = 0
    union = m.pred_size[:, None] + m.gt_size[None, :] - m.inter
    iou = np.where(m.inter > 0, m.inter / np.maximum(union, 1), 0.0)
    for gi, g in enumerate(big):
        found = False
        for p in np.flatnonzero(m.inter[:, g] > 0):
            if visited[p] or not iou[p, g] > th:
                continue
            if matched[gi]:
                lo, hi = min(score[gi], m.conf[p]), max(score[gi], m.conf[p])
                score[gi] = hi
                true.append(0.0), score.append(lo), matched.append(True)
            else:
                found, matched[gi], score[gi], visited[p] = True, True, m.conf[p], True
        if not found:
            hard_fn += 1
    keep = np.asarray(matched, dtype=bool)
    y_true = np.asarray(true)[keep]
    y_score = np.asarray(score)[keep]
    extra_t, extra_s = [], []
    small = m.gt_size < min_size
    for p in range(len(m.conf)):
        touching = m.inter[p] > 0
        if (iou[p][touching] > th).any():
            continue
        ignore = m.void_inter[p] + m.inter[p][touching & small].sum()
        if ignore / m.pred_size[p] <= th:
            extra_t.append(0.0)
            extra_s.append(m.conf[p])
    return np.concatenate([y_true, extra_t]), np.concatenate([y_score, extra_s]), hard_fn


def evaluate_instances(gts: Sequence[InstanceGroundTruth], preds: Sequence[ScenePredictions],
                       cfg: InstanceAPConfig | None = None) -> InstanceAPResult:
    """ScanNet instance AP over scenes (``gts[i]`` and ``preds[i]`` are the same scene)."""
    cfg = cfg or InstanceAPConfig()
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground truths for {len(preds)} prediction sets")
    matches = [match_scene(g, p, cfg) for g, p in zip(gts, preds)]
    ap = np.zeros((len(cfg.class_ids), len(cfg.overlaps)))
    for k in range(len(cfg.class_ids)):
        per_scene = [m[k] for m in matches]
        has_gt = any((m.gt_size >= cfg.min_region_size).any() for m in per_scene)
        has_pred = any(len(m.conf) for m in per_scene)
        for o, th in enumerate(cfg.overlaps):
            if not has_gt:
                ap[k, o] = math.nan
                continue
            if not has_pred:
                ap[k, o] = 0.0
                continue
            parts = [_collect(m, th, cfg.min_region_size) for m in per_scene]
            y_true = np.concatenate([p[0] for p in parts])
            y_score = np.concatenate([p[1] for p in parts])
            ap[k, o] = _average_precision(y_true, y_score, sum(p[2] for p in parts))
    return InstanceAPResult(cfg, ap, [p.name for p in preds])


CLASS_AGNOSTIC_ID = 41  # one class above the NYU40 ids (1..40) that stands for "any benchmark object"


def evaluate_class_agnostic(gts: Sequence[InstanceGroundTruth], proposals: Sequence[Any],
                            cfg: InstanceAPConfig | None = None) -> InstanceAPResult:
    """AP of class-agnostic proposals ranked by their own scores: every ground-truth instance of the benchmark
    classes is an instance of one class "object", every proposal predicts it (the proposal-quality measure
    OpenMask3D and Open3DIS report for Mask3D's masks); the rest of the protocol as :func:`evaluate_instances`.
    ``proposals[i]``: anything with (P, N) ``masks`` and (P,) ``scores`` (:class:`sas3d.instances.types.Proposals`,
    :class:`ScenePredictions`, whose labels are ignored)."""
    cfg = cfg or InstanceAPConfig()
    agnostic_gts, agnostic_preds = [], []
    for g, p in zip(gts, proposals):
        ids = np.asarray(g.ids, dtype=np.int64)
        objects = np.isin(ids // INSTANCE_DIVISOR, cfg.class_ids)
        uniq, inverse = np.unique(ids[objects], return_inverse=True)
        if len(uniq) >= INSTANCE_DIVISOR:
            raise ValueError(f"{getattr(p, 'name', '') or 'scene'}: {len(uniq)} instances, more than one class can number "
                             f"({INSTANCE_DIVISOR - 1})")
        relabelled = ids.copy()
        relabelled[objects] = CLASS_AGNOSTIC_ID * INSTANCE_DIVISOR + 1 + inverse.reshape(-1)
        agnostic_gts.append(InstanceGroundTruth(relabelled, g.source))
        agnostic_preds.append(ScenePredictions(p.masks, np.full(p.masks.shape[0], CLASS_AGNOSTIC_ID), p.scores, getattr(p, "name", "")))
    one = InstanceAPConfig(cfg.overlaps, cfg.min_region_size, (CLASS_AGNOSTIC_ID,), ("object",))
    return evaluate_instances(agnostic_gts, agnostic_preds, one)


def format_ap_table(result: InstanceAPResult) -> str:
    """Per-class AP / AP50 / AP25 (%) and the averages, like the benchmark's printout."""
    lines = [f"{'class':<16}{'AP':>8}{'AP50':>8}{'AP25':>8}", "-" * 40]

    def pct(x: float | None) -> str:
        return "     n/a" if x is None else f"{100 * x:8.1f}"

    for name, row in result.per_class().items():
        lines.append(f"{name:<16}{pct(row['ap'])}{pct(row['ap50'])}{pct(row['ap25'])}")
    lines.append("-" * 40)
    avg = [None if math.isnan(x) else x for x in (result.map, result.ap50, result.ap25)]
    lines.append(f"{'average':<16}{pct(avg[0])}{pct(avg[1])}{pct(avg[2])}")
    return "\n".join(lines)


def plot_instance_ap(path: Any, result: InstanceAPResult, title: str) -> Any:
    """Horizontal bars of AP (0.50:0.90) / AP50 / AP25 (%) per class; classes without ground truth are greyed out."""
    from sas3d.evaluate.plots import plot_class_bars

    rows = result.per_class()
    names = list(rows)
    series = {label: np.array([np.nan if rows[n][key] is None else rows[n][key] for n in names])
              for key, label in (("ap", "AP (0.50:0.90)"), ("ap50", "AP50"), ("ap25", "AP25"))}
    return plot_class_bars(path, names, series, np.array([rows[n]["ap50"] is not None for n in names]), title)
