"""Label class-agnostic proposals with point features and rank instances for free-text queries.

SAS Sec. 4.4 labels each Mask3D proposal with the distilled 3D encoder: the proposal's class is
the text class closest to the mean of its points' features, among the object classes (``stuff_classes``
such as wall and floor are surfaces, never instances). The confidence that ranks it for AP is

    score = p(class | mean feature) * agreement * proposal score

* ``p`` = softmax over the object classes of the mean feature's cosine similarities divided by a
  temperature (CLIP's logit scale 100, i.e. 0.01, as OpenScene / OpenMask3D use);
* ``agreement`` = the fraction of the proposal's points whose own most similar class (of all
  classes, stuff included) is that class (a mask-quality term, like the mean mask probability Mask3D multiplies its class score by);
* ``proposal score`` = the source's objectness (Mask3D's score in a benchmark file; our built-in
  proposals' stability in their merge hierarchy, :mod:`sas3d.instances.builtin`; 1.0 where a source
  gives none, e.g. OpenMask3D).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from sas3d.instances.features import PointFeatureSet
from sas3d.instances.types import Instances, Proposals, mask_iou, mask_nms

SCORES = ("prob_x_agreement", "prob", "similarity")


@dataclass
class LabelConfig:
    """How proposals become instances."""

    temperature: float = 0.01  # softmax temperature of the cosine similarities (CLIP logit scale 100; OpenScene/OpenMask3D)
    score: str = "prob_x_agreement"  # prob_x_agreement | prob | similarity (the max cosine, as OpenMask3D's max_class_similarity_scores)
    use_proposal_scores: bool = True  # multiply by the proposal source's own score (Mask3D objectness; 1.0 if none)
    min_points: int = 100  # ScanNet minimum region size: smaller proposals are not labelled (the benchmark drops them)
    nms_iou: float | None = None  # per-class mask NMS after labelling (None: keep overlapping proposals, as Mask3D's output)
    exclude_classes: list[str] = field(default_factory=list)  # instances of these classes are dropped after labelling
    # Surfaces, not objects: never a proposal's class; a proposal takes its most similar other class
    # (ScanNet's instance benchmark scores the 18 classes without wall and floor, and OpenMask3D queries
    # only the benchmark's instance classes). Their points still count against a proposal's agreement.
    stuff_classes: list[str] = field(default_factory=lambda: ["wall", "floor", "ceiling"])


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def proposal_mean_features(masks: sp.csr_matrix, feats: PointFeatureSet) -> tuple[torch.Tensor, np.ndarray]:
    """(P, C) unit mean feature of each proposal over its valid points, and (P,) the number of valid points."""
    valid = feats.valid.astype(np.float32)
    m = sp.csr_matrix(masks, dtype=np.float32).multiply(valid[None, :]).tocsr()
    f = feats.features.float().numpy()
    sums = np.asarray(m @ f, dtype=np.float32)
    counts = np.asarray(m.sum(axis=1)).reshape(-1).astype(np.int64)
    return _unit(torch.from_numpy(sums)), counts


def label_proposals(proposals: Proposals, feats: PointFeatureSet, class_text: torch.Tensor, class_names: list[str],
                    cfg: LabelConfig | None = None, to_class: torch.Tensor | None = None) -> Instances:
    """Label every proposal (class of its mean feature, confidence as in the module docstring) -> Instances by descending score.

    ``class_text`` (Q, C) text rows; ``to_class`` (Q,) maps rows to ``class_names`` indices when several
    names stand for one class (identity by default).
    """
    cfg = cfg or LabelConfig()
    if cfg.score not in SCORES:
        raise ValueError(f"unknown score {cfg.score!r}; use one of {SCORES}")
    if proposals.num_points != feats.num_points:
        raise ValueError(f"proposals cover {proposals.num_points} points, features {feats.num_points}")
    text = _unit(class_text.float())
    to_class = torch.arange(text.shape[0]) if to_class is None else to_class.long()
    keep = np.flatnonzero(proposals.sizes >= cfg.min_points)
    props = proposals.subset(keep)
    mean, counts = proposal_mean_features(props.masks, feats)
    has = counts > 0
    sims = mean @ text.T  # (P, Q)
    stuff = torch.from_numpy(np.isin(to_class.numpy(), [i for i, c in enumerate(class_names) if c in cfg.stuff_classes]))
    if bool(stuff.all()):
        raise ValueError(f"every class is a stuff class ({', '.join(cfg.stuff_classes)}): nothing to label instances with")
    candidate_sims = sims.masked_fill(stuff[None, :], float("-inf"))  # objects only: stuff is never a proposal's class
    best_sim, row = candidate_sims.max(dim=1)
    prob = torch.softmax(candidate_sims / cfg.temperature, dim=1).gather(1, row[:, None])[:, 0]
    classes = to_class[row].numpy()
    # agreement: share of the proposal's valid points whose own best class is the proposal's class
    point_class = to_class[(_unit(feats.features.float()) @ text.T).argmax(dim=1)].numpy()
    n = feats.num_points
    onehot = sp.csr_matrix((feats.valid.astype(np.float32), (np.arange(n), point_class)), shape=(n, len(class_names)))
    votes = np.asarray((sp.csr_matrix(props.masks, dtype=np.float32) @ onehot).todense())
    agreement = votes[np.arange(len(props)), classes] / np.maximum(counts, 1)
    if cfg.score == "prob_x_agreement":
        score = prob.numpy().astype(np.float64) * agreement
    elif cfg.score == "prob":
        score = prob.numpy().astype(np.float64)
    else:
        score = best_sim.numpy().astype(np.float64)
    if cfg.use_proposal_scores:
        score = score * props.scores
    excluded = np.isin(classes, [class_names.index(c) for c in cfg.exclude_classes if c in class_names])
    ok = np.flatnonzero(has & ~excluded)
    order = ok[np.argsort(-score[ok], kind="stable")]
    inst = Instances(props.masks[order], classes[order].astype(np.int64), score[order], list(class_names), mean[order],
                     {"labeller": feats.source, "config": _config_dict(cfg), "proposals": dict(props.metadata),
                      "agreement": agreement[order].tolist(), "probability": prob.numpy()[order].tolist()})
    if cfg.nms_iou is not None:
        inst = inst.subset(mask_nms(inst.masks, inst.scores, cfg.nms_iou, inst.classes))
    return inst


def _config_dict(cfg: LabelConfig) -> dict[str, Any]:
    from sas3d.config import to_dict

    return to_dict(cfg)


@dataclass
class RankedInstance:
    """One answer to a free-text instance query."""

    index: int  # into the Instances
    similarity: float  # cosine of the instance's mean feature with the query text
    class_name: str
    score: float  # the instance's labelling confidence


def rank_instances(instances: Instances, text_embedding: torch.Tensor, top_k: int = 5, overlap: float = 0.5) -> list[RankedInstance]:
    """Instances ranked by cosine similarity of their mean feature to a query embedding; an answer that
    overlaps a better one (more than ``overlap`` of the smaller of the two: a duplicate, a part or a
    whole of it) is dropped, so the list names distinct objects."""
    if instances.features is None or len(instances) == 0:
        return []
    sim = (_unit(torch.as_tensor(instances.features).float()) @ _unit(text_embedding.float().reshape(-1))).numpy()
    keep = mask_nms(instances.masks, sim, overlap, containment=True)
    return [RankedInstance(int(i), float(sim[i]), instances.class_names[int(instances.classes[i])], float(instances.scores[i]))
            for i in keep[:top_k]]
