"""In-place distillation: distil a 3D student on the scans to be labelled, then label them with it.

The setting of a user with one or a few scans and no training set (annotation-free 3D scene
understanding, as 3D-OVS does per scene): the fused 2D features of the scans are the only
supervision; the student learns to explain exactly these scans, which lets it label the points no
camera saw and smooth away the teachers' per-view errors. Outputs per scan: the student's labels,
the 2D-3D ensemble's labels (per point, whichever of the fused 2D and the 3D feature is more
confident, OpenScene's ensemble), and, when the scan has ground truth, their scores (the labels are
read only for that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

INPLACE_STEPS = 300  # default total training steps (one scan per step): ~300 fit one ScanNet room at 5 cm


@dataclass
class InPlaceResult:
    checkpoint: Path
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # scan -> {"student": ply, "ensemble": ply}
    scores: dict[str, Any] | None = None  # per source (fused 2D, student, ensemble): mIoU / mAcc / per-class IoU


def default_epochs(num_scans: int, steps: int = INPLACE_STEPS) -> int:
    """Epochs that give about ``steps`` training steps over ``num_scans`` scans (batch 1), at least 30 each."""
    return max(30, round(steps / max(1, num_scans)))


def label_in_place(scan_dirs: Sequence[Path], fused_dir: Path, out_dir: Path, cfg: Any, *, labelset: str,
                   resume: bool = False, progress: bool = True) -> InPlaceResult:
    """Distil ``cfg`` (a TrainConfig) on the scans, write labelled PLYs, score them when they have labels."""
    from sas3d import load_scene
    from sas3d.distill.trainer import train
    from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes, find_fused_file
    from sas3d.evaluate.predict import build_class_text, classify, ensemble, predict_3d
    from sas3d.query.export import write_label_ply
    from sas3d.query.similarity import load_point_features
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    run_dir = out_dir / "run"
    result = train(cfg, list(scan_dirs), fused_dir, run_dir, resume=resume)
    model = result.model.cpu().eval()
    ls = get_label_set(labelset)
    encoder = build_text_encoder(cfg.text.encoder)
    ct = build_class_text(ls, encoder)
    outputs: dict[str, dict[str, str]] = {}
    labelled = []
    for d in scan_dirs:
        scene = load_scene(d, **cfg.data.scene_options)
        fused = load_point_features(find_fused_file(fused_dir, scene.name), scene)
        feat3d = predict_3d(model, scene.points, cfg.data.voxel_size, colors=scene.colors)
        labels = {"student": classify(feat3d, ct.embeddings, to_class=ct.to_class),
                  "ensemble": ensemble(fused.features, fused.seen, feat3d, ct.embeddings, to_class=ct.to_class)}
        outputs[scene.name] = {}
        for kind, lab in labels.items():
            path = out_dir / scene.name / f"labels_{kind}.ply"
            write_label_ply(path, scene, lab.numpy(), list(ls.classes),
                            {"label_set": ls.name, "source": kind, "checkpoint": str(run_dir / "last.safetensors"),
                             "simulated": result.simulated})
            outputs[scene.name][kind] = str(path)
        if scene.labels is not None:
            labelled.append(scene)
    scores = None
    if labelled:
        scores = {}
        for name, mode in (("fused 2D", "fusion"), ("3D student", "distill"), ("2D-3D ensemble", "ensemble")):
            r = evaluate_scenes(labelled, EvalConfig(labelset=ls.name, mode=mode), model=model, voxel_size=cfg.data.voxel_size,
                                fused_dir=fused_dir, class_text=ct, progress=progress)
            m = r.metrics
            scores[name] = {"miou": float(m["miou"]), "macc": float(m["macc"]),
                            "per_class_iou": {c: float(m["iou"][i]) for i, c in enumerate(r.classes) if m["present"][i]}}
    return InPlaceResult(run_dir / "last.safetensors", outputs, scores)
