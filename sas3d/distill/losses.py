"""Distillation losses of OpenScene, GGSD and SAS, written as the papers' equations.

Notation: ``F3D`` student features (M, C), ``F2D`` fused 2D features (M, C), ``T`` class text
features (K, C) with unit rows, superpoint ids (M,) int64 (any values; only equality matters).
Cross-entropies use the cosine between the student feature and the text rows divided by a
temperature: the student's output is not unit length, and inference classifies by cosine too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-8)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenScene pixel-point loss: mean over rows of ``1 - cos(pred_i, target_i)``."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return (1.0 - F.cosine_similarity(pred, target.to(pred.dtype), dim=-1, eps=1e-8)).mean()


def superpoint_mean(values: torch.Tensor, superpoint_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average ``values`` (M, ...) inside each superpoint.

    Returns ``(ids (S,), means (S, ...), inverse (M,))``: the sorted distinct superpoint ids, their
    mean rows and, per input row, the index of its superpoint in ``ids``.
    """
    ids, inverse = torch.unique(superpoint_ids, return_inverse=True)
    sums = torch.zeros((len(ids), *values.shape[1:]), dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, inverse, values)
    counts = torch.bincount(inverse, minlength=len(ids)).to(values.dtype)
    return ids, sums / counts.view(-1, *([1] * (values.ndim - 1))), inverse


def superpoint_cosine_loss(pred: torch.Tensor, target: torch.Tensor, superpoint_ids: torch.Tensor) -> torch.Tensor:
    """GGSD Eq. 3 / SAS Eq. 10: mean over superpoints of ``1 - cos(mean_sp(pred), mean_sp(target))``."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    _, pred_sp, _ = superpoint_mean(pred, superpoint_ids)
    _, target_sp, _ = superpoint_mean(target.to(pred.dtype), superpoint_ids)
    return cosine_loss(pred_sp, target_sp)


def text_logits(features: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """``cos(f, T_k) / temperature`` for every row and class -> (M, K)."""
    return _unit(features) @ _unit(text.to(features.dtype)).T / temperature


def history_update(history: torch.Tensor, prediction: torch.Tensor, alpha: float) -> torch.Tensor:
    """SAS Eq. 11: ``H <- alpha * H + (1 - alpha) * F3D``."""
    return alpha * history + (1.0 - alpha) * prediction


def tesd_pseudo_labels(
    history: torch.Tensor, superpoint_ids: torch.Tensor, text: torch.Tensor, point_label: str = "superpoint"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAS Eq. 12: labels from the temporal ensemble H (N, C).

    Superpoint labels are ``argmax(mean_sp(H) . T)``. Point labels are the label of the point's
    superpoint (``point_label="superpoint"``, REFERENCE.md) or ``argmax(H_i . T)``
    (``"point"``). Returns ``(point_labels (N,), superpoint ids (S,), superpoint_labels (S,))``.
    """
    ids, h_sp, inverse = superpoint_mean(history, superpoint_ids)
    sp_labels = (h_sp @ text.to(h_sp.dtype).T).argmax(dim=1)
    if point_label == "superpoint":
        point_labels = sp_labels[inverse]
    elif point_label == "point":
        point_labels = (history @ text.to(history.dtype).T).argmax(dim=1)
    else:
        raise ValueError(f"point_label must be 'superpoint' or 'point', got {point_label!r}")
    return point_labels, ids, sp_labels


def tesd_loss(
    pred: torch.Tensor,
    text: torch.Tensor,
    point_labels: torch.Tensor,
    superpoint_ids: torch.Tensor,
    superpoint_labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """SAS Eq. 13: ``CE(F3D . T, label_pt) + CE(mean_sp(F3D) . T, label_sp)``.

    ``superpoint_labels`` (M,) is the label of each row's superpoint (broadcast); the superpoint
    term averages over the distinct superpoints present in ``superpoint_ids``.
    """
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    point_term = F.cross_entropy(text_logits(pred, text, temperature), point_labels)
    ids, pred_sp, inverse = superpoint_mean(pred, superpoint_ids)
    labels_sp = torch.empty(len(ids), dtype=torch.long, device=pred.device)
    labels_sp[inverse] = superpoint_labels.to(torch.long)
    sp_term = F.cross_entropy(text_logits(pred_sp, text, temperature), labels_sp)
    return point_term + sp_term


def vote_labels(labels: torch.Tensor, superpoint_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """GGSD voting: every row gets the most frequent label of its superpoint (ties -> lowest class id)."""
    ids, inverse = torch.unique(superpoint_ids, return_inverse=True)
    votes = torch.zeros(len(ids) * num_classes, dtype=torch.long, device=labels.device)
    votes.index_add_(0, inverse * num_classes + labels.to(torch.long), torch.ones_like(inverse))
    return votes.view(len(ids), num_classes).argmax(dim=1)[inverse]


def ggsd_contrastive_loss(pred: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """GGSD Eq. 6: ``-log softmax_k(f3D . T_k / tau)[label]`` averaged over rows (tau = 0.01)."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return F.cross_entropy(text_logits(pred, text, temperature), labels.to(torch.long))


def supervised_loss(pred: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """Fully-supervised reference: ``CE(cos(F3D, T) / tau, ground truth)``, the same form as GGSD Eq. 6
    but on true labels, so the student is classified exactly as a distilled one."""
    return ggsd_contrastive_loss(pred, text, labels, temperature)
