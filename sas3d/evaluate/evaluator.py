"""Evaluate open-vocabulary predictions on labelled scenes (OpenScene protocol: run/evaluate.py, util/metric.py).

Modes: ``distill`` classifies the 3D model's features, ``fusion`` the fused 2D features (unseen
points have no prediction and count as wrong), ``ensemble`` picks per point whichever of the two is
more confident. The confusion matrix is accumulated over all scenes, then mIoU/mAcc are computed once.

Ground-truth label sets: a scene's labels are in ``Scene.label_set``. Evaluating with another label
set works only when every class of the scene's set has a class of the same name in the requested one
(the catch-alls "otherfurniture"/"other" count as the same), e.g. scannet20 ground truth with the
matterport21 classes; anything else is an error rather than a silently wrong score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sas3d.errors import InputError
from sas3d.evaluate.metrics import confusion_matrix, iou_acc
from sas3d.evaluate.predict import build_class_text, classify, ensemble
from sas3d.scene.types import IGNORE_LABEL, Scene
from sas3d.text.labelsets import CATCH_ALL, LabelSet, get_label_set

MODES = ("distill", "fusion", "ensemble")


@dataclass
class EvalConfig:
    """How to evaluate. Defaults follow OpenScene's evaluation."""

    labelset: str = "scannet20"
    mode: str = "distill"  # distill | fusion | ensemble (OpenScene feature_type)
    tta: int = 1  # summed 3D passes; OpenScene's reported numbers sum 5, single pass is reported too
    text_encoder: str = "minilm"
    device: str = "cpu"
    voxel_size: float | None = None  # None: the checkpoint's own voxel size
    nuscenes_details: bool = True  # nuscenes16: classify with the 43 names of SAS Table 8, map back to 16


@dataclass
class EvalResult:
    """Accumulated confusion matrix and the metrics derived from it."""

    config: EvalConfig
    classes: list[str]
    confusion: np.ndarray  # (K, K+1), last column = no prediction
    metrics: dict[str, Any]
    scenes: list[dict[str, Any]] = field(default_factory=list)
    text_space: str | None = None  # identity of the text space the classes were decoded in (sas3d.identity)
    teacher_identities: list[str] = field(default_factory=list)  # the teachers behind the scored features, where recorded

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (NaN -> null)."""
        m = self.metrics

        def num(x: float) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

        return {
            "labelset": self.config.labelset,
            "mode": self.config.mode,
            "tta": self.config.tta,
            "text_encoder": self.config.text_encoder,
            "text_space": self.text_space,
            "teacher_identities": self.teacher_identities,
            "miou": num(m["miou"]),
            "macc": num(m["macc"]),
            "classes": self.classes,
            "per_class": {
                c: {"iou": num(m["iou"][i]), "acc": num(m["acc"][i]), "present": bool(m["present"][i]), "points": int(self.confusion[i].sum())}
                for i, c in enumerate(self.classes)
            },
            "confusion": self.confusion.tolist(),
            "confusion_layout": "rows = ground truth, columns = predicted class, last column = no prediction",
            "scenes": self.scenes,
        }


def label_set_mapping(src: LabelSet, dst: LabelSet) -> np.ndarray | None:
    """Lookup table src index -> dst index if every src class has a same-named dst class, else None."""
    if src.name == dst.name:
        return np.arange(len(src), dtype=np.int64)
    out = []
    for c in src.classes:
        if c in dst.classes:
            out.append(dst.classes.index(c))
        elif c in CATCH_ALL and dst.catch_all_index is not None:
            out.append(dst.catch_all_index)
        else:
            return None
    return np.asarray(out, dtype=np.int64)


def ground_truth(scene: Scene, label_set: LabelSet) -> np.ndarray:
    """The scene's labels expressed in ``label_set`` (IGNORE_LABEL kept); InputError if impossible."""
    if scene.labels is None:
        raise InputError(scene.source, f"scene {scene.name!r} has no ground-truth labels to evaluate against")
    if scene.label_set is None:
        raise InputError(scene.source, f"scene {scene.name!r} does not say which label set its labels use")
    lut = label_set_mapping(get_label_set(scene.label_set), label_set)
    if lut is None:
        raise InputError(
            scene.source,
            f"scene labels are {scene.label_set} but evaluation asked for {label_set.name}, and not every "
            f"{scene.label_set} class has a {label_set.name} class of the same name; evaluate with --labelset {scene.label_set}",
        )
    labels = np.asarray(scene.labels, dtype=np.int64)
    valid = (labels >= 0) & (labels < len(lut))
    return np.where(valid, lut[np.clip(labels, 0, len(lut) - 1)], IGNORE_LABEL)


def find_fused_file(fused_dir: Path, scene_name: str) -> Path:
    """``<name>.safetensors`` (ours), else OpenScene's ``<name>.pt`` / ``<name>_0.pt``."""
    for cand in (f"{scene_name}.safetensors", f"{scene_name}.pt", f"{scene_name}_0.pt"):
        if (fused_dir / cand).is_file():
            return fused_dir / cand
    raise InputError(fused_dir, f"no fused features for scene {scene_name!r} (looked for {scene_name}.safetensors, .pt, _0.pt)")


def evaluate_scenes(
    scenes: Sequence[Scene] | Sequence[Callable[[], Scene]],
    cfg: EvalConfig,
    *,
    model: torch.nn.Module | None = None,
    voxel_size: float | None = None,
    fused_dir: str | Path | None = None,
    text_encoder: Any = None,
    class_text: Any = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate scenes (or zero-argument loaders, so only one scene is in memory at a time).

    ``model`` is needed for distill/ensemble, ``fused_dir`` for fusion/ensemble. ``class_text``: a
    ready :class:`~sas3d.evaluate.predict.ClassText` (e.g. the trainer's) instead of encoding the
    label set with ``text_encoder``.
    """
    from tqdm import tqdm

    from sas3d.evaluate.predict import predict_3d
    from sas3d.query.similarity import DEFAULT_VOXEL_SIZE, load_point_features
    from sas3d.identity import TEXT_SPACE, check_text_space, teacher_identities_of, text_space_of
    from sas3d.text.encoders import build_text_encoder, text_space_for_spec

    if cfg.mode not in MODES:
        raise InputError(None, f"unknown mode {cfg.mode!r}; use one of {', '.join(MODES)}")
    if cfg.mode != "fusion" and model is None:
        raise InputError(None, f"mode {cfg.mode} needs a 3D model checkpoint")
    if cfg.mode != "distill" and fused_dir is None:
        raise InputError(None, f"mode {cfg.mode} needs --fused DIR with the fused 2D features")
    ls = get_label_set(cfg.labelset)
    space = text_space_of(text_encoder) if text_encoder is not None else text_space_for_spec(cfg.text_encoder)
    if class_text is not None:
        ct = class_text
    else:
        encoder = text_encoder or build_text_encoder(cfg.text_encoder, device=cfg.device)
        ct = build_class_text(ls, encoder, nuscenes_details=cfg.nuscenes_details)
    teachers: set[str] = set()
    if model is not None:
        check_text_space(getattr(model, "sas3d_text_space", None), space, None, "the 3D model's features")
        teachers.update(getattr(model, "sas3d_teacher_identities", None) or ())
    k = len(ls)
    conf = np.zeros((k, k + 1), dtype=np.int64)
    per_scene = []
    for item in tqdm(scenes, desc=f"eval {cfg.mode}", unit="scene", **({} if progress else {"disable": True})):
        scene = item() if callable(item) else item
        gt = ground_truth(scene, ls)
        fused = feat3d = None
        if cfg.mode != "fusion":
            assert model is not None
            vs = float(cfg.voxel_size or voxel_size or DEFAULT_VOXEL_SIZE)
            feat3d = predict_3d(model, scene.points, vs, tta=cfg.tta, device=cfg.device, colors=scene.colors)
            _check_dim(feat3d.shape[1], ct, f"3D model output for {scene.name}", scene.source)
        if cfg.mode != "distill":
            path = find_fused_file(Path(fused_dir), scene.name)  # type: ignore[arg-type]
            fused = load_point_features(path, scene)
            check_text_space(fused.metadata.get(TEXT_SPACE), space, path, "the fused features")
            teachers.update(teacher_identities_of(fused.metadata))
            _check_dim(fused.dim, ct, "fused features", path)
        if cfg.mode == "distill":
            pred = classify(feat3d, ct.embeddings, to_class=ct.to_class)
        elif cfg.mode == "fusion":
            pred = classify(fused.features, ct.embeddings, to_class=ct.to_class, seen=fused.seen)
        else:
            pred = ensemble(fused.features, fused.seen, feat3d, ct.embeddings, to_class=ct.to_class)
        c = confusion_matrix(pred.numpy(), gt, k)
        conf += c
        m = iou_acc(c)
        per_scene.append({"name": scene.name, "points": scene.num_points, "evaluated_points": int(c.sum()), "miou": None if math.isnan(m["miou"]) else m["miou"]})
    return EvalResult(cfg, list(ls.classes), conf, iou_acc(conf), per_scene, space, sorted(teachers))


def _check_dim(dim: int, ct: Any, what: str, path: Any) -> None:
    if dim != ct.embeddings.shape[1]:
        raise InputError(path, f"{what} are {dim}-d but the text encoder gives {ct.embeddings.shape[1]}-d embeddings; use the text encoder they were made with (--text-encoder)")


def format_table(result: EvalResult) -> str:
    """A readable per-class table with mIoU / mAcc at the bottom."""
    m = result.metrics
    w = max(12, *(len(c) for c in result.classes))
    lines = [f"{'class':<{w}}  {'IoU %':>7}  {'Acc %':>7}  {'points':>10}", "-" * (w + 30)]

    def pct(x: float) -> str:
        return "    n/a" if math.isnan(x) else f"{100 * x:7.1f}"

    for i, c in enumerate(result.classes):
        pts = int(result.confusion[i].sum())
        lines.append(f"{c:<{w}}  {pct(m['iou'][i]) if pts else '      -'}  {pct(m['acc'][i]) if pts else '      -'}  {pts:>10}")
    lines.append("-" * (w + 30))
    lines.append(f"{'mIoU / mAcc':<{w}}  {pct(m['miou'])}  {pct(m['macc'])}  ({int(m['present'].sum())} classes present)")
    return "\n".join(lines)
