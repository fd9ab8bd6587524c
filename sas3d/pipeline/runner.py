"""The whole SAS pipeline on a set of scenes, through the same stage code a user runs by hand.

teachers -> (alignment via text) -> capability -> per-teacher fusion -> add / linear / guided / confusion fusion
-> superpoints + distillation (pixel-point, + superpoint, + TESD) -> evaluation -> text queries.

Used by ``sas3d demo`` (embedded procedural rooms) and ``benchmarks/real_scan.py`` (a real ScanNet
mesh with rendered views). The students are distilled on ``train_dirs`` and every stage is scored in
two splits (SAS Table 3 layout each): **in place**, on the training scenes themselves (the labels are
used only for scoring: annotation-free 3D scene understanding of the scans one has), and **held out**,
on ``eval_dirs`` the students never saw (generalisation; the supervised reference row lives here).
Every stage writes its artefact under ``out_dir`` so a run can be inspected.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sas3d.config import to_dict
from sas3d.pipeline.config import (DISTILL_ROWS, FUSION_ROWS, TEACHER_ROW, PipelineConfig, PipelineReport, SplitResult,
                                   StageResult)
from sas3d.scene.types import Scene
from sas3d.utils.atomic import write_json_atomic


class _Timer:
    def __init__(self, timings: dict[str, float], name: str, log: Callable[[str], None]):
        self.timings, self.name, self.log = timings, name, log

    def __enter__(self) -> "_Timer":
        self.log(f"== {self.name}")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start


def run_pipeline(train_dirs: Sequence[str | Path], eval_dirs: Sequence[str | Path], out_dir: str | Path,
                 cfg: PipelineConfig | None = None, log: Callable[[str], None] = print) -> PipelineReport:
    """Run every SAS stage; distil on ``train_dirs``, score in place on them and held out on the
    ``eval_dirs`` that are not training scenes."""
    from sas3d import load_scene
    from sas3d.pipeline.outputs import queries_and_renders
    from sas3d.pipeline.students import train_students
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set, prompt_for

    cfg = cfg or PipelineConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    label_set = get_label_set(cfg.labelset)
    train_dirs = [Path(p) for p in train_dirs]
    held_out = [Path(p) for p in eval_dirs if Path(p) not in train_dirs]

    with _Timer(timings, "load scenes + text encoder", log):
        scenes = {d: load_scene(d) for d in dict.fromkeys(train_dirs + held_out)}
        encoder = build_text_encoder(cfg.text_encoder)
        class_text = encoder.encode(label_set.prompts())

    teacher_names, simulated, fused_dirs, ranking = _fuse(cfg, scenes, encoder, class_text, label_set, out, timings, log)
    runs = train_students(cfg, train_dirs, fused_dirs["guided"], out / "runs", timings, log) if cfg.students else {}

    splits = []
    for name, dirs in (("in_place", train_dirs), ("held_out", held_out)):
        if not dirs:
            continue
        with _Timer(timings, f"evaluate ({name.replace('_', ' ')})", log):
            split_scenes = [scenes[d] for d in dirs]
            rows = [_evaluate(f"teacher:{t}", TEACHER_ROW.format(name=t), split_scenes, cfg, encoder, fused_dir=fused_dirs[t])
                    for t in teacher_names]
            rows += [_evaluate(f"fusion:{m}", label, split_scenes, cfg, encoder, fused_dir=fused_dirs[m]) for m, label in FUSION_ROWS.items()]
            for key, checkpoint in runs.items():
                if key == "supervised" and name == "in_place":
                    continue  # trained on these very labels: no reference for annotation-free labelling
                rows.append(_evaluate(f"distill:{key}", DISTILL_ROWS[key], split_scenes, cfg, encoder, checkpoint=checkpoint))
                if key == "tesd":
                    rows.append(_evaluate("distill:ensemble", DISTILL_ROWS["ensemble"], split_scenes, cfg, encoder,
                                          checkpoint=checkpoint, fused_dir=fused_dirs["guided"]))
            splits.append(SplitResult(name, [scenes[d].name for d in dirs], rows))

    artefacts: dict[str, Any] = {"capability": "capability.json", "capability_heatmap": "capability.png",
                                 "fused_guided": str(fused_dirs["guided"].relative_to(out))}
    artefacts.update({f"checkpoint_{k}": str(Path(v).relative_to(out)) for k, v in runs.items()})
    queries: list[dict[str, Any]] = []
    shown = scenes[(held_out or train_dirs)[0]]
    if "tesd" in runs:
        with _Timer(timings, "queries + renders", log):
            queries = queries_and_renders(runs["tesd"], shown, cfg, encoder, class_text, label_set, out, artefacts)
    return PipelineReport(splits, timings, list(label_set.classes), simulated, artefacts, queries,
                          {"pipeline": to_dict(cfg), "prompts": [prompt_for(c) for c in label_set.classes], "shown_scene": shown.name},
                          ranking)


def _fuse(cfg: PipelineConfig, scenes: dict[Path, Scene], encoder: Any, class_text: torch.Tensor, label_set: Any, out: Path,
          timings: dict[str, float], log: Callable[[str], None]) -> tuple[list[str], bool, dict[str, Path], dict[str, Any] | None]:
    """Capability of every teacher, then multi-view fusion of all teachers (one pass over each scene's
    frames, one mean per teacher) and add / linear / guided / confusion fusion of every scene. Returns
    (teacher names, simulated?, fused folder per teacher and per fusion, how well the generated-image
    capability ranks the teachers' true per-class IoU on the scenes; None for oracle)."""
    from sas3d.capability import ProceduralGenerator, compute_capability
    from sas3d.capability.capability import plot_capability
    from sas3d.capability.ranking import capability_ranking, format_ranking
    from sas3d.fusion.guided import GuidedFusionConfig, fuse_teachers
    from sas3d.fusion.multiview import fuse_teachers_multiview
    from sas3d.teachers.registry import TeacherContext, build_teacher
    from sas3d.text.labelsets import CATCH_ALL

    def context(scene: Scene | None) -> TeacherContext:
        cache = out / "cache" if scene is not None and cfg.cache_teachers else None
        return TeacherContext(scene=scene, text_encoder=encoder, label_set=cfg.labelset, cache_dir=cache, seed=cfg.seed)

    teacher_names = [build_teacher(spec, context(None)).name for spec in cfg.teachers]
    simulated = any("simulated" in n for n in teacher_names)
    fused_dirs = {name: out / "fused" / name for name in teacher_names + list(FUSION_ROWS)}
    with _Timer(timings, "teachers + multi-view fusion", log):
        per_scene = {}
        for scene in scenes.values():
            teachers = [build_teacher(spec, context(scene)) for spec in cfg.teachers]
            per_scene[scene.name] = fuse_teachers_multiview(scene, teachers, progress=cfg.progress)
            for name, pf in zip(teacher_names, per_scene[scene.name]):
                pf.save(fused_dirs[name] / f"{scene.name}.safetensors")
    ranking = None
    if cfg.capability == "oracle":
        with _Timer(timings, "capability (ORACLE: true per-class IoU on the scenes)", log):
            true_iou, true_confusion = true_class_iou(per_scene, list(scenes.values()), class_text, len(teacher_names), len(label_set))
            cap_scores = torch.tensor(np.nan_to_num(true_iou), dtype=torch.float32)  # classes absent from the scenes: 0
            cap_confusion = torch.as_tensor(true_confusion)
            write_json_atomic(out / "capability_oracle.json", {"oracle": True, "note": "true per-class IoU on the scenes' labels",
                                                               "teachers": teacher_names, "classes": list(label_set.classes),
                                                               "scores": cap_scores.tolist(), "confusion": true_confusion.tolist()})
    else:
        with _Timer(timings, "capability (generated images)", log):
            teachers = [build_teacher(spec, context(None)) for spec in cfg.teachers]
            cap = compute_capability(teachers, ProceduralGenerator(), cfg.vocabulary, cfg.images_per_class, encoder,
                                     out / "capability", teacher_names=teacher_names, label_set=cfg.labelset, progress=cfg.progress)
            cap.save(out / "capability.json")
            plot_capability(cap, out / "capability.png")
            cap_scores = torch.as_tensor(cap.scores_for(teacher_names, label_set.classes), dtype=torch.float32)
            cap_confusion = torch.as_tensor(cap.confusion_for(teacher_names, label_set.classes))
            log(_capability_summary(cap, teacher_names))
        if any(scene.labels is not None for scene in scenes.values()):
            # Scored against the scenes' labels: a diagnostic only; the fusion below never sees it.
            scored = np.array([c in cap.classes and c not in CATCH_ALL for c in label_set.classes])
            true_iou, _ = true_class_iou(per_scene, list(scenes.values()), class_text, len(teacher_names), len(label_set))
            ranking = capability_ranking(np.where(scored, cap_scores.numpy(), np.nan), true_iou, teacher_names, label_set.classes)
            log("\n".join(format_ranking(ranking, simulated)))
    with _Timer(timings, "add / linear / guided / confusion fusion", log):
        for scene in scenes.values():
            for method in FUSION_ROWS:
                fused = fuse_teachers(per_scene[scene.name], class_text, method, cap_scores,
                                      GuidedFusionConfig(), label_set.catch_all_index, teacher_names=teacher_names,
                                      capability_source=str(out / "capability.json"),
                                      capability_confusion=cap_confusion)
                fused.save(fused_dirs[method] / f"{scene.name}.safetensors")
    return teacher_names, simulated, fused_dirs, ranking


def true_class_iou(per_scene: dict[str, list[Any]], scenes: list[Scene], class_text: torch.Tensor, n_teachers: int,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, K) true per-class IoU of every teacher's fused features over the labelled scenes (unseen points
    count as wrong; NaN for classes absent from the scenes' labels) and (T, K, K + 1) their point confusion
    (rows: true class, last column: no prediction; for confusion fusion's oracle)."""
    from sas3d.evaluate.metrics import confusion_matrix, iou_acc
    from sas3d.evaluate.predict import classify

    scores = np.full((n_teachers, k), np.nan)
    confusion = np.zeros((n_teachers, k, k + 1), dtype=np.float64)
    for t in range(n_teachers):
        conf = np.zeros((k, k + 1), dtype=np.int64)
        for scene in scenes:
            if scene.labels is None:
                continue
            pf = per_scene[scene.name][t]
            conf += confusion_matrix(classify(pf.features, class_text, seen=pf.seen).numpy(), scene.labels, k)
        confusion[t] = conf
        res = iou_acc(conf)
        scores[t] = np.where(res["present"], res["iou"], np.nan)
    return scores, confusion


def _capability_summary(cap: Any, names: Sequence[str]) -> str:
    scores = cap.select(names)
    lines = ["capability (IoU on generated images; catch-all = 0):"]
    for name, row in zip(names, scores):
        best = np.argsort(-row)[:4]
        lines.append(f"  {name}: mean {row.mean():.2f}; best on " + ", ".join(f"{cap.classes[i]} {row[i]:.2f}" for i in best))
    return "\n".join(lines)


def _evaluate(key: str, label: str, scenes: Sequence[Scene], cfg: PipelineConfig, encoder: Any, *,
              fused_dir: Path | None = None, checkpoint: Path | None = None) -> StageResult:
    """One table row: the fused features (``fused_dir``), the student (``checkpoint``) or their 2D-3D ensemble (both)."""
    from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes
    from sas3d.models.checkpoint import load_checkpoint

    start = time.perf_counter()
    model = None
    if checkpoint is not None:
        model, _, _ = load_checkpoint(checkpoint, device=cfg.device)
    mode = "fusion" if checkpoint is None else ("distill" if fused_dir is None else "ensemble")
    result = evaluate_scenes(list(scenes), EvalConfig(labelset=cfg.labelset, mode=mode, text_encoder=cfg.text_encoder, device=cfg.device),
                             model=model, voxel_size=cfg.voxel_size, fused_dir=fused_dir, text_encoder=encoder, progress=cfg.progress)
    m = result.metrics
    return StageResult(key, label, float(m["miou"]), float(m["macc"]),
                       [float(x) if p else float("nan") for x, p in zip(m["iou"], m["present"])],
                       time.perf_counter() - start)
