"""Settings and results of one pipeline run (every SAS stage on a set of scenes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Rows of the ablation table, in SAS Table 3 order.
TEACHER_ROW = "2D {name}"
FUSION_ROWS = {"add": "2D add", "linear": "2D linear", "guided": "2D guided (SAS)",
               "confusion": "2D confusion-aware (beyond SAS)"}
DISTILL_ROWS = {
    "pixel_point": "3D pixel-point (OpenScene)",
    "superpoint": "3D + superpoint",
    "tesd": "3D + superpoint + TESD (SAS)",
    "ggsd": "3D GGSD",
    "ensemble": "2D-3D ensemble (SAS student + guided 2D)",
    "supervised": "3D supervised on ground truth (reference)",
}
SPLITS = {"in_place": "distilled and evaluated on the same scenes (labels only for scoring)",
          "held_out": "evaluated on scenes the student never saw"}


@dataclass
class PipelineConfig:
    """Settings of one pipeline run. Paper values are noted; the demo scales the heavy ones down."""

    teachers: list[str] = field(default_factory=lambda: ["simulated:lseg", "simulated:seem"])  # SAS: LSeg + SEEM
    text_encoder: str = "minilm"  # offline default; "clip:<id>" for the paper's CLIP space
    labelset: str = "scannet20"
    vocabulary: str = "indoor"  # SAS Table 9 pre-built indoor vocabulary for capability
    images_per_class: int = 50  # SAS code: 50 generated images per class
    # "generated": SAS 3.2, IoU on generated images with pseudo masks (annotation-free). "oracle": each
    # teacher's true per-class IoU on the pipeline's own scenes (reads their labels: a diagnostic of the
    # fusion and distillation given perfect capability, not an annotation-free result)
    capability: str = "generated"
    epochs: int = 100  # SAS: 100 (70 superpoint distillation + 30 TESD)
    voxel_size: float = 0.02  # SAS/OpenScene indoor: 2 cm
    lr: float = 1e-4  # SAS paper
    final_lr: float = 1e-5  # SAS paper
    batch_size: int = 12  # SAS paper
    augment: bool = True  # training augmentation (OpenScene/SAS: on); off suits distilling scenes to label them in place
    model_options: dict[str, Any] = field(default_factory=dict)  # build_model kwargs (e.g. narrower planes)
    # `--set` values added to every training run (e.g. loss.balance=class, data.input=rgb); empty = the papers
    train_overrides: list[str] = field(default_factory=list)
    students: bool = True  # train the 3D students (False: only the 2D teacher and fusion rows)
    ggsd: bool = False  # also train the GGSD recipe (extra row)
    supervised_reference: bool = False  # also train the student on ground-truth labels, same budget (held-out row)
    parallel_runs: int = 1  # training runs side by side in worker processes (the demo: one per CPU core)
    cache_teachers: bool = False  # per-frame teacher outputs on disk: worth it for real models, not for cheap simulated ones
    keep_checkpoints: int = 1  # per-epoch checkpoints kept per run (0: all)
    checkpoint_every: int = 10  # epochs between checkpoints (and the last)
    queries: list[str] = field(default_factory=lambda: ["a chair", "something to sit on", "a place to store books", "a door"])
    query_renders: int = 2  # rendered views of the evaluated scene per query / segmentation
    seed: int = 0
    device: str = "cpu"  # training and evaluation device ("cuda" on a GPU)
    progress: bool = True


@dataclass
class StageResult:
    """One row of an ablation table."""

    key: str
    label: str
    miou: float
    macc: float
    per_class_iou: list[float]
    seconds: float


@dataclass
class SplitResult:
    """The ablation table of one evaluation split (in place, or held out)."""

    name: str
    scenes: list[str]
    rows: list[StageResult]

    def row(self, key: str) -> StageResult:
        return next(r for r in self.rows if r.key == key)

    def has(self, key: str) -> bool:
        return any(r.key == key for r in self.rows)


@dataclass
class PipelineReport:
    splits: list[SplitResult]
    timings: dict[str, float]
    classes: list[str]
    simulated: bool
    artefacts: dict[str, Any]
    queries: list[dict[str, Any]]
    config: dict[str, Any]
    # How well the generated-image capability ranks the teachers' true per-class IoU on the scenes
    # (sas3d.capability.ranking); None when capability is the oracle itself or no scene has labels
    capability_ranking: dict[str, Any] | None = None

    def split(self, name: str) -> SplitResult:
        return next(s for s in self.splits if s.name == name)

    def to_json(self) -> dict[str, Any]:
        def present(split: SplitResult) -> list[str]:
            first = split.rows[0].per_class_iou
            return [c for c, v in zip(self.classes, first) if v == v]  # NaN: absent

        return {
            "simulated": self.simulated,
            "note": "teachers are SIMULATED from ground-truth renders; not real-model results" if self.simulated else "",
            "splits": {s.name: {
                "description": SPLITS[s.name], "scenes": s.scenes, "classes_present": present(s),
                "stages": {r.key: {"label": r.label, "miou": r.miou, "macc": r.macc, "seconds": round(r.seconds, 2),
                                   "per_class_iou": {c: (v if v == v else None) for c, v in zip(self.classes, r.per_class_iou)}}
                           for r in s.rows}} for s in self.splits},
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "artefacts": self.artefacts,
            "queries": self.queries,
            "config": self.config,
            "capability_ranking": self.capability_ranking,
        }
