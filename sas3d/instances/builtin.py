"""Training-free class-agnostic 3D proposals: superpoints merged by feature similarity over their contact graph.

No weights and CPU only. From the scene itself:

1. superpoints (ScanNet's mesh segmentator on meshes, the kNN-graph version on point clouds);
2. their contact graph: two superpoints are neighbours when any of their points lie within
   ``adjacency_radius`` of each other (objects that touch but share no mesh edge are neighbours too);
3. agglomerative merging: repeatedly join the neighbouring pair of regions whose mean point features
   (the distilled 3D student's, fused 2D, or the ensemble) have the highest cosine similarity; a
   region's feature is the mean over all its points, recomputed after each merge;
4. multiple granularities, as Mask3D returns overlapping masks: the partition is recorded each time
   the best remaining similarity falls below one of ``levels``; every region of at least
   ``min_points`` points at any level is a proposal (identical regions at several levels once);
5. an objectness score for each proposal, as Mask3D scores its masks, here without training. A
   region is born at the threshold of the merge that made it (1 for a superpoint) and dies at the
   threshold of the merge that absorbs it (-1 if nothing ever does: nothing touches it); it is a
   region at every threshold in between, so its *lifetime* ``(birth - death) / 2`` in [0, 1] says how
   far apart, in feature space, it stays from what lies inside and around it (the persistence of the
   region). A merge's threshold is its cosine, or the lowest cosine merged before it where that is
   lower (merging by mean features can make a later pair more similar than an earlier one). The
   default score is the region's *stability*, lifetime x points: the cluster stability HDBSCAN
   (Campello et al. 2013) selects clusters by, ``sum over its points of (lambda_leave - lambda_birth)``,
   with every point leaving together when the region is absorbed. The lifetime alone ranks a
   well-separated fragment of an object (a superpoint starts at 1) above the whole object; the mass
   that persists ranks the whole first. A region none of whose points has a feature (fused 2D where no
   camera saw it) has no similarity to anything, only the convention 0, so no lifetime either: it
   scores the floor (``MIN_LIFETIME``), not the 0.5 x points that convention would give a superpoint
   absorbed at 0. The labeller multiplies its confidence by this score;
6. duplicates removed: a region and the same region plus a sliver, recorded at two levels, are one
   object twice, so class-agnostic mask NMS (``nms_iou``, by the score) keeps the better of any two
   proposals that overlap more than that.

Geometry decides which regions may merge (contact), the features decide in which order and how far.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from sas3d.errors import ConfigError
from sas3d.geometry.superpoints import SuperpointConfig
from sas3d.instances.features import PointFeatureSet
from sas3d.instances.types import Proposals, mask_nms


@dataclass
class ProposalConfig:
    """Built-in proposal generator settings (our choices; the papers use Mask3D instead)."""

    levels: list[float] = field(default_factory=lambda: [0.9, 0.8, 0.7, 0.6, 0.5])  # cosine thresholds, one granularity each
    adjacency_radius: float = 0.05  # m; superpoints with points this close touch (about two ScanNet vertex spacings)
    min_points: int = 100  # ScanNet minimum region size: smaller regions are not proposed
    score: str = "stability"  # stability (lifetime x points) | lifetime (persistence in the merge hierarchy) | none (1.0 each); module docstring
    nms_iou: float | None = 0.5  # class-agnostic mask NMS by the score (None: keep every recorded region); our choice
    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)


PROPOSAL_SCORES = ("stability", "lifetime", "none")
MIN_LIFETIME = 1e-3  # floor of the lifetime score: a region absorbed above its birth (mean-linkage inversion) still ranks by its label


@dataclass
class MergeHierarchy:
    """The agglomeration of :func:`merge_hierarchy`: per level a (S,) region id of each superpoint, and the
    dendrogram node of that region, with every node's birth and death threshold."""

    partitions: list[np.ndarray]
    nodes: list[np.ndarray]  # per level, (S,) the node (region) each superpoint belongs to
    birth: np.ndarray  # (nodes,) threshold of the merge that created the node; 1.0 for a superpoint
    death: np.ndarray  # (nodes,) threshold of the merge that absorbed it; -1.0 if none did
    featureless: np.ndarray  # (nodes,) bool: no point of the region has a feature (its similarities are the convention 0)

    def lifetime(self, level: int) -> np.ndarray:
        """(S,) ``(birth - death) / 2`` of each superpoint's region at ``level``, floored at ``MIN_LIFETIME``;
        a featureless region has no lifetime: ``MIN_LIFETIME``."""
        n = self.nodes[level]
        return np.where(self.featureless[n], MIN_LIFETIME, np.maximum((self.birth[n] - self.death[n]) / 2.0, MIN_LIFETIME))

    def stability(self, level: int, points: np.ndarray) -> np.ndarray:
        """(S,) lifetime x points of each superpoint's region at ``level`` (``points``: (S,) the point count of that
        region); a featureless region has no mass that persists: ``MIN_LIFETIME``."""
        return np.where(self.featureless[self.nodes[level]], MIN_LIFETIME, self.lifetime(level) * points)


def contact_pairs(points: np.ndarray, superpoints: np.ndarray, radius: float, faces: np.ndarray | None = None) -> np.ndarray:
    """(E, 2) int64 unique pairs (a < b) of superpoints that touch: points within ``radius`` or a shared mesh edge."""
    from scipy.spatial import cKDTree

    sp_ids = np.asarray(superpoints, dtype=np.int64)
    pairs = cKDTree(np.asarray(points, dtype=np.float64)).query_pairs(float(radius), output_type="ndarray")
    ab = [sp_ids[pairs[:, 0]], sp_ids[pairs[:, 1]]] if len(pairs) else [np.zeros(0, np.int64)] * 2
    if faces is not None and len(faces):
        f = np.asarray(faces, dtype=np.int64)
        for i, j in ((0, 1), (1, 2), (2, 0)):
            ab[0] = np.concatenate([ab[0], sp_ids[f[:, i]]])
            ab[1] = np.concatenate([ab[1], sp_ids[f[:, j]]])
    a, b = ab
    diff = a != b
    lo, hi = np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])
    return np.unique(np.stack([lo, hi], axis=1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)


def merge_hierarchy(sums: np.ndarray, pairs: np.ndarray, levels: list[float]) -> list[np.ndarray]:
    """Agglomerative merging of regions over a graph; returns, for each level, a (S,) region id per superpoint.

    ``sums`` (S, C) summed point features per superpoint (the cosine of two regions' sums is that of their
    mean features; a region without features has similarity 0 to everything, so it merges only at 0 or below).
    """
    return agglomerate(sums, pairs, levels).partitions


def agglomerate(sums: np.ndarray, pairs: np.ndarray, levels: list[float]) -> MergeHierarchy:
    """:func:`merge_hierarchy` with the dendrogram: merging goes on below the last level until no
    neighbours are left, so every region recorded at a level has its death (or none: -1)."""
    s = len(sums)
    sums = np.asarray(sums, dtype=np.float64).copy()
    parent = np.arange(s)
    nbrs: list[set[int]] = [set() for _ in range(s)]
    for a, b in pairs:
        nbrs[int(a)].add(int(b))
        nbrs[int(b)].add(int(a))
    version = np.zeros(s, dtype=np.int64)
    node = np.arange(s)  # current dendrogram node of each root
    birth, death = [1.0] * s, [-1.0] * s
    featureless = (~sums.any(axis=1)).tolist()

    def unit(i: int) -> np.ndarray:
        n = np.linalg.norm(sums[i])
        return sums[i] / n if n > 0 else sums[i]

    units = np.stack([unit(i) for i in range(s)]) if s else np.zeros((0, sums.shape[1]))
    heap = [(-float(units[a] @ units[b]), int(a), int(b), 0, 0) for a, b in pairs]
    heapq.heapify(heap)
    thresholds = sorted(levels, reverse=True)
    out: list[np.ndarray] = []

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    nodes: list[np.ndarray] = []

    def snapshot() -> None:
        roots = np.fromiter((find(i) for i in range(s)), dtype=np.int64, count=s)
        out.append(roots)
        nodes.append(node[roots])

    level, height = 0, 1.0
    while heap:
        neg, a, b, va, vb = heapq.heappop(heap)
        if version[a] != va or version[b] != vb or parent[a] != a or parent[b] != b:
            continue  # stale entry: one side changed since it was pushed
        while level < len(thresholds) and -neg < thresholds[level]:
            snapshot()
            level += 1
        # the threshold this merge happens at: the lowest cosine merged so far (merging by mean features can make a
        # later pair more similar than an earlier one; a region made and absorbed that way is a region at no threshold)
        height = min(height, -neg)
        death[node[a]] = death[node[b]] = height  # both regions end here; their union is born
        featureless.append(featureless[node[a]] and featureless[node[b]])
        node[a] = len(birth)
        birth.append(height)
        death.append(-1.0)
        parent[b] = a  # merge b into a
        sums[a] += sums[b]
        units[a] = unit(a)
        version[a] += 1
        nbrs[a] = (nbrs[a] | nbrs[b]) - {a, b}
        for c in nbrs[b]:
            nbrs[c].discard(b)
            if c != a:
                nbrs[c].add(a)
        nbrs[b] = set()
        for c in nbrs[a]:
            x, y = (a, c) if a < c else (c, a)
            heapq.heappush(heap, (-float(units[a] @ units[c]), x, y, int(version[x]), int(version[y])))
    while level < len(thresholds):
        snapshot()
        level += 1
    return MergeHierarchy(out, nodes, np.asarray(birth, dtype=np.float64), np.asarray(death, dtype=np.float64),
                          np.asarray(featureless, dtype=bool))


def generate_proposals(points: np.ndarray, superpoints: np.ndarray, feats: PointFeatureSet, cfg: ProposalConfig | None = None,
                       faces: np.ndarray | None = None) -> Proposals:
    """Multi-granularity proposals of one scene, scored by their stability (or lifetime) in the merge hierarchy,
    duplicates removed by class-agnostic NMS (module docstring; ``cfg.score="none"``: 1.0 each, the labeller alone
    ranks them), in descending score."""
    cfg = cfg or ProposalConfig()
    if cfg.score not in PROPOSAL_SCORES:
        raise ConfigError(f"builtin.score: unknown proposal score {cfg.score!r}; use one of {', '.join(PROPOSAL_SCORES)}")
    if cfg.nms_iou is not None and not 0 < cfg.nms_iou <= 1:
        raise ConfigError(f"builtin.nms_iou must be in (0, 1] or null, got {cfg.nms_iou}")
    sp_ids = np.asarray(superpoints, dtype=np.int64).reshape(-1)
    n = len(sp_ids)
    if feats.num_points != n or len(points) != n:
        raise ValueError(f"{len(points)} points, {n} superpoint ids and {feats.num_points} features must match")
    s = int(sp_ids.max()) + 1 if n else 0
    valid = feats.valid.astype(np.float64)
    member = sp.csr_matrix((np.ones(n), (sp_ids, np.arange(n))), shape=(s, n))  # superpoint x point
    f = feats.features.float().numpy().astype(np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8)
    sums = member @ (f * valid[:, None])
    pairs = contact_pairs(points, sp_ids, cfg.adjacency_radius, faces)
    tree = agglomerate(sums, pairs, cfg.levels)
    sp_size = np.bincount(sp_ids, minlength=s)
    seen: set[bytes] = set()
    rows: list[np.ndarray] = []
    scores: list[float] = []
    per_level: list[int] = []
    for level, part in enumerate(tree.partitions):
        size = np.bincount(part, weights=sp_size, minlength=s)
        score = (tree.stability(level, size[part]) if cfg.score == "stability" else
                 tree.lifetime(level) if cfg.score == "lifetime" else np.ones(s))  # (S,) the score of each superpoint's region
        per_level.append(0)
        for r in np.flatnonzero(size >= cfg.min_points):
            members = np.flatnonzero(part == r)
            key = members.tobytes()
            if key in seen:
                continue
            seen.add(key)
            rows.append(members)
            scores.append(float(score[members[0]]))
            per_level[-1] += 1
    # proposal x superpoint, then x point
    if rows:
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        psp = sp.csr_matrix((np.ones(int(indptr[-1]), dtype=bool), np.concatenate(rows), indptr), shape=(len(rows), s))
        masks = (psp.astype(np.int64) @ member.astype(np.int64)).astype(bool).tocsr()
    else:
        masks = sp.csr_matrix((0, n), dtype=bool)
    score_arr = np.asarray(scores, dtype=np.float64)
    recorded = len(score_arr)
    if cfg.nms_iou is not None and recorded:
        keep = mask_nms(masks, score_arr, cfg.nms_iou)
        masks, score_arr = masks[keep], score_arr[keep]
    return Proposals(masks, score_arr, None,
                     {"source": "builtin", "features": feats.source, "levels": sorted(cfg.levels, reverse=True), "score": cfg.score,
                      "nms_iou": cfg.nms_iou, "recorded": recorded, "new_per_level": per_level, "superpoints": s,
                      "contacts": int(len(pairs))})
