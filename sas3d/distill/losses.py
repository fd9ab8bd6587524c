"""Distillation losses of OpenScene, GGSD and SAS, written as the papers' equations.

Notation: ``F3D`` student features (M, C), ``F2D`` fused 2D features (M, C), ``T`` class text
features (K, C) with unit rows, superpoint ids (M,) int64 (any values; only equality matters).
Cross-entropies use the cosine between the student feature and the text rows divided by a
temperature: the student's output is not unit length, and inference classifies by cosine too.

Every loss takes optional per-row ``weights`` (summing to 1): without them it is the papers' plain
mean; :func:`balance_weights` makes weights under which every group (class, superpoint, cluster)
contributes equally (``loss.balance``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-8)


def _reduce(per_row: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_row.mean()
    return (per_row * weights.to(per_row.dtype)).sum()


def balance_weights(groups: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
    """Row weights, summing to 1, under which every group present contributes equally.

    ``groups`` (M,) int64 group of each row (a class, a superpoint, a cluster); ``base`` (M,) optional
    weights within a group (default uniform). Row i of group g gets ``base_i / (G * sum_{j in g} base_j)``
    with G the number of groups present, so each group's rows sum to 1/G.
    """
    if groups.numel() == 0:
        return torch.zeros(0, dtype=torch.float32, device=groups.device)
    ids, inverse = torch.unique(groups, return_inverse=True)
    base = torch.ones(groups.shape[0], dtype=torch.float32, device=groups.device) if base is None else base.float()
    totals = torch.zeros(len(ids), dtype=torch.float32, device=groups.device).index_add_(0, inverse, base)
    return base / (totals[inverse] * len(ids))


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """OpenScene pixel-point loss: mean (or ``weights``-weighted sum) over rows of ``1 - cos(pred_i, target_i)``."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return _reduce(1.0 - F.cosine_similarity(pred, target.to(pred.dtype), dim=-1, eps=1e-8), weights)


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


def superpoint_cosine_loss(pred: torch.Tensor, target: torch.Tensor, superpoint_ids: torch.Tensor,
                           superpoint_weights: torch.Tensor | None = None) -> torch.Tensor:
    """GGSD Eq. 3 / SAS Eq. 10: mean over superpoints of ``1 - cos(mean_sp(pred), mean_sp(target))``.

    ``superpoint_weights`` (S,): one weight per distinct superpoint id, in sorted-id order.
    """
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    _, pred_sp, _ = superpoint_mean(pred, superpoint_ids)
    _, target_sp, _ = superpoint_mean(target.to(pred.dtype), superpoint_ids)
    return cosine_loss(pred_sp, target_sp, superpoint_weights)


def text_logits(features: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """``cos(f, T_k) / temperature`` for every row and class -> (M, K)."""
    return _unit(features) @ _unit(text.to(features.dtype)).T / temperature


def history_update(history: torch.Tensor, prediction: torch.Tensor, alpha: float) -> torch.Tensor:
    """SAS Eq. 11: ``H <- alpha * H + (1 - alpha) * F3D``."""
    return alpha * history + (1.0 - alpha) * prediction


def tesd_pseudo_labels(
    history: torch.Tensor, superpoint_ids: torch.Tensor, text: torch.Tensor | None, point_label: str = "superpoint"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAS Eq. 12: labels from the temporal ensemble H (N, C).

    Superpoint labels are ``argmax(mean_sp(H) . T)``. Point labels are the label of the point's
    superpoint (``point_label="superpoint"``, the official SAS code) or ``argmax(H_i . T)``
    (``"point"``). ``text=None`` means H already holds the class scores ``H . T`` (N, K): both are
    linear in H, so labelling the stored scores gives the same labels as labelling H.
    Returns ``(point_labels (N,), superpoint ids (S,), superpoint_labels (S,))``.
    """
    scores = history if text is None else history @ text.to(history.dtype).T
    ids, s_sp, inverse = superpoint_mean(scores, superpoint_ids)
    sp_labels = s_sp.argmax(dim=1)
    if point_label == "superpoint":
        point_labels = sp_labels[inverse]
    elif point_label == "point":
        point_labels = scores.argmax(dim=1)
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
    point_weights: torch.Tensor | None = None,
    superpoint_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """SAS Eq. 13: ``CE(F3D . T, label_pt) + CE(mean_sp(F3D) . T, label_sp)``.

    ``superpoint_labels`` (M,) is the label of each row's superpoint (broadcast); the superpoint
    term averages over the distinct superpoints present in ``superpoint_ids`` (``superpoint_weights``:
    one per distinct id, sorted).
    """
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    point_term = _reduce(F.cross_entropy(text_logits(pred, text, temperature), point_labels, reduction="none"), point_weights)
    ids, pred_sp, inverse = superpoint_mean(pred, superpoint_ids)
    labels_sp = torch.empty(len(ids), dtype=torch.long, device=pred.device)
    labels_sp[inverse] = superpoint_labels.to(torch.long)
    sp_term = _reduce(F.cross_entropy(text_logits(pred_sp, text, temperature), labels_sp, reduction="none"), superpoint_weights)
    return point_term + sp_term


def vote_labels(labels: torch.Tensor, superpoint_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """GGSD voting: every row gets the most frequent label of its superpoint (ties -> lowest class id)."""
    ids, inverse = torch.unique(superpoint_ids, return_inverse=True)
    votes = torch.zeros(len(ids) * num_classes, dtype=torch.long, device=labels.device)
    votes.index_add_(0, inverse * num_classes + labels.to(torch.long), torch.ones_like(inverse))
    return votes.view(len(ids), num_classes).argmax(dim=1)[inverse]


def ggsd_contrastive_loss(pred: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, temperature: float = 0.01,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """GGSD Eq. 6: ``-log softmax_k(f3D . T_k / tau)[label]`` averaged over rows (tau = 0.01)."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return _reduce(F.cross_entropy(text_logits(pred, text, temperature), labels.to(torch.long), reduction="none"), weights)


def supervised_loss(pred: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, temperature: float = 0.01,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Fully-supervised reference: ``CE(cos(F3D, T) / tau, ground truth)``, the same form as GGSD Eq. 6
    but on true labels, so the student is classified exactly as a distilled one."""
    return ggsd_contrastive_loss(pred, text, labels, temperature, weights)
