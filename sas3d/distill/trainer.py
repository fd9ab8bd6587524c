"""Training engine: distil fused 2D features into the 3D student (OpenScene / GGSD / SAS recipes).

Run layout (``out_dir``)::

    config.yaml                       resolved TrainConfig
    checkpoints/epoch_XXXX.safetensors  one per epoch (model, Adam state, EMA teacher, RNG, metadata)
    last.safetensors                  copy of the newest checkpoint (what --resume reads)
    metrics.csv                       one row per epoch: stage, lr, losses, validation mIoU/mAcc
    tb/                               TensorBoard scalars
    tesd/work, tesd/epoch_XXXX        TESD history (memory-mapped) and its per-checkpoint snapshot
    cache/superpoints                 superpoints computed for scenes without them

Everything random is drawn from ``np.random.default_rng([seed, epoch, rank])`` (scene order,
augmentation, voxel subsampling) and the model is initialised after ``torch.manual_seed(seed)``, so a
run is reproducible and a resumed run continues exactly where the checkpoint left off.

Multi-GPU: launch with ``torchrun``; when ``WORLD_SIZE > 1`` a process group is initialised (NCCL on
CUDA, Gloo on CPU), each rank trains on a fixed share of the scenes (``scenes[rank::world]``, its
TESD histories stay with it), gradients are averaged by DistributedDataParallel, and only rank 0
validates and writes checkpoints/logs. BatchNorm statistics stay per rank (DDP broadcasts rank 0's
buffers each forward); SyncBN is not needed for the paper's batch sizes.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from sas3d.config import from_dict, to_dict
from sas3d.distill import losses as L
from sas3d.distill.config import TrainConfig
from sas3d.distill.data import Batch, SceneData, build_batch, load_scene_data
from sas3d.distill.history import EMATeacher, TESDHistory
from sas3d.errors import ConfigError, InputError
from sas3d.utils.atomic import atomic_path, write_text_atomic

METRIC_FIELDS = ["epoch", "stage", "lr", "loss", "loss_point", "loss_superpoint", "loss_self", "loss_labels", "val_miou", "val_macc",
                 "seconds"]
LOSS_PARTS = ("point", "superpoint", "self", "labels")


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


@dataclass
class TrainResult:
    """What :func:`train` returns: where things are and the last epoch's metrics."""

    out_dir: Path
    epochs_done: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    model: torch.nn.Module | None = None  # the trained student (unwrapped from DDP)
    simulated: bool = False  # the fused features came from simulated teachers


def _init_distributed(device: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return info


def _barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


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


def evaluate_miou(model: torch.nn.Module, scenes: Sequence[SceneData], text: torch.Tensor, voxel_size: float, device: str) -> dict[str, float]:
    """Validation mIoU / mAcc of argmax-over-text predictions against the scenes' labels."""
    from sas3d.evaluate.metrics import confusion_matrix, iou_acc
    from sas3d.models.inference import predict_point_features

    k = text.shape[0]
    conf = None
    for scene in scenes:
        if scene.labels is None:
            continue
        feats = predict_point_features(model, scene.points, voxel_size, device=device)
        pred = (feats @ text.T).argmax(dim=1)
        c = confusion_matrix(pred, scene.labels, k)
        conf = c if conf is None else conf + c
    if conf is None:
        return {"miou": float("nan"), "macc": float("nan")}
    res = iou_acc(conf)
    return {"miou": res["miou"], "macc": res["macc"]}


class Trainer:
    """One training run; :func:`train` is the functional entry point."""

    def __init__(self, cfg: TrainConfig, scenes: Sequence[str | Path], fused_dir: str | Path, out_dir: str | Path,
                 val_scenes: Sequence[str | Path] = (), text_features: torch.Tensor | None = None):
        if not scenes:
            raise InputError(None, "no training scenes given")
        self.cfg = cfg
        self.out = Path(out_dir)
        self.dist = _init_distributed(cfg.device)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if cfg.device == "cuda" and self.dist.active else cfg.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        else:
            from sas3d.models.spconv_compat import ensure_spconv_cpu_backward

            ensure_spconv_cpu_backward()
        self.out.mkdir(parents=True, exist_ok=True)
        self.all_scenes = [Path(s) for s in scenes]
        self.fused_dir = Path(fused_dir)
        self.text = (text_features if text_features is not None else class_text_features(cfg)).float().cpu()
        self.text_dev = self.text.to(self.device)

        cache = Path(cfg.data.superpoint_cache) if cfg.data.superpoint_cache else self.out / "cache" / "superpoints"
        if len(self.all_scenes) < self.dist.world_size:
            raise InputError(None, f"{len(self.all_scenes)} training scenes cannot be shared by {self.dist.world_size} processes")
        mine = self.all_scenes[self.dist.rank :: self.dist.world_size]
        from tqdm import tqdm

        bar = tqdm(mine, desc="loading scenes", leave=False, **self._bar_options())
        self.scenes = [load_scene_data(s, self.fused_dir, cfg.data, cache) for s in bar]
        if cfg.loss.labels > 0:
            for s in self.scenes:
                if s.labels is None:
                    raise InputError(s.fused_path, f"scene {s.name!r} has no ground-truth labels; loss.labels (the supervised recipe) needs them")
        teachers = sorted({t for s in self.scenes for t in s.teachers})
        names = [s.name for s in self.scenes]
        if self.dist.active:
            gathered: list[tuple[list[str], list[str]]] = [([], [])] * self.dist.world_size
            dist.all_gather_object(gathered, (teachers, names))
            teachers = sorted({t for part, _ in gathered for t in part})
            names = [n for _, part in gathered for n in part]
        self.teachers = teachers
        # a student distilled from simulated teachers is itself a simulated result
        self.simulated = any("simulated" in t for t in teachers)
        if len(set(names)) != len(names):
            raise InputError(None, f"duplicate scene names in the training list (fused files and TESD histories are per name): {sorted(names)}")
        self.val_scenes: list[SceneData] = []
        if self.dist.is_main and val_scenes:
            from sas3d import load_scene

            for s in val_scenes:
                scene = load_scene(s, **cfg.data.scene_options)
                if scene.labels is None:
                    raise InputError(Path(s), "validation scene has no ground-truth labels")
                self.val_scenes.append(_val_scene(scene))
        dim = self.scenes[0].dim
        for s in self.scenes:
            if s.dim != dim:
                raise InputError(s.fused_path, f"feature width {s.dim} != {dim} of the other scenes")
        if self.text.shape[1] != dim:
            raise ConfigError(f"text encoder {cfg.text.encoder!r} gives {self.text.shape[1]}-d features but the fused features are {dim}-d")
        out_channels = cfg.model.out_channels or dim
        if out_channels != dim:
            raise ConfigError(f"model.out_channels={out_channels} must equal the fused feature width {dim}")

        from sas3d.models.registry import build_model

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model.name, in_channels=cfg.model.in_channels, out_channels=out_channels, **cfg.model.options).to(self.device)
        self.net: torch.nn.Module = self.model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

        # every rank runs the same number of steps (DDP all-reduces each one)
        self.scenes_per_rank = math.ceil(len(self.all_scenes) / self.dist.world_size)
        self.batch_per_rank = max(1, cfg.optim.batch_size // self.dist.world_size)
        self.steps_per_epoch = math.ceil(self.scenes_per_rank / self.batch_per_rank)
        self.history = TESDHistory(self.out / "tesd", cfg.tesd.alpha, cfg.tesd.init) if cfg.loss.self_distill == "tesd" else None
        self.teacher: EMATeacher | None = None
        self.epoch = 0
        self.metrics: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_metadata(self, updates: dict[str, int]) -> dict[str, Any]:
        return {
            "kind": "sas3d-train-checkpoint",
            "config": to_dict(self.cfg),
            "epoch": self.epoch,  # epochs completed
            "global_step": self.epoch * self.steps_per_epoch,
            "stage": self.cfg.stage(self.epoch - 1),
            "world_size": self.dist.world_size,
            # numpy streams are re-derived from (seed, epoch, rank); torch's CPU state is in extra
            "rng": {"seed": self.cfg.seed, "next_epoch": self.epoch, "numpy": "default_rng([seed, epoch, rank])"},
            "tesd": None if self.history is None else {"folder": f"tesd/epoch_{self.epoch:04d}", "updates": updates},
            "ema": self.teacher is not None,
            "teachers": self.teachers,
            "simulated": self.simulated,
            "metrics": self.metrics,
        }

    def save(self) -> Path:
        """Write checkpoint ``epoch_XXXX`` and ``last`` (rank 0), snapshotting the TESD history first."""
        from sas3d.models.checkpoint import save_checkpoint

        updates: dict[str, int] = {}
        if self.history is not None:
            self.history.snapshot(self.out / "tesd" / f"epoch_{self.epoch:04d}")
            parts: list[dict[str, int]] = [dict(self.history.updates)]
            if self.dist.active:
                parts = [None] * self.dist.world_size  # type: ignore[list-item]
                dist.all_gather_object(parts, dict(self.history.updates))
            for p in parts:
                updates.update(p)
        path = self.out / "checkpoints" / f"epoch_{self.epoch:04d}.safetensors"
        _barrier(self.dist)
        if self.dist.is_main:
            extra = {"rng.torch": torch.get_rng_state()}
            if self.teacher is not None:
                extra.update({f"ema.{k}": v for k, v in self.teacher.state_dict().items()})
            save_checkpoint(path, self.model, self._checkpoint_metadata(updates), optimizer=self.optimizer, extra=extra)
            with atomic_path(self.out / "last.safetensors") as tmp:
                shutil.copyfile(path, tmp)
            keep = self.cfg.schedule.keep_checkpoints
            if keep > 0:
                for old in sorted(path.parent.glob("epoch_*.safetensors"))[:-keep]:
                    old.unlink()
            # older history snapshots are no longer referenced by last.safetensors
            for old in (self.out / "tesd").glob("epoch_*") if self.history is not None else []:
                if old.name != f"epoch_{self.epoch:04d}":
                    shutil.rmtree(old, ignore_errors=True)
            self._write_metrics()
        _barrier(self.dist)
        return path

    def resume(self) -> bool:
        """Restore the state of ``last.safetensors``; False when the run has no checkpoint yet."""
        from sas3d.models.checkpoint import load_checkpoint, load_optimizer_state

        path = self.out / "last.safetensors"
        if not path.is_file():
            return False
        loaded, meta, state = load_checkpoint(path)
        saved = meta.get("config", {})
        try:  # fields added to TrainConfig after the run started take their defaults
            saved = to_dict(from_dict(TrainConfig, saved))
        except ConfigError:
            pass  # a field this version no longer has: the comparison below names the section
        mine = to_dict(self.cfg)
        diff = sorted(k for k in set(saved) | set(mine) if k != "device" and saved.get(k) != mine.get(k))
        if diff:
            raise ConfigError(f"{path}: the run was started with a different config (sections {diff}); resume with the same recipe and --set values")
        self.model.load_state_dict(loaded.state_dict())
        load_optimizer_state(self.optimizer, state)
        self.epoch = int(meta["epoch"])
        self.metrics = list(meta.get("metrics", []))
        if "rng.torch" in state.extra:
            torch.set_rng_state(state.extra["rng.torch"].cpu().to(torch.uint8))
        ema = {k[len("ema."):]: v for k, v in state.extra.items() if k.startswith("ema.")}
        if ema:
            self.teacher = EMATeacher(self.model, self.cfg.ggsd.momentum)
            self.teacher.load_state_dict(ema)
        if self.history is not None and meta.get("tesd"):
            mine_names = {s.name for s in self.scenes}
            updates = {k: v for k, v in meta["tesd"]["updates"].items() if k in mine_names}
            self.history.restore(self.out / meta["tesd"]["folder"], updates)
        return True

    def _write_metrics(self) -> None:
        lines = [",".join(METRIC_FIELDS)]
        for row in self.metrics:
            lines.append(",".join(_fmt(row.get(k)) for k in METRIC_FIELDS))
        write_text_atomic(self.out / "metrics.csv", "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ one step
    def _losses(self, batch: Batch, stage: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        dev = self.device
        coords = batch.coords.to(dev)
        feats = torch.ones((coords.shape[0], cfg.model.in_channels), device=dev)
        pred = self.net(feats, coords, batch.batch_size)
        zero = pred.sum() * 0.0
        out = {part: zero for part in LOSS_PARTS}
        if (stage == 1 or cfg.loss.distill_in_stage2) and (cfg.loss.point > 0 or cfg.loss.superpoint > 0):
            idx = batch.distill_index.to(dev)
            p = pred[idx]
            target = batch.distill_sp_target if cfg.loss.point_target == "superpoint" else batch.distill_target
            out["point"] = L.cosine_loss(p, target.to(dev))
            out["superpoint"] = L.superpoint_cosine_loss(p, batch.distill_sp_target.to(dev), batch.distill_sp.to(dev))
        if stage == 2 and cfg.loss.self_distill == "tesd":
            out["self"] = self._tesd(pred, batch)
        elif stage == 2 and cfg.loss.self_distill == "ggsd":
            out["self"] = self._ggsd(pred, batch, coords, feats)
        if cfg.loss.labels > 0:
            idx = batch.label_index.to(dev)
            out["labels"] = L.supervised_loss(pred[idx], self.text_dev, batch.label_target.to(dev), cfg.loss.label_temperature)
        return out

    def _tesd(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        assert self.history is not None
        point_labels, sp_labels = [], []
        unit = torch.nn.functional.normalize(pred.detach().float(), dim=1, eps=1e-8)
        for sl in batch.slices:
            rows = torch.from_numpy(sl.point_to_voxel).to(pred.device) + sl.start
            # update with this prediction first, then label: with zero init the first labels
            # would otherwise come from an all-zero history
            h = self.history.update(sl.scene.name, unit[rows])
            sp = torch.from_numpy(sl.scene.superpoints)
            pt_lab, _, sp_lab = L.tesd_pseudo_labels(h, sp, self.text, self.cfg.tesd.point_label)
            point_labels.append(pt_lab[torch.from_numpy(sl.voxel_to_point)])
            sp_labels.append(sp_lab[torch.from_numpy(sl.voxel_superpoint)])  # ids are consecutive 0..S-1
        idx = batch.self_index.to(pred.device)
        vox_pt = torch.cat(point_labels).to(pred.device)[idx]
        vox_sp = torch.cat(sp_labels).to(pred.device)[idx]
        return L.tesd_loss(pred[idx], self.text_dev, vox_pt, batch.voxel_sp.to(pred.device)[idx], vox_sp, self.cfg.tesd.temperature)

    def _ggsd(self, pred: torch.Tensor, batch: Batch, coords: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            self.teacher = EMATeacher(self.model, self.cfg.ggsd.momentum)
        with torch.no_grad():
            t_out = self.teacher.model(feats, coords, batch.batch_size)
            labels = L.text_logits(t_out.float(), self.text_dev, 1.0).argmax(dim=1)
            voted = L.vote_labels(labels, batch.voxel_sp.to(pred.device), self.text.shape[0])
        idx = batch.self_index.to(pred.device)
        return L.ggsd_contrastive_loss(pred[idx], self.text_dev, voted[idx], self.cfg.ggsd.temperature)

    # ------------------------------------------------------------------ epochs
    def _epoch_order(self, rng: np.random.Generator) -> list[SceneData]:
        order = [self.scenes[i] for i in rng.permutation(len(self.scenes))]
        # pad by wrapping so every rank runs the same number of steps (as DistributedSampler does)
        return [order[i % len(order)] for i in range(self.scenes_per_rank)]

    def _bar_options(self) -> dict[str, bool]:
        # Only rank 0 draws bars; there, leave `disable` unset so TQDM_DISABLE (sas3d demo --no-progress) applies.
        return {} if self.dist.is_main else {"disable": True}

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch; returns its metrics row (validation added by :meth:`fit`)."""
        from tqdm import tqdm

        cfg, epoch = self.cfg, self.epoch
        stage = cfg.stage(epoch)
        rng = np.random.default_rng([cfg.seed, epoch, self.dist.rank])
        order = self._epoch_order(rng)
        self.net.train()
        sums = dict.fromkeys(("loss", *LOSS_PARTS), 0.0)
        t0 = time.time()
        lr = cfg.optim.lr
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.schedule.epochs} (stage {stage})",
                   leave=False, **self._bar_options())
        for step in bar:
            lr = lr_at(cfg, epoch, step, self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            chunk = order[step * self.batch_per_rank : (step + 1) * self.batch_per_rank] or order[-self.batch_per_rank :]
            batch = build_batch(chunk, cfg.data, rng, train=True, num_classes=self.text.shape[0] if cfg.loss.labels > 0 else 0)
            parts = self._losses(batch, stage)
            loss = (cfg.loss.point * parts["point"] + cfg.loss.superpoint * parts["superpoint"]
                    + cfg.loss.self_weight * parts["self"] + cfg.loss.labels * parts["labels"])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.teacher is not None:
                self.teacher.update(self.model)
            for k, v in (("loss", loss), *parts.items()):
                sums[k] += float(v.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        means = torch.tensor([sums[k] / self.steps_per_epoch for k in ("loss", *LOSS_PARTS)], dtype=torch.float64)
        if self.dist.active:
            dist.all_reduce(means)
            means /= self.dist.world_size
        return {"epoch": epoch + 1, "stage": stage, "lr": lr, "loss": float(means[0]), "loss_point": float(means[1]),
                "loss_superpoint": float(means[2]), "loss_self": float(means[3]), "loss_labels": float(means[4]), "val_miou": None, "val_macc": None,
                "seconds": round(time.time() - t0, 3)}

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train from ``self.epoch`` to ``schedule.epochs`` (or ``stop_after`` epochs in total)."""
        cfg = self.cfg
        end = cfg.schedule.epochs if stop_after is None else min(cfg.schedule.epochs, int(stop_after))
        writer = None
        if self.dist.is_main:
            import yaml
            from torch.utils.tensorboard import SummaryWriter

            header = f"# simulated: distilled from simulated teachers {self.teachers}\n" if self.simulated else ""
            write_text_atomic(self.out / "config.yaml", header + yaml.safe_dump(to_dict(cfg), sort_keys=False))
            writer = SummaryWriter(str(self.out / "tb"), purge_step=self.epoch + 1)
        threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        if cfg.deterministic and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
            # spconv's multi-threaded CPU kernels give run-to-run differences of ~1% in the output
            # (measured); one intra-op thread makes CPU training bit-reproducible
            torch.set_num_threads(1)
        try:
            while self.epoch < end:
                row = self.run_epoch()
                last = self.epoch + 1 == cfg.schedule.epochs
                if self.dist.is_main and self.val_scenes and ((self.epoch + 1) % cfg.schedule.val_every == 0 or last):
                    res = evaluate_miou(self.model, self.val_scenes, self.text, cfg.data.voxel_size, str(self.device))
                    row["val_miou"], row["val_macc"] = res["miou"], res["macc"]
                self.epoch += 1
                self.metrics.append(row)
                self.save()
                if writer is not None:
                    for k in ("loss", "loss_point", "loss_superpoint", "loss_self", "loss_labels", "lr", "stage", "val_miou", "val_macc"):
                        if row.get(k) is not None:
                            writer.add_scalar(f"train/{k}" if not k.startswith("val") else f"val/{k[4:]}", row[k], self.epoch)
                    writer.flush()
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det)
            if writer is not None:
                writer.close()
        return TrainResult(self.out, self.epoch, list(self.metrics), self.model, self.simulated)


def _val_scene(scene) -> SceneData:
    """A validation scene needs only points and labels."""
    n = scene.num_points
    return SceneData(scene.name, np.asarray(scene.points, dtype=np.float32), np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64),
                     np.zeros(0, dtype=bool), 0, labels=np.asarray(scene.labels, dtype=np.int64))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def train(cfg: TrainConfig, scenes: Sequence[str | Path], fused_dir: str | Path, out_dir: str | Path, resume: bool = False, *,
          val_scenes: Sequence[str | Path] = (), stop_after: int | None = None, text_features: torch.Tensor | None = None) -> TrainResult:
    """Train the 3D student on ``scenes`` with fused features from ``fused_dir``; write the run to ``out_dir``.

    ``resume``: continue from ``out_dir/last.safetensors`` (same config required). ``stop_after``:
    stop once that many epochs of the schedule are done (split a run across jobs; resume later).
    ``text_features``: (K, C) class text features to use instead of encoding ``cfg.text`` prompts.
    """
    if not resume and (Path(out_dir) / "last.safetensors").is_file():
        raise InputError(Path(out_dir), "already holds a training run; pass --resume to continue it or choose a new --out")
    trainer = Trainer(cfg, scenes, fused_dir, out_dir, val_scenes=val_scenes, text_features=text_features)
    if resume:
        trainer.resume()
    return trainer.fit(stop_after=stop_after)
