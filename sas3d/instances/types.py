"""The boundary types of instance segmentation: class-agnostic proposals and labelled instances.

Masks are a ``scipy.sparse`` CSR matrix (P, N) of bools, one row per proposal over the scene's N
points: Mask3D-style outputs have ~100 overlapping masks over 10^5 points, so a dense matrix would
be mostly zeros, and the intersection counts the evaluation needs are one sparse product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp


def masks_from_dense(masks: np.ndarray) -> sp.csr_matrix:
    """(P, N) array -> CSR bool masks; any non-zero entry is in the mask (0/1 ints, bools, fp16 0/1)."""
    arr = np.asarray(masks)
    if arr.ndim != 2:
        raise ValueError(f"masks must be (P, N), got shape {arr.shape}")
    return sp.csr_matrix(arr != 0, dtype=bool)


def masks_from_indices(indices: Sequence[np.ndarray], num_points: int) -> sp.csr_matrix:
    """One array of point indices per proposal -> (P, N) CSR bool masks (duplicates are merged)."""
    rows = [np.unique(np.asarray(ix, dtype=np.int64)) for ix in indices]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    cols = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    if len(cols) and (cols.min() < 0 or cols.max() >= num_points):
        raise ValueError(f"point indices outside [0, {num_points})")
    data = np.ones(len(cols), dtype=bool)
    return sp.csr_matrix((data, cols, indptr), shape=(len(rows), int(num_points)))


def masks_from_ids(ids: np.ndarray, keep: Sequence[int] | None = None) -> tuple[np.ndarray, sp.csr_matrix]:
    """Per-point ids (N,) -> (the distinct ids, (len(ids), N) CSR masks); id 0 and negatives are "none".

    ``keep`` restricts the result to those ids (in that order).
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    uniq = np.unique(ids[ids > 0]) if keep is None else np.asarray(keep, dtype=np.int64)
    row_of = {int(u): r for r, u in enumerate(uniq)}
    pts = np.flatnonzero(np.isin(ids, uniq))
    rows = np.fromiter((row_of[int(i)] for i in ids[pts]), dtype=np.int64, count=len(pts))
    m = sp.csr_matrix((np.ones(len(pts), dtype=bool), (rows, pts)), shape=(len(uniq), len(ids)))
    return uniq, m


def mask_iou(a: sp.csr_matrix, b: sp.csr_matrix, containment: bool = False) -> np.ndarray:
    """(Pa, Pb) float64 IoU between every row of ``a`` and every row of ``b``; with ``containment``, the
    intersection over the smaller of the two masks instead (1 when one mask lies inside the other)."""
    inter = (a.astype(np.int64) @ b.astype(np.int64).T).toarray()
    na = np.asarray(a.sum(axis=1)).reshape(-1, 1)
    nb = np.asarray(b.sum(axis=1)).reshape(1, -1)
    denom = np.minimum(na, nb) if containment else na + nb - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, inter / denom, 0.0)


def mask_nms(masks: sp.csr_matrix, scores: np.ndarray, iou_threshold: float, groups: np.ndarray | None = None,
             containment: bool = False) -> np.ndarray:
    """Indices kept by greedy mask NMS (highest score first; within ``groups`` when given), in score order.
    ``containment`` compares intersection over the smaller mask instead of IoU (drops parts of a kept mask)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    groups = np.zeros(len(order), np.int64) if groups is None else np.asarray(groups)
    kept: list[int] = []
    for g in np.unique(groups):
        idx = order[groups[order] == g]
        iou = mask_iou(masks[idx], masks[idx], containment)
        alive = np.ones(len(idx), dtype=bool)
        for a in range(len(idx)):
            if alive[a]:
                kept.append(int(idx[a]))
                alive[a + 1:] &= ~(iou[a, a + 1:] > iou_threshold)
    kept_arr = np.asarray(kept, dtype=np.int64)
    return kept_arr[np.argsort(-np.asarray(scores)[kept_arr], kind="stable")] if len(kept_arr) else kept_arr


class _MaskRows:
    """Shared accessors of a set of (P, N) CSR masks held in ``self.masks``."""

    masks: sp.csr_matrix

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.masks.shape[1])

    @property
    def sizes(self) -> np.ndarray:
        """(P,) points per mask."""
        return np.diff(self.masks.indptr).astype(np.int64)

    def point_indices(self, i: int) -> np.ndarray:
        """Point indices of mask ``i``."""
        return self.masks.indices[self.masks.indptr[i] : self.masks.indptr[i + 1]].astype(np.int64)


@dataclass
class Proposals(_MaskRows):
    """Class-agnostic 3D mask proposals of one scene.

    ``masks`` (P, N) CSR bool; ``scores`` (P,) float64 objectness from the proposal source (1.0 where
    it gives none); ``labels`` (P,) int64 class ids the source already assigned (e.g. a ScanNet
    benchmark file's NYU40 label ids), or None; ``metadata`` says where they came from.
    """

    masks: sp.csr_matrix
    scores: np.ndarray
    labels: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.masks = sp.csr_matrix(self.masks, dtype=bool)
        self.masks.eliminate_zeros()
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if self.scores.shape[0] != self.masks.shape[0]:
            raise ValueError(f"{self.masks.shape[0]} masks but {self.scores.shape[0]} scores")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
            if self.labels.shape[0] != self.masks.shape[0]:
                raise ValueError(f"{self.masks.shape[0]} masks but {self.labels.shape[0]} labels")

    def subset(self, keep: np.ndarray) -> "Proposals":
        keep = np.asarray(keep)
        return Proposals(self.masks[keep], self.scores[keep], None if self.labels is None else self.labels[keep], dict(self.metadata))


@dataclass
class Instances(_MaskRows):
    """Labelled instances of one scene, sorted by descending ``scores``.

    ``classes`` (P,) int64 indices into ``class_names``; ``scores`` (P,) the confidence used to rank
    them; ``features`` (P, C) the mean point feature of each instance in the text space (for free-text
    queries), or None; ``metadata`` records the labeller, proposal source and config.
    """

    masks: sp.csr_matrix
    classes: np.ndarray
    scores: np.ndarray
    class_names: list[str]
    features: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def subset(self, keep: np.ndarray) -> "Instances":
        keep = np.asarray(keep)
        feats = None if self.features is None else self.features[keep]
        return Instances(self.masks[keep], self.classes[keep], self.scores[keep], self.class_names, feats, dict(self.metadata))

    def point_ids(self) -> np.ndarray:
        """(N,) int64 instance index per point, -1 for none; where instances overlap the higher-scored one wins."""
        out = np.full(self.num_points, -1, dtype=np.int64)
        for i in np.argsort(self.scores, kind="stable"):  # lowest first, so the best is painted last
            out[self.point_indices(int(i))] = i
        return out
