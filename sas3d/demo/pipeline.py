"""The whole SAS pipeline on a set of scenes, through the same stage code a user runs by hand.

teachers -> (alignment via text) -> capability -> per-teacher fusion -> add / linear / guided fusion
-> superpoints + distillation (pixel-point, + superpoint, + TESD) -> evaluation -> text queries.

Used by ``sas3d demo`` (embedded procedural rooms) and ``benchmarks/real_scan.py`` (a real ScanNet
mesh with rendered views). Every stage writes its artefact under ``out_dir`` so a run can be
inspected, and the evaluation table reports one row per stage as in SAS Table 3.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sas3d.config import to_dict
from sas3d.scene.types import Scene

# Rows of the ablation table, in SAS Table 3 order.
TEACHER_ROW = "2D {name}"
FUSION_ROWS = {"add": "2D add", "linear": "2D linear", "guided": "2D guided (SAS)"}
DISTILL_ROWS = {
    "pixel_point": "3D pixel-point (OpenScene)",
    "superpoint": "3D + superpoint",
    "tesd": "3D + superpoint + TESD (SAS)",
    "ggsd": "3D GGSD",
    "supervised": "3D supervised on ground truth (reference)",
}


@dataclass
class PipelineConfig:
    """Settings of one pipeline run. Paper values are noted; the demo scales the heavy ones down."""

    teachers: list[str] = field(default_factory=lambda: ["simulated:lseg", "simulated:seem"])  # SAS: LSeg + SEEM
    text_encoder: str = "minilm"  # offline default; "clip:<id>" for the paper's CLIP space
    labelset: str = "scannet20"
    vocabulary: str = "indoor"  # SAS Table 9 pre-built indoor vocabulary for capability
    images_per_class: int = 50  # SAS code: 50 generated images per class
    epochs: int = 100  # SAS: 100 (70 superpoint distillation + 30 TESD)
    voxel_size: float = 0.02  # SAS/OpenScene indoor: 2 cm
    lr: float = 1e-4  # SAS paper
    final_lr: float = 1e-5  # SAS paper
    batch_size: int = 12  # SAS paper
    augment: bool = True  # training augmentation (OpenScene/SAS: on); off suits distilling one scene to evaluate on it
    model_options: dict[str, Any] = field(default_factory=dict)  # build_model kwargs (e.g. narrower planes)
    ggsd: bool = False  # also train the GGSD recipe (extra row)
    supervised_reference: bool = False  # also train the student on ground-truth labels, same budget (extra row)
    parallel_runs: int = 1  # training runs side by side in worker processes (the demo: one per CPU core)
    cache_teachers: bool = False  # per-frame teacher outputs on disk: worth it for real models, not for cheap simulated ones
    keep_checkpoints: int = 1  # per-epoch checkpoints kept per run (0: all)
    queries: list[str] = field(default_factory=lambda: ["a chair", "something to sit on", "a place to store books", "a door"])
    query_renders: int = 2  # rendered views of the evaluated scene per query / segmentation
    seed: int = 0
    progress: bool = True


@dataclass
class StageResult:
    """One row of the ablation table."""

    key: str
    label: str
    miou: float
    macc: float
    per_class_iou: list[float]
    seconds: float


@dataclass
class PipelineReport:
    rows: list[StageResult]
    timings: dict[str, float]
    classes: list[str]
    present: list[bool]
    simulated: bool
    artefacts: dict[str, str]
    queries: list[dict[str, Any]]
    config: dict[str, Any]

    def row(self, key: str) -> StageResult:
        return next(r for r in self.rows if r.key == key)

    def to_json(self) -> dict[str, Any]:
        return {
            "simulated": self.simulated,
            "note": "teachers are SIMULATED from ground-truth renders; not real-model results" if self.simulated else "",
            "stages": {r.key: {"label": r.label, "miou": r.miou, "macc": r.macc, "seconds": round(r.seconds, 2),
                               "per_class_iou": dict(zip(self.classes, r.per_class_iou))} for r in self.rows},
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "classes_present": [c for c, p in zip(self.classes, self.present) if p],
            "artefacts": self.artefacts,
            "queries": self.queries,
            "config": self.config,
        }


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
    """Run every SAS stage; distil on ``train_dirs`` and evaluate on ``eval_dirs`` (which may overlap)."""
    from sas3d import load_scene
    from sas3d.capability import ProceduralGenerator, compute_capability
    from sas3d.capability.capability import plot_capability
    from sas3d.fusion.guided import GuidedFusionConfig, fuse_teachers
    from sas3d.fusion.multiview import fuse_teacher
    from sas3d.teachers.registry import TeacherContext, build_teacher
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set, prompt_for

    cfg = cfg or PipelineConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    label_set = get_label_set(cfg.labelset)
    train_dirs = [Path(p) for p in train_dirs]
    eval_dirs = [Path(p) for p in eval_dirs]
    all_dirs = list(dict.fromkeys(train_dirs + eval_dirs))

    with _Timer(timings, "load scenes + text encoder", log):
        scenes = {d: load_scene(d) for d in all_dirs}
        encoder = build_text_encoder(cfg.text_encoder)
        class_text = encoder.encode(label_set.prompts())

    def context(scene: Scene | None) -> TeacherContext:
        cache = out / "cache" if scene is not None and cfg.cache_teachers else None
        return TeacherContext(scene=scene, text_encoder=encoder, label_set=cfg.labelset, cache_dir=cache, seed=cfg.seed)

    teacher_names = [build_teacher(spec, context(None)).name for spec in cfg.teachers]
    simulated = any("simulated" in n for n in teacher_names)

    with _Timer(timings, "capability (generated images)", log):
        teachers = [build_teacher(spec, context(None)) for spec in cfg.teachers]
        cap = compute_capability(teachers, ProceduralGenerator(), cfg.vocabulary, cfg.images_per_class, encoder,
                                 out / "capability", teacher_names=teacher_names, label_set=cfg.labelset,
                                 progress=cfg.progress)
        cap.save(out / "capability.json")
        plot_capability(cap, out / "capability.png")
        cap_scores = torch.as_tensor(cap.scores_for(teacher_names, label_set.classes), dtype=torch.float32)
        log(_capability_summary(cap, teacher_names))

    fused_dirs = {name: out / "fused" / name for name in teacher_names + list(FUSION_ROWS)}
    with _Timer(timings, "teachers + multi-view fusion", log):
        for d, scene in scenes.items():
            per_teacher = []
            for spec, name in zip(cfg.teachers, teacher_names):
                pf = fuse_teacher(scene, build_teacher(spec, context(scene)), progress=cfg.progress)
                pf.save(fused_dirs[name] / f"{scene.name}.safetensors")
                per_teacher.append(pf)
            for method in FUSION_ROWS:
                fused = fuse_teachers(per_teacher, class_text, method, cap_scores if method == "guided" else None,
                                      GuidedFusionConfig(), label_set.catch_all_index, teacher_names=teacher_names,
                                      capability_source=str(out / "capability.json"))
                fused.save(fused_dirs[method] / f"{scene.name}.safetensors")

    rows: list[StageResult] = []
    eval_scenes = [scenes[d] for d in eval_dirs]
    with _Timer(timings, "evaluate 2D fusion", log):
        for name in teacher_names:
            rows.append(_evaluate(f"teacher:{name}", TEACHER_ROW.format(name=name), eval_scenes, cfg, encoder,
                                  fused_dir=fused_dirs[name]))
        for method, label in FUSION_ROWS.items():
            rows.append(_evaluate(f"fusion:{method}", label, eval_scenes, cfg, encoder, fused_dir=fused_dirs[method]))

    runs = _distil(cfg, train_dirs, eval_dirs, fused_dirs["guided"], out / "runs", timings, log)
    with _Timer(timings, "evaluate 3D students", log):
        for key, checkpoint in runs.items():
            rows.append(_evaluate(f"distill:{key}", DISTILL_ROWS[key], eval_scenes, cfg, encoder, checkpoint=checkpoint))

    artefacts = {"capability": "capability.json", "capability_heatmap": "capability.png",
                 "fused_guided": str(fused_dirs["guided"].relative_to(out))}
    artefacts.update({f"checkpoint_{k}": str(Path(v).relative_to(out)) for k, v in runs.items()})
    queries: list[dict[str, Any]] = []
    if "tesd" in runs and eval_scenes:
        with _Timer(timings, "queries + renders", log):
            queries = _queries_and_renders(runs["tesd"], eval_scenes[0], cfg, encoder, class_text, label_set, out, artefacts)

    first_eval = rows[0]
    present = [not np.isnan(v) for v in first_eval.per_class_iou]
    return PipelineReport(rows, timings, list(label_set.classes), present, simulated, artefacts, queries,
                          {"pipeline": to_dict(cfg), "prompts": [prompt_for(c) for c in label_set.classes]})


def _capability_summary(cap: Any, names: Sequence[str]) -> str:
    scores = cap.select(names)
    lines = ["capability (IoU on generated images; catch-all = 0):"]
    for name, row in zip(names, scores):
        best = np.argsort(-row)[:4]
        lines.append(f"  {name}: mean {row.mean():.2f}; best on " + ", ".join(f"{cap.classes[i]} {row[i]:.2f}" for i in best))
    return "\n".join(lines)


def _evaluate(key: str, label: str, scenes: Sequence[Scene], cfg: PipelineConfig, encoder: Any, *,
              fused_dir: Path | None = None, checkpoint: Path | None = None) -> StageResult:
    from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes
    from sas3d.models.checkpoint import load_checkpoint

    start = time.perf_counter()
    model = None
    if checkpoint is not None:
        model, _, _ = load_checkpoint(checkpoint)
    mode = "fusion" if checkpoint is None else "distill"
    result = evaluate_scenes(list(scenes), EvalConfig(labelset=cfg.labelset, mode=mode, text_encoder=cfg.text_encoder),
                             model=model, voxel_size=cfg.voxel_size, fused_dir=fused_dir, text_encoder=encoder)
    m = result.metrics
    return StageResult(key, label, float(m["miou"]), float(m["macc"]),
                       [float(x) if p else float("nan") for x, p in zip(m["iou"], m["present"])],
                       time.perf_counter() - start)


def training_overrides(cfg: PipelineConfig) -> list[str]:
    """The ``--set`` values every training run of the pipeline adds to its recipe."""
    common = [f"data.voxel_size={cfg.voxel_size}", f"optim.lr={cfg.lr}", f"optim.final_lr={cfg.final_lr}",
              f"optim.batch_size={cfg.batch_size}", f"seed={cfg.seed}", f"schedule.keep_checkpoints={cfg.keep_checkpoints}",
              f"data.augment={str(cfg.augment).lower()}"]
    return common + [f"model.options.{k}={json.dumps(v)}" for k, v in cfg.model_options.items()]  # JSON is valid YAML


def _distil(cfg: PipelineConfig, train_dirs: Sequence[Path], eval_dirs: Sequence[Path], fused_dir: Path, runs_dir: Path,
            timings: dict[str, float], log: Callable[[str], None]) -> dict[str, Path]:
    """Train the students; returns checkpoint paths keyed by ablation row.

    "+ superpoint" is the SAS run's checkpoint at the end of stage 1 (SAS trains progressively), and
    the pixel-point baseline trains the same number of epochs so the two rows compare like with like.
    The runs are independent, so with ``cfg.parallel_runs > 1`` they train side by side in worker
    processes (each run is itself single-threaded on CPU, see the trainer). The workers are spawned,
    so a script that calls this must keep its top-level work under ``if __name__ == "__main__":``.
    """
    from sas3d.distill.config import load_train_config

    common = training_overrides(cfg)
    stage1 = load_train_config("sas", common, epochs=cfg.epochs).stage1_epochs
    plans = [("pixel_point", "openscene", stage1), ("tesd", "sas", cfg.epochs)]
    if cfg.ggsd:
        plans.append(("ggsd", "ggsd", cfg.epochs))
    if cfg.supervised_reference:
        plans.append(("supervised", "supervised", cfg.epochs))  # the longest distillation budget
    plans.sort(key=lambda plan: -plan[2])  # longest first: the best packing onto the workers
    jobs = [(recipe, common, epochs, stage1, [str(d) for d in train_dirs], [str(d) for d in eval_dirs], str(fused_dir),
             str(runs_dir / recipe)) for _, recipe, epochs in plans]
    for _, recipe, epochs in plans:
        log(f"== distill: {recipe} recipe ({epochs} epochs)")
    workers = max(1, min(cfg.parallel_runs, len(jobs)))
    if workers == 1:
        results = [_train_run(*job) for job in jobs]
    else:
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor
        from unittest.mock import patch  # sets, then restores, an environment variable

        from tqdm import tqdm

        # spawn: a forked child would inherit torch's and numba's thread pools mid-state. The
        # workers draw no bars of their own (they inherit TQDM_DISABLE when submit() starts them,
        # before anything imports tqdm there); one bar here counts the epochs their metrics.csv log.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            with patch.dict(os.environ, {"TQDM_DISABLE": "1"}):
                futures = [pool.submit(_train_run, *job) for job in jobs]
            logs = [runs_dir / recipe / "metrics.csv" for _, recipe, _ in plans]
            with tqdm(total=sum(epochs for _, _, epochs in plans), desc=f"training {len(jobs)} students, {workers} at a time",
                      unit="epoch", disable=not cfg.progress) as bar:
                while not all(f.done() for f in futures):
                    time.sleep(1.0)
                    bar.update(sum(_logged_epochs(f) for f in logs) - bar.n)
                bar.update(sum(_logged_epochs(f) for f in logs) - bar.n)
            results = [f.result() for f in futures]
    runs: dict[str, Path] = {}
    for (key, recipe, epochs), (checkpoints, seconds) in zip(plans, results):
        timings[f"distill: {recipe} recipe ({epochs} epochs)"] = seconds
        runs.update({"superpoint" if name == "stage1" else key: Path(path) for name, path in checkpoints.items()})
    order = ["pixel_point", "superpoint", "tesd", "ggsd", "supervised"]
    return {k: runs[k] for k in order if k in runs}


def _logged_epochs(metrics_csv: Path) -> int:
    try:
        return max(0, len(metrics_csv.read_text().splitlines()) - 1)  # minus the header
    except OSError:
        return 0


def _train_run(recipe: str, common: list[str], epochs: int, stage1: int, train_dirs: list[str], eval_dirs: list[str],
               fused_dir: str, run_dir: str) -> tuple[dict[str, str], float]:
    """One training run (a top-level function, so worker processes can run it); reuses a finished or
    interrupted run in ``run_dir``. Returns ({"last": checkpoint[, "stage1": checkpoint]}, seconds)."""
    from sas3d.distill.config import load_train_config
    from sas3d.distill.trainer import train

    start = time.perf_counter()
    out = Path(run_dir)
    tcfg = load_train_config(recipe, common, epochs=epochs)
    last = out / "last.safetensors"
    checkpoints = {}
    if recipe == "sas":
        # Pause at the end of stage 1 to keep that student ("+ superpoint"), then resume into TESD.
        stage1_ckpt = out / "stage1.safetensors"
        if not stage1_ckpt.is_file():
            train(tcfg, train_dirs, fused_dir, out, resume=last.is_file(), val_scenes=eval_dirs, stop_after=stage1)
            shutil.copyfile(last, stage1_ckpt)
        checkpoints["stage1"] = str(stage1_ckpt)
    train(tcfg, train_dirs, fused_dir, out, resume=last.is_file(), val_scenes=eval_dirs)
    checkpoints["last"] = str(last)
    return checkpoints, time.perf_counter() - start


def _queries_and_renders(checkpoint: Path, scene: Scene, cfg: PipelineConfig, encoder: Any, class_text: torch.Tensor,
                         label_set: Any, out: Path, artefacts: dict[str, str]) -> list[dict[str, Any]]:
    """Per-point similarity for each free-text query (PLY + rendered PNGs) and the segmented scene."""
    from PIL import Image

    from sas3d.evaluate.predict import classify
    from sas3d.models.checkpoint import load_checkpoint
    from sas3d.models.inference import predict_point_features
    from sas3d.query.export import label_palette, similarity_colors, write_heatmap_ply, write_label_ply
    from sas3d.query.similarity import query_prompt, text_similarity

    model, _, _ = load_checkpoint(checkpoint)
    feats = predict_point_features(model, scene.points, cfg.voxel_size)
    labels = classify(feats, class_text).numpy()
    render_dir = out / "renders"
    render_dir.mkdir(parents=True, exist_ok=True)
    write_label_ply(out / "segmentation.ply", scene, labels, list(label_set.classes))
    artefacts["segmentation_ply"] = "segmentation.ply"

    palette = label_palette(len(label_set))
    gt = np.where(scene.labels < len(label_set), scene.labels, 0) if scene.labels is not None else labels
    gt_colors = np.where((scene.labels < len(label_set))[:, None], palette[gt], 0) if scene.labels is not None else palette[labels]
    views = _render_views_of(scene, cfg.query_renders)
    for tag, colors in (("rgb", scene.colors), ("ground_truth", gt_colors), ("prediction", palette[labels])):
        if colors is None:
            continue
        paths = [_render(scene, colors, pose_k, render_dir / f"{tag}_{i}.png", Image) for i, pose_k in enumerate(views)]
        artefacts[f"render_{tag}"] = [str(p.relative_to(out)) for p in paths]  # type: ignore[assignment]

    results = []
    for q, text in enumerate(cfg.queries):
        prompt = query_prompt(text)
        sim = text_similarity(feats, encoder.encode([prompt])[0]).numpy()
        ply = out / "queries" / f"query_{q}.ply"
        write_heatmap_ply(ply, scene, sim)
        colors = similarity_colors(sim)
        paths = [_render(scene, colors, pose_k, render_dir / f"query_{q}_{i}.png", Image) for i, pose_k in enumerate(views)]
        top = np.argsort(-sim)[: max(1, len(sim) // 20)]  # the 5% most similar points
        hist = np.bincount(labels[top], minlength=len(label_set))
        gt_top = scene.labels[top] if scene.labels is not None else None
        gt_hist = np.bincount(gt_top[gt_top < len(label_set)], minlength=len(label_set)) if gt_top is not None else None
        results.append({
            "query": text, "prompt": prompt, "ply": str(ply.relative_to(out)),
            "renders": [str(p.relative_to(out)) for p in paths],
            "top5pct_ground_truth": {label_set.classes[i]: int(c) for i, c in enumerate(gt_hist) if c} if gt_hist is not None else None,
            "top5pct_predicted": {label_set.classes[i]: int(c) for i, c in enumerate(hist) if c},
        })
    return results


def _render_views_of(scene: Scene, count: int) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """Poses + intrinsics of evenly spread frames of the scene to render from."""
    frames = scene.frames
    if not frames or count < 1:
        return []
    picks = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    return [(frames[i].intrinsics, frames[i].pose, frames[i].width, frames[i].height) for i in picks]


def _render(scene: Scene, vertex_colors: np.ndarray, view: tuple, path: Path, image_module: Any) -> Path:
    """Render the mesh (or splat the points when there are no faces) with per-vertex colours."""
    from sas3d.geometry.raster import face_normals, headlight_shading, rasterize, shade

    intrinsics, pose, width, height = view
    colors = np.asarray(vertex_colors, dtype=np.uint8)
    if scene.faces is not None:
        _, face_id = rasterize(scene.points, scene.faces, intrinsics, pose, width, height)
        img = shade(face_id, scene.faces, colors).astype(np.float32)
        light = headlight_shading(face_id, face_normals(scene.points, scene.faces), intrinsics, pose)
        img = (img * light[..., None]).clip(0, 255).astype(np.uint8)
    else:
        img = _splat(scene.points, colors, intrinsics, pose, width, height)
    image_module.fromarray(img).save(path)
    return path


def _splat(points: np.ndarray, colors: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
    from sas3d.geometry.raster import world_to_camera

    cam = world_to_camera(points, pose)
    front = cam[:, 2] > 0.05
    uvw = cam[front] @ intrinsics.T
    u = np.round(uvw[:, 0] / uvw[:, 2]).astype(int)
    v = np.round(uvw[:, 1] / uvw[:, 2]).astype(int)
    ok = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    order = np.argsort(-cam[front][ok, 2])  # far first, near points overwrite
    img = np.zeros((height, width, 3), np.uint8)
    img[v[ok][order], u[ok][order]] = colors[front][ok][order]
    return img
