"""Training engine: distil fused 2D features into the 3D student (OpenScene / GGSD / SAS recipes).

The engine composes the pieces of this package: scenes (:mod:`.data`), batches built ahead of the
step by loader workers (:mod:`.batching`), the stage-2 strategy (:mod:`.strategies`), checkpoints
(:mod:`.checkpointing`) and data parallelism (:mod:`.distributed`); validation goes through
:mod:`sas3d.evaluate`. See :mod:`.checkpointing` for the run folder.

Everything random is derived from the seed: the model is initialised after ``torch.manual_seed(seed)``
and a scene's augmentation and voxel subsampling in a step come from
``default_rng([seed, epoch, step, slot])``, so a run is reproducible, a resumed run continues exactly
where its checkpoint left off, and the batches do not depend on the number of ranks or loader workers.

Parallelism. Multi-GPU: launch with ``torchrun``. CPU: ``engine.procs`` ranks (gloo), which
``sas3d train`` starts itself. Either way every rank builds the same per-epoch plan, takes its share
of each global batch, and the update equals the one-process update on the whole batch (per-scene loss
means, synchronised BatchNorm; ``tests/test_ddp.py``). Only rank 0 validates and writes checkpoints.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from sas3d.config import to_dict
from sas3d.distill import losses as L
from sas3d.distill.batching import Batch, EpochPlan, StepBatches, batch_loader
from sas3d.distill.checkpointing import load_run_checkpoint, save_run_checkpoint, write_metrics
from sas3d.distill.config import TrainConfig
from sas3d.distill.data import SceneData, load_scene_data
from sas3d.distill.distributed import (DistInfo, barrier, gather_objects, init_distributed, mean_over_ranks, run_cpu_ranks,
                                       sync_batchnorm)
from sas3d.distill.rows import StepPredictions, predict_rows
from sas3d.distill.strategies import build_strategy
from sas3d.errors import ConfigError, InputError
from sas3d.identity import TEACHERS, TEXT_SPACE, check_text_space
from sas3d.text.encoders import text_space_for_spec
from sas3d.utils.atomic import write_text_atomic

LOSS_PARTS = ("point", "superpoint", "self", "labels", "target_ce")


@dataclass
class TrainResult:
    """What :func:`train` returns: where things are and the last epoch's metrics."""

    out_dir: Path
    epochs_done: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    model: torch.nn.Module | None = None  # the trained student (unwrapped from DDP)
    simulated: bool = False  # the fused features came from simulated teachers


def lr_at(cfg: TrainConfig, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
    """Linear decay from ``optim.lr`` (first step/epoch) to ``optim.final_lr`` (last step/epoch)."""
    if cfg.optim.decay_per == "epoch":
        done, total = epoch, cfg.schedule.epochs
    else:
        done, total = epoch * steps_per_epoch + step_in_epoch, cfg.schedule.epochs * steps_per_epoch
    frac = done / max(1, total - 1)
    return cfg.optim.lr + (cfg.optim.final_lr - cfg.optim.lr) * min(1.0, frac)


def class_text_features(cfg: TrainConfig, device: str = "cpu") -> torch.Tensor:
    """(K, C) unit text features of the configured label set's prompts."""
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set

    encoder = build_text_encoder(cfg.text.encoder, device=device)
    return encoder.encode(get_label_set(cfg.text.labelset).prompts()).float().cpu()


def data_parallel_ranks(cfg: TrainConfig, num_scenes: int) -> int:
    """CPU ranks a run uses: ``engine.procs`` (0: one per core), at most one per scene of a global batch."""
    wanted = cfg.engine.procs or (os.cpu_count() or 1)
    return max(1, min(wanted, num_scenes, cfg.optim.batch_size))


class Trainer:
    """One training run (one rank of it); :func:`train` is the functional entry point."""

    def __init__(self, cfg: TrainConfig, scenes: Sequence[str | Path], fused_dir: str | Path, out_dir: str | Path,
                 val_scenes: Sequence[str | Path] = (), text_features: torch.Tensor | None = None):
        if not scenes:
            raise InputError(None, "no training scenes given")
        self.cfg, self.out = cfg, Path(out_dir)
        self.dist = init_distributed(cfg.device)
        self.device = self._device()
        self.text = (text_features if text_features is not None else class_text_features(cfg)).float().cpu()
        self.scenes = self._load_scenes([Path(s) for s in scenes], Path(fused_dir))
        self.teachers = sorted({t for s in self.scenes for t in s.teachers})
        self.teacher_identities = sorted({t for s in self.scenes for t in s.teacher_identities})
        self.simulated = any("simulated" in t for t in self.teachers)  # a student of simulated teachers is simulated
        self.val_scenes = self._load_val_scenes(val_scenes) if self.dist.is_main else []
        # the global batch is split evenly over the ranks (each rank's loss is a mean over its scenes)
        world = self.dist.world_size
        batch = max(world, (min(cfg.optim.batch_size, len(self.scenes)) // world) * world)
        self.plan = EpochPlan(len(self.scenes), batch, world, cfg.seed)
        self.model, self.net = self._build_model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.strategy = build_strategy(cfg, self.text, self.model, self.out, self.plan)
        self.epoch = 0
        self.metrics: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ set-up
    def _device(self) -> torch.device:
        cfg = self.cfg
        device = torch.device(f"cuda:{self.dist.local_rank}" if cfg.device == "cuda" and self.dist.active else cfg.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            from sas3d.models.spconv_compat import ensure_spconv_cpu_backward

            ensure_spconv_cpu_backward()
        return device

    def _load_scenes(self, dirs: list[Path], fused_dir: Path) -> list[SceneData]:
        from tqdm import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        cache = Path(cfg.data.superpoint_cache) if cfg.data.superpoint_cache else self.out / "cache" / "superpoints"
        grouped = cfg.loss.balance in ("class", "cluster") or cfg.data.sampling == "class"
        clusters = cfg.loss.balance_clusters if cfg.loss.balance == "cluster" else 0
        bar = tqdm(dirs, desc="loading scenes", leave=False, **self._bar_options())
        scenes = [load_scene_data(d, fused_dir, cfg.data, cache, class_text=self.text if grouped else None, clusters=clusters,
                                  seed=cfg.seed) for d in bar]
        names = [s.name for s in scenes]
        if len(set(names)) != len(names):
            raise InputError(None, f"duplicate scene names in the training list (fused files and TESD histories are per name): {sorted(names)}")
        for s in scenes:
            if s.dim != scenes[0].dim:
                raise InputError(s.fused_path, f"feature width {s.dim} != {scenes[0].dim} of the other scenes")
            if cfg.loss.labels > 0 and s.labels is None:
                raise InputError(s.fused_path, f"scene {s.name!r} has no ground-truth labels; loss.labels (the supervised recipe) needs them")
        self.text_space = text_space_for_spec(cfg.text.encoder)
        for s in scenes:  # every scene's targets must live in the space the student is decoded in
            check_text_space(s.text_space, self.text_space, s.fused_path, f"the fused features of scene {s.name!r}")
        if self.text.shape[1] != scenes[0].dim:
            raise ConfigError(f"text encoder {cfg.text.encoder!r} gives {self.text.shape[1]}-d features but the fused features are {scenes[0].dim}-d")
        return scenes

    def _load_val_scenes(self, dirs: Sequence[str | Path]) -> list[Any]:
        from sas3d import load_scene

        out = []
        for d in dirs:
            scene = load_scene(d, **self.cfg.data.scene_options)
            if scene.labels is None:
                raise InputError(Path(d), "validation scene has no ground-truth labels")
            out.append(scene)
        return out

    def _build_model(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        from sas3d.models.inputs import set_model_input
        from sas3d.models.norm import resolve_norm_stats, set_model_norm_stats
        from sas3d.models.registry import build_model

        cfg = self.cfg
        dim = self.scenes[0].dim
        out_channels = cfg.model.out_channels or dim
        if out_channels != dim:
            raise ConfigError(f"model.out_channels={out_channels} must equal the fused feature width {dim}")
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.name, in_channels=cfg.model.in_channels, out_channels=out_channels, **cfg.model.options)
        set_model_input(model, cfg.data.input)
        # BatchNorm sees the global batch (synchronised over ranks): one scene per step -> scene statistics
        set_model_norm_stats(model, resolve_norm_stats(cfg.model.norm_stats, self.plan.global_batch))  # value checked by validate()
        model = model.to(self.device)
        if not self.dist.active:
            return model, model
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = sync_batchnorm(model, self.device)
        return model, DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _bar_options(self) -> dict[str, bool]:
        # Only rank 0 draws bars; there, leave `disable` unset so TQDM_DISABLE (sas3d demo --no-progress) applies.
        return {} if self.dist.is_main else {"disable": True}

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Checkpoint the run (rank 0 writes; every rank pins its stage-2 state first)."""
        names = [s.name for s in self.scenes]
        barrier(self.dist)
        meta, tensors = self.strategy.checkpoint_state(self.epoch, names) if self.strategy is not None else ({}, {})
        barrier(self.dist)
        if self.dist.is_main:
            meta.update({
                "global_step": self.epoch * self.plan.steps,
                "stage": self.cfg.stage(self.epoch - 1),
                "world_size": self.dist.world_size,
                # numpy streams are re-derived from (seed, epoch, step, slot); torch's CPU state is in extra
                "rng": {"seed": self.cfg.seed, "next_epoch": self.epoch, "numpy": "default_rng([seed, epoch, step, slot])"},
                "teachers": self.teachers,
                TEACHERS: self.teacher_identities,
                TEXT_SPACE: self.text_space,
                "simulated": self.simulated,
                "metrics": self.metrics,
            })
            save_run_checkpoint(self.out, self.cfg, self.model, self.optimizer, meta, tensors, self.epoch)
        barrier(self.dist)

    def resume(self) -> bool:
        """Restore the state of ``last.safetensors``; False when the run has no checkpoint yet."""
        loaded = load_run_checkpoint(self.out, self.cfg, self.model, self.optimizer)
        if loaded is None:
            return False
        meta, extra = loaded
        self.epoch = int(meta["epoch"])
        self.metrics = list(meta.get("metrics", []))
        if self.strategy is not None:
            self.strategy.restore(meta, extra, [s.name for s in self.scenes])
        barrier(self.dist)
        return True

    # ------------------------------------------------------------------ one step
    def _distill_weights(self, part: Any, scene: SceneData, target: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """loss.balance weights of the pixel-point rows and of the superpoint-term superpoints."""
        balance = self.cfg.loss.balance
        sp = part.distill_sp
        if balance == "none" or sp.numel() == 0:
            return None, None
        if balance == "superpoint":
            return L.balance_weights(sp), None
        groups = scene.groups_of(target) if self.cfg.loss.point_target == "fused" else torch.from_numpy(scene.sp_group)[sp]
        return L.balance_weights(groups), L.balance_weights(torch.from_numpy(scene.sp_group)[torch.unique(sp)])

    def _distills(self, stage: int) -> bool:
        cfg = self.cfg
        return (stage == 1 or cfg.loss.distill_in_stage2) and (cfg.loss.point > 0 or cfg.loss.superpoint > 0 or cfg.loss.target_ce > 0)

    def _loss_rows(self, batch: Batch, stage: int) -> list[torch.Tensor]:
        """The batch rows this step's losses read (the student's head runs with gradient only there)."""
        rows = []
        for part in batch.parts:
            if self._distills(stage):
                rows.append(part.start + part.distill_rows)
            if stage == 2 and self.strategy is not None:
                rows.append(part.start + part.self_rows)
            if self.cfg.loss.labels > 0:
                rows.append(part.start + part.label_rows)
        return rows

    def _losses(self, pred: StepPredictions, batch: Batch, stage: int) -> dict[str, torch.Tensor]:
        cfg, dev = self.cfg, self.device
        zero = pred.sum() * 0.0
        out = {part: zero for part in LOSS_PARTS}
        if self._distills(stage):
            point, superpoint, decision = [], [], []
            text = self.text.to(dev) if cfg.loss.target_ce > 0 else None
            for part in batch.parts:
                p = pred[part.start + part.distill_rows.to(dev)]
                target = part.distill_target.to(dev).float()
                w_pt, w_sp = self._distill_weights(part, self.scenes[part.scene], target)
                w_pt = None if w_pt is None else w_pt.to(dev)
                point.append(L.cosine_loss(p, target, w_pt))
                superpoint.append(L.superpoint_cosine_loss(p, part.distill_sp_target.to(dev).float(), part.distill_sp.to(dev),
                                                           None if w_sp is None else w_sp.to(dev)))
                if cfg.loss.target_ce > 0:
                    classes = L.text_logits(target, text, 1.0).argmax(dim=1)
                    decision.append(L.supervised_loss(p, text, classes, cfg.loss.label_temperature, w_pt))
            out["point"], out["superpoint"] = torch.stack(point).mean(), torch.stack(superpoint).mean()
            if decision:
                out["target_ce"] = torch.stack(decision).mean()
        if stage == 2 and self.strategy is not None:
            out["self"] = self.strategy.loss(pred, batch, self.scenes, cfg.loss.balance)
        if cfg.loss.labels > 0:
            text = self.text.to(dev)
            terms = []
            for part in batch.parts:
                target = part.label_target.to(dev)
                weights = L.balance_weights(target) if cfg.loss.balance in ("class", "cluster") and target.numel() else None
                terms.append(L.supervised_loss(pred[part.start + part.label_rows.to(dev)], text, target, cfg.loss.label_temperature, weights))
            out["labels"] = torch.stack(terms).mean()
        return out

    def train_step(self, batch: Batch, stage: int, lr: float) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        full = stage == 2 and getattr(self.strategy, "reads_full_output", False)
        pred = predict_rows(self.net, self.model, batch.features.to(dev), batch.coords.to(dev), batch.batch_size,
                            self._loss_rows(batch, stage), full=full)
        parts = self._losses(pred, batch, stage)
        loss = (cfg.loss.point * parts["point"] + cfg.loss.superpoint * parts["superpoint"]
                + cfg.loss.self_weight * parts["self"] + cfg.loss.labels * parts["labels"] + cfg.loss.target_ce * parts["target_ce"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.strategy is not None:
            self.strategy.after_step(self.model)
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}

    # ------------------------------------------------------------------ epochs
    def run_epoch(self, batches: Any) -> dict[str, Any]:
        """Train one epoch on the next ``plan.steps`` batches of ``batches``; returns its metrics row."""
        from tqdm import tqdm

        cfg, epoch = self.cfg, self.epoch
        stage = cfg.stage(epoch)
        self.net.train()
        sums = dict.fromkeys(("loss", *LOSS_PARTS), 0.0)
        t0, lr, voxels = time.time(), cfg.optim.lr, 0
        bar = tqdm(range(self.plan.steps), desc=f"epoch {epoch + 1}/{cfg.schedule.epochs} (stage {stage})", leave=False,
                   **self._bar_options())
        for step in bar:
            batch = next(batches)
            lr = lr_at(cfg, epoch, step, self.plan.steps)
            values = self.train_step(batch, stage, lr)
            voxels += batch.num_voxels
            for k, v in values.items():
                sums[k] += v
            bar.set_postfix(loss=f"{values['loss']:.4f}")
        keys = ("loss", *LOSS_PARTS)
        means = mean_over_ranks(self.dist, torch.tensor([sums[k] / self.plan.steps for k in keys], dtype=torch.float64))
        voxels = int(sum(gather_objects(self.dist, voxels)))
        row = {"epoch": epoch + 1, "stage": stage, "lr": lr, **{("loss" if k == "loss" else f"loss_{k}"): float(v) for k, v in zip(keys, means)},
               "val_miou": None, "val_macc": None, "seconds": round(time.time() - t0, 3), "voxels": voxels}
        if self.device.type == "cuda":  # peak GPU memory of this rank so far (OpenScene users report 45 GB)
            row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20)
        return row

    def validate(self) -> dict[str, float]:
        """Validation mIoU / mAcc of the student on the validation scenes, through sas3d.evaluate."""
        from sas3d.evaluate.evaluator import EvalConfig, evaluate_scenes
        from sas3d.evaluate.predict import ClassText
        from sas3d.text.labelsets import get_label_set

        ls = get_label_set(self.cfg.text.labelset)
        text = torch.nn.functional.normalize(self.text, dim=1)
        class_text = ClassText(ls, list(ls.classes), text, torch.arange(len(ls)))
        result = evaluate_scenes(self.val_scenes, EvalConfig(labelset=ls.name, mode="distill", device=str(self.device)),
                                 model=self.model, voxel_size=self.cfg.data.voxel_size, class_text=class_text, progress=False)
        return {"miou": float(result.metrics["miou"]), "macc": float(result.metrics["macc"])}

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train from ``self.epoch`` to ``schedule.epochs`` (or ``stop_after`` epochs in total)."""
        cfg = self.cfg
        end = cfg.schedule.epochs if stop_after is None else min(cfg.schedule.epochs, int(stop_after))
        writer = self._writer()
        threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        if self.device.type == "cpu":
            if cfg.deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
            torch.set_num_threads(cfg.engine.threads or max(1, (os.cpu_count() or 1) // self.dist.world_size))
        dataset = StepBatches(self.scenes, self.plan, self.dist.rank, cfg.data, point_target=cfg.loss.point_target,
                              num_classes=self.text.shape[0] if cfg.loss.labels > 0 else 0)
        batches = batch_loader(dataset, self.epoch, end, cfg.engine.loader_workers, cfg.engine.prefetch)
        try:
            while self.epoch < end:
                row = self.run_epoch(batches)
                last = self.epoch + 1 == end
                if self.val_scenes and ((self.epoch + 1) % cfg.schedule.val_every == 0 or self.epoch + 1 == cfg.schedule.epochs):
                    res = self.validate()
                    row["val_miou"], row["val_macc"] = res["miou"], res["macc"]
                self.epoch += 1
                self.metrics.append(row)
                if last or self.epoch % cfg.schedule.checkpoint_every == 0:
                    self.save()
                elif self.dist.is_main:
                    write_metrics(self.out, self.metrics)  # progress for watchers; the checkpoint rewrites it
                if writer is not None:
                    for k in ("loss", "loss_point", "loss_superpoint", "loss_self", "loss_labels", "lr", "stage", "val_miou", "val_macc"):
                        if row.get(k) is not None:
                            writer.add_scalar(f"train/{k}" if not k.startswith("val") else f"val/{k[4:]}", row[k], self.epoch)
                    writer.flush()
        finally:
            del batches  # stops the loader workers
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det)
            if writer is not None:
                writer.close()
        return TrainResult(self.out, self.epoch, list(self.metrics), self.model, self.simulated)

    def _writer(self) -> Any:
        if not self.dist.is_main:
            return None
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        header = f"# simulated: distilled from simulated teachers {self.teachers}\n" if self.simulated else ""
        write_text_atomic(self.out / "config.yaml", header + yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        return SummaryWriter(str(self.out / "tb"), purge_step=self.epoch + 1)


def _train_here(cfg: TrainConfig, scenes: Sequence[str | Path], fused_dir: str | Path, out_dir: str | Path, resume: bool,
                val_scenes: Sequence[str | Path], stop_after: int | None, text_features: torch.Tensor | None) -> TrainResult:
    trainer = Trainer(cfg, scenes, fused_dir, out_dir, val_scenes=val_scenes, text_features=text_features)
    if resume:
        trainer.resume()
    return trainer.fit(stop_after=stop_after)


def _result_from_run(out_dir: Path) -> TrainResult:
    from sas3d.models.checkpoint import load_checkpoint

    model, meta, _ = load_checkpoint(out_dir / "last.safetensors")
    return TrainResult(out_dir, int(meta["epoch"]), list(meta.get("metrics", [])), model, bool(meta.get("simulated")))


def train(cfg: TrainConfig, scenes: Sequence[str | Path], fused_dir: str | Path, out_dir: str | Path, resume: bool = False, *,
          val_scenes: Sequence[str | Path] = (), stop_after: int | None = None, text_features: torch.Tensor | None = None) -> TrainResult:
    """Train the 3D student on ``scenes`` with fused features from ``fused_dir``; write the run to ``out_dir``.

    ``resume``: continue from ``out_dir/last.safetensors`` (same config required). ``stop_after``:
    stop once that many epochs of the schedule are done (split a run across jobs; resume later).
    ``text_features``: (K, C) class text features to use instead of encoding ``cfg.text`` prompts.
    On CPU, with ``engine.procs`` > 1 (0: one per core) and more than one scene per global batch, the
    run goes to that many gloo ranks started here. A run that fails before its first checkpoint
    leaves no run folder behind.
    """
    out = Path(out_dir)
    if not resume and (out / "last.safetensors").is_file():
        raise InputError(out, "already holds a training run; pass --resume to continue it or choose a new --out")
    created = not out.exists()
    args = (cfg, list(scenes), fused_dir, out, resume, list(val_scenes), stop_after, text_features)
    try:
        ranks = data_parallel_ranks(cfg, len(scenes))
        if cfg.device == "cpu" and ranks > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            run_cpu_ranks(ranks, _train_here, *args)
            return _result_from_run(out)
        return _train_here(*args)
    except BaseException:
        if created and not (out / "last.safetensors").is_file():
            shutil.rmtree(out, ignore_errors=True)
        raise
