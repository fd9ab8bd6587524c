"""Evaluate open-vocabulary instance segmentation on annotated scenes with the ScanNet instance AP protocol.

Per scene: read the instance ground truth (``sas3d.instances.scannet_gt``), segment instances
(``sas3d.instances.segment``: proposals + labeller), map the ScanNet20 classes to their NYU40 ids
and accumulate :func:`sas3d.evaluate.instance_ap.evaluate_instances` over all scenes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sas3d.errors import InputError
from sas3d.evaluate.instance_ap import InstanceAPConfig, InstanceAPResult, ScenePredictions, evaluate_class_agnostic, evaluate_instances
from sas3d.instances.scannet_gt import InstanceGroundTruth, read_scannet_instance_gt
from sas3d.instances.segment import FeatureSources, InstanceConfig, segment_instances
from sas3d.instances.types import Instances
from sas3d.scene.types import Scene


def nyu40_label_ids(instances: Instances) -> np.ndarray:
    """(P,) NYU40 id of each instance's ScanNet20 class (what the ScanNet benchmark expects)."""
    from sas3d.text.labelsets import NYU40_TO_SCANNET20_IDS, get_label_set

    if list(instances.class_names) != list(get_label_set("scannet20").classes):
        raise InputError(None, "the ScanNet instance benchmark scores the ScanNet20 classes: use --labelset scannet20")
    return np.asarray(NYU40_TO_SCANNET20_IDS, dtype=np.int64)[instances.classes]


def scene_gt(scene: Scene, gt_source: str | Path | None = None, label_map: str | Path | None = None) -> InstanceGroundTruth:
    """A scene's instance ground truth: from ``gt_source`` (a folder of benchmark ``<name>.txt`` files or a
    scan folder) or else from the scene's own folder (segs.json + aggregation.json)."""
    if gt_source is not None:
        src = Path(gt_source)
        cand = src / f"{scene.name}.txt"
        return read_scannet_instance_gt(cand if cand.is_file() else src, scene.num_points, label_map)
    if scene.source is None:
        raise InputError(None, f"scene {scene.name!r} has no folder to read its instance annotation from")
    folder = Path(scene.source)
    return read_scannet_instance_gt(folder if folder.is_dir() else folder.parent, scene.num_points, label_map)


def evaluate_instance_scenes(scenes: Sequence[Scene] | Sequence[Callable[[], Scene]], cfg: InstanceConfig, *,
                             model: Any = None, voxel_size: float | None = None, fused_dir: str | Path | None = None,
                             gt_source: str | Path | None = None, label_map: str | Path | None = None,
                             text_encoder: Any = None, ap_config: InstanceAPConfig | None = None
                             ) -> tuple[InstanceAPResult, list[dict], InstanceAPResult]:
    """ScanNet instance AP of ``cfg`` over scenes (or zero-argument loaders); returns (result, per-scene info, the
    class-agnostic AP of the proposals by their own scores: their quality whatever the labeller)."""
    from tqdm import tqdm

    from sas3d.evaluate.evaluator import find_fused_file
    from sas3d.evaluate.predict import build_class_text
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    if cfg.labelset != "scannet20":
        raise InputError(None, "the ScanNet instance benchmark scores the ScanNet20 classes: use --labelset scannet20")
    ls = get_label_set(cfg.labelset)
    encoder = text_encoder or build_text_encoder(cfg.text_encoder, device=cfg.device)
    ct = build_class_text(ls, encoder)
    gts, preds, proposals, info = [], [], [], []
    for item in tqdm(scenes, desc=f"instances {cfg.labeller}", unit="scene"):
        scene = item() if callable(item) else item
        gt = scene_gt(scene, gt_source, label_map)
        needs_fused = cfg.labeller != "distill" or cfg.proposal_features in ("fusion", "ensemble")
        fused = find_fused_file(Path(fused_dir), scene.name) if needs_fused and fused_dir is not None else None
        sources = FeatureSources(model, voxel_size, fused)
        inst, props = segment_instances(scene, cfg, sources, ct, list(ls.classes), gt.ids)
        gts.append(gt)
        preds.append(ScenePredictions(inst.masks, nyu40_label_ids(inst), inst.scores, scene.name))
        proposals.append(props)
        info.append({"name": scene.name, "points": scene.num_points, "proposals": len(props), "instances": len(inst),
                     "gt_instances": int(len(np.unique(gt.ids[gt.ids >= 1000])))})
    return evaluate_instances(gts, preds, ap_config), info, evaluate_class_agnostic(gts, proposals, ap_config)
