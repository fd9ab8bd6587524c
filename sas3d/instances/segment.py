"""Instance segmentation of one scene: proposals (built in, ground truth or a file) -> labelled instances.

This is what ``sas3d instances`` and ``sas3d eval --task instance`` run per scene; the pieces
(features, proposals, labelling) are separate functions so a benchmark can reuse one scene's
features and proposals across labellers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sas3d.errors import InputError
from sas3d.instances.builtin import ProposalConfig, generate_proposals
from sas3d.instances.features import LABELLERS, PointFeatureSet, labeller_features, student_point_features
from sas3d.instances.labelling import LabelConfig, label_proposals
from sas3d.instances.types import Instances, Proposals, masks_from_ids
from sas3d.scene.types import Scene

PROPOSAL_FILE_PATTERNS = ("{name}.txt", "{name}_masks.pt", "{name}.npz", "{name}.pt", "{name}.npy")  # benchmark, OpenMask3D, ours


@dataclass
class InstanceConfig:
    """How one scene is segmented into instances."""

    labeller: str = "distill"  # distill (3D student, SAS) | fusion (fused 2D) | ensemble (OpenScene 2D-3D ensemble)
    proposals: str = "builtin"  # builtin | gt (the scene's ground-truth instances: an upper bound) | a file or folder
    proposal_features: str | None = None  # features the built-in generator merges by (default: the labeller's)
    use_proposal_labels: bool = False  # keep a proposal file's own labels and scores (e.g. a closed-set Mask3D export)
    labelset: str = "scannet20"
    text_encoder: str = "minilm"
    device: str = "cpu"
    voxel_size: float | None = None  # None: the checkpoint's own
    label: LabelConfig = field(default_factory=LabelConfig)
    builtin: ProposalConfig = field(default_factory=ProposalConfig)


@dataclass
class FeatureSources:
    """Where a scene's point features come from: a loaded 3D student and/or a fused-feature file."""

    model: torch.nn.Module | None = None
    voxel_size: float | None = None
    fused_path: Path | None = None


def find_proposal_file(source: str | Path, scene_name: str) -> Path:
    """``source`` itself if it is a file, else the scene's file in that folder (benchmark / OpenMask3D names)."""
    p = Path(source)
    if p.is_file():
        return p
    if p.is_dir():
        for pat in PROPOSAL_FILE_PATTERNS:
            cand = p / pat.format(name=scene_name)
            if cand.is_file():
                return cand
    names = ", ".join(pat.format(name=scene_name) for pat in PROPOSAL_FILE_PATTERNS)
    raise InputError(p, f"no proposals for scene {scene_name!r} (looked for the file itself and {names})")


def scene_features(scene: Scene, mode: str, sources: FeatureSources, class_text: torch.Tensor, device: str = "cpu") -> PointFeatureSet:
    """The labeller's point features on ``scene`` (runs the student for distill/ensemble, reads fused for fusion/ensemble)."""
    from sas3d.query.similarity import DEFAULT_VOXEL_SIZE, load_point_features

    if mode not in LABELLERS:
        raise InputError(None, f"unknown labeller {mode!r}; use one of {', '.join(LABELLERS)}")
    feat3d = fused = seen = None
    if mode != "fusion":
        if sources.model is None:
            raise InputError(None, f"labeller {mode} needs a 3D student checkpoint (--checkpoint)")
        feat3d = student_point_features(sources.model, scene, float(sources.voxel_size or DEFAULT_VOXEL_SIZE), device)
    if mode != "distill":
        if sources.fused_path is None:
            raise InputError(None, f"labeller {mode} needs fused 2D features (--fused)")
        pf = load_point_features(sources.fused_path, scene)
        fused, seen = pf.features, pf.seen
    feats = labeller_features(mode, feat3d=feat3d, fused=fused, seen=seen, class_text=class_text)
    if feats.features.shape[1] != class_text.shape[1]:
        raise InputError(sources.fused_path, f"features are {feats.features.shape[1]}-d but the text encoder gives "
                                             f"{class_text.shape[1]}-d embeddings; use the encoder they were made with")
    return feats


def gt_proposals(gt_ids: np.ndarray) -> Proposals:
    """Every ground-truth instance (any class) as a class-agnostic proposal of score 1."""
    ids, masks = masks_from_ids(gt_ids)
    return Proposals(masks, np.ones(len(ids)), None, {"source": "ground truth"})


def builtin_proposals(scene: Scene, feats: PointFeatureSet, cfg: ProposalConfig, superpoints: np.ndarray | None = None) -> Proposals:
    """Built-in proposals of ``scene`` from ``feats`` (superpoints computed unless given or on the scene)."""
    from sas3d.geometry.superpoints import scene_superpoints

    spx = superpoints if superpoints is not None else scene.superpoints
    if spx is None:
        spx = scene_superpoints(scene, cfg.superpoints)
    return generate_proposals(scene.points, spx, feats, cfg, faces=scene.faces)


def segment_instances(scene: Scene, cfg: InstanceConfig, sources: FeatureSources, class_text: Any,
                      class_names: list[str], gt_ids: np.ndarray | None = None) -> tuple[Instances, Proposals]:
    """Proposals for ``scene`` labelled by ``cfg.labeller`` -> (instances, proposals).

    ``class_text`` is a :class:`sas3d.evaluate.predict.ClassText`; ``gt_ids`` (ScanNet-encoded ids)
    are needed for ``cfg.proposals == "gt"``.
    """
    from sas3d.instances.readers import load_proposals

    emb = class_text.embeddings
    if cfg.proposals == "gt":
        if gt_ids is None:
            raise InputError(scene.source, "ground-truth proposals need the scene's instance annotation")
        proposals = gt_proposals(gt_ids)
    elif cfg.proposals == "builtin":
        proposals = None
    else:
        proposals = load_proposals(find_proposal_file(cfg.proposals, scene.name), scene.num_points)
    if cfg.use_proposal_labels:
        if proposals is None or proposals.labels is None:
            raise InputError(None if proposals is None else proposals.metadata.get("source"),
                             "use_proposal_labels needs a proposal file that carries labels (a ScanNet benchmark .txt or pred_classes)")
        return _instances_from_file_labels(proposals, class_names), proposals
    feats = scene_features(scene, cfg.labeller, sources, emb, cfg.device)
    if proposals is None:
        pf = cfg.proposal_features or cfg.labeller
        group_feats = feats if pf == cfg.labeller else scene_features(scene, pf, sources, emb, cfg.device)
        proposals = builtin_proposals(scene, group_feats, cfg.builtin)
    return label_proposals(proposals, feats, emb, class_names, cfg.label, to_class=class_text.to_class), proposals


def _instances_from_file_labels(proposals: Proposals, class_names: list[str]) -> Instances:
    """Instances that keep a file's NYU40 label ids (mapped to ScanNet20 indices; other ids are dropped)."""
    from sas3d.text.labelsets import NYU40_TO_SCANNET20_IDS

    if list(class_names) != list(_scannet20()):
        raise InputError(proposals.metadata.get("source"), "a proposal file's own labels are NYU40 ids: use --labelset scannet20")
    lut = {nyu: i for i, nyu in enumerate(NYU40_TO_SCANNET20_IDS)}
    keep = np.flatnonzero([int(lab) in lut for lab in proposals.labels])
    order = keep[np.argsort(-proposals.scores[keep], kind="stable")]
    classes = np.asarray([lut[int(proposals.labels[i])] for i in order], dtype=np.int64)
    return Instances(proposals.masks[order], classes, proposals.scores[order], list(class_names), None,
                     {"labeller": "proposal file", "proposals": dict(proposals.metadata)})


def _scannet20() -> tuple[str, ...]:
    from sas3d.text.labelsets import get_label_set

    return get_label_set("scannet20").classes
