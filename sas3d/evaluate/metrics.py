"""Segmentation metrics: confusion matrix, per-class IoU / accuracy, mIoU / mAcc (OpenScene util/metric.py protocol).

Convention: rows are ground truth, columns are predictions. The matrix has one extra last column,
"no prediction", for points whose prediction is missing (-1, 255 or any id outside ``[0, K)``, e.g.
unseen points in fusion mode). Such points count as a false negative of their ground-truth class and
as nobody's false positive -- they are wrong, never silently dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sas3d.scene.types import IGNORE_LABEL


def _as_int_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False).reshape(-1)


def confusion_matrix(pred: Any, gt: Any, num_classes: int, ignore: int = IGNORE_LABEL) -> np.ndarray:
    """Return a ``(K, K + 1)`` int64 confusion matrix (rows gt, columns prediction, last column = no prediction).

    Points whose ground truth equals ``ignore`` are skipped. Ground-truth ids outside ``[0, K)``
    (other than ``ignore``) are an error: they mean the labels belong to another label set.
    """
    pred = _as_int_array(pred)
    gt = _as_int_array(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred has {pred.shape[0]} points, gt has {gt.shape[0]}")
    k = int(num_classes)
    valid = gt != ignore
    gt, pred = gt[valid], pred[valid]
    bad = (gt < 0) | (gt >= k)
    if bad.any():
        raise ValueError(f"ground-truth ids {np.unique(gt[bad])[:10].tolist()} are outside [0, {k}) and not the ignore id {ignore}")
    pred = np.where((pred >= 0) & (pred < k), pred, k)  # every kind of "no prediction" -> column K
    counts = np.bincount(gt * (k + 1) + pred, minlength=k * (k + 1))
    return counts.reshape(k, k + 1).astype(np.int64)


def iou_acc(conf: np.ndarray) -> dict[str, Any]:
    """Per-class IoU = TP/(TP+FP+FN) and Acc = TP/(TP+FN), averaged over classes present in the ground truth.

    ``conf`` is ``(K, K)`` or ``(K, K + 1)`` from :func:`confusion_matrix`. Returns a dict with ``miou``,
    ``macc`` (floats, NaN if no class is present), ``iou`` and ``acc`` (``(K,)`` float64, NaN where the
    ratio is undefined) and ``present`` (``(K,)`` bool: class occurs in the ground truth).
    """
    conf = np.asarray(conf, dtype=np.float64)
    k = conf.shape[0]
    if conf.ndim != 2 or conf.shape[1] not in (k, k + 1):
        raise ValueError(f"confusion matrix must be (K, K) or (K, K+1), got {conf.shape}")
    tp = np.diag(conf[:, :k])
    gt_total = conf.sum(axis=1)  # TP + FN, FN includes "no prediction"
    pred_total = conf[:, :k].sum(axis=0)  # TP + FP
    union = gt_total + pred_total - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt_total > 0, tp / gt_total, np.nan)
    present = gt_total > 0
    miou = float(iou[present].mean()) if present.any() else float("nan")
    macc = float(acc[present].mean()) if present.any() else float("nan")
    return {"miou": miou, "macc": macc, "iou": iou, "acc": acc, "present": present}
