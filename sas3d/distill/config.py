"""Typed training config for distilling fused 2D features into the 3D student.

Defaults are the paper / reference-code values (SAS 3.4-3.5 and the supplement, GGSD 3.3-4.1,
the OpenScene code); the YAML recipes
``sas3d/configs/{openscene,ggsd,sas}.yaml`` select the method and override what differs; the
command line overrides the recipe (``--set optim.lr=1e-3``, ``--epochs 10``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sas3d.config import apply_overrides, from_dict, load_yaml
from sas3d.errors import ConfigError
from sas3d.geometry.augment import AugmentConfig
from sas3d.geometry.superpoints import SuperpointConfig

SELF_DISTILL = ("none", "tesd", "ggsd")
POINT_TARGETS = ("fused", "superpoint")
BALANCE = ("none", "class", "superpoint", "cluster")
INPUTS = ("ones", "rgb")
SAMPLING = ("uniform", "class")
NORM_STATS = ("auto", "running", "scene")  # sas3d.models.norm


@dataclass
class ModelConfig:
    """Which 3D student to build (``sas3d.models.registry.build_model``)."""

    name: str = "minkunet18a"  # OpenScene / GGSD / SAS: MinkUNet18A
    in_channels: int | None = None  # None: what data.input feeds (SAS supp.: constant ones, 1 channel; rgb: 3)
    out_channels: int | None = None  # None: the width of the fused features (= text space)
    options: dict[str, Any] = field(default_factory=dict)  # extra build_model keyword arguments
    # BatchNorm statistics at inference (sas3d.models.norm; stored in the checkpoint). "running": the
    # running averages (MinkowskiEngine, the papers' batches of 12). "scene": each scene's own, which is
    # what every training step used when it held one scene. "auto": scene when the global batch is one
    # scene, else running.
    norm_stats: str = "auto"


@dataclass
class DataConfig:
    """Voxelisation, supervision subsampling and augmentation of the training scenes."""

    voxel_size: float = 0.02  # OpenScene/SAS: 2 cm indoor; the nuScenes recipe uses 0.05
    # What the student sees per voxel. "ones" (SAS supp., OpenScene): geometry only. "rgb": the mean
    # colour of the voxel's points, scaled to [-1, 1]; needs scenes with colour, and inference feeds the
    # same (the checkpoint records it).
    input: str = "ones"
    max_voxels: int = 20000  # SAS/OpenScene code: at most 20k supervised voxels per scene and step
    # How the max_voxels supervised voxels are drawn: "uniform" (OpenScene/SAS code) or "class": each
    # class of the fused targets (argmax over the label set's text) gets an equal share, so small
    # classes are not starved by the subsampling.
    sampling: str = "uniform"
    augment: bool = True  # training-time augmentation (OpenScene code: on)
    in_memory: bool = True  # keep fused features in memory; false re-reads them each step (big datasets)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)
    superpoint_cache: str | None = None  # folder for cached superpoints; None: <run>/cache/superpoints
    scene_options: dict[str, Any] = field(default_factory=dict)  # extra load_scene keyword arguments


@dataclass
class OptimConfig:
    """Adam with a linear learning-rate decay (SAS: 1e-4 -> 1e-5)."""

    lr: float = 1e-4  # SAS / GGSD paper (OpenScene code in effect trains at 1e-3, poly schedule)
    final_lr: float = 1e-5  # SAS paper: linear decay to 1e-5
    weight_decay: float = 0.0  # SAS paper
    batch_size: int = 12  # SAS paper: 12 indoor, 8 outdoor; total over all DDP ranks
    decay_per: str = "step"  # "step" or "epoch": granularity of the linear decay


@dataclass
class ScheduleConfig:
    """Epochs and the split between distillation (stage 1) and self-distillation (stage 2)."""

    epochs: int = 100  # SAS / GGSD / OpenScene
    stage1_fraction: float = 0.7  # SAS / GGSD: 70 distillation epochs, then 30 with self-distillation
    val_every: int = 1  # validate every N epochs (and after the last) when validation scenes are given
    checkpoint_every: int = 1  # write a checkpoint every N epochs (and after the last; --resume restarts from it)
    keep_checkpoints: int = 0  # per-epoch checkpoints to keep, newest first; 0 keeps all (last.safetensors always)


@dataclass
class LossConfig:
    """Loss terms and weights.

    Stage 1: ``point * (1 - cos(F3D, target)) + superpoint * (1 - cos(mean_sp F3D, mean_sp F2D))``,
    where ``target`` is the point's fused feature (``point_target: fused``; OpenScene, GGSD) or its
    superpoint's mean fused feature (``superpoint``; SAS Eq. 10 as the official SAS code computes it). Stage 2 adds
    ``self_weight *`` the self-distillation loss (``self_distill``); SAS 3.5 keeps the stage-1 loss in
    stage 2 ("both superpoint distillation and TESD"), which ``distill_in_stage2`` controls.
    """

    point: float = 1.0  # OpenScene / GGSD / SAS: unit weight
    superpoint: float = 1.0  # GGSD Eq. 4 / SAS Eq. 10: L_p + L_sp
    point_target: str = "superpoint"  # SAS Eq. 10, official code: F2D broadcast from its superpoint mean
    self_distill: str = "tesd"  # none | tesd | ggsd
    self_weight: float = 1.0  # SAS Eq. 13 / GGSD: unit weight
    distill_in_stage2: bool = True  # SAS 3.5: stage 2 uses superpoint distillation and TESD together
    # Per-scene weighting of every loss term (pixel-point, superpoint, TESD / GGSD pseudo-label CE).
    # "none" (the papers): every supervised voxel (superpoint) counts alike, so the large classes
    # decide. "class": every class present counts alike (class of a voxel = argmax of its target over
    # the label set's text features; of a pseudo-label term = the pseudo-label). "superpoint": every
    # superpoint counts alike. "cluster": as "class", but over k-means clusters of the scene's fused
    # features (balance_clusters of them), so it needs no label set (open-vocabulary use).
    balance: str = "none"
    balance_clusters: int = 20  # k of the k-means behind balance=cluster (ScanNet20 has 20 classes)
    # Weight of a cross-entropy, next to the cosine terms, on the class of each distillation target
    # (argmax of the target over the label set's text; cosine logits / label_temperature): distils the
    # teachers' decision, not only their feature, so a blurred output cannot sit between two classes.
    # 0 in the papers' recipes.
    target_ce: float = 0.0
    # Fully-supervised reference (the `supervised` recipe, not a distillation method): weight of a CE
    # on ground-truth labels, so a table can show what the same student and budget reach with
    # perfect labels. 0 in every distillation recipe.
    labels: float = 0.0
    label_temperature: float = 0.01  # cosine logits / 0.01, as TESD and GGSD


@dataclass
class TESDConfig:
    """Temporal-ensembling self-distillation (SAS 3.4)."""

    alpha: float = 0.9999  # SAS code: H <- a*H + (1-a)*F3D
    # Neither the SAS paper nor its code gives a temperature for TESD. Logits are cosines in [-1, 1]: at 1.0 the
    # softmax over ~20 classes is almost flat and the CE barely separates classes, so we use the
    # GGSD/CLIP value 0.01 (CLIP's logit scale 100), which the same text space was trained with.
    temperature: float = 0.01
    # "zeros": H starts at 0, so after k updates H = (1-a) sum_j a^(k-j) F_j, a (bias-uncorrected)
    # running mean of every stage-2 prediction -- argmax is scale invariant, so labels equal the
    # bias-corrected EMA's. "first": H = the first stage-2 prediction; at a = 0.9999 H then hardly moves
    # from it. We default to "zeros" because it is the temporal ensemble the paper describes.
    init: str = "zeros"
    # Official SAS code: pseudo-labels come from the superpoint mean of H, for points and superpoints
    # ("superpoint"); "point" labels each point from its own H row instead (one reading of Eq. 12).
    point_label: str = "superpoint"


@dataclass
class GGSDConfig:
    """GGSD self-distillation: EMA-weight teacher, superpoint voting, contrastive CE (GGSD 3.4)."""

    momentum: float = 0.999  # not given by GGSD; Mean Teacher's default EMA decay
    temperature: float = 0.01  # GGSD 4.1: tau = 0.01


@dataclass
class TextConfig:
    """Class text features for pseudo-labels and validation."""

    encoder: str = "minilm"  # offline default; "clip:<id>" for the paper's CLIP text space
    labelset: str = "scannet20"


@dataclass
class EngineConfig:
    """How the work is spread over the machine. Changing these changes speed, not results (up to float
    rounding), so ``--resume`` accepts different values."""

    # CPU data-parallel ranks that `sas3d train` starts itself (gloo, one process per rank; torchrun
    # sets WORLD_SIZE instead). 0: one per CPU core, at most one per training scene.
    procs: int = 1
    # torch intra-op threads per rank (0: the CPU cores divided by the ranks). 1 by default: the student's
    # many small matrix products gain little from threads, and on a busy machine OpenMP threads that
    # outnumber the free cores made each product ~25x slower (measured); ranks and loader workers
    # use the cores instead.
    threads: int = 1
    loader_workers: int = 1  # processes building batches ahead of the step (0: in the training loop)
    prefetch: int = 2  # batches each loader worker prepares ahead


@dataclass
class TrainConfig:
    """Everything one training run needs; stored resolved as ``<run>/config.yaml`` and in checkpoints."""

    recipe: str = "sas"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    tesd: TESDConfig = field(default_factory=TESDConfig)
    ggsd: GGSDConfig = field(default_factory=GGSDConfig)
    text: TextConfig = field(default_factory=TextConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    seed: int = 0
    device: str = "cpu"
    deterministic: bool = True  # torch.use_deterministic_algorithms where the backend allows it

    def __post_init__(self) -> None:
        validate(self)

    @property
    def stage1_epochs(self) -> int:
        """Epochs of stage 1; all of them when there is no self-distillation."""
        if self.loss.self_distill == "none":
            return self.schedule.epochs
        return int(round(self.schedule.epochs * self.schedule.stage1_fraction))

    def stage(self, epoch: int) -> int:
        """1 (distillation) or 2 (self-distillation) for 0-based ``epoch``."""
        return 1 if epoch < self.stage1_epochs else 2


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError for values that cannot work."""
    if cfg.loss.self_distill not in SELF_DISTILL:
        raise ConfigError(f"loss.self_distill must be one of {SELF_DISTILL}, got {cfg.loss.self_distill!r}")
    if cfg.loss.point_target not in POINT_TARGETS:
        raise ConfigError(f"loss.point_target must be one of {POINT_TARGETS}, got {cfg.loss.point_target!r}")
    if cfg.tesd.init not in ("zeros", "first"):
        raise ConfigError(f"tesd.init must be 'zeros' or 'first', got {cfg.tesd.init!r}")
    if cfg.tesd.point_label not in ("superpoint", "point"):
        raise ConfigError(f"tesd.point_label must be 'superpoint' or 'point', got {cfg.tesd.point_label!r}")
    for name, value, allowed in (("loss.balance", cfg.loss.balance, BALANCE), ("data.input", cfg.data.input, INPUTS),
                                 ("data.sampling", cfg.data.sampling, SAMPLING), ("model.norm_stats", cfg.model.norm_stats, NORM_STATS)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
    expected_in = 3 if cfg.data.input == "rgb" else 1
    if cfg.model.in_channels is None:
        cfg.model.in_channels = expected_in
    if cfg.model.in_channels != expected_in:
        raise ConfigError(f"data.input={cfg.data.input} feeds {expected_in} channel(s) per voxel but model.in_channels={cfg.model.in_channels}")
    if cfg.loss.balance_clusters < 2:
        raise ConfigError(f"loss.balance_clusters must be >= 2, got {cfg.loss.balance_clusters}")
    if cfg.schedule.val_every < 1 or cfg.schedule.checkpoint_every < 1:
        raise ConfigError("schedule.val_every and schedule.checkpoint_every must be >= 1")
    if cfg.engine.procs < 0 or cfg.engine.threads < 0 or cfg.engine.loader_workers < 0 or cfg.engine.prefetch < 1:
        raise ConfigError("engine.procs, engine.threads and engine.loader_workers must be >= 0, engine.prefetch >= 1")
    if cfg.optim.decay_per not in ("step", "epoch"):
        raise ConfigError(f"optim.decay_per must be 'step' or 'epoch', got {cfg.optim.decay_per!r}")
    if cfg.schedule.epochs < 1 or cfg.optim.batch_size < 1 or cfg.data.max_voxels < 1:
        raise ConfigError("schedule.epochs, optim.batch_size and data.max_voxels must be >= 1")
    if not 0.0 <= cfg.schedule.stage1_fraction <= 1.0:
        raise ConfigError(f"schedule.stage1_fraction must be in [0, 1], got {cfg.schedule.stage1_fraction}")
    if not 0.0 <= cfg.tesd.alpha < 1.0 or not 0.0 <= cfg.ggsd.momentum < 1.0:
        raise ConfigError("tesd.alpha and ggsd.momentum must be in [0, 1)")
    if cfg.loss.labels < 0 or cfg.loss.target_ce < 0:
        raise ConfigError(f"loss.labels and loss.target_ce must be >= 0, got {cfg.loss.labels}, {cfg.loss.target_ce}")
    if cfg.tesd.temperature <= 0 or cfg.ggsd.temperature <= 0 or cfg.loss.label_temperature <= 0 or cfg.data.voxel_size <= 0:
        raise ConfigError("temperatures and data.voxel_size must be positive")


def load_train_config(recipe: str | Path = "sas", overrides: list[str] | None = None, epochs: int | None = None) -> TrainConfig:
    """Recipe (built-in name or YAML path) + ``key=value`` overrides (+ ``epochs``) -> TrainConfig."""
    data = load_yaml(recipe)
    data.setdefault("recipe", Path(str(recipe)).stem)
    data = apply_overrides(data, overrides)
    if epochs is not None:
        data = apply_overrides(data, [f"schedule.epochs={int(epochs)}"])
    return from_dict(TrainConfig, data)
